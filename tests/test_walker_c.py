"""The walk of a whole unit in C (``_fastscan.Walk``) on the trees that
stress it, in this process: every exported directory equals GNU du run in
the same test, and every message equals the one the Python loop sends.

The sums of a walk's messages are made here as the store makes them:
each inode of several links counted once, in the row of its smallest
order key, then every row's subtree summed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import subprocess

from collections.abc import Sequence
from pathlib import Path

import pytest

import fusefs

from du_exporter.scan.fs import LONG_PATH
from du_exporter.scan.ignore import Ignore
from du_exporter.scan.model import (
    MAX_ERRORS,
    ROWS_PER_MESSAGE,
    U64_MAX,
    Plan,
    Unit,
    UnitResult,
)
from du_exporter.scan.walker import (
    BATCH_PER_THREAD,
    engine_available,
    scan_unit,
    walks_in_c,
)
from du_exporter.store.rows import UnitRow
from helpers import du, many_dirs, mounted, write


pytestmark = pytest.mark.skipif(
    not engine_available("c"), reason="the C reader is not built"
)


def plan_of(root: Path, level: int, **extra: object) -> tuple[Plan, Unit]:
    st = os.stat(root)
    plan = Plan(exports=((os.fsencode(root), level),), ignore=(),
                one_file_system=False, follow_symlinks=False,
                root_dev=st.st_dev, engine="c", owner_usage=True)
    plan = plan._replace(**extra)  # type: ignore[arg-type]
    top = Unit(os.fsencode(root), b"", st.st_blocks * 512, st.st_size,
               st.st_mtime, dev=st.st_dev, ino=st.st_ino, uid=st.st_uid)
    return plan, top


def python_loop(plan: Plan) -> Plan:
    """The same plan walked by the Python loop (with the same C reader):
    a budget no test reaches turns the C walk off."""
    slow = plan._replace(iops=1e12)
    assert walks_in_c(plan)
    assert not walks_in_c(slow)
    return slow


class Hungry:
    """Idle workers every ``every``-th question: units split mid-walk."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.asked = 0

    def take(self) -> bool:
        self.asked += 1
        return self.asked % self.every == 0


def walk_all(
    plan: Plan, top: Unit, hunger: Hungry | None = None
) -> list[UnitResult]:
    """Every message of a walk, the units handed back walked in turn as
    the pool does (ids from the unit's task number)."""
    out: list[UnitResult] = []
    todo: list[tuple[Unit, int | None]] = [(top, None)]
    task = 0
    while todo:
        unit, parent = todo.pop()
        last = scan_unit(plan, unit, task << 32, parent, hunger,
                         emit=out.append)
        out.append(last)
        todo += last.children
        task += 1
    return out


def totals(messages: Sequence[UnitResult], attr: str) -> dict[bytes, int]:
    """Exported directory -> its size, as the store sums the messages."""
    rows = {r[0]: UnitRow(*r) for m in messages for r in m.rows}
    assert len(rows) == sum(len(m.rows) for m in messages)  # ids unique
    own = {i: int(getattr(r, attr)) for i, r in rows.items()}
    first: dict[tuple[int, int], tuple[bytes, int, int]] = {}
    for m in messages:
        for row_id, dev, ino, key, disk, apparent, _uid in m.links:
            size = disk if attr == "disk" else apparent
            if (dev, ino) not in first or key < first[dev, ino][0]:
                first[dev, ino] = (key, row_id, size)
    for _key, row_id, size in first.values():
        own[row_id] += size
    for r in sorted(rows.values(), key=lambda r: -r.depth):
        if r.parent is not None:
            own[r.parent] += own[r.id]
    return {r.path: min(own[r.id], U64_MAX) for r in rows.values()
            if r.root is not None}


def assert_equals_du(root: Path, level: int, messages: list[UnitResult],
                     *du_args: str) -> None:
    for attr, flag in (("disk", "-B1"), ("apparent", "-b")):
        expected = du(root, flag, f"--max-depth={level}", *du_args)
        assert expected == totals(messages, attr)


def same_messages(
    a: Sequence[UnitResult], b: Sequence[UnitResult], *, python_dirs: bool = True
) -> None:
    """Message for message, what the two walks sent is the same (but for
    the count of directories the Python loop read itself, where long
    paths make the two differ, unless ``python_dirs``)."""
    def fields(m: UnitResult) -> tuple[object, ...]:
        return tuple(
            0 if name == "python_dirs" and not python_dirs
            else getattr(m, name)
            for name in UnitResult.__slots__)
    assert [fields(m) for m in a] == [fields(m) for m in b]


