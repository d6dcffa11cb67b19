"""Per-directory numbers equal GNU du, run on the same tree in the test."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from collections.abc import Mapping
from pathlib import Path

import pytest

from du_exporter.scan import engine_scandir
from du_exporter.scan.model import ROWS_PER_MESSAGE, Plan, Unit, UnitResult
from du_exporter.scan.pool import READ_AHEAD, ScanPool
from du_exporter.scan.walker import engine_available, engine_name, scan_unit
from du_exporter.store.rows import UnitRow
from helpers import Scanner, big_dir_with_link, du, many_dirs, write


def rich_tree(base: Path) -> Path:
    """Nested and empty dirs, sparse files, hard and symbolic links."""
    (base / "empty").mkdir(parents=True)
    write(base / "a" / "f1", 10_000)
    write(base / "a" / "f2", 5)
    write(base / "a" / "b" / "y", 3_000)
    write(base / "a" / "b" / "c" / "d" / "e" / "deep", 20_000)
    (base / "a" / "b" / "c" / "d" / "empty").mkdir()
    write(base / "sparse" / "hole", 1 << 30, sparse=True)
    with write(base / "sparse" / "mixed", 1 << 20, sparse=True).open("r+b") as f:
        f.seek(4096)
        f.write(b"x" * 8192)
    write(base / "links" / "one", 7_000)
    os.link(base / "links" / "one", base / "links" / "two")  # same directory
    (base / "x").mkdir()
    os.link(base / "a" / "f1", base / "x" / "f1-again")  # across directories
    os.link(base / "a" / "b" / "c" / "d" / "e" / "deep", base / "x" / "deep")
    deep = base / "d1" / "d2" / "d3" / "d4" / "d5"
    write(deep / "z", 50_000)
    os.link(deep / "z", base / "a" / "z-link")  # below dir-level vs above
    (base / "sym").mkdir()
    (base / "sym" / "to-file").symlink_to("../a/f1")
    (base / "sym" / "to-dir").symlink_to("../a")
    (base / "sym" / "dangling").symlink_to("nowhere")
    for i in range(40):
        write(base / "many" / f"f{i:02d}", i * 100)
    return base


def sizes(rows: Mapping[bytes, object], attr: str) -> dict[bytes, int]:
    return {p: int(getattr(r, attr)) for p, r in rows.items()}


class TestSizesEqualDu:
    """Every exported directory's size is what du says for it."""

    @pytest.mark.parametrize("level", [0, 1, 2, 3, 6])
    @pytest.mark.parametrize(
        ("mode", "du_flag", "attr"),
        [("disk", "-B1", "disk"), ("apparent", "-b", "apparent")],
    )
    def test_rich_tree(self, scanner: Scanner, tmp_path, level, mode, du_flag, attr):
        """Both size modes, dir-level 0 to beyond the tree's depth."""
        root = rich_tree(tmp_path / "t")
        rows = scanner.scan(
            analyzed_path=str(root), dir_level=level, size_mode=mode
        )
        assert du(root, du_flag, f"--max-depth={level}") == sizes(rows, attr)

    def test_each_directory_alone(self, scanner: Scanner, tmp_path):
        """Where no hard link crosses it, a row equals ``du -sB1 D``."""
        root = tmp_path / "t"
        for name in ("a", "b", "c"):
            write(root / name / "f", 12_345)
            write(root / name / "sub" / "g", 99_999)
        rows = scanner.scan(analyzed_path=str(root), dir_level=2)
        for path, row in rows.items():
            assert du(path, "-sB1")[path] == row.disk

    def test_same_numbers_every_scan(self, scanner: Scanner, tmp_path):
        """Hard links are carried by the same directory on every scan."""
        root = rich_tree(tmp_path / "t")
        first = sizes(scanner.scan(analyzed_path=str(root), dir_level=3), "disk")
        for _ in range(3):
            again = scanner.scan(analyzed_path=str(root), dir_level=3)
            assert first == sizes(again, "disk")

    def test_hard_link_counted_once(self, scanner: Scanner, tmp_path):
        """Two names of one inode in two directories: counted once."""
        root = tmp_path / "t"
        write(root / "p" / "big", 1 << 20)
        (root / "q").mkdir()
        os.link(root / "p" / "big", root / "q" / "big")
        rows = scanner.scan(analyzed_path=str(root), dir_level=1)
        top = rows[os.fsencode(root)]
        children = rows[os.fsencode(root / "p")].disk + rows[os.fsencode(root / "q")].disk
        assert du(root, "-sB1")[os.fsencode(root)] == top.disk
        assert top.disk - os.stat(root).st_blocks * 512 == children

    def test_big_directory(self, scanner: Scanner, tmp_path):
        """A directory of 12,000 entries with hard links into it (inode order)."""
        root = big_dir_with_link(tmp_path / "t")
        rows = scanner.scan(analyzed_path=str(root), dir_level=1)
        assert du(root, "-B1", "--max-depth=1") == sizes(rows, "disk")


