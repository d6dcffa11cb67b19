"""The release: sdist and wheel from ``python -m build``, the wheel in use.

``python -m build`` makes the sdist and then the wheel from that sdist,
so a file the sdist forgets (setup.py, the C source, LICENSE) breaks the
wheel here rather than for a user.  The wheel is installed into a fresh
venv that has nothing but pip, and run from there: ``--version`` and a
one-shot textfile scan with the C reader required (``--scan-engine c``),
which fails unless the wheel carries the compiled C reader.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile

from email.parser import HeaderParser
from pathlib import Path

import pytest

from exporter import parse
from helpers import clean_env


REPO = Path(__file__).resolve().parent.parent
VERSION = "0.2.0"
# The compiled C reader (du_exporter.scan._fastscan).
C_READER = re.compile(r"^du_exporter/scan/_fastscan\.cpython-[^/]+\.so$")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert 0 == built.returncode, built.stdout[-3000:] + built.stderr[-3000:]
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert 1 == len(found), found
    return found[0]


def test_sdist_has_what_the_wheel_needs(dist: Path) -> None:
    sdist = _one(dist, f"du_exporter-{VERSION}.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.partition("/")[2] for name in tar.getnames()}
    assert {"setup.py", "LICENSE", "pyproject.toml", "README.md"} <= names
    assert [n for n in names if n.endswith("_fastscan.c")], sorted(names)


def test_wheel_metadata_and_c_reader(dist: Path) -> None:
    wheel = _one(dist, f"du_exporter-{VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = f"du_exporter-{VERSION}.dist-info"
        meta = HeaderParser().parsestr(zf.read(f"{info}/METADATA").decode())
    # The C reader is compiled into the wheel (a platform wheel, not
    # py3-none-any); the build falls back silently without a compiler.
    assert [n for n in names if C_READER.match(n)], names
    assert "py3-none-any" not in wheel.name
    assert f"{info}/licenses/LICENSE" in names
    assert "MIT" == meta["License-Expression"]
    assert VERSION == meta["Version"]
    # /browse's style sheet and frames are package data.
    assert {
        "du_exporter/web/browse.css",
        "du_exporter/web/templates/page.html",
        "du_exporter/web/templates/table_head.html",
    } <= set(names)


def _du_s(path: Path) -> int:
    out = subprocess.run(
        ["du", "-sB1", str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def test_wheel_runs_from_a_clean_venv(dist: Path, tmp_path: Path) -> None:
    wheel = _one(dist, f"du_exporter-{VERSION}-*.whl")
    venv = tmp_path / "venv"
    env = clean_env(tmp_path)
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120
    )
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert 0 == pip.returncode, pip.stderr[-3000:]
    exe = venv / "bin" / "du-exporter"

    version = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=60, check=False,
    )
    assert (0, f"du-exporter, version {VERSION}") == (
        version.returncode, version.stdout.strip()
    ), version.stderr

    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "one").write_bytes(b"x" * 5000)
    (tree / "a" / "b" / "two").write_bytes(b"y" * 70000)
    (tree / "three").write_bytes(b"z")
    textfile = tmp_path / "du.prom"
    scan = subprocess.run(
        [str(exe), "--mode", "file", "--output-file", str(textfile),
         "--analyzed-path", str(tree), "--db-path", str(tmp_path / "du.db"),
         "--scan-engine", "c", "--max-procs", "1"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        check=False,
    )
    assert 0 == scan.returncode, scan.stderr
    samples = parse(textfile.read_text())
    root = [
        got for (name, labels), got in samples.items()
        if name == "node_disk_usage_bytes" and dict(labels)["path"] == str(tree)
    ]
    assert [_du_s(tree)] == root
