"""A real Prometheus scrapes the real exporter.

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

import copy
import json
import shutil
import subprocess
import sys

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter import Exporter
from helpers import clean_env
from pki import Ca
from promserver import (
    REPO,
    Prometheus,
    du_bytes,
    prometheus,
    prometheus_binary,
    readme_blocks,
    readme_promql,
    readme_scrape_jobs,
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

def _tls_files(directory: Path, *, client: bool = False) -> dict[str, Path]:
    """A CA (``ca.crt``) and, signed by it, a server pair for 127.0.0.1
    (``server.crt``/``.key``) and, with ``client``, a client pair
    (``scraper.crt``/``.key``): the names the README's TLS example uses."""
    directory.mkdir()
    ca = Ca()
    files = {"ca.crt": ca.write(directory)}
    stems = ("server", "scraper") if client else ("server",)
    for stem in stems:
        ca.issue(directory, stem, server=stem == "server", client=stem == "scraper")
        files[f"{stem}.crt"] = directory / f"{stem}.crt"
        files[f"{stem}.key"] = directory / f"{stem}.key"
        files[f"{stem}.key"].chmod(0o600)
    return files


# --- the README's examples, as files for this test

README_PASSWORD = "change me"  # noqa: S105 - the README's example password


def _readme_web_config() -> dict[str, Any]:
    """The web config file shown under "TLS and authentication"."""
    (block,) = [
        b for b in readme_blocks("yaml", "Metrics") if "tls_server_config" in b
    ]
    config = yaml.safe_load(block)
    assert isinstance(config, dict)
    return config


def _readme_https_jobs(
    files: dict[str, Path], password_file: Path, address: str
) -> list[dict[str, Any]]:
    """The README's HTTPS scrape jobs, pointed at this test's files.

    Each file the README names is replaced by this test's file of the
    same role (CA, client certificate, client key); everything else is
    kept as written.
    """
    roles = {"ca_file": "ca.crt", "cert_file": "scraper.crt", "key_file": "scraper.key"}
    jobs = []
    for i, shown in enumerate(readme_scrape_jobs()):
        if shown.get("scheme") != "https":
            continue
        job = copy.deepcopy(shown)
        job["job_name"] = f"readme-https-{i}"
        for key in job["tls_config"]:
            job["tls_config"][key] = str(files[roles[key]])
        job["basic_auth"]["password_file"] = str(password_file)
        job["static_configs"] = [{"targets": [address]}]
        job.pop("scrape_interval", None)  # the test scrapes every second
        job.pop("scrape_timeout", None)
        jobs.append(job)
    return jobs


# --- one Prometheus, two exporters (its first scrape takes ~6 s: the
# target discovery is throttled to one update per 5 s, a fixed delay)

@dataclass(frozen=True)
class Setup:
    prom: Prometheus
    tree: Path
    plain: Exporter
    tls: Exporter
    roots: tuple[Path, ...]  # of the exporter of job "roots"
    readme_jobs: tuple[str, ...]  # the README's HTTPS jobs