class TestCounts:
    """File and directory counts are recursive, like find."""

    def test_counts_match_find(self, scanner: Scanner, tmp_path):
        root = rich_tree(tmp_path / "t")
        rows = scanner.scan(analyzed_path=str(root), dir_level=2)
        for path, row in rows.items():
            files = subprocess.run(
                ["find", path, "-mindepth", "1", "!", "-type", "d", "-printf", "x"],
                capture_output=True, check=True,
            ).stdout
            dirs = subprocess.run(
                ["find", path, "-mindepth", "1", "-type", "d", "-printf", "x"],
                capture_output=True, check=True,
            ).stdout
            assert (len(files), len(dirs)) == (row.files, row.dirs)


class TestRoots:
    """multi-paths, nested roots and ignore-dirs."""

    def test_nested_roots_each_directory_once(self, scanner: Scanner, tmp_path):
        """An inner root gets its own levels; no directory appears twice.

        One walk covers both, so a hard link between them is counted once,
        where du's single walk of the outer root meets it first.
        """
        outer = rich_tree(tmp_path / "t")
        inner = outer / "a" / "b" / "c"
        rows = scanner.scan(multi_paths={str(outer): 1, str(inner): 2})
        one_walk = du(outer, "-B1", "--max-depth=5")
        wanted = set(du(outer, "-B1", "--max-depth=1"))
        wanted |= set(du(inner, "-B1", "--max-depth=2"))
        assert {p: one_walk[p] for p in wanted} == sizes(rows, "disk")
        levels = {p: r.level for p, r in rows.items()}
        assert 0 == levels[os.fsencode(inner)]
        assert 2 == levels[os.fsencode(inner / "d" / "e")]
        assert 1 == levels[os.fsencode(outer / "a")]

    def test_separate_roots(self, scanner: Scanner, tmp_path):
        one = rich_tree(tmp_path / "one")
        two = rich_tree(tmp_path / "two")
        rows = scanner.scan(multi_paths={str(one): 0, str(two): 1})
        expected = du(one, "-B1", "--max-depth=0")
        expected.update(du(two, "-B1", "--max-depth=1"))
        assert expected == sizes(rows, "disk")

    @pytest.mark.parametrize(
        ("pattern", "removed"),
        [
            ("{root}/a/b", ["a/b"]),
            ("{root}/*/b", ["a/b"]),
            ("b", ["a/b"]),
            ("{root}/sparse", ["sparse"]),
            ("{root}/links/t*", ["links/two"]),
        ],
    )
    def test_ignore_dirs(self, scanner: Scanner, tmp_path, pattern, removed):
        """Ignored paths are neither walked nor counted.

        The reference is the same tree with the ignored paths deleted.
        """
        scanned = rich_tree(tmp_path / "t")
        reference = rich_tree(tmp_path / "r")
        for victim in removed:
            subprocess.run(["rm", "-rf", reference / victim], check=True)
        rows = scanner.scan(
            analyzed_path=str(scanned),
            dir_level=2,
            ignore_dirs=[pattern.format(root=scanned)],
        )
        expected = {
            p.replace(os.fsencode(reference), os.fsencode(scanned), 1): n
            for p, n in du(reference, "-B1", "--max-depth=2").items()
        }
        assert expected == sizes(rows, "disk")


