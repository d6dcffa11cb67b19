"""The container image, built from the Dockerfile and run, with podman.

No container registry is needed.  The Dockerfile's base image is an
``ARG``: here it is a stand-in built from Debian's own packages
(mmdebstrap, then ``podman import``), so the test proves the Dockerfile
rather than the upstream python image.  pip inside the build sees the
host's pip settings (index, mirrors, certificate bundle, local wheel
directories) and the host's CA bundle, so it resolves exactly as the
host's pip does.  Those mounts leave empty mount points (such as an empty
/etc/pip.conf) in the test image; the image users build has none.

podman runs rootful with runc and cgroupfs, its storage in a temporary
directory.  ``.ci/run`` installs podman, mmdebstrap and runc; without
podman the test is skipped.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter import Samples, parse


REPO = Path(__file__).resolve().parent.parent
PODMAN = shutil.which("podman")
BASE = "localhost/du-exporter-test-base:bookworm"
IMAGE = "localhost/du-exporter:test"
# The stand-in for python:3.11-slim-bookworm: python and venv on Debian
# bookworm, plus python3-dev so the Dockerfile's header check is exercised
# on the branch the upstream image takes (headers present).
BASE_PACKAGES = (
    "python3", "python3-venv", "python3-pip", "python-is-python3",
    "python3-dev", "ca-certificates",
)
APT_SOURCES = (
    Path("/etc/apt/sources.list.d/debian.sources"),
    Path("/etc/apt/sources.list"),
)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

pytestmark = pytest.mark.skipif(
    PODMAN is None,
    reason="podman is not installed (.ci/run installs podman, mmdebstrap, runc)",
)


@dataclass
class Podman:
    """podman with its configuration and storage in one directory."""

    env: dict[str, str]
    times: dict[str, float]

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert PODMAN is not None
        out = subprocess.run(
            [PODMAN, *args], capture_output=True, text=True, env=self.env,
            timeout=timeout, check=False,
        )
        if check and out.returncode != 0:
            msg = f"podman {' '.join(args)}: exit {out.returncode}\n{out.stderr[-4000:]}"
            raise AssertionError(msg)
        return out


def _containers_conf(home: Path) -> str:
    # crun fails on cgroup v1 with a hybrid v2 mount: runc works.  Without
    # explicit ulimits podman run cannot start the container there.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = "1048576" if hard == resource.RLIM_INFINITY else str(hard)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'tmp_dir = "{home / "tmp"}"\n'
    )


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    home = tmp_path_factory.mktemp("podman")
    (home / "containers.conf").write_text(_containers_conf(home))
    (home / "storage.conf").write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'runroot = "{home / "run"}"\n'
        f'graphroot = "{home / "storage"}"\n'
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DU_EXPORTER_")},
        "CONTAINERS_CONF": str(home / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
    }
    pm = Podman(env, {})
    try:
        yield pm
    finally:
        pm.run("system", "reset", "--force", check=False, timeout=300)
        shutil.rmtree(home, ignore_errors=True)


def _apt_sources() -> Path:
    for path in APT_SOURCES:
        if path.is_file():
            return path
    pytest.fail("no apt sources file on this host: the base image needs one")


@pytest.fixture(scope="module")
def base_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    mmdebstrap = shutil.which("mmdebstrap")
    assert mmdebstrap is not None, "podman without mmdebstrap: install both"
    tarball = tmp_path_factory.mktemp("base") / "base.tar"
    start = time.monotonic()
    out = subprocess.run(
        [mmdebstrap, "--quiet", "--variant=minbase",
         "--include=" + ",".join(BASE_PACKAGES),
         "bookworm", str(tarball), str(_apt_sources())],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert 0 == out.returncode, out.stderr[-4000:]
    podman.run("import", str(tarball), BASE)
    tarball.unlink()
    podman.times["base image"] = time.monotonic() - start
    return BASE


def _pip_settings() -> dict[str, str]:
    """The host pip's effective settings, files and PIP_* variables merged."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    settings: dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        section, _, name = key.rpartition(".")
        # PIP_FOO (":env:.foo") applies to every command, like [global].
        if section in {"global", ":env:"}:
            settings[name] = str(ast.literal_eval(raw))
    return settings


def _host_paths(settings: dict[str, str]) -> set[Path]:
    """Local files and directories the settings name (file:// included).

    A local index (``file:///srv/pypi/simple``) usually links its files
    relative to itself (``../files/...``): its parent goes in whole.
    """
    found: set[Path] = set()
    for setting in settings.values():
        for word in setting.split():
            text = word.removeprefix("file://")
            path = Path(text)
            if text.startswith("/") and path.exists():
                found.add(path.parent if word.startswith("file://") else path)
    return found


