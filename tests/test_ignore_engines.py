"""``ignore-dirs`` in the C reader: the same entries skipped as Python's
``Ignore``, byte for byte, and the same numbers as GNU du."""

from __future__ import annotations

import os
import random
import subprocess

from pathlib import Path

import pytest

from du_exporter.scan.ignore import Ignore
from du_exporter.scan.walker import engine_available
from exporter import Exporter, sizes
from helpers import Scanner, du, du_labels, write


needs_c = pytest.mark.skipif(
    not engine_available("c"), reason="the C reader is not built here"
)

#: Bytes that mean something to fnmatch, or to UTF-8 (a lead byte, a
#: continuation byte, one that is never valid), and plain ones.
NAME_BYTES = [b"a", b"b", b"z", b"-", b"!", b"^", b"]", b"[", b"\\", b"*",
              b"?", b".", b"\n", b"\xc3", b"\xa9", b"\xff", b"\xc3\xa9"]
PATTERN_PIECES = [*NAME_BYTES, b"*", b"**", b"?", b"[", b"[!", b"]", b"-",
                  b"[a-z]", b"[z-a]", b"[!a]", b"[]]", b"[!]]", b"[a-]",
                  b"[\xc3\xa9]", b"[a-\xc3\xa9]", b"[\xc3\xa9-a]"]
#: Patterns whose sets or literals fnmatch reads in its own way.
EDGE_PATTERNS = [
    b"[]]", b"[!]]", b"[a-]", b"[z-a]", b"a[", b"[", b"[!]", b"[]", b"[]-a]",
    b"[\\]", b"\\*", b"[a-c-e]", b"[--0]", b"[\xc3\xa9-a]", b"[a-\xc3\xa9]",
    b"[[:alpha:]]", b"[&&a]", b"[~~b]", b"[||]", b"[^a]", b"[!a-]", b"*",
    b"**a**", b"?", b"??", b"*\xa9", b"[\xfe-\xff]*", b"*[!\x80-\xff]",
    b"[a-z]*[!a-z]", b"*a*b*", b"a*", b"*.", b"[!!]", b"[-]", b"[!-]",
    b"[*]", b"[?]", b"[[]", b"[a-a]", b"\xff", b"[\xff]",
]


def random_name(rng: random.Random) -> bytes:
    while True:
        name = b"".join(rng.choices(NAME_BYTES, k=rng.randint(1, 5)))
        if name not in {b".", b".."}:
            return name


def random_pattern(rng: random.Random) -> bytes:
    return b"".join(rng.choices(PATTERN_PIECES, k=rng.randint(0, 5)))


def c_kept(directory: bytes, rules: tuple[bytes, ...]) -> set[bytes]:
    """The subdirectories the C reader keeps with ``rules``."""
    from du_exporter.scan import _fastscan

    st = os.stat(directory)
    got = _fastscan.scan_dir(directory, False, False, st.st_dev, st.st_ino,
                             True, False, 0, rules)
    assert 0 == got[10], os.strerror(got[10])
    return {sub[0] for sub in got[7]}


def python_kept(directory: bytes, ignore: Ignore, names: set[bytes]) -> set[bytes]:
    """The names ``Ignore`` keeps (what the Python loop reads)."""
    skip = ignore.for_dir(directory)
    if skip is None:
        return set(names)
    return {n for n in names if not skip(directory + b"/" + n, n)}