@pytest.fixture(name="setup", scope="module")
def _setup(
    tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str
) -> Iterator[Setup]:
    """A plain and a TLS + basic auth exporter on one tree, one Prometheus.

    Jobs: ``plain`` (HTTP), ``tls`` (HTTPS, the CA, the right password),
    ``wrong`` (a wrong password), ``untrusted`` (HTTPS without the CA);
    ``roots`` (HTTP, an exporter with two roots); ``readme-https-N`` (the
    README's HTTPS jobs against an exporter with the README's web config
    and CA-signed certificates) and ``no-client-cert`` (the same without
    the client certificate).
    """
    base = tmp_path_factory.mktemp("prometheus")
    tree = _tree(base / "tree")
    tls_files = _tls_files(base / "tls")
    cert, key = tls_files["server.crt"], tls_files["server.key"]
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
    (base / "two-roots").mkdir()
    other = _tree(base / "other")  # not the tree the other jobs check
    roots = (other / "alpha", other / "gamma")
    files = _tls_files(base / "readme", client=True)
    readme_web = base / "readme" / "web.yml"
    readme_web.write_text(yaml.safe_dump(_readme_web_config()), encoding="utf-8")
    password_file = base / "readme" / "du.pw"
    password_file.write_text(README_PASSWORD, encoding="utf-8")
    with (
        Exporter(base / "plain", *args) as plain,
        Exporter(base / "secure", *args, "--web-config-file", str(web)) as tls,
        Exporter(
            base / "two-roots", "--scan-interval-minutes", "0",
            "--multi-paths", ",".join(f"{r}=1" for r in roots),
        ) as two_roots,
        Exporter(
            base / "readme", *args, "--web-config-file", str(readme_web)
        ) as readme_tls,
    ):
        auth = {"username": "prometheus", "password": PASSWORD}
        bad = {"username": "prometheus", "password": "not " + PASSWORD}
        https: dict[str, Any] = {
            "scheme": "https", "tls_config": {"ca_file": str(tls_files["ca.crt"])},
        }
        address = readme_tls.url.split("://", 1)[1]
        readme_jobs = _readme_https_jobs(files, password_file, address)
        no_cert = copy.deepcopy(readme_jobs[0])
        no_cert["job_name"] = "no-client-cert"
        del no_cert["tls_config"]["cert_file"], no_cert["tls_config"]["key_file"]
        config = _scrape_config([
            _job("plain", plain.url),
            _job("tls", tls.url, **https, basic_auth=auth),
            _job("wrong", tls.url, **https, basic_auth=bad),
            _job("untrusted", tls.url, scheme="https", basic_auth=auth),
            _job("roots", two_roots.url),
            *readme_jobs,
            no_cert,
        ])
        with prometheus(prometheus_bin, base / "prom", config) as prom:
            yield Setup(
                prom, tree, plain, tls, roots,
                tuple(j["job_name"] for j in readme_jobs),
            )


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


def test_readme_password_matches_its_hash() -> None:
    """The README says which password its example hash is of."""
    hashed = _readme_web_config()["basic_auth_users"]["prometheus"]
    assert bcrypt.checkpw(README_PASSWORD.encode(), hashed.encode())
    assert f'"{README_PASSWORD}"' in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_readme_tls_job_with_readme_web_config(setup: Setup) -> None:
    """The README's HTTPS scrape jobs get through its web config example.

    That example requires a client certificate signed by its CA: a job
    without one is refused.
    """
    assert len(setup.readme_jobs) >= 2  # under Deployment and under TLS
    for job in setup.readme_jobs:
        # The first scrape may time out (1 s) behind the example's cost-10
        # bcrypt on a busy machine; then the check is remembered.
        setup.prom.wait_equal(f'up{{job="{job}"}}', 1)
        _check_sizes(setup.prom, job, setup.tree)
    assert 0 == setup.prom.wait_value('up{job="no-client-cert"}')
    assert {} == setup.prom.query('node_disk_usage_bytes{job="no-client-cert"}')


SHARE = "Share of a root taken by each child"


@pytest.mark.slow
def test_share_of_a_root_with_two_roots(setup: Setup) -> None:
    """The README's share-of-a-root query, one exporter with two roots.

    Each level-1 directory divided by its own root, as du measures them;
    the query it replaced cannot match two roots of one instance.
    """
    expr = readme_promql(SHARE)
    children = {
        child: root
        for root in setup.roots
        for child in root.iterdir() if child.is_dir()
    }
    for path in (*setup.roots, *children):
        setup.prom.wait_value(f'node_disk_usage_bytes{{job="roots",path="{path}"}}')

    result = setup.prom.query(f'({expr}) and on(job) up{{job="roots"}}')

    shares = {dict(labels)["path"]: share for labels, share in result.items()}
    assert {str(c) for c in children} == set(shares)
    for child, root in children.items():
        assert du_bytes(child) / du_bytes(root) == pytest.approx(shares[str(child)])
        assert str(root) == dict(next(
            labels for labels in result if dict(labels)["path"] == str(child)
        ))["root"]
    old = setup.prom.query_raw(
        'node_disk_usage_bytes{job="roots",level="1"}'
        ' / on(instance) group_left() node_disk_usage_bytes{job="roots",level="0"}'
    )
    assert "error" == old["status"]
    assert "many-to-many" in old["error"]


