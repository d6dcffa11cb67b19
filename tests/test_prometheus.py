"""A real Prometheus scrapes the real exporter (SPEC §5, §7).

du-exporter runs as a subprocess on a free loopback port over a small tree;
Debian's ``prometheus`` (``.ci/run`` installs it) runs with a config written
here, scrapes every second, and the numbers it stores are compared, through
its HTTP query API, with ``du -sB1`` run in the test.  Once over plain HTTP,
once over TLS with basic auth on both sides (a self-signed certificate and a
bcrypt user made here), where a second job with a wrong password must see
``up == 0``.

The Kubernetes example in ``contrib/kubernetes`` is checked here too: it
parses, has the expected objects, and its arguments are a valid config.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter import Exporter, clean_env
from promserver import (
    REPO,
    Prometheus,
    du_bytes,
    prometheus,
    prometheus_binary,
)


PASSWORD = "scrape me"  # noqa: S105 - a test password


# --- helpers

def _tree(root: Path) -> Path:
    """A few directories with files of assorted sizes (one sparse)."""
    for sub, sizes in {
        "alpha": [10, 5000, 70000],
        "alpha/deep/er": [123456],
        "beta": [1],
        "gamma/x": [9000, 9000],
    }.items():
        d = root / sub
        d.mkdir(parents=True)
        for i, size in enumerate(sizes):
            (d / f"f{i}").write_bytes(b"x" * size)
    with (root / "beta" / "sparse").open("wb") as f:
        f.seek(50 * 1024 * 1024)
        f.write(b"end")
    return root


@pytest.fixture(name="prometheus_bin", scope="module")
def _prometheus_bin() -> str:
    return prometheus_binary()


def _scrape_config(targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": targets,
    }


def _job(name: str, url: str, **extra: Any) -> dict[str, Any]:
    address = url.split("://", 1)[1]
    return {"job_name": name, "static_configs": [{"targets": [address]}], **extra}


# --- certificates

def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1: (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir()
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    key_file.chmod(0o600)
    return cert_file, key_file


# --- one Prometheus, two exporters (its first scrape takes ~6 s: the
# target discovery is throttled to one update per 5 s, a fixed delay)

@dataclass(frozen=True)
class Setup:
    prom: Prometheus
    tree: Path
    plain: Exporter
    tls: Exporter


@pytest.fixture(name="setup", scope="module")
def _setup(
    tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str
) -> Iterator[Setup]:
    """A plain and a TLS + basic auth exporter on one tree, one Prometheus.

    Jobs: ``plain`` (HTTP), ``tls`` (HTTPS, the CA, the right password),
    ``wrong`` (a wrong password), ``untrusted`` (HTTPS without the CA).
    """
    base = tmp_path_factory.mktemp("prometheus")
    tree = _tree(base / "tree")
    cert, key = _self_signed(base / "tls")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web = base / "tls" / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
        "basic_auth_users": {"prometheus": hashed},
    }), encoding="utf-8")
    args = (
        "--analyzed-path", str(tree), "--dir-level", "1",
        "--scan-interval-minutes", "0",
    )
    (base / "plain").mkdir()
    (base / "secure").mkdir()
    with (
        Exporter(base / "plain", *args) as plain,
        Exporter(base / "secure", *args, "--web-config-file", str(web)) as tls,
    ):
        auth = {"username": "prometheus", "password": PASSWORD}
        bad = {"username": "prometheus", "password": "not " + PASSWORD}
        https: dict[str, Any] = {
            "scheme": "https", "tls_config": {"ca_file": str(cert)},
        }
        config = _scrape_config([
            _job("plain", plain.url),
            _job("tls", tls.url, **https, basic_auth=auth),
            _job("wrong", tls.url, **https, basic_auth=bad),
            _job("untrusted", tls.url, scheme="https", basic_auth=auth),
        ])
        with prometheus(prometheus_bin, base / "prom", config) as prom:
            yield Setup(prom, tree, plain, tls)


def _check_sizes(prom: Prometheus, job: str, tree: Path) -> None:
    """Prometheus holds du's numbers for the root and level-1 directories."""
    for path in (tree, tree / "alpha", tree / "beta", tree / "gamma"):
        got = prom.wait_value(
            f'node_disk_usage_bytes{{job="{job}",path="{path}"}}'
        )
        assert du_bytes(path) == got, path


def _last_errors(prom: Prometheus) -> dict[str, str]:
    targets = prom.get("/api/v1/targets")["data"]["activeTargets"]
    return {t["labels"]["job"]: t["lastError"] for t in targets}


