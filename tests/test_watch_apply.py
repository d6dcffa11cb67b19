"""Updates in process: real events, random batch boundaries, every
directory (all depths) compared with du after every batch."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time

from pathlib import Path

import pytest

from du_exporter.config import Root
from du_exporter.errors import WatchUnavailableError
from du_exporter.paths import plan_walks
from du_exporter.watch.apply import OneDir, Reader, baseline, update
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


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_every_directory_follows_du_batch_after_batch(kind: str, tmp_path: Path) -> None:
    rng = random.Random(f"apply-{kind}")  # noqa: S311 - reproducible changes
    with private_fs(kind, tmp_path) as mnt:
        root = mnt / "tree"
        root.mkdir()
        seed(root, rng, dirs=150, files=600)
        shutil.rmtree(root / "skipme")
        dirty = Dirty()
        try:
            group = FanotifyGroup(dirty.on_dirs, dirty.on_overflow)
        except WatchUnavailableError as e:
            pytest.skip(str(e))
        try:
            group.mark(os.fsencode(mnt))
            group.start()
            walk = plan_walks([Root(str(root), 2)])[0]
            plan = OneDir(
                exports=walk.exports, ignore=(), one_file_system=False,
                follow_symlinks=False, root_dev=os.stat(root).st_dev,
            )
            tree, _ = baseline(Reader(walk, plan))
            assert all_depths(tree) == du(root, "-B1")
            batches = 0
            for n in range(300):
                _mutate(root, rng, n)
                if rng.random() < 0.8:
                    continue  # batch boundaries fall anywhere
                time.sleep(0.05)  # most, not all, events delivered
                update(tree, Reader(walk, plan), dirty.take())
                batches += 1
            time.sleep(0.3)
            update(tree, Reader(walk, plan), dirty.take())
        finally:
            group.close()
        assert dirty.overflows == 0
        assert batches > 10
        assert all_depths(tree) == du(root, "-B1")


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
