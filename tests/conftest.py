"""Shared fixtures: a real scan pool and a scanner writing real SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from du_exporter.scan.pool import ScanPool
from du_exporter.scan.walker import engine_available
from helpers import Scanner


@pytest.fixture(scope="session")
def pool() -> Iterator[ScanPool]:
    """Two real worker processes, shared by the in-process scan tests."""
    with ScanPool(2) as p:
        yield p


@pytest.fixture(name="scanner", params=["c", "scandir-rs", "python"])
def _scanner(
    pool: ScanPool, tmp_path: Path, request: pytest.FixtureRequest
) -> Scanner:
    """A scanner per engine: every scan test runs on each."""
    if not engine_available(request.param):
        pytest.skip(f"scan engine {request.param} is not built here")
    return Scanner(pool, tmp_path / "state" / "du.db", request.param)


@pytest.fixture(name="scanner_auto")
def _scanner_auto(pool: ScanPool, tmp_path: Path) -> Scanner:
    """One scanner with the default engine, for tests the engine cannot
    change (what is done with the stored rows)."""
    return Scanner(pool, tmp_path / "state" / "du.db")