def long_chain(base: Path, levels: int) -> Path:
    """``levels`` nested directories of 200-byte names, a file in each:
    their paths pass LONG_PATH (the Python loop reads those itself)."""
    fd = os.open(base, os.O_RDONLY)
    try:
        for i in range(levels):
            name = f"{i:03d}" + "x" * 197
            os.mkdir(name, dir_fd=fd)
            new = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd),
                      "wb") as f:
                f.write(b"x" * (100 + i))
    finally:
        os.close(fd)
    return base


class TestDeepTree:
    """Deeper than any fixed C stack and than PATH_MAX: no recursion, the
    long paths opened piece by piece."""

    DEPTH = 2500

    def test_thousands_of_levels(self, tmp_path: Path) -> None:
        root = tmp_path / "t"
        root.mkdir()
        fd = os.open(root, os.O_RDONLY)
        try:
            for i in range(self.DEPTH):
                os.mkdir("d", dir_fd=fd)
                if i % 500 == 0:
                    with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644,
                                      dir_fd=fd), "wb") as f:
                        f.write(b"x" * (1000 + i))
                new = os.open("d", os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = new
        finally:
            os.close(fd)
        try:
            for level in (0, 3, self.DEPTH + 1):
                plan, top = plan_of(root, level)
                got = walk_all(plan, top)
                assert not any(m.errors for m in got)
                assert sum(m.entries for m in got) == self.DEPTH + 5
                assert_equals_du(root, level, got)
                same_messages(got, walk_all(python_loop(plan), top),
                              python_dirs=False)
        finally:  # too deep for shutil.rmtree's recursion
            subprocess.run(["rm", "-rf", root], check=True)

    def test_long_path_chain_streams(self, tmp_path: Path) -> None:
        """The Python loop reads over-long paths one by one; a chain of
        them still ends a round per batch, so its rows stream in messages
        of ROWS_PER_MESSAGE, as the C walk's do."""
        root = tmp_path / "t"
        root.mkdir()
        levels = 2 * ROWS_PER_MESSAGE + 100
        chain = long_chain(root, 20)
        deep = next(p for p in chain.rglob("*") if p.is_dir()
                    and len(os.fsencode(p)) > LONG_PATH)
        fd = os.open(deep, os.O_RDONLY)
        try:  # a chain of short names under the long prefix: many rows
            for _ in range(levels):
                os.mkdir("d", dir_fd=fd)
                new = os.open("d", os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = new
        finally:
            os.close(fd)
        try:
            plan, top = plan_of(root, levels + 30)
            slow = walk_all(python_loop(plan), top)
            assert sum(m.python_dirs for m in slow) > levels
            batch = max(1, plan.threads) * BATCH_PER_THREAD
            assert len(slow) > 2
            for m in slow[:-1]:
                assert (ROWS_PER_MESSAGE <= len(m.rows) + len(m.links)
                        < ROWS_PER_MESSAGE + batch)
            got = walk_all(plan, top)
            assert sum(m.python_dirs for m in got) == 0
            assert_equals_du(root, levels + 30, got)
            same_messages(got, slow, python_dirs=False)
        finally:
            subprocess.run(["rm", "-rf", root], check=True)


class TestHungerSplitsMidUnit:
    """Idle workers take the pending directories of a unit being walked;
    each comes back a unit of its own, its row on the right parent."""

    @pytest.mark.parametrize("every", [1, 2, 5])
    @pytest.mark.parametrize("level", [0, 1, 2])
    def test_split_equals_du(self, tmp_path: Path, every: int, level: int) -> None:
        root = many_dirs(tmp_path / "t", 12)
        plan, top = plan_of(root, level)
        c_walk = walk_all(plan, top, Hungry(every))
        assert sum(m.final for m in c_walk) > 1  # it did split
        assert_equals_du(root, level, c_walk)
        same_messages(c_walk, walk_all(python_loop(plan), top, Hungry(every)))

    def test_bind_mount_cycle_across_split_units(self, tmp_path: Path) -> None:
        """The units handed back carry their ancestors: a bind mount of
        ``a`` into ``a/b/c`` is still a cycle (du: not counted, not entered,
        one error) however the walk is split."""
        root = tmp_path / "t"
        a = root / "a"
        write(a / "f", 5_000)
        write(a / "b" / "c" / "g", 7_000)
        write(root / "x" / "h", 3_000)
        with mounted("--bind", a, a / "b" / "c"):
            for every in (1, 3, 1000):
                plan, top = plan_of(root, 4)
                got = walk_all(plan, top, Hungry(every))
                assert_equals_du(root, 4, got)
                errors = [e for m in got for e in m.errors]
                cycle = ("circular directory structure: a directory "
                         "containing itself")
                assert errors == [(os.fsencode(a / "b" / "c"), cycle)]
                same_messages(got, walk_all(python_loop(plan), top,
                                            Hungry(every)))

    def test_one_file_system_with_tmpfs_inside(self, tmp_path: Path) -> None:
        root = many_dirs(tmp_path / "t", 6)
        mnt = root / "a001" / "mnt"
        mnt.mkdir()
        with mounted("-t", "tmpfs", "tmpfs", mnt):
            write(mnt / "inside" / "big", 300_000)
            for one_fs, du_args in ((True, ("-x",)), (False, ())):
                plan, top = plan_of(root, 3, one_file_system=one_fs)
                got = walk_all(plan, top, Hungry(2))
                assert_equals_du(root, 3, got, *du_args)
                paths = {r[3] for m in got for r in m.rows}
                assert (os.fsencode(mnt / "inside") in paths) is not one_fs
                same_messages(got, walk_all(python_loop(plan), top, Hungry(2)))


class TestStreaming:
    """A unit of thousands of exported directories streams its rows."""

    def test_rows_per_message(self, tmp_path: Path) -> None:
        root = many_dirs(tmp_path / "t", 45)
        plan, top = plan_of(root, 2)
        got = walk_all(plan, top)
        assert [m.final for m in got] == [False] * (len(got) - 1) + [True]
        assert len(got) > 2
        for m in got[:-1]:
            assert len(m.rows) + len(m.links) >= ROWS_PER_MESSAGE
            assert len(m.rows) + len(m.links) < 2 * ROWS_PER_MESSAGE
        assert len({r[0] for m in got for r in m.rows}) == 1 + 45 + 45 * 45
        assert_equals_du(root, 2, got)
        same_messages(got, walk_all(python_loop(plan), top))

    def test_errors_capped_over_messages(self, tmp_path: Path) -> None:
        """More cycles (bind mounts of the root inside it) than a unit
        names: each counted, MAX_ERRORS named over all its messages, the
        same ones as the Python loop names."""
        root = many_dirs(tmp_path / "t", 40)
        targets = [root / f"a{i:03d}" / "b005" for i in range(0, 40, 3)]
        targets += [root / f"a{i:03d}" / "b030" for i in range(0, 40, 3)]
        with contextlib.ExitStack() as stack:
            for target in targets:
                stack.enter_context(mounted("--bind", root, target))
            plan, top = plan_of(root, 2)
            got = walk_all(plan, top)
            assert len([m for m in got if m.errors]) >= 2  # named in both
            assert sum(m.unreadable for m in got) == len(targets) > MAX_ERRORS
            assert sum(len(m.errors) for m in got) == MAX_ERRORS
            assert_equals_du(root, 2, got)
            same_messages(got, walk_all(python_loop(plan), top))


def snapshot_tree(root: Path) -> Path:
    """``many_dirs`` with ignorable directories at several depths (names
    that are not UTF-8 too), a hard link out of one, and a chain of paths
    longer than LONG_PATH."""
    many_dirs(root, 6)
    b = os.fsencode(root)
    for rel, size in {
        b"/.snapshot/f": 50_000,
        b"/a001/.snapshot/f": 20_000,
        b"/a001/b002/.snapshot/deep/g": 10_000,
        b"/a002/snap\xff/f": 7_000,
        b"/a002/b001/snap\xff/x/f": 700,
        b"/a003/tmp.1/f": 6_000,
        b"/a003/b004/tmp.22/f": 6_500,
        b"/a004/b003/keep/.snapshot/f": 600,
        b"/a004/b003/keep/g": 800,
    }.items():
        write(Path(os.fsdecode(b + rel)), size)
    os.link(root / "a001" / ".snapshot" / "f",
            root / "a004" / "b003" / "keep" / "hard")
    long_chain(root / "a005" / "b001", 18)
    return root


def remove_ignored(tree: Path, patterns: Sequence[bytes]) -> None:
    """Delete what ``patterns`` ignore from ``tree``: a name pattern is
    matched on the name, one starting with "/" on the path below ``tree``
    (fnmatch: ``*`` matches "/" too)."""
    top = os.fsencode(tree)
    for path, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            rel = path[len(top):] + b"/" + name
            if any(fnmatch.fnmatchcase(rel if p.startswith(b"/") else name, p)
                   for p in patterns):
                if name in dirnames:
                    dirnames.remove(name)
                    shutil.rmtree(path + b"/" + name)
                else:
                    os.unlink(path + b"/" + name)


#: ignore-dirs patterns; those starting with "/" are below the scanned root.
IGNORE_CASES: dict[str, tuple[bytes, ...]] = {
    "name": (b".snapshot",),
    "non-utf8-name": (b"snap\xff",),
    "name-globs": (b"tmp.*", b"b00[3]"),
    "paths": (b"/a003/b004", b"/a001/.snapshot"),
    "path-globs": (b"/a00[1-4]/b*/.snapshot", b"/*/snap?"),
    "mix": (b".snapshot", b"snap\xff", b"tmp.?", b"/a00[2-3]/b00[0-1]",
            b"/a005/b001/*/016*"),
}


class TestIgnoreDirs:
    """``ignore-dirs`` rules applied in the C walk: the Python loop's
    messages, du's sums on the tree without the ignored paths."""

    def test_same_rules_below(self) -> None:
        """One tuple of rules for a unit where no path pattern reaches: the
        rules every directory below gets (else they are asked per
        directory)."""
        defaults = Ignore((b"/proc", b"/dev", b"/sys", b"/run"))
        assert defaults.same_below(b"/home/u") == ()
        assert defaults.same_below(b"/") is None
        glob = Ignore((b"/srv/data/*/tmp", b".snapshot"))
        assert glob.same_below(b"/srv") is None
        assert glob.same_below(b"/srv/data/x") is None
        assert glob.same_below(b"/srv/other") == (b"n.snapshot",)
        assert Ignore((b"/srv/data/tmp",)).same_below(b"/srv/data") is None
        assert Ignore((b"/srv/data/tmp",)).same_below(b"/srv/data/tmp2") == ()
        names = Ignore((b".snapshot", b"tmp*", b"/srv/data/tmp"))
        same = names.same_below(b"/home")
        assert same is not None
        for d in (b"/home", b"/home/u", b"/home/u/.snapshot2/x"):
            assert names.rules(d) == same
        assert names.rules(b"/srv/data") != same

    def test_units_split_around_an_ignored_path(self, tmp_path: Path) -> None:
        """Split into units, those above the ignored directory ask for
        their rules per directory, the others take one tuple; the sums are
        du's on the tree without it."""
        scanned = many_dirs(tmp_path / "t", 8)
        reference = many_dirs(tmp_path / "r", 8)
        subprocess.run(["rm", "-rf", reference / "a003" / "b005"], check=True)
        plan, top = plan_of(scanned, 2, ignore=(
            b"/proc", os.fsencode(scanned / "a003" / "b005")))
        got = walk_all(plan, top, Hungry(1))
        expected = {
            p.replace(os.fsencode(reference), os.fsencode(scanned), 1): n
            for p, n in du(reference, "-B1", "--max-depth=2").items()}
        assert expected == totals(got, "disk")

    @pytest.mark.parametrize("case", sorted(IGNORE_CASES))
    def test_c_walk_equals_du_without_ignored(
        self, tmp_path: Path, case: str
    ) -> None:
        patterns = IGNORE_CASES[case]
        scanned = snapshot_tree(tmp_path / "t")
        reference = snapshot_tree(tmp_path / "r")
        remove_ignored(reference, patterns)
        b = os.fsencode(scanned)
        plan, top = plan_of(scanned, 2, ignore=(b"/proc", *(
            b + p if p.startswith(b"/") else p for p in patterns)))
        for every in (None, 3):
            got = walk_all(plan, top, Hungry(every) if every else None)
            for attr, flag in (("disk", "-B1"), ("apparent", "-b")):
                expected = {
                    p.replace(os.fsencode(reference), b, 1): n
                    for p, n in du(reference, flag, "--max-depth=2").items()}
                assert expected == totals(got, attr)
            # The Python loop reads the long paths itself; the C walk all.
            slow = walk_all(python_loop(plan), top, Hungry(every) if every else None)
            assert sum(m.python_dirs for m in got) == 0
            assert sum(m.python_dirs for m in slow) > 0
            same_messages(got, slow, python_dirs=False)


class TestNestedRoots:
    """Nested roots in the C walk: a row for every exported directory and
    every one above a nested root, du's sums of the one walk."""

    @pytest.mark.parametrize("every", [None, 1, 3])
    @pytest.mark.parametrize("ignore", [(), (b".snapshot",)])
    def test_nested_equals_du(
        self, tmp_path: Path, every: int | None, ignore: tuple[bytes, ...]
    ) -> None:
        root = snapshot_tree(tmp_path / "t")
        levels = {root: 0, root / "a003" / "b004": 2, root / "a004": 1,
                  root / "a004" / "b003" / "keep": 0,
                  root / "a005" / "b001": 3}
        plan, top = plan_of(root, 0, ignore=ignore, exports=tuple(
            (os.fsencode(p), n) for p, n in sorted(levels.items())))
        assert walks_in_c(plan)
        got = walk_all(plan, top, Hungry(every) if every else None)
        excluded = [f"--exclude={os.fsdecode(p)}" for p in ignore]
        for attr, flag in (("disk", "-B1"), ("apparent", "-b")):
            one_walk = du(root, flag, "--max-depth=40", *excluded)
            wanted = {p for path, n in levels.items()
                      for p in du(path, flag, f"--max-depth={n}", *excluded)}
            assert {p: one_walk[p] for p in wanted} == totals(got, attr)
        rows = {r[3]: r for m in got for r in m.rows}
        a003 = rows[os.fsencode(root / "a003")]  # holds a root: unexported
        assert (a003[4], a003[5]) == (None, None)
        inner = rows[os.fsencode(root / "a004" / "b003" / "keep")]
        assert (inner[4], inner[5]) == (os.fsencode(inner[3]), 0)
        slow = walk_all(python_loop(plan), top, Hungry(every) if every else None)
        assert sum(m.python_dirs for m in got) == 0
        assert sum(m.python_dirs for m in slow) > 0
        same_messages(got, slow, python_dirs=False)


def _raise_os_error(_path: bytes) -> tuple[bytes, ...]:
    raise OSError("rules")


def _raise_key_error(_path: bytes) -> object:
    raise KeyError(_path)


class TestWalkArguments:
    """What the walker hands ``_fastscan.Walk`` per directory, when wrong:
    the callable's own exception, or one TypeError; never a crash."""

    @pytest.mark.parametrize(("skip", "place", "error"), [
        (_raise_os_error, None, OSError),
        ((), _raise_key_error, KeyError),
        ((), lambda _p: 5, TypeError),
        ((), lambda _p: ((1, 2), True), TypeError),
        (lambda _p: "n.snapshot", None, TypeError),
        ((b"x",), None, ValueError),
    ])
    def test_bad_answers(self, tmp_path: Path, skip: object, place: object,
                         error: type[Exception]) -> None:
        from du_exporter.scan import _fastscan

        (tmp_path / "t" / "a" / "b").mkdir(parents=True)
        plan, top = plan_of(tmp_path / "t", 1)

        def walk() -> object:
            return _fastscan.Walk(
                top, 0, None, plan.export_of(top.path), top.path, 1, True,
                False, plan.root_dev, 1, 4, 0, lambda _dev: True,
                skip, place,  # type: ignore[arg-type]
            ).step(None, 10, 0)

        with pytest.raises(error):
            walk()


class TestSymlinkSwap:
    """A directory the FUSE fixture turns into a symlink once its parent
    is listed: never followed, counted as du counts it."""

    def test_swapped_after_listing(self, tmp_path: Path) -> None:
        if fusefs.unavailable():
            pytest.skip(str(fusefs.unavailable()))
        src = tmp_path / "src"
        write(src / "a" / "f", 5_000)
        write(src / "d" / "e" / "g", 10)
        os.link(src / "a" / "f", src / "d" / "e" / "f-again")
        outside = tmp_path / "secret"
        os.truncate(write(outside / "SECRET", 0), 1 << 40)
        swap = {"d": str(outside), "d/e": str(outside)}
        with fusefs.mounted(src, tmp_path / "mnt", swap_after_listing=swap) as m:
            plan, top = plan_of(m, 3)
            got = walk_all(plan, top)
            assert not [r for x in got for r in x.rows if b"SECRET" in r[3]]
            assert_equals_du(m, 3, got)