@pytest.fixture(scope="module")
def image(podman: Podman, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    settings = _pip_settings()
    conf = tmp_path_factory.mktemp("pip") / "pip.conf"
    conf.write_text(
        "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items()))
    )
    # Inside the build at the paths the settings name; target -> source.
    mounts = {p: p.resolve() for p in _host_paths(settings)}
    mounts[Path("/etc/pip.conf")] = conf
    ca = Path(os.environ.get("SSL_CERT_FILE", CA_BUNDLE))
    if ca.is_file():
        mounts[CA_BUNDLE] = ca.resolve()
    start = time.monotonic()
    podman.run(
        "build", "--pull=never", "--format", "docker", "--network=host",
        "--build-arg", f"BASE_IMAGE={base_image}",
        *(arg for dst, src in sorted(mounts.items())
          for arg in ("--volume", f"{src}:{dst}:ro")),
        "--tag", IMAGE, str(REPO),
        timeout=1200,
    )
    podman.times["image build"] = time.monotonic() - start
    return IMAGE


def _du(path: Path) -> dict[Path, int]:
    """``du -B1``: every directory below ``path``, from one walk."""
    out = subprocess.run(
        ["du", "-B1", str(path)], capture_output=True, text=True, check=True
    )
    return {
        Path(name): int(size)
        for size, _, name in (line.partition("\t") for line in out.stdout.splitlines())
    }


def _du_s(path: Path) -> int:
    out = subprocess.run(
        ["du", "-sB1", str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def _tree(root: Path) -> Path:
    """A small tree uid 65532 (the image's user) can read."""
    tree = root / "tree"
    for rel, size in (("a/one", 5000), ("a/b/two", 70000), ("c/three", 1),
                      ("four", 12288), ("c/d/e/five", 300000)):
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    os.link(tree / "a" / "one", tree / "c" / "one-again")
    with (tree / "a" / "sparse").open("wb") as sparse:
        sparse.truncate(1 << 20)
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return tree


class Container:
    """``podman run`` in the foreground; its JSON log lines collected."""

    def __init__(self, podman: Podman, name: str, *args: str) -> None:
        assert PODMAN is not None
        self.podman = podman
        self.name = name
        self.proc = subprocess.Popen(
            [PODMAN, "run", "--rm", "--name", name, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=podman.env,
        )
        self.events: list[dict[str, object]] = []
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self.events.append(event)

    def wait_event(self, name: str, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("event") == name:
                    return event
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        msg = f"no {name!r} event; output:\n{''.join(self.lines)}"
        raise AssertionError(msg)

    def stop(self) -> int:
        self.podman.run("stop", "--time", "30", self.name, check=False, timeout=60)
        try:
            return self.proc.wait(60)
        finally:
            self._reader.join(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return parse(resp.read().decode())


def _usage(samples: Samples) -> dict[str, float]:
    """node_disk_usage_bytes by path."""
    return {
        dict(labels)["path"]: got
        for (name, labels), got in samples.items()
        if name == "node_disk_usage_bytes"
    }


def _host_path(tree: Path, label: str) -> Path:
    assert label == "/host" or label.startswith("/host/"), label
    return tree / label.removeprefix("/host").lstrip("/")


def test_image_scans_like_du(podman: Podman, image: str, tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    start = time.monotonic()
    # The image's own CMD (--analyzed-path /host) and user; only the
    # listen address changes: a free port on the host's loopback.
    box = Container(
        podman, "du-exporter-test", "--network=host",
        "--volume", f"{tree}:/host:ro",
        "--env", "DU_EXPORTER_BIND_ADDRESS=127.0.0.1:0",
        image,
    )
    try:
        url = str(box.wait_event("listening")["url"])
        deadline = time.monotonic() + 60
        while "/host" not in (dirs := _usage(_scrape(url))):
            assert time.monotonic() < deadline, "".join(box.lines)
            time.sleep(0.1)
        podman.times["run to first scan"] = time.monotonic() - start

        assert _du_s(tree) == dirs["/host"]
        assert {"/host", "/host/a", "/host/a/b", "/host/c", "/host/c/d"} <= set(dirs)
        # Hard links count once, where du's walk meets them first: compare
        # with one du walk of the whole tree.
        du = _du(tree)
        for label, got in dirs.items():
            assert du[_host_path(tree, label)] == got, label

        samples = _scrape(url)
        info = [
            dict(labels) for (name, labels), _ in samples.items()
            if name == "du_exporter_build_info"
        ]
        assert 1 == len(info), info
        assert "0.2.0" == info[0]["version"]
        # The build fails unless the C reader imports, and auto picks it.
        assert "c" == info[0]["engine"]

        _check_healthcheck(podman, image, box.name, url)
    finally:
        code = box.stop()
    assert 0 == code, "".join(box.lines)
    assert not [line for line in box.lines if "Traceback" in line], box.lines
    for what, seconds in podman.times.items():
        print(f"{what}: {seconds:.1f} s")  # noqa: T201  (shown with -rP)


def _check_healthcheck(podman: Podman, image: str, name: str, url: str) -> None:
    """The image keeps its HEALTHCHECK, and the command passes."""
    inspect = json.loads(podman.run("image", "inspect", image).stdout)[0]
    # podman's own shape; docker's has it under Config.
    health = inspect.get("Healthcheck") or inspect["Config"]["Healthcheck"]
    check = health["Test"]
    assert ["CMD", "du-exporter", "healthcheck"] == check, check
    # The command finds the port in DU_EXPORTER_BIND_ADDRESS; the container
    # was given port 0, so tell this one run where it listens.
    port = re.sub(r".*:(\d+)$", r"\1", url)
    out = podman.run(
        "exec", "--env", f"DU_EXPORTER_BIND_ADDRESS=127.0.0.1:{port}",
        name, *check[1:], check=False, timeout=60,
    )
    assert 0 == out.returncode, out.stderr
