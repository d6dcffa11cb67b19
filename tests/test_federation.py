"""Scale-out as the README describes it, with real parts throughout.

Three exporters (subprocesses, mode http, free loopback ports) split the
top-level directories of one tree in ``tmp_path``; the third also has a
nested root inside its own directory.  Two site Prometheus servers scrape
them (exporters 1 and 2, exporter 3), each with its ``site`` external
label, and a global Prometheus federates both through ``/federate`` with
the README's ``match[]`` selector and ``honor_labels``.  The README's
"Scaling out" PromQL, run on the global server, must equal ``du -sB1`` of
the walked directories, counting the nested root once.
"""

from __future__ import annotations

import contextlib
import re

from pathlib import Path
from typing import Any

import pytest

from exporter import Exporter, parse
from helpers import run
from promserver import (
    README,
    Prometheus,
    du_bytes,
    prometheus_binary,
    readme_promql,
)


def _federate_selector() -> str:
    """The ``match[]`` selector the README federates with."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"`/federate\?match\[\]=(\{[^`]+\})`", text)
    assert match, "README.md shows no /federate?match[]= selector"
    return match.group(1)


def _tree(root: Path) -> dict[str, Path]:
    """Top-level directories a-d with files, a sparse file, a hard link."""
    layout = {
        "a/x": [10, 70000], "a/y/z": [123456],
        "b": [1, 4097],
        "c/logs": [9000, 9000, 300000],
        "d/projects/alpha/src": [5000, 6000], "d/projects/alpha/doc": [200],
        "d/projects/beta": [80000], "d/home": [12345],
    }
    for sub, sizes in layout.items():
        d = root / sub
        d.mkdir(parents=True)
        for i, size in enumerate(sizes):
            (d / f"f{i}").write_bytes(b"x" * size)
    with (root / "c" / "sparse").open("wb") as f:
        f.seek(20 * 1024 * 1024)
        f.write(b"end")
    (root / "d" / "projects" / "alpha" / "link").hardlink_to(root / "d" / "home" / "f0")
    return {name: root / name for name in "abcd"}


def _job(name: str, *exporters: Exporter) -> dict[str, Any]:
    targets = [e.url.removeprefix("http://") for e in exporters]
    return {"job_name": name, "static_configs": [{"targets": targets}]}


def _config(site: str | None, *jobs: dict[str, Any]) -> dict[str, Any]:
    glob: dict[str, Any] = {
        "scrape_interval": "1s", "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    if site is not None:
        glob["external_labels"] = {"site": site}
    return {"global": glob, "scrape_configs": list(jobs)}


def test_walked_root_names_each_walk_once(tmp_path: Path) -> None:
    """du_exporter_walked_root is 1 per walk; a nested root has none.

    So summing over it counts each byte once, where a sum over level 0
    counts the nested root's bytes twice (mode file, the textfile).
    """
    top = _tree(tmp_path / "tree")
    nested = top["d"] / "projects" / "alpha"
    out = tmp_path / "du.prom"
    roots = f"{top['a']}=1,{top['d']}=1,{nested}=2"

    done = run(
        tmp_path, "--mode", "file", "--output-file", out,
        "--db-path", tmp_path / "du.db", "--multi-paths", roots,
    )

    assert 0 == done.returncode, done.stderr
    samples = parse(out.read_text(encoding="utf-8"))
    walked = {
        dict(labels)["path"]: v
        for (name, labels), v in samples.items()
        if name == "du_exporter_walked_root"
    }
    assert {str(top["a"]): 1, str(top["d"]): 1} == walked
    sizes = {
        dict(labels)["path"]: v
        for (name, labels), v in samples.items()
        if name == "node_disk_usage_bytes" and ("level", "0") in labels
    }
    assert du_bytes(nested) == sizes[str(nested)]
    assert du_bytes(top["a"]) + du_bytes(top["d"]) == sum(
        sizes[p] for p in walked
    )


@pytest.mark.slow
def test_federated_sum_of_walked_roots_equals_du(tmp_path: Path) -> None:
    binary = prometheus_binary()
    top = _tree(tmp_path / "tree")
    nested = top["d"] / "projects" / "alpha"
    owners = {
        1: f"{top['a']}=1,{top['b']}=1",
        2: f"{top['c']}=2",
        3: f"{top['d']}=1,{nested}=2",  # the nested root: one walk with d
    }
    with contextlib.ExitStack() as stack:
        exporters = {}
        for n, multi_paths in owners.items():
            (tmp_path / f"exporter{n}").mkdir()
            exporters[n] = stack.enter_context(Exporter(
                tmp_path / f"exporter{n}",
                "--multi-paths", multi_paths, "--scan-interval-minutes", "0",
            ))
        servers: list[Prometheus] = []
        # Started together: each waits ~5 s for its first target update.
        for name, config in (
            ("site-one", _config("one", _job("du-exporter", exporters[1], exporters[2]))),
            ("site-two", _config("two", _job("du-exporter", exporters[3]))),
        ):
            servers.append(Prometheus(binary, tmp_path / name, config))
            stack.callback(servers[-1].stop)
        federate = {
            **_job("federate"),
            "honor_labels": True,
            "metrics_path": "/federate",
            "params": {"match[]": [_federate_selector()]},
            "static_configs": [{"targets": [s.address for s in servers]}],
        }
        world = Prometheus(binary, tmp_path / "global", _config(None, federate))
        stack.callback(world.stop)
        for server in (*servers, world):
            server.wait_ready()

        expected = {site: sum(du_bytes(top[d]) for d in dirs)
                    for site, dirs in (("one", "abc"), ("two", "d"))}
        total = readme_promql("Usage of everything the exporters walk", "Scaling out")
        per_site = readme_promql("The same per site", "Scaling out")

        world.wait_equal(total, sum(expected.values()), timeout=45)
        assert {
            frozenset({("site", site)}): float(size)
            for site, size in expected.items()
        } == world.query(per_site)
        # Every exporter came through its own site, labels intact, with
        # one walked root per top-level directory it owns.
        walks = {1: 2.0, 2: 1.0, 3: 1.0}
        assert {
            frozenset({("instance", e.url.removeprefix("http://")),
                       ("site", "one" if n < 3 else "two")}): walks[n]
            for n, e in exporters.items()
        } == world.query("count by (instance, site) (du_exporter_walked_root)")
        # The nested root is exported at level 0 too, but not walked.
        assert {} == world.query(f'du_exporter_walked_root{{path="{nested}"}}')
        assert du_bytes(nested) == world.wait_value(
            f'node_disk_usage_bytes{{path="{nested}",level="0"}}'
        )
        assert sum(expected.values()) + du_bytes(nested) == world.wait_value(
            'sum(node_disk_usage_bytes{level="0"})'
        )
