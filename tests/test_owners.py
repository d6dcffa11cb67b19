"""owner-usage: bytes per uid below each root, exact like find sums."""

from __future__ import annotations

import os
import subprocess
import sys

from pathlib import Path

import pytest

from prometheus_client.parser import text_string_to_metric_families

from du_exporter.expose.families import user_name
from du_exporter.store.reader import Reader
from helpers import Scanner, clean_env, write


def find_sums(root: Path, fmt: str) -> dict[int, int]:
    """Per uid, each inode once: ``find -printf '%i %U <size>'``."""
    out = subprocess.run(
        ["find", root, "-printf", f"%i %U {fmt}\\n"],
        capture_output=True, text=True, check=True,
    ).stdout
    seen: set[str] = set()
    sums: dict[int, int] = {}
    for line in out.splitlines():
        ino, uid, size = line.split()
        if ino in seen:
            continue
        seen.add(ino)
        sums[int(uid)] = sums.get(int(uid), 0) + int(size)
    return sums


def owned_tree(base: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("chown to other users needs root")
    write(base / "alice" / "a", 30_000)
    write(base / "alice" / "deep" / "b", 5_000)
    write(base / "bob" / "c", 70_000)
    write(base / "shared" / "d", 12_345)
    os.link(base / "bob" / "c", base / "shared" / "c-link")
    (base / "shared" / "sym").symlink_to("../alice/a")
    for path, uid in [
        (base / "alice", 1000), (base / "alice" / "a", 1000),
        (base / "alice" / "deep", 1000), (base / "alice" / "deep" / "b", 1000),
        (base / "bob" / "c", 1001), (base / "shared" / "d", 1001),
    ]:
        os.chown(path, uid, uid)
    os.lchown(base / "shared" / "sym", 1002, 1002)
    return base


class TestOwnerUsage:
    """Per-owner sums equal find's, hard links once."""

    @pytest.mark.parametrize(("mode", "fmt", "column"), [
        ("disk", "%b", 1), ("apparent", "%s", 2),
    ])
    def test_sums_equal_find(self, scanner: Scanner, tmp_path, mode, fmt, column):
        root = owned_tree(tmp_path / "t")
        scanner.scan(analyzed_path=str(root), dir_level=1, owner_usage=True)
        gen = Reader(scanner.db).snapshot().generations[os.fsencode(root)]
        got = {uid: (disk, apparent)[column - 1] for uid, disk, apparent in gen.owners}
        expected = find_sums(root, fmt)
        if mode == "disk":
            expected = {uid: n * 512 for uid, n in expected.items()}
        assert expected == got

    def test_off_by_default(self, scanner: Scanner, tmp_path):
        root = tmp_path / "t"
        write(root / "f", 10)
        scanner.scan(analyzed_path=str(root), dir_level=1)
        assert () == Reader(scanner.db).snapshot().generations[os.fsencode(root)].owners

    def test_exported_per_root(self, tmp_path):
        root = owned_tree(tmp_path / "t")
        out = tmp_path / "o.prom"
        subprocess.run(
            [sys.executable, "-m", "du_exporter", "--mode", "file",
             "--analyzed-path", str(root), "--owner-usage",
             "--output-file", str(out), "--db-path", str(tmp_path / "db")],
            check=True, capture_output=True, env=clean_env(tmp_path),
        )
        samples = {
            (s.labels["uid"], s.labels["user"]): s.value
            for f in text_string_to_metric_families(out.read_text())
            for s in f.samples
            if s.name == "node_disk_usage_owner_bytes"
        }
        expected = {uid: n * 512 for uid, n in find_sums(root, "%b").items()}
        assert {(str(u), user_name(u)): float(n) for u, n in expected.items()} == samples

    def test_user_names(self):
        assert "root" == user_name(0)
        assert "4000000" == user_name(4_000_000)