class TestSymlinks:
    """Symlinks are counted as links unless follow-symlinks."""

    def test_follow_outside_target(self, scanner: Scanner, tmp_path):
        """A followed link to a tree outside the root counts that tree."""
        root = tmp_path / "t"
        write(root / "own", 5_000)
        outside = tmp_path / "outside"
        write(outside / "sub" / "f", 70_000)
        (root / "link").symlink_to(outside)
        rows = scanner.scan(analyzed_path=str(root), dir_level=1, follow_symlinks=True)
        assert du(root, "-LB1", "--max-depth=1") == sizes(rows, "disk")

    def test_follow_loop_and_inner_link(self, scanner: Scanner, tmp_path):
        """A loop ends; a link back into the root adds nothing twice."""
        root = tmp_path / "t"
        write(root / "data" / "f", 300_000)
        (root / "data" / "loop").symlink_to("..")
        (root / "alias").symlink_to("data")
        rows = scanner.scan(analyzed_path=str(root), dir_level=1, follow_symlinks=True)
        plain = du(root, "-B1", "--max-depth=1")
        data = os.fsencode(root / "data")
        # The directory itself carries its data (direct paths win), and the
        # total is du's without the links.
        assert plain[data] == rows[data].disk
        assert plain[os.fsencode(root)] == rows[os.fsencode(root)].disk


class TestMountPoints:
    """one-file-system leaves other filesystems out, like du -x."""

    def test_one_file_system(self, scanner: Scanner, tmp_path):
        root = rich_tree(tmp_path / "t")
        mnt = root / "a" / "mnt"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", mnt], check=False,
                          capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (not root?)")
        try:
            write(mnt / "inside", 100_000)
            rows = scanner.scan(analyzed_path=str(root), dir_level=2, one_file_system=True)
            assert du(root, "-xB1", "--max-depth=2") == sizes(rows, "disk")
            rows = scanner.scan(analyzed_path=str(root), dir_level=2)
            assert du(root, "-B1", "--max-depth=2") == sizes(rows, "disk")
        finally:
            subprocess.run(["umount", mnt], check=True)


class TestHostileNames:
    """Names with newlines, quotes, backslashes and invalid UTF-8."""

    def test_sizes_and_paths_are_bytes(self, scanner: Scanner, tmp_path):
        root = os.fsencode(tmp_path / "t")
        names = [b"new\nline", b'quote"s', b"back\\slash", b"bad\xff\xfe", b"\xe2\x82"]
        for i, name in enumerate(names):
            d = root + b"/" + name
            os.makedirs(d)
            with open(d + b"/f", "wb") as f:
                f.write(b"x" * (1000 * (i + 1)))
        rows = scanner.scan(analyzed_path=os.fsdecode(root), dir_level=1)
        assert du(root, "-B1", "--max-depth=1") == sizes(rows, "disk")

    def test_long_path(self, scanner: Scanner, tmp_path):
        root = tmp_path / "t"
        deep = root
        while len(os.fsencode(deep)) < 1500:
            deep /= "d" * 50
        write(deep / "f", 9_000)
        rows = scanner.scan(analyzed_path=str(root), dir_level=40)
        assert du(root, "-B1", "--max-depth=40") == sizes(rows, "disk")


