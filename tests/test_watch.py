"""Watch mode end to end: the real exporter, real marks on private
filesystems, mutation storms, every row compared with GNU du."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time

from collections.abc import Callable
from pathlib import Path

import pytest

from du_exporter.paths import unlabel_path
from exporter import Exporter, Samples, parse, value
from helpers import du, run
from watchfs import private_fs


LEVEL = 2


def rows(samples: Samples, family: str = "node_disk_usage_bytes") -> dict[bytes, int]:
    out = {}
    for (name, labels), v in samples.items():
        if name == family:
            out[unlabel_path(dict(labels)["path"])] = int(v)
    return out


def watch(samples: Samples, name: str, root: Path) -> float:
    found = value(samples, f"du_exporter_watch_{name}", path=str(root))
    assert found is not None, f"no du_exporter_watch_{name} for {root}"
    return found


def start(
    tmp_path: Path, root: Path, *args: str, prefix: tuple[str, ...] = ()
) -> Exporter:
    return Exporter(
        tmp_path,
        "--analyzed-path", str(root),
        "--dir-level", str(LEVEL),
        "--scan-interval-minutes", "0",
        "--watch",
        "--watch-delay-seconds", "0.5",
        *args,
        prefix=prefix,
    )


def wait_baseline(exp: Exporter, root: Path) -> Samples:
    exp.wait_event("watch_baseline")
    return exp.wait_for(lambda s: watch(s, "pending_dirs", root) == 0)


def converge(
    exp: Exporter,
    root: Path,
    *du_args: str,
    expected: Callable[[], dict[bytes, int]] | None = None,
    timeout: float = 60,
) -> tuple[Samples, float]:
    """Wait until nothing is pending and every row equals du's; seconds."""
    started = time.monotonic()
    want: dict[bytes, int] = {}

    def done(s: Samples) -> bool:
        nonlocal want
        if watch(s, "pending_dirs", root) != 0:
            return False
        if expected is not None:
            want = expected()
        else:
            want = du(root, "-B1", f"--max-depth={LEVEL}", *du_args)
        return rows(s) == want

    try:
        samples = exp.wait_for(done, timeout)
    except AssertionError:
        got = rows(exp.scrape())
        diff = {p: (got.get(p), want.get(p)) for p in set(got) | set(want)
                if got.get(p) != want.get(p)}
        msg = f"rows never matched du: {diff}"
        raise AssertionError(msg) from None
    return samples, time.monotonic() - started


def seed(root: Path, rng: random.Random, dirs: int = 3000, files: int = 20_000) -> None:
    made = [root]
    for i in range(dirs):
        d = rng.choice(made) / f"d{i}"
        d.mkdir()
        made.append(d)
    for i in range(files):
        (rng.choice(made) / f"f{i}").write_bytes(b"s" * rng.randrange(0, 20000))
    (root / "skipme").mkdir()
    (root / "skipme" / "big").write_bytes(b"x" * 100_000)


