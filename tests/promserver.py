"""A real Prometheus for tests, and the README's snippets it is fed.

Debian's ``prometheus`` (``.ci/run`` installs it) on 127.0.0.1 and a free
port, with a config written by the test; its HTTP API is queried for what
it stored.  The README helpers pull fenced code blocks out of README.md so
that tests run the documented configs and queries themselves.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import clean_env


REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def du_bytes(path: Path) -> int:
    """``du -sB1 path``."""
    out = subprocess.run(
        ["du", "-sB1", str(path)],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout.split()[0])


def prometheus_binary() -> str:
    """The ``prometheus`` binary, or skip the test."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (.ci/run installs it)")
    return binary


class Prometheus:
    """``prometheus`` on 127.0.0.1 with ``config``; killed on exit."""

    def __init__(self, binary: str, workdir: Path, config: dict[str, Any]) -> None:
        workdir.mkdir()
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_file = workdir / "prometheus.log"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.address = self.url.removeprefix("http://")
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={self.address}",
                    # Nothing from /etc: no console templates, no libraries.
                    f"--web.console.templates={workdir / 'consoles'}",
                    f"--web.console.libraries={workdir / 'console_libraries'}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=workdir, env=clean_env(workdir),
            )

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    def get(self, path: str, **params: str) -> Any:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.05)
        msg = f"prometheus never got ready:\n{self.log()}"
        raise AssertionError(msg)

    def query_raw(self, promql: str) -> dict[str, Any]:
        """The API's answer, errors included (a 4xx carries JSON too)."""
        try:
            data: dict[str, Any] = self.get("/api/v1/query", query=promql)
        except urllib.error.HTTPError as e:
            data = json.loads(e.read())
        return data

    def query(self, promql: str) -> dict[frozenset[tuple[str, str]], float]:
        """Instant query: labels -> value of each series."""
        data = self.query_raw(promql)
        assert "success" == data["status"], data
        return {
            frozenset(r["metric"].items()): float(r["value"][1])
            for r in data["data"]["result"]
        }

    def diagnose(self) -> str:
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]
        return f"targets: {json.dumps(targets, indent=1)}\nlog:\n{self.log()}"

    def wait_value(self, promql: str, timeout: float = 30) -> float:
        """The one value of ``promql``, once it has exactly one series."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if len(result) == 1:
                return next(iter(result.values()))
            if time.monotonic() > deadline:
                msg = f"{promql!r} gave {result}; {self.diagnose()}"
                raise AssertionError(msg)
            time.sleep(0.1)

    def wait_equal(
        self, promql: str, expected: float, timeout: float = 30
    ) -> None:
        """Until ``promql`` is one series of value ``expected``."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if list(result.values()) == [expected]:
                return
            if time.monotonic() > deadline:
                msg = (
                    f"{promql!r} gave {result}, expected {expected}; "
                    f"{self.diagnose()}"
                )
                raise AssertionError(msg)
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def prometheus(
    binary: str, workdir: Path, config: dict[str, Any]
) -> Iterator[Prometheus]:
    """Prometheus, ready; always stopped (SIGTERM, then SIGKILL) after."""
    server = Prometheus(binary, workdir, config)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# --- the README's own snippets

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_blocks(lang: str, section: str | None = None) -> list[str]:
    """The fenced ``lang`` blocks of README.md (under ``## section``)."""
    text = README.read_text(encoding="utf-8")
    if section is not None:
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start:end if end >= 0 else None]
    return [m.group(2) for m in _FENCE.finditer(text) if m.group(1) == lang]


def readme_scrape_jobs() -> list[dict[str, Any]]:
    """Every Prometheus scrape job the README shows, parsed."""
    jobs: list[dict[str, Any]] = []
    for block in readme_blocks("yaml"):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and "scrape_configs" in doc:
            jobs.extend(doc["scrape_configs"])
        elif isinstance(doc, list) and doc and "job_name" in doc[0]:
            jobs.extend(doc)
    return jobs


def readme_promql(comment: str, section: str | None = None) -> str:
    """The PromQL after the ``# comment`` line of a README promql block."""
    for block in readme_blocks("promql", section):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("#") and comment in line:
                rest = lines[i + 1:]
                while rest and rest[0].startswith("#"):  # the comment goes on
                    rest.pop(0)
                expr: list[str] = []
                for following in rest:
                    if not following.strip() or following.startswith("#"):
                        break
                    expr.append(following)
                assert expr, f"no PromQL after {line!r}"
                return "\n".join(expr)
    msg = f"no PromQL after a comment with {comment!r} in README.md"
    raise AssertionError(msg)