class TestWorkSplitting:
    """One big subtree is split across the pool's workers."""

    def test_big_subtree_is_shared(self, pool: ScanPool, tmp_path):
        root = tmp_path / "t"
        for i in range(60):
            write(root / "only" / f"d{i}" / "f", 1000)
        st = os.stat(root)
        results: list[UnitResult] = []
        plan = Plan(
            exports=((os.fsencode(root), 0),),
            ignore=(),
            one_file_system=False,
            follow_symlinks=False,
            root_dev=st.st_dev,
        )
        top = Unit(os.fsencode(root), b"", st.st_blocks * 512, st.st_size,
                   st.st_mtime, dev=st.st_dev, ino=st.st_ino)
        pool.walk(plan, top, lambda r, *_: results.append(r), threading.Event())
        assert sum(r.final for r in results) > 1  # more than one unit
        total = sum(UnitRow(*row).disk for r in results for row in r.rows)
        assert du(root, "-sB1")[os.fsencode(root)] == total


class TestUnits:
    """A unit is a subtree, not an exported directory: its rows stream."""

    def test_one_round_trip_for_many_rows(self, tmp_path):
        """2,601 exported directories, one worker: one unit, its rows in
        messages of at most ROWS_PER_MESSAGE, each id once, every parent
        a row of the walk."""
        root = many_dirs(tmp_path / "t", 50)
        plan, top = plan_for(root, level=2)
        results: list[UnitResult] = []
        with ScanPool(1) as one:
            one.walk(plan, top, results.append, threading.Event())
        assert [r.final for r in results] == [False] * (len(results) - 1) + [True]
        assert len(results) >= 2
        assert all(len(r.rows) <= ROWS_PER_MESSAGE for r in results)
        rows = [UnitRow(*row) for r in results for row in r.rows]
        ids = {row.id for row in rows}
        assert len(ids) == len(rows) == 1 + 50 + 50 * 50
        assert all(row.parent in ids for row in rows if row.parent is not None)
        assert {row.path for row in rows} == set(du(root, "--max-depth=2"))

    def test_parent_memory_bounded_by_read_ahead(self, tmp_path):
        """A parent slower than its worker holds at most READ_AHEAD of its
        messages; the rest of the rows wait in the worker."""
        root = many_dirs(tmp_path / "t", 100)  # 10,101 rows: 11 messages
        plan, top = plan_for(root, level=2)
        queued: list[int] = []
        with ScanPool(1) as one:

            def slow(_res: UnitResult) -> None:
                time.sleep(0.3)  # the worker could send everything meanwhile
                queued.append(one._done.qsize())  # what the parent holds

            one.walk(plan, top, slow, threading.Event())
        assert len(queued) > READ_AHEAD + 1
        assert max(queued) <= READ_AHEAD

    @pytest.mark.parametrize("engine", ["c", "scandir-rs", "python"])
    def test_streamed_in_process(self, tmp_path, engine):
        """scan_unit with emit: bounded messages, the same rows as without."""
        if not engine_available(engine):
            pytest.skip(f"scan engine {engine} is not built here")
        root = many_dirs(tmp_path / "t", 50)
        plan, top = plan_for(root, level=2, engine=engine)
        sent: list[UnitResult] = []
        last = scan_unit(plan, top, emit=sent.append)
        whole = scan_unit(plan, top)
        assert sent
        assert all(len(r.rows) <= ROWS_PER_MESSAGE and not r.final for r in sent)
        streamed = [r for m in (*sent, last) for r in m.rows]
        assert sorted(streamed) == sorted(whole.rows)
        assert sorted(link for m in (*sent, last) for link in m.links) == sorted(
            whole.links
        )
        assert sum(m.entries for m in (*sent, last)) == whole.entries

    def test_many_rows_equal_du(self, scanner: Scanner, tmp_path):
        """Rows of units split by idle workers, hard links across units."""
        root = many_dirs(tmp_path / "t", 50)
        for level in (1, 2):
            rows = scanner.scan(analyzed_path=str(root), dir_level=level)
            assert du(root, "-B1", f"--max-depth={level}") == sizes(rows, "disk")

    def test_messages_cut_into_small_batches(self, scanner: Scanner, tmp_path):
        """Messages of thousands of rows and links go to SQLite in
        transactions of batch-size, some mixing rows and links."""
        root = many_dirs(tmp_path / "t", 50)
        rows = scanner.scan(analyzed_path=str(root), dir_level=2, batch_size=7)
        assert du(root, "-B1", "--max-depth=2") == sizes(rows, "disk")


