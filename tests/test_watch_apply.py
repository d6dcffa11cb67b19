"""Updates in process: real events, random batch boundaries, every
directory (all depths) compared with du after every batch."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
import time

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from du_exporter.config import Root
from du_exporter.errors import WatchUnavailableError
from du_exporter.paths import plan_walks
from du_exporter.watch.apply import Change, OneDir, Reader, baseline, update
from du_exporter.watch.fanotify import FanotifyGroup
from du_exporter.watch.state import Tree
from helpers import du
from test_watch import _listing, seed
from watchfs import private_fs


class Dirty:
    """What the reader thread delivers, taken in batches by the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dirs: set[bytes] = set()
        self.overflows = 0

    def on_dirs(self, dirs: dict[bytes, int]) -> None:
        with self.lock:
            self.dirs.update(dirs)

    def on_overflow(self) -> None:
        self.overflows += 1

    def take(self) -> set[bytes]:
        with self.lock:
            out, self.dirs = self.dirs, set()
        return out


def all_depths(tree: Tree) -> dict[bytes, int]:
    return {p: d.disk for p, d in tree.dirs.items()}


class Watched:
    """A root followed in process: its fanotify group, the baseline tree,
    and ``sync()`` to apply the events delivered so far."""

    def __init__(self, dirty: Dirty, tree: Tree, reader: Callable[[], Reader]) -> None:
        self.dirty = dirty
        self.tree = tree
        self.reader = reader

    def sync(self) -> Change:
        return update(self.tree, self.reader(), self.dirty.take())


@contextlib.contextmanager
def watching(mnt: Path, root: Path, level: int) -> Iterator[Watched]:
    """Mark ``mnt``'s filesystem, read ``root``'s baseline (dir-level
    ``level``); the group is closed when the block ends."""
    dirty = Dirty()
    try:
        group = FanotifyGroup(dirty.on_dirs, dirty.on_overflow)
    except WatchUnavailableError as e:
        pytest.skip(str(e))
    try:
        group.mark(os.fsencode(mnt))
        group.start()
        walk = plan_walks([Root(str(root), level)])[0]
        plan = OneDir(
            exports=walk.exports, ignore=(), one_file_system=False,
            follow_symlinks=False, root_dev=os.stat(root).st_dev,
        )
        tree, _ = baseline(Reader(walk, plan))
        yield Watched(dirty, tree, lambda: Reader(walk, plan))
    finally:
        group.close()


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_every_directory_follows_du_batch_after_batch(kind: str, tmp_path: Path) -> None:
    rng = random.Random(f"apply-{kind}")  # noqa: S311 - reproducible changes
    with private_fs(kind, tmp_path) as mnt:
        root = mnt / "tree"
        root.mkdir()
        seed(root, rng, dirs=150, files=600)
        shutil.rmtree(root / "skipme")
        with watching(mnt, root, 2) as w:
            assert all_depths(w.tree) == du(root, "-B1")
            batches = 0
            for n in range(300):
                _mutate(root, rng, n)
                if rng.random() < 0.8:
                    continue  # batch boundaries fall anywhere
                time.sleep(0.05)  # most, not all, events delivered
                w.sync()
                batches += 1
            time.sleep(0.3)
            w.sync()
        assert w.dirty.overflows == 0
        assert batches > 10
        assert all_depths(w.tree) == du(root, "-B1")


def _mutate(root: Path, rng: random.Random, n: int) -> None:
    dirs, leaves, files = _listing(root)
    op = rng.choice(["create", "unlink", "append", "move", "move", "rmleaf", "mkdir"])
    try:
        if op == "create":
            (rng.choice(dirs) / f"c{n}").write_bytes(os.urandom(rng.randrange(20000)))
        elif op == "unlink" and files:
            rng.choice(files).unlink()
        elif op == "append" and files:
            with rng.choice(files).open("ab") as f:
                f.write(os.urandom(rng.randrange(1, 40000)))
        elif op == "move":
            # Any directory, not only leaves: subtrees move across parents.
            src, dst = rng.choice(dirs), rng.choice(dirs)
            if src not in (root, dst) and src not in dst.parents:
                src.rename(dst / f"mv{n}")
        elif op == "mkdir":
            (rng.choice(dirs) / f"mk{n}" / "a").mkdir(parents=True)
        elif op == "rmleaf" and len(leaves) > 30:
            shutil.rmtree(rng.choice(leaves))
    except OSError:
        pass  # raced with an earlier change: the next one goes on


def _link_seed(root: Path, rng: random.Random) -> None:
    """A tree where one file in five has names in several directories."""
    seed(root, rng, dirs=60, files=300)
    shutil.rmtree(root / "skipme")
    dirs, _leaves, files = _listing(root)
    for i, f in enumerate(rng.sample(files, 60)):
        for j in range(rng.randrange(1, 4)):
            os.link(f, rng.choice(dirs) / f"h{i}-{j}")


