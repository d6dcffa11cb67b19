#!/usr/bin/env python3
"""Render the README's screenshots of the usage browser with real scans.

Builds a small demo tree, starts the real exporter on it, changes the
tree and makes the exporter scan again (SIGUSR1), so the growth since the
previous scan shows; then headless Chromium screenshots ``/browse`` of
the root and the landing page into ``docs/images/``.

    .venv/bin/python scripts/render_images.py [--out docs/images]

Needs ``chromium`` on PATH (Debian: ``apt-get install chromium``) and
the package installed in the running Python (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from collections.abc import Iterator
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
DEMO = Path(tempfile.gettempdir()) / "du-browse-demo"
MIB = 1 << 20

def _when(year: int, month: int, day: int) -> float:
    return time.mktime((year, month, day, 10, 0, 0, 0, 0, -1))


#: Subtrees last touched long ago (the rest is as new as the scan).
AGES: tuple[tuple[str, float], ...] = (
    ("archive/2019", _when(2019, 12, 31)),
    ("archive/2020", _when(2020, 12, 30)),
    ("archive", _when(2020, 12, 30)),
    ("home/ben", _when(2025, 9, 14)),
    ("projects/beta", _when(2025, 3, 2)),
)

#: (path below the root, size in bytes) of the first scan.
FIRST: tuple[tuple[str, int], ...] = (
    ("README.md", 20_000),
    ("projects/alpha/build.tar", 21 * MIB),
    ("projects/alpha/src/main.c", 400_000),
    ("projects/beta/data.bin", 9 * MIB),
    ("projects/gamma/notes.txt", 3 * MIB),
    ("home/ana/photos.zip", 6 * MIB),
    ("home/ben/thesis.pdf", 2 * MIB),
    ("archive/2019/backup.tar", 12 * MIB),
    ("archive/2020/backup.tar", 5 * MIB),
    ("scratch/tmp.bin", 3 * MIB),
    ("logs/app.log", 1_500_000),
)
#: What changes before the second scan: files added (or grown)...
ADDED: tuple[tuple[str, int], ...] = (
    ("projects/alpha/build-2.tar", 4 * MIB),
    ("home/ana/videos.mp4", 3 * MIB),
    ("datasets/census/2020.csv", 7 * MIB),
    ("logs/app.log", 2_100_000),
)
#: ...and removed.
REMOVED = ("scratch", "projects/gamma/notes.txt")


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = b"\0" * MIB
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(block)
        f.write(block[: size % MIB])


def build_tree(root: Path) -> None:
    shutil.rmtree(root.parent, ignore_errors=True)
    for rel, size in FIRST:
        write(root / rel, size)
    # A name that is not UTF-8 (ISO 8859-1 'café'), as on old file servers.
    write(Path(os.fsdecode(os.fsencode(root / "home") + b"/caf\xe9")) / "menu.txt", 300_000)


def age_tree(root: Path) -> None:
    """Set the modification times of AGES, deepest entries first."""
    for rel, when in AGES:
        top = root / rel
        for entry in [*sorted(top.rglob("*"), reverse=True), top]:
            os.utime(entry, (when, when))


def change_tree(root: Path) -> None:
    for rel, size in ADDED:
        write(root / rel, size)
    for rel in REMOVED:
        target = root / rel
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


class Exporter:
    """The real exporter on a free port, JSON log events collected."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "du_exporter", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self.events: list[dict[str, object]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = str(self.wait("listening")["url"])

    def _read(self) -> None:
        assert self.proc.stderr is not None  # noqa: S101 - set by Popen
        for line in self.proc.stderr:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def wait(self, event: str, count: int = 1) -> dict[str, object]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = [e for e in self.events if e.get("event") == event]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.05)
        msg = f"the exporter never logged {event!r} #{count}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


@contextlib.contextmanager
def exporter(config: Path) -> Iterator[Exporter]:
    exp = Exporter(config)
    try:
        yield exp
    finally:
        exp.stop()


def screenshot(url: str, out: Path, size: str, profile: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found (Debian: apt-get install chromium)")
    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--screenshot={out}", f"--window-size={size}", url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    sys.stdout.write(f"wrote {out} ({out.stat().st_size:,} bytes)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()
    root = DEMO / "data"
    build_tree(root)
    age_tree(root)
    config = DEMO / "config.yml"
    config.write_text(
        f"analyzed-path: {root}\ndir-level: 2\nbind-address: 127.0.0.1:0\n"
        f"db-path: {DEMO / 'du.db'}\nscan-interval-minutes: 0\n"
        "keep-generations: 2\nignore-dirs: []\nlog-format: json\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with exporter(config) as exp:
        exp.wait("scan_completed")
        time.sleep(1.1)  # the second scan finishes in another second
        change_tree(root)
        age_tree(root)
        exp.proc.send_signal(signal.SIGUSR1)  # scan now
        exp.wait("scan_completed", 2)
        query = urllib.parse.quote(str(root), safe="/")
        profile = DEMO / "chromium"
        screenshot(
            f"{exp.url}/browse?path={query}", args.out / "browse.png",
            "1200,900", profile,
        )
        screenshot(f"{exp.url}/", args.out / "landing.png", "1200,800", profile)


if __name__ == "__main__":
    main()