def plan_for(root: Path, level: int, engine: str = "auto") -> tuple[Plan, Unit]:
    st = os.stat(root)
    plan = Plan(
        exports=((os.fsencode(root), level),),
        ignore=(),
        one_file_system=False,
        follow_symlinks=False,
        root_dev=st.st_dev,
        engine=engine,
    )
    top = Unit(os.fsencode(root), b"", st.st_blocks * 512, st.st_size,
               st.st_mtime, dev=st.st_dev, ino=st.st_ino, uid=st.st_uid)
    return plan, top


def _walk_whole(root: Path, engine: str, owner_usage: bool) -> UnitResult:
    """One unit over all of ``root`` (no rows below it), in this process."""
    st = os.stat(root)
    plan = Plan(
        exports=((os.fsencode(root), 0),),
        ignore=(),
        one_file_system=False,
        follow_symlinks=False,
        root_dev=st.st_dev,
        engine=engine,
        owner_usage=owner_usage,
    )
    top = Unit(os.fsencode(root), b"", st.st_blocks * 512, st.st_size,
               st.st_mtime, dev=st.st_dev, ino=st.st_ino, uid=st.st_uid)
    return scan_unit(plan, top)


class TestEngines:
    """What the engines are called; owner sums only when asked for."""

    def test_engine_names(self):
        assert "python" == engine_name("python")
        assert "scandir-rs" == engine_name("scandir-rs")
        built = engine_available("c")
        assert ("c" if built else "scandir-rs") == engine_name("auto")
        if built:
            assert "c" == engine_name("c")

    @pytest.mark.parametrize("engine", ["c", "scandir-rs", "python"])
    def test_owner_usage_off_sums_no_owners(self, tmp_path, engine):
        if not engine_available(engine):
            pytest.skip(f"scan engine {engine} is not built here")
        root = rich_tree(tmp_path / "t")
        on = _walk_whole(root, engine, owner_usage=True)
        off = _walk_whole(root, engine, owner_usage=False)
        assert on.owners
        assert {} == off.owners
        assert (on.rows, on.entries, on.links) == (
            off.rows, off.entries, off.links
        )


class TestScandirEngine:
    """scandir-rs reaches entries by path: only inode-checked fields count."""

    def test_directory_covered_by_a_mount(self, tmp_path):
        # scandir-rs resolves /proc/self/fd/N to a path; a mount over that
        # path since the directory was opened shows it other entries of the
        # same names.  The sums must stay those of the opened directory.
        d = tmp_path / "d"
        for name, size in [("a", 50_000), ("b", 3_000)]:
            write(d / name, size)
        (d / "sub").mkdir()
        st = os.stat(d)
        expected = engine_scandir.scan_dir(
            os.fsencode(d), False, True, st.st_dev, st.st_ino, True, False, 0
        )
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=False,
                              capture_output=True).returncode:
                pytest.skip("cannot mount a tmpfs here (not root?)")
            try:
                for name, size in [("a", 1_000_000), ("b", 10)]:
                    write(d / name, size)
                (d / "sub").mkdir()
                got = engine_scandir._scan_fd(fd, st.st_dev, False, True, None)
            finally:
                subprocess.run(["umount", d], check=True)
        finally:
            os.close(fd)
        assert expected is not None
        assert got is not None
        assert expected[:6] == got[:6]
        assert [s[:6] for s in expected[7]] == [s[:6] for s in got[7]]