@needs_c
class TestSameDecisions:
    """Every pattern x name: the C rules skip what ``Ignore`` skips."""

    @pytest.fixture(name="names_dir")
    def fixture_names_dir(self, tmp_path: Path) -> tuple[bytes, set[bytes]]:
        rng = random.Random(12)  # noqa: S311 - a fixed test sequence
        names = {random_name(rng) for _ in range(400)}
        names |= {b"a", b"]", b"[", b"-", b"\\", b"!", b"\xc3\xa9", b"\xff",
                  b"a[", b"[]]", b"az", b"za", b"\xa9", b"a-", b"^a", b"&",
                  b"|", b"~", b":", b"a\n"}
        directory = os.fsencode(tmp_path / "n")
        os.mkdir(directory)
        for name in names:
            os.mkdir(directory + b"/" + name)
        return directory, names

    def test_names_and_name_globs(
        self, names_dir: tuple[bytes, set[bytes]]
    ) -> None:
        directory, names = names_dir
        rng = random.Random(7)  # noqa: S311 - a fixed test sequence
        patterns = EDGE_PATTERNS + [random_pattern(rng) for _ in range(1500)]
        patterns += [p for p in names if rng.random() < 0.1]  # exact names
        for pattern in patterns:
            if not pattern or b"/" in pattern:
                continue
            ignore = Ignore((pattern,))
            assert python_kept(directory, ignore, names) == c_kept(
                directory, ignore.rules(directory)), pattern

    def test_path_globs(self, names_dir: tuple[bytes, set[bytes]]) -> None:
        """Globs on the whole path, ``*`` matching ``/`` too."""
        directory, names = names_dir
        parent, _, base = directory.rpartition(b"/")
        rng = random.Random(8)  # noqa: S311 - a fixed test sequence
        patterns = [directory + b"/" + p for p in EDGE_PATTERNS]
        patterns += [parent + b"/*/" + p for p in EDGE_PATTERNS]
        patterns += [b"/*" + p for p in EDGE_PATTERNS]
        patterns += [directory[:3] + b"*" + base[-1:] + b"/" + p
                     for p in EDGE_PATTERNS]
        patterns += [directory + b"/" + random_pattern(rng) for _ in range(600)]
        patterns += [parent + b"*" + random_pattern(rng) for _ in range(300)]
        for pattern in patterns:
            ignore = Ignore((pattern,))
            assert python_kept(directory, ignore, names) == c_kept(
                directory, ignore.rules(directory)), pattern

    def test_many_rules_at_once(
        self, names_dir: tuple[bytes, set[bytes]]
    ) -> None:
        """Names, exact paths, name and path globs together."""
        directory, names = names_dir
        rng = random.Random(9)  # noqa: S311 - a fixed test sequence
        some = sorted(names)
        for _ in range(200):
            patterns = (
                *rng.sample(some, 2),
                directory + b"/" + rng.choice(some),
                random_pattern(rng) or b"x",
                directory + b"/" + random_pattern(rng),
            )
            ignore = Ignore(patterns)
            assert python_kept(directory, ignore, names) == c_kept(
                directory, ignore.rules(directory)), patterns

    def test_batch_with_threads(
        self, names_dir: tuple[bytes, set[bytes]]
    ) -> None:
        """``scan_dirs`` (threads sharing the lstats at once) skips the
        same entries as ``scan_dir``, each directory with its own rules."""
        from du_exporter.scan import _fastscan

        directory, names = names_dir
        st = os.stat(directory)
        ignores = [Ignore((p,)) for p in EDGE_PATTERNS]
        dirs = [(directory, False, st.st_dev, st.st_ino, True,
                 ignore.rules(directory)) for ignore in ignores]
        got = _fastscan.scan_dirs(dirs, False, False, 0, 4, 0)
        for ignore, one in zip(ignores, got, strict=True):
            assert python_kept(directory, ignore, names) == {
                sub[0] for sub in one[7]}

    def test_malformed_rules_refused(self, tmp_path: Path) -> None:
        """A rule the reader cannot run is an error, not a wild read."""
        from du_exporter.scan import _fastscan

        st = os.stat(tmp_path)
        for rules in [(b"",), (b"x",), (b"g\x04ab",), (b"p\x01",), (b"g\x09",)]:
            with pytest.raises(ValueError, match="malformed"):
                _fastscan.scan_dir(os.fsencode(tmp_path), False, False,
                                   st.st_dev, st.st_ino, True, False, 0, rules)
        with pytest.raises(TypeError):
            _fastscan.scan_dir(os.fsencode(tmp_path), False, False, st.st_dev,
                               st.st_ino, True, False, 0,
                               [b"na"])  # type: ignore[arg-type]