def _listing(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Directories, leaf directories and regular files, skipme excluded."""
    dirs: list[Path] = []
    leaves: list[Path] = []
    files: list[Path] = []
    for p, ds, fs in os.walk(root):
        here = Path(p)
        if "skipme" in here.parts:
            continue
        dirs.append(here)
        if not ds:
            leaves.append(here)
        files.extend(here / f for f in fs if not (here / f).is_symlink())
    return dirs, leaves, files


def storm(root: Path, rng: random.Random, changes: int) -> None:
    """``changes`` random mutations of every kind a tree sees."""
    n = 0
    dirs, leaves, files = _listing(root)
    while n < changes:
        if n % 20 == 0:
            dirs, leaves, files = _listing(root)
        op = rng.choice(
            ["create", "create", "delete", "append", "truncate", "mkdir",
             "rmtree", "rename_dir", "rename_file", "symlink", "ignored"]
        )
        try:
            if op == "create":
                (rng.choice(dirs) / f"n{n}").write_bytes(os.urandom(rng.randrange(0, 50000)))
            elif op == "delete":
                rng.choice(files).unlink()
            elif op == "append":
                with rng.choice(files).open("ab") as f:
                    f.write(os.urandom(rng.randrange(1, 30000)))
            elif op == "truncate":
                os.truncate(rng.choice(files), rng.randrange(0, 3000))
            elif op == "mkdir":
                deep = rng.choice(dirs) / f"m{n}" / "a" / "b"
                deep.mkdir(parents=True)
                (deep / "f").write_bytes(b"y" * rng.randrange(0, 9000))
            elif op == "rmtree":
                shutil.rmtree(rng.choice(leaves))
            elif op == "rename_dir":
                # Across parents; a moved directory is read whole where it
                # lands, so move small ones as most renames are.
                src = rng.choice(leaves)
                dst = rng.choice(dirs)
                if src in (root, dst) or src in dst.parents:
                    continue
                src.rename(dst / f"r{n}")
            elif op == "rename_file":
                rng.choice(files).rename(rng.choice(dirs) / f"rf{n}")
            elif op == "symlink":
                (rng.choice(dirs) / f"l{n}").symlink_to("../somewhere/else")
            else:
                (root / "skipme" / f"i{n}").write_bytes(b"z" * 4096)
        except OSError:
            continue  # a stale listing: something already moved or gone
        n += 1


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_a_storm_of_changes_converges_to_du(kind: str, tmp_path: Path) -> None:
    """~400 mixed changes: every row equals du's once they are applied,
    and they cost fewer entries than one full scan."""
    rng = random.Random(f"watch-{kind}")  # noqa: S311 - a reproducible storm
    with private_fs(kind, tmp_path) as mnt:
        root = mnt / "tree"
        root.mkdir()
        seed(root, rng)
        with start(tmp_path, root, "--ignore-dirs", "skipme") as exp:
            wait_baseline(exp, root)
            converge(exp, root, "--exclude=skipme")
            before = exp.scrape()
            storm(root, rng, 400)
            samples, _seconds = converge(exp, root, "--exclude=skipme")
            entries = watch(samples, "entries_total", root) - watch(
                before, "entries_total", root
            )
            full = value(samples, "du_exporter_scan_entries", path=str(root))
            assert full is not None
            assert entries < full
            assert watch(samples, "updates_total", root) > watch(before, "updates_total", root)
            assert watch(samples, "events_total", root) > 0
            assert watch(samples, "active", root) == 1
            scans = value(samples, "du_exporter_scans_total", path=str(root), result="success")
            assert scans == 1  # publications are not scans


def test_new_deleted_and_renamed_directories(tmp_path: Path) -> None:
    """A new directory at dir-level appears, a deleted one disappears, a
    renamed subtree moves: the rows follow, file counts too."""
    with private_fs("tmpfs", tmp_path) as mnt:
        root = mnt / "r"
        (root / "a" / "deep" / "er").mkdir(parents=True)
        (root / "a" / "deep" / "er" / "f").write_bytes(b"x" * 50_000)
        (root / "gone").mkdir()
        with start(tmp_path, root) as exp:
            wait_baseline(exp, root)
            (root / "new" / "sub").mkdir(parents=True)
            shutil.rmtree(root / "gone")
            (root / "a" / "deep").rename(root / "new" / "moved")
            samples, _ = converge(exp, root)
            got = rows(samples)
            assert os.fsencode(root / "gone") not in got
            assert os.fsencode(root / "a" / "deep") not in got
            assert os.fsencode(root / "new" / "moved") in got
            files = rows(samples, "node_disk_usage_file_count")
            assert files[os.fsencode(root / "new")] == 1
            assert files[os.fsencode(root / "a")] == 0


def test_the_database_inside_the_root_does_not_drive_publications(
    tmp_path: Path,
) -> None:
    with private_fs("tmpfs", tmp_path) as mnt:
        root = mnt / "r"
        (root / "d").mkdir(parents=True)
        db = root / "state" / "du.db"
        with start(tmp_path, root, "--db-path", str(db)) as exp:
            wait_baseline(exp, root)
            (root / "d" / "f").write_bytes(b"x" * 10_000)
            exp.wait_for(lambda s: rows(s).get(os.fsencode(root / "d"), 0) > 10_000)
            time.sleep(2)
            first = watch(exp.scrape(), "updates_total", root)
            time.sleep(3)
            assert watch(exp.scrape(), "updates_total", root) == first


def test_a_plain_files_first_link_elsewhere_falls_back_to_a_rescan(tmp_path: Path) -> None:
    """``ln a/f b/g`` of a file of one link raises an event in b only,
    and a counted f as a plain file: the root is rescanned, and the
    numbers are du's.  Changes next to the link after that are placed
    without one."""
    with private_fs("tmpfs", tmp_path) as mnt:
        root = mnt / "r"
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "a" / "f").write_bytes(b"x" * 200_000)
        with start(tmp_path, root) as exp:
            wait_baseline(exp, root)
            os.link(root / "a" / "f", root / "b" / "g")
            samples, _ = converge(exp, root)
            reason = {"path": str(root), "reason": "hardlink"}
            exp.wait_for(lambda s: (value(s, "du_exporter_watch_rescans_total", **reason) or 0) >= 1)
            samples, _ = converge(exp, root)
            assert value(samples, "du_exporter_scans_total", path=str(root), result="success") == 2
            # Changes next to the link: placed again, no rescan.
            (root / "a" / "f").unlink()
            (root / "b" / "h").write_bytes(b"y" * 30_000)
            samples, _ = converge(exp, root)
            assert value(samples, "du_exporter_watch_rescans_total", **reason) == 1
            assert value(samples, "du_exporter_scans_total", path=str(root), result="success") == 2


def _append(path: Path, size: int) -> None:
    with path.open("ab") as f:
        f.write(b"y" * size)


def _move(src: Path, dst: Path) -> None:
    src.rename(dst)


def test_hard_links_move_without_a_rescan_reading_only_what_is_named(
    tmp_path: Path,
) -> None:
    """On ext4, with names of one inode in four directories: removing
    the first name, linking it again, moving a directory that holds one
    and appending through one re-place it with no rescan, and each
    publication reads only the entries of the directories it names."""
    with private_fs("ext4", tmp_path) as mnt:
        root = mnt / "r"
        names = [root / "a" / "f", root / "b" / "x" / "g", root / "c" / "h", root / "d" / "i"]
        for p in names:
            p.parent.mkdir(parents=True, exist_ok=True)
        names[0].write_bytes(b"x" * 300_000)
        for p in names[1:]:
            os.link(names[0], p)
        for name in ("a", "b", "c", "d"):
            (root / name / "other").write_bytes(b"o" * 5_000)
        with start(tmp_path, root) as exp:
            wait_baseline(exp, root)
            converge(exp, root)

            def step(change: Callable[[], None], named: list[Path]) -> None:
                before = exp.scrape()
                change()
                published = watch(before, "updates_total", root)
                exp.wait_for(lambda s: watch(s, "updates_total", root) > published)
                samples, _ = converge(exp, root)
                read = watch(samples, "entries_total", root) - watch(
                    before, "entries_total", root
                )
                assert 0 < read <= sum(len(os.listdir(p)) for p in named)

            # Named directories, then those holding the inode's other
            # names (read for their per-name numbers, once each).
            a, c, d = root / "a", root / "c", root / "d"
            step(names[0].unlink, [a])
            step(lambda: os.link(names[2], a / "back"), [a, root / "b" / "x", c, d])
            step(lambda: _move(root / "b" / "x", d / "x"), [root / "b", d, d / "x", a, c])
            step(lambda: _append(c / "h", 100_000), [c, a, d, d / "x"])
            step((d / "i").unlink, [d])
            samples = exp.scrape()
            assert value(samples, "du_exporter_watch_rescans_total",
                         path=str(root), reason="hardlink") in (None, 0)
            assert value(samples, "du_exporter_scans_total", path=str(root),
                         result="success") == 1


def test_an_unsupported_filesystem_leaves_interval_scans(tmp_path: Path) -> None:
    """ramfs cannot report file handles: one warning, watch_active 0,
    and the scan's numbers are served as without watch."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], check=False).returncode:
        pytest.skip("cannot mount a ramfs here")
    try:
        (mnt / "d").mkdir()
        (mnt / "d" / "f").write_bytes(b"x" * 5000)
        with start(tmp_path, mnt) as exp:
            samples = exp.wait_for(lambda s: bool(rows(s)))
            warning = exp.wait_event("watch_unavailable")
            assert "not supported" in str(warning["reason"])
            assert watch(samples, "active", mnt) == 0
            assert len([e for e in exp.events if e.get("event") == "watch_unavailable"]) == 1
            assert not any("Traceback" in line for line in exp.lines)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_without_cap_sys_admin_watch_is_off_with_one_warning(tmp_path: Path) -> None:
    with private_fs("tmpfs", tmp_path) as mnt:
        (mnt / "d").mkdir()
        drop = ("setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--")
        if shutil.which("setpriv") is None:
            pytest.skip("no setpriv")
        with start(tmp_path, mnt, prefix=drop) as exp:
            samples = exp.wait_for(lambda s: bool(rows(s)))
            warning = exp.wait_event("watch_unavailable")
            assert "CAP_SYS_ADMIN" in str(warning["reason"])
            assert watch(samples, "active", mnt) == 0
            assert rows(samples) == du(mnt, "-B1", f"--max-depth={LEVEL}")


@pytest.mark.serial
def test_a_queue_overflow_warns_once_and_rescans(tmp_path: Path) -> None:
    """fs.fanotify.max_queued_events lowered while the exporter starts
    (restored at once): a burst overflows the queue; one warning,
    watch_active 0, a full rescan, then exact numbers and active again."""
    knob = Path("/proc/sys/fs/fanotify/max_queued_events")
    try:
        saved = knob.read_text()
    except OSError:
        pytest.skip("no fs.fanotify.max_queued_events")
    with private_fs("tmpfs", tmp_path) as mnt:
        (mnt / "d").mkdir()
        try:
            knob.write_text("4\n")
            exp = start(tmp_path, mnt)
            try:
                exp.wait_event("watch_started")  # the group exists: restore
            except AssertionError:
                exp.__exit__(None, None, None)
                raise
        finally:
            knob.write_text(saved)
        with exp:
            wait_baseline(exp, mnt)
            for i in range(3000):
                (mnt / "d" / f"f{i}").write_bytes(b"x" * 100)
            exp.wait_event("watch_overflow")
            samples, _ = converge(exp, mnt)
            exp.wait_for(lambda s: watch(s, "active", mnt) == 1)
            reason = {"path": str(mnt), "reason": "overflow"}
            assert (value(samples, "du_exporter_watch_rescans_total", **reason) or 0) >= 1
            assert (value(samples, "du_exporter_scans_total", path=str(mnt), result="success") or 0) >= 2
            # One warning per overflow, not per lost event: each is
            # followed by its rescan (the queue stays this small, so a
            # burst on a loaded machine may overflow it again after).
            warnings = [e for e in exp.events if e.get("event") == "watch_overflow"]
            assert len(warnings) == value(samples, "du_exporter_watch_rescans_total", **reason)


def test_watch_needs_mode_http(tmp_path: Path) -> None:
    done = run(tmp_path, "--mode", "file", "--watch", "--analyzed-path", str(tmp_path))
    assert done.returncode == 2
    assert "'watch'" in done.stderr
    assert "mode http" in done.stderr
    assert "Traceback" not in done.stderr


def test_watch_from_the_environment_and_follow_symlinks(tmp_path: Path) -> None:
    env = {"DU_EXPORTER_WATCH": "true"}
    done = run(tmp_path, "check-config", "--follow-symlinks", env=env)
    assert done.returncode == 2
    assert "follow-symlinks" in done.stderr
    done = run(tmp_path, "check-config", "--watch-delay-seconds", "0.25", env=env)
    assert done.returncode == 0, done.stderr
    assert "watch: true" in done.stdout
    assert "watch-delay-seconds: 0.25" in done.stdout


def test_nested_roots_and_a_filesystem_mounted_inside(tmp_path: Path) -> None:
    """A nested root exports deeper; a tmpfs mounted inside the root is
    walked (no one-file-system) and marked too: changes on both follow."""
    with private_fs("tmpfs", tmp_path) as mnt:
        root = mnt / "r"
        inner = root / "a"
        (inner / "b" / "c" / "d").mkdir(parents=True)
        (root / "x").mkdir()
        with private_fs("tmpfs", root / "x") as sub:
            (sub / "s1" / "s2").mkdir(parents=True)

            def expected() -> dict[bytes, int]:
                return {**du(root, "-B1", "--max-depth=1"), **du(inner, "-B1", "--max-depth=3")}

            with Exporter(
                tmp_path,
                "--multi-paths", f"{root}=1,{inner}=3",
                "--scan-interval-minutes", "0",
                "--watch", "--watch-delay-seconds", "0.5",
            ) as exp:
                exp.wait_event("watch_baseline")
                converge(exp, root, expected=expected)
                (inner / "b" / "c" / "d" / "f").write_bytes(b"x" * 70_000)
                (inner / "b" / "c" / "new").mkdir()
                (sub / "s1" / "s2" / "g").write_bytes(b"y" * 90_000)
                (sub / "s1" / "t").mkdir()
                samples, _ = converge(exp, root, expected=expected)
                assert watch(samples, "active", inner) == 1
                assert os.fsencode(inner / "b" / "c" / "new") in rows(samples)


def directory_families(samples: Samples) -> Samples:
    """Every directory family (sizes, counts, mtimes, histogram, owners)."""
    return {
        key: v for key, v in samples.items()
        if key[0].startswith("node_disk_usage")
    }


def test_publications_equal_a_full_scan_in_every_family(tmp_path: Path) -> None:
    """Counts, newest mtimes, the histogram and the owner sums a watch
    publication serves are what a full scan of the same tree gives, hard
    links placed again included."""
    rng = random.Random("families")  # noqa: S311 - a reproducible storm
    with private_fs("ext4", tmp_path) as mnt:
        root = mnt / "tree"
        root.mkdir()
        seed(root, rng, dirs=200, files=2000)
        shutil.rmtree(root / "skipme")
        dirs, _leaves, files = _listing(root)
        for i, f in enumerate(rng.sample(files, 100)):  # names placed again
            os.link(f, rng.choice(dirs) / f"h{i}")
        with start(tmp_path, root, "--owner-usage") as exp:
            wait_baseline(exp, root)
            storm(root, rng, 150)
            os.chown(next(root.glob("d*")), 1234, 1234)
            for f in list(root.rglob("n*"))[:5]:
                os.chown(f, 4321, 4321, follow_symlinks=False)
            converge(exp, root)
            served = directory_families(exp.scrape())
        out = tmp_path / "scan.prom"
        done = run(
            tmp_path, "--mode", "file", "--analyzed-path", root,
            "--dir-level", str(LEVEL), "--owner-usage",
            "--db-path", tmp_path / "other.db", "--output-file", out,
        )
        assert done.returncode == 0, done.stderr
        scanned = directory_families(parse(out.read_text()))
    assert served == scanned


@pytest.mark.parametrize("one_fs", [False, True])
def test_a_filesystem_mounted_inside_a_root_after_start(tmp_path: Path, one_fs: bool) -> None:
    """A tmpfs mounted inside a watched root after the baseline is marked
    (polled from /proc/self/mountinfo) and walked; files written into it
    right away and later follow, and so does its unmount, which watching
    does not keep busy.  With one-file-system it is not walked, and rows
    equal ``du -x``."""
    args = ("--one-file-system",) if one_fs else ()
    du_args = ("-x",) if one_fs else ()
    with private_fs("tmpfs", tmp_path) as mnt:
        root = mnt / "r"
        (root / "x" / "old").mkdir(parents=True)
        (root / "x" / "old" / "under").write_bytes(b"u" * 40_000)
        with start(tmp_path, root, *args) as exp:
            wait_baseline(exp, root)
            converge(exp, root, *du_args)
            with private_fs("tmpfs", root / "x") as sub:
                (sub / "a" / "b").mkdir(parents=True)
                (sub / "a" / "b" / "f").write_bytes(b"y" * 90_000)
                samples, _ = converge(exp, root, *du_args)
                inside = os.fsencode(root / "x")
                assert (rows(samples)[inside] > 90_000) is not one_fs
                exp.wait_event("watch_mounts_changed")
                (sub / "a" / "later").write_bytes(b"z" * 70_000)
                (sub / "a" / "b" / "f").unlink()
                converge(exp, root, *du_args)
                # Watching does not keep the filesystem busy.
                done = subprocess.run(["umount", str(sub)], capture_output=True,
                                      text=True, check=False)
                assert done.returncode == 0, done.stderr
                samples, _ = converge(exp, root, *du_args)
                assert rows(samples)[inside] < 90_000
            assert watch(samples, "active", root) == 1
            assert value(samples, "du_exporter_scans_total", path=str(root), result="success") == 1


def _fanotify_fds(pid: int) -> int:
    """fanotify groups the process holds open (its fdinfo says so)."""
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            count += "fanotify flags:" in info.read_text()
    return count


def _fds_into(pid: int, where: Path) -> int:
    """Descriptors the process holds open on ``where`` or below."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith(str(where))
    return count


def test_sighup_turns_watch_on_and_off(tmp_path: Path) -> None:
    """A reload that sets ``watch`` false stops following (no
    du_exporter_watch_active 1, no fanotify group, no descriptor into
    the root left); true again follows changes at once, several times
    over."""
    with private_fs("tmpfs", tmp_path) as mnt:
        root = mnt / "r"
        (root / "a").mkdir(parents=True)
        cfg = tmp_path / "c.yml"
        base = (f"analyzed-path: {root}\ndir-level: {LEVEL}\n"
                "scan-interval-minutes: 0\nwatch-delay-seconds: 0.5\n")
        cfg.write_text(base + "watch: true\n")
        with Exporter(tmp_path, "--config", str(cfg)) as exp:
            pid = exp.proc.pid
            wait_baseline(exp, root)
            assert _fanotify_fds(pid) == 1
            for n in range(1, 4):
                cfg.write_text(base + "watch: false\n")
                exp.signal(signal.SIGHUP)
                exp.wait_event("reloaded", 2 * n - 1)
                samples = exp.scrape()
                assert value(samples, "du_exporter_watch_active", path=str(root)) in (None, 0)
                assert _fanotify_fds(pid) == 0
                assert _fds_into(pid, mnt) == 0
                cfg.write_text(base + "watch: true\n")
                exp.signal(signal.SIGHUP)
                exp.wait_event("reloaded", 2 * n)
                exp.wait_event("watch_baseline", n + 1)
                samples = exp.wait_for(lambda s: watch(s, "active", root) == 1)
                assert _fanotify_fds(pid) == 1
                (root / "a" / f"f{n}").write_bytes(b"x" * 30_000 * n)
                converge(exp, root)
            samples = exp.scrape()
            assert value(samples, "du_exporter_scans_total", path=str(root), result="success") == 1


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_bind_mount_of_an_ancestor_is_a_cycle_counted_nowhere(tmp_path: Path) -> None:
    """``mount --bind ROOT ROOT/a/b`` (and of ``ROOT/a`` below itself)
    after the baseline: like du, the cycle is neither walked nor counted
    (a re-read directory knows its ancestors), a write through the bind
    mount is counted once, and the rows follow the unmount.  Same for a
    directory moved in whose subtree holds such a mount."""
    with private_fs("ext4", tmp_path) as mnt:
        root = mnt / "r"
        (root / "a" / "b" / "c").mkdir(parents=True)
        (root / "a" / "f").write_bytes(b"f" * 50_000)
        (root / "top").write_bytes(b"t" * 30_000)
        outside = mnt / "x"
        (outside / "y" / "z").mkdir(parents=True)
        (outside / "y" / "g").write_bytes(b"g" * 20_000)
        mounts = 0
        with start(tmp_path, root) as exp:
            wait_baseline(exp, root)
            converge(exp, root)
            for source, point in (
                (root, root / "a" / "b"),
                (root / "a", root / "a" / "b" / "c"),
            ):
                _mount("--bind", str(source), str(point))
                mounts += 1
                exp.wait_event("watch_mounts_changed", mounts)
                samples, _ = converge(exp, root)
                assert os.fsencode(point) not in rows(samples)
                (point / "through").write_bytes(b"w" * 70_000)  # counted once
                converge(exp, root)
                _umount(point)
                mounts += 1
                exp.wait_event("watch_mounts_changed", mounts)
                (source / "through").unlink()
                converge(exp, root)
            assert os.fsencode(root / "a" / "b") in rows(exp.scrape())
            _mount("--bind", str(root), str(outside / "y" / "z"))
            moved = root / "a" / "in"
            outside.rename(moved)
            samples, _ = converge(exp, root)
            assert rows(samples)[os.fsencode(root / "a")] < 2 * 50_000 + 20_000 + 30_000
            # The mount came in with the directory, no mount event: the
            # table is read again after the update that walked it.
            mounts += 1
            assert exp.wait_event("watch_mounts_changed", mounts)["mounted"] == [
                os.fsdecode(moved / "y" / "z")]
            _umount(moved / "y" / "z")
            mounts += 1
            exp.wait_event("watch_mounts_changed", mounts)
            converge(exp, root)
            assert watch(exp.scrape(), "active", root) == 1
            assert value(samples, "du_exporter_scans_total", path=str(root), result="success") == 1