@pytest.mark.slow
def test_plain_http(setup: Setup) -> None:
    """Over HTTP: up == 1 and node_disk_usage_bytes equals du -sB1."""
    assert setup.plain.url.startswith("http://127.0.0.1:")
    assert 1 == setup.prom.wait_value('up{job="plain"}')
    _check_sizes(setup.prom, "plain", setup.tree)
    # Deeper than dir-level: not exported, so not in Prometheus.
    deep = setup.tree / "alpha" / "deep"
    assert {} == setup.prom.query(f'node_disk_usage_bytes{{path="{deep}"}}')
    assert 1 == setup.prom.wait_value(
        'du_exporter_scans_total{job="plain",result="success"}'
    )


@pytest.mark.slow
def test_tls_with_basic_auth(setup: Setup) -> None:
    """Over HTTPS with the CA and the right password: the same numbers."""
    assert setup.tls.url.startswith("https://127.0.0.1:")
    assert 1 == setup.prom.wait_value('up{job="tls"}')
    _check_sizes(setup.prom, "tls", setup.tree)
    assert "" == _last_errors(setup.prom)["tls"]


@pytest.mark.slow
def test_wrong_password_is_down(setup: Setup) -> None:
    assert 0 == setup.prom.wait_value('up{job="wrong"}')
    assert {} == setup.prom.query('node_disk_usage_bytes{job="wrong"}')
    assert "401" in _last_errors(setup.prom)["wrong"]


@pytest.mark.slow
def test_unknown_ca_is_down(setup: Setup) -> None:
    """Prometheus verifies the certificate: without the CA, no scrape."""
    assert 0 == setup.prom.wait_value('up{job="untrusted"}')
    assert "certificate" in _last_errors(setup.prom)["untrusted"]


# --- the Kubernetes example

K8S = REPO / "contrib" / "kubernetes"


def _objects(name: str) -> dict[str, dict[str, Any]]:
    with (K8S / name).open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    objects = {d["kind"]: d for d in docs}
    assert len(docs) == len(objects), "one object per kind"
    for obj in docs:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(obj)
        assert "du-exporter" == obj["metadata"]["name"]
    return objects


def _container() -> dict[str, Any]:
    pod = _objects("daemonset.yaml")["DaemonSet"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    return dict(container)


def test_kubernetes_daemonset() -> None:
    """Non-root, / read-only at /host, probes, resources, annotations."""
    objects = _objects("daemonset.yaml")
    assert {"DaemonSet", "Service"} == set(objects)
    ds = objects["DaemonSet"]
    assert "apps/v1" == ds["apiVersion"]
    pod = ds["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert 0 != pod["spec"]["securityContext"]["runAsUser"]
    container = _container()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert ["ALL"] == security["capabilities"]["drop"]
    assert {"limits", "requests"} == set(container["resources"])

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/host"]["readOnly"] is True
    assert "/" == volumes[mounts["/host"]["name"]]["hostPath"]["path"]
    data = volumes[mounts["/var/lib/du-exporter"]["name"]]
    assert {"emptyDir"} & set(data) or {"hostPath"} & set(data)
    assert "/tmp" in mounts  # the root filesystem is read-only

    (port,) = container["ports"]
    assert "/-/healthy" == container["livenessProbe"]["httpGet"]["path"]
    assert "/-/ready" == container["readinessProbe"]["httpGet"]["path"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert port["name"] == container[probe]["httpGet"]["port"]
    annotations = pod["metadata"]["annotations"]
    assert "true" == annotations["prometheus.io/scrape"]
    assert str(port["containerPort"]) == annotations["prometheus.io/port"]

    service = objects["Service"]
    assert "None" == service["spec"]["clusterIP"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [port["name"]] == [p["targetPort"] for p in service["spec"]["ports"]]


def test_kubernetes_podmonitor() -> None:
    monitor = _objects("podmonitor.yaml")["PodMonitor"]
    assert "monitoring.coreos.com/v1" == monitor["apiVersion"]
    pod = _objects("daemonset.yaml")["DaemonSet"]["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert _container()["ports"][0]["name"] == endpoint["port"]


def test_kubernetes_config_is_valid(tmp_path: Path) -> None:
    """The container's args and env pass ``du-exporter check-config``."""
    container = _container()
    env = clean_env(tmp_path)
    env.update({e["name"]: str(e["value"]) for e in container["env"]})
    db_path = env.pop("DU_EXPORTER_DB_PATH")
    out = subprocess.run(
        [sys.executable, "-m", "du_exporter", "check-config",
         "--db-path", str(tmp_path / "du.db"), *container["args"]],
        capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=60, check=False,
    )
    assert (0, "") == (out.returncode, out.stderr)
    effective = yaml.safe_load(out.stdout)
    assert {"/host/srv": 2} == effective["multi-paths"]
    assert ["/host/proc", "/host/sys", "/host/dev", "/host/run"] == effective["ignore-dirs"]
    assert f"0.0.0.0:{container['ports'][0]['containerPort']}" == effective["bind-address"]
    assert "/var/lib/du-exporter/du-exporter.db" == db_path
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(db_path).parent) in mounts