def ignore_tree(base: Path) -> Path:
    """``.snapshot`` directories at several depths, names that are not
    UTF-8 or hold glob characters, hard links into ignored directories."""
    b = os.fsencode(base)
    files = {
        b"/.snapshot/old": 50_000,
        b"/.snapshot/sub/.snapshot/older": 1_000,
        b"/a/.snapshot/f": 20_000,
        b"/a/b/keep": 3_000,
        b"/a/b/.snapshot/deep/g": 10_000,
        b"/a/snap\xff/f": 7_000,
        b"/a/caf\xc3\xa9/f": 9_000,
        b"/a/x[1]/f": 4_000,
        b"/a/star*/f": 1_000,
        b"/b\xfe/c/.snapshot/f": 5_000,
        b"/b\xfe/c/tmp.1/f": 6_000,
        b"/b\xfe/c/tmp.22/f": 6_500,
        b"/b\xfe/c/tmp.22/.snapshot/f": 600,
    }
    for rel, size in files.items():
        write(Path(os.fsdecode(b + rel)), size)
    for i in range(30):
        write(base / "many" / f"f{i:02d}", i * 300)
        (base / "many" / f"d{i % 10}").mkdir(exist_ok=True)
    # Hard links: du counts an inode where it meets it first, so an
    # ignored name must not take it from the one that is read.
    os.link(b + b"/a/b/keep", b + b"/.snapshot/keep-link")
    os.link(b + b"/a/b/keep", b + b"/a/b/.snapshot/keep-link")
    os.link(b + b"/many/f29", b + b"/b\xfe/c/tmp.1/many-link")
    return base


#: (ignore-dirs, with {root} for the scanned root; the paths removed from
#: the reference copy).
CASES = {
    "name": ([b".snapshot"],
             [b".snapshot", b"a/.snapshot", b"a/b/.snapshot",
              b"b\xfe/c/.snapshot", b"b\xfe/c/tmp.22/.snapshot"]),
    "non-utf8 name": ([b"snap\xff"], [b"a/snap\xff"]),
    "name glob": ([b"tmp.?"], [b"b\xfe/c/tmp.1"]),
    "byte glob": ([b"*\xa9"], [b"a/caf\xc3\xa9"]),
    "set glob": ([b"x[[]1]", b"star[*]"], [b"a/x[1]", b"a/star*"]),
    "path": ([b"{root}/a/b"], [b"a/b"]),
    "path glob across /": ([b"{root}/*/.snapshot"],
                           [b".snapshot/sub/.snapshot", b"a/.snapshot", b"a/b/.snapshot",
                            b"b\xfe/c/.snapshot", b"b\xfe/c/tmp.22/.snapshot"]),
    "non-utf8 path glob": ([b"{root}/b\xfe/c/tmp.[0-9]*"],
                           [b"b\xfe/c/tmp.1", b"b\xfe/c/tmp.22"]),
    "mix": ([b".snapshot", b"tmp.?", b"{root}/a/x[[]1]", b"{root}/b?/*.22",
             b"snap\xff", b"{root}/many/d[1-3]"],
            [b".snapshot", b"a/.snapshot", b"a/b/.snapshot",
             b"b\xfe/c/.snapshot", b"b\xfe/c/tmp.1", b"b\xfe/c/tmp.22",
             b"a/x[1]", b"a/snap\xff", b"many/d1", b"many/d2", b"many/d3"]),
}


def scan_ignoring(
    scanner: Scanner, root: Path, patterns: list[bytes], **values: object
) -> dict[bytes, tuple[int, int, int, int]]:
    rows = scanner.scan(
        analyzed_path=str(root), dir_level=4,
        ignore_dirs=[os.fsdecode(p.replace(b"{root}", os.fsencode(root)))
                     for p in patterns],
        **values,
    )
    return {p: (r.disk, r.apparent, r.files, r.dirs) for p, r in rows.items()}