def test_share_of_a_root_when_a_root_is_slash(tmp_path: Path) -> None:
    """The README's query also pairs /usr with the root / (promtool)."""
    promtool = _promtool()
    sizes = {("/", "0"): 400, ("/usr", "1"): 100, ("/data", "0"): 50,
             ("/data/x", "1"): 10}
    series = [
        {"series": f'node_disk_usage_bytes{{instance="fs1:9995", path="{p}", level="{lv}"}}',
         "values": f"{v}x5"}
        for (p, lv), v in sizes.items()
    ]
    # root="" for the children of /: an empty label is no label.
    expected = [
        {"labels": '{instance="fs1:9995", path="/usr", level="1"}', "value": 0.25},
        {"labels": '{instance="fs1:9995", path="/data/x", level="1", root="/data"}',
         "value": 0.2},
    ]
    tests = tmp_path / "share.test.yml"
    tests.write_text(yaml.safe_dump({
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [{
                "expr": readme_promql(SHARE), "eval_time": "2m",
                "exp_samples": expected,
            }],
        }],
    }), encoding="utf-8")

    out = subprocess.run(
        [promtool, "test", "rules", str(tests)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )

    assert 0 == out.returncode, out.stdout + out.stderr


# --- the alert rules against the README's scrape configs

RULES = REPO / "contrib" / "prometheus" / "du-exporter.rules.yml"
TEXTFILE_RULES = REPO / "contrib" / "prometheus" / "du-exporter-textfile.rules.yml"


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (.ci/run installs it)")
    return binary


def _alert(rules: Path, name: str) -> dict[str, Any]:
    groups = yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == name]
    return dict(rule)


def test_down_alert_fires_for_the_readme_scrape_configs(tmp_path: Path) -> None:
    """DuExporterDown fires for targets labelled as the README scrapes them.

    ``up`` series get the job name and targets of every scrape config in
    the README; the first target of each goes down.  promtool runs the
    shipped rules on them.
    """
    promtool = _promtool()
    jobs = readme_scrape_jobs()
    assert len(jobs) >= 3
    down = _alert(RULES, "DuExporterDown")
    series, expected = [], []
    for job in jobs:
        targets = [t for c in job["static_configs"] for t in c["targets"]]
        for i, target in enumerate(targets):
            labels = f'job="{job["job_name"]}", instance="{target}"'
            series.append({
                "series": f"up{{{labels}}}",
                "values": "1 1 0x10" if i == 0 else "1x12",
            })
            if i == 0:
                expected.append({
                    "exp_labels": {
                        **down["labels"], "job": job["job_name"], "instance": target,
                    },
                    "exp_annotations": {
                        k: v.replace("{{ $labels.instance }}", target)
                        for k, v in down["annotations"].items()
                    },
                })
    unique = list({json.dumps(e, sort_keys=True): e for e in expected}.values())
    unique_series = list({s["series"]: s for s in series}.values())
    tests = tmp_path / "readme.rules.test.yml"
    tests.write_text(yaml.safe_dump({
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": unique_series,
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "DuExporterDown", "exp_alerts": []},
                {"eval_time": "8m", "alertname": "DuExporterDown", "exp_alerts": unique},
            ],
        }],
    }), encoding="utf-8")

    out = subprocess.run(
        [promtool, "test", "rules", str(tests)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )

    assert 0 == out.returncode, out.stdout + out.stderr


def test_textfile_rules() -> None:
    """The mode file rules are valid, and their unit tests pass."""
    promtool = _promtool()
    tests = TEXTFILE_RULES.with_name("du-exporter-textfile.rules.test.yml")
    for args in (["check", "rules", TEXTFILE_RULES.name], ["test", "rules", tests.name]):
        out = subprocess.run(
            [promtool, *args], capture_output=True, text=True, check=False,
            cwd=TEXTFILE_RULES.parent,
        )
        assert 0 == out.returncode, out.stdout + out.stderr
        assert "SUCCESS" in out.stdout
    alerts = {
        r["alert"]
        for g in yaml.safe_load(TEXTFILE_RULES.read_text(encoding="utf-8"))["groups"]
        for r in g["rules"] if "alert" in r
    }
    tested = {
        a["alertname"]
        for t in yaml.safe_load(tests.read_text(encoding="utf-8"))["tests"]
        for a in t.get("alert_rule_test", []) if a["exp_alerts"]
    }
    assert {"DuExporterTextfileStale", "DuExporterTextfileScanFailed"} <= alerts
    assert alerts == tested


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
    # The job the alert rules select, not the operator's namespace/name.
    job = pod["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    rules = yaml.safe_load(RULES.read_text())
    down = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "DuExporterDown")
    assert f'job="{job}"' in down["expr"]


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