def _link_mutate(root: Path, rng: random.Random, n: int) -> None:
    """Changes around hard links.  A second name is only ever given to a
    file that already has several, or next to the first name (so that
    directory is read): a plain file's first ``ln`` elsewhere is the one
    case that rescans (test below)."""
    dirs, leaves, files = _listing(root)
    linked = [f for f in files if f.lstat().st_nlink > 1]
    op = rng.choice(["create", "unlink", "unlink_link", "append_link", "ln",
                     "ln_here", "move_file", "move_dir", "mkdir", "rmleaf"])
    try:
        if op == "create":
            (rng.choice(dirs) / f"c{n}").write_bytes(os.urandom(rng.randrange(20000)))
        elif op == "unlink" and files:
            rng.choice(files).unlink()
        elif op == "unlink_link" and linked:
            rng.choice(linked).unlink()  # may leave the inode one name
        elif op == "append_link" and linked:
            with rng.choice(linked).open("ab") as f:
                f.write(os.urandom(rng.randrange(1, 40000)))
        elif op == "ln" and linked:
            os.link(rng.choice(linked), rng.choice(dirs) / f"l{n}")
        elif op == "ln_here" and files:
            name = rng.choice(files)
            os.link(name, name.with_name(f"s{n}"))
        elif op == "move_file" and linked:
            rng.choice(linked).rename(rng.choice(dirs) / f"mf{n}")
        elif op == "move_dir":
            # Any directory, holding links or not, across parents.
            src, dst = rng.choice(dirs), rng.choice(dirs)
            if src not in (root, dst) and src not in dst.parents:
                src.rename(dst / f"mv{n}")
        elif op == "mkdir":
            (rng.choice(dirs) / f"mk{n}" / "a").mkdir(parents=True)
        elif op == "rmleaf" and len(leaves) > 20:
            shutil.rmtree(rng.choice(leaves))
    except OSError:
        pass  # raced with an earlier change: the next one goes on


def _both(tree: Tree) -> tuple[dict[bytes, int], dict[bytes, int]]:
    return all_depths(tree), {p: d.apparent for p, d in tree.dirs.items()}


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_hard_links_are_placed_again_without_a_rescan(kind: str, tmp_path: Path) -> None:
    """Storms of creates, deletes, renames, ``ln``, ``rm`` of one name and
    moved directories holding links: after each, every directory equals
    du (bytes and apparent), with no rescan.  Several storms per
    filesystem, each with its own order of events and listings."""
    for round_ in range(4):
        rng = random.Random(f"links-{kind}-{round_}")  # noqa: S311 - reproducible
        (tmp_path / str(round_)).mkdir()
        with private_fs(kind, tmp_path / str(round_)) as mnt:
            root = mnt / "tree"
            root.mkdir()
            _link_seed(root, rng)
            with watching(mnt, root, 2) as w:
                assert _both(w.tree) == (du(root, "-B1"), du(root, "-b"))
                for n in range(150):
                    _link_mutate(root, rng, n)
                    if rng.random() < 0.8:
                        continue  # batch boundaries fall anywhere
                    time.sleep(0.02)
                    w.sync()
                time.sleep(0.3)
                w.sync()
            assert w.dirty.overflows == 0
            assert _both(w.tree) == (du(root, "-B1"), du(root, "-b")), f"round {round_}"
            assert w.tree.links()


def test_a_listing_that_changes_order_moves_the_links_below_it(tmp_path: Path) -> None:
    """ext4 lists a directory in hash order until it holds more than
    10,000 entries, then du (fts) reads it in inode order: two
    subdirectories can swap, and with them which holds an inode's first
    name.  The update re-keys their subtrees and places the inode again."""
    with private_fs("ext4", tmp_path) as mnt:
        root = mnt / "tree"
        big = root / "big"
        big.mkdir(parents=True)
        # Two subdirectories whose listing order and inode order differ.
        made: list[Path] = []
        pair: tuple[Path, Path] | None = None
        for i in range(50):
            s = big / f"s{i}"
            s.mkdir()
            made.append(s)
            order = [big / n for n in os.listdir(big)]
            for a in made[:-1]:
                first, second = sorted((a, s), key=order.index)
                if first.stat().st_ino > second.stat().st_ino:
                    pair = (first, second)
            if pair is not None:
                break
        assert pair is not None
        (pair[1] / "deep").mkdir()
        (pair[1] / "deep" / "f").write_bytes(os.urandom(300_000))
        os.link(pair[1] / "deep" / "f", pair[0] / "g")
        with watching(mnt, root, 3) as w:
            st = os.stat(pair[0] / "g")
            assert w.tree.where[st.st_dev, st.st_ino] is w.tree.dirs[os.fsencode(pair[0])]
            for i in range(10_001):
                (big / f"e{i}").touch()
            time.sleep(0.5)
            change = w.sync()
        assert w.dirty.overflows == 0
        assert _both(w.tree) == (du(root, "-B1"), du(root, "-b"))
        assert w.tree.where[st.st_dev, st.st_ino] is w.tree.dirs[os.fsencode(pair[1] / "deep")]
        # The inode moved without reading the subdirectories again.
        assert change.entries == len(os.listdir(big))