class TestEngines:
    """Every engine skips the same directories, and du agrees."""

    @pytest.mark.parametrize("case", list(CASES))
    def test_equals_du_without_them(
        self, scanner: Scanner, tmp_path: Path, case: str
    ) -> None:
        """Rows equal du's on a copy of the tree with the ignored paths
        removed, and every row equals the Python engine's."""
        patterns, removed = CASES[case]
        scanned = ignore_tree(tmp_path / "t")
        reference = ignore_tree(tmp_path / "r")
        for victim in removed:
            subprocess.run(["rm", "-rf", os.fsencode(reference) + b"/" + victim],
                           check=True)
        rows = scan_ignoring(scanner, scanned, patterns)
        ref, top = os.fsencode(reference), os.fsencode(scanned)
        for flag, field in (("-B1", 0), ("-b", 1)):
            expected = {p.replace(ref, top, 1): n
                        for p, n in du(reference, flag, "--max-depth=4").items()}
            assert expected == {p: r[field] for p, r in rows.items()}
        python = scan_ignoring(scanner, scanned, patterns, scan_engine="python")
        assert python == rows

    def test_bare_name_equals_du_exclude(
        self, scanner: Scanner, tmp_path: Path
    ) -> None:
        """A bare name is ``du --exclude=NAME`` on the same tree (du
        matches a pattern without ``/`` against each entry's name)."""
        root = ignore_tree(tmp_path / "t")
        rows = scan_ignoring(scanner, root, [b".snapshot"])
        assert du(root, "-B1", "--max-depth=4", "--exclude=.snapshot") == {
            p: r[0] for p, r in rows.items()}

    def test_big_directory_sorted_as_du(
        self, scanner: Scanner, tmp_path: Path
    ) -> None:
        """10,001 names, one ignored: fts still sorts the listing by inode
        (it counts every name read), so a hard link is counted in the
        subdirectory du meets first, not the first one listed."""
        root = tmp_path / "t"
        big = root / "big"
        big.mkdir(parents=True)
        for i in range(9_980):
            (big / f"{i:05d}").touch()
        for i in range(20):
            (big / f"d{i:02d}").mkdir()
        (big / ".snapshot").mkdir()
        listed = [n for n in os.listdir(big) if n.startswith("d")]
        ino = {n: os.stat(big / n).st_ino for n in listed}
        first, second = next(
            (x, y) for k, x in enumerate(listed) for y in listed[k + 1:]
            if ino[x] > ino[y])  # listed first, sorted second
        write(big / first / "f", 40_000)
        os.link(big / first / "f", big / second / "f")
        rows = scan_ignoring(scanner, root, [b".snapshot"])
        expected = du(root, "-B1", "--max-depth=4", "--exclude=.snapshot")
        assert expected[os.fsencode(big / second)] > expected[
            os.fsencode(big / first)]
        assert expected == {p: r[0] for p, r in rows.items()}


@needs_c
class TestCPathUsed:
    """With rules, the C reader still reads every directory: the scan's
    log says how many the Python loop read."""

    @pytest.mark.parametrize(("engine", "python_dirs"), [("c", 0), ("python", None)])
    def test_python_dirs_logged(
        self, tmp_path: Path, engine: str, python_dirs: int | None
    ) -> None:
        root = ignore_tree(tmp_path / "t")
        walked = int(subprocess.run(
            ["find", root, "-path", "*/.snapshot", "-prune", "-o", "-type",
             "d", "-printf", "x"], capture_output=True, check=True,
        ).stdout.count(b"x"))
        args = ["--analyzed-path", str(root), "--scan-engine", engine,
                "--ignore-dirs", f".snapshot,tmp.?,{root}/*/x[[]1]"]
        with Exporter(tmp_path, *args) as exp:
            done = exp.wait_event("scan_completed")
        assert (walked - 2 if python_dirs is None else python_dirs) == done[
            "python_dirs"]

    def test_c_walk_with_nested_roots_and_long_paths(
        self, tmp_path: Path
    ) -> None:
        """Nested roots, ignore-dirs and paths longer than the Python loop
        opens in one call: the whole scan walks in C (the Python loop
        would read the long paths itself), with du's numbers."""
        root = ignore_tree(tmp_path / "t")
        inner = root / "a" / "b"
        deep = Path(os.fsdecode(os.fsencode(inner) + b"/" + b"/".join(
            b"%03d" % i + b"y" * 200 for i in range(17))))
        write(deep / "f", 12_345)
        args = ["--multi-paths", f"{root}=1,{inner}=2", "--scan-engine", "c",
                "--ignore-dirs", ".snapshot"]
        with Exporter(tmp_path, *args) as exp:
            done = exp.wait_event("scan_completed")
            got = sizes(exp.scrape())
        assert (done["python_dirs"], done["unreadable"]) == (0, 0)
        one_walk = du_labels(root, "-B1", "--max-depth=40",
                             "--exclude=.snapshot")
        wanted = {*du_labels(root, "-B1", "--max-depth=1",
                             "--exclude=.snapshot"),
                  *du_labels(inner, "-B1", "--max-depth=2",
                             "--exclude=.snapshot")}
        assert {p: one_walk[p] for p in wanted} == got
