"""Attack the real exporter's HTTP server from loopback; print the targets.

Starts ``python -m du_exporter`` (basic auth on, a small tree) on
127.0.0.1 and measures, one attack at a time:

* **huge heads**: 48 concurrent requests with 99 header lines of 64 KiB
  each, plus 48 connections holding an unfinished 60 KiB head: the
  exporter's peak RSS (``VmHWM`` from ``/proc``; target <= 128 MiB);
* **slow clients**: 160 connections sending one header line every
  second (more than the render slots), while ``/-/healthy`` and
  ``/metrics`` are probed: the share answered 200 within 1 s (target
  >= 95 % each);
* **bcrypt flood**: 60 clients sending wrong passwords in a loop: the
  valid user's first login (target <= 500 ms), for one shared wrong
  password and for 60 distinct ones.

Stdout gets one Markdown table; exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from collections.abc import Iterator
from pathlib import Path

import bcrypt


MiB = 1024 * 1024


@contextlib.contextmanager
def exporter(work: Path, users: str) -> Iterator[tuple[subprocess.Popen[bytes], tuple[str, int]]]:
    root = work / "tree"
    root.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DU_EXPORTER_")}
    env["HOME"] = str(work)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "du_exporter",
            "--bind-address", "127.0.0.1:0",
            "--analyzed-path", str(root),
            "--db-path", str(work / "du.db"),
            "--log-format", "json",
            "--basic-auth-users", users,
        ],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=work,
    )
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                if event.get("event") == "listening":
                    host, port = str(event["url"]).removeprefix("http://").rsplit(":", 1)
                    break
        else:
            msg = "the exporter did not start"
            raise SystemExit(msg)
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield proc, (host, int(port))
    finally:
        proc.terminate()
        proc.wait(15)


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def get(addr: tuple[str, int], path: str, auth: str | None = None) -> tuple[int | None, float]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    start = time.monotonic()
    conn = http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        status: int | None = resp.status
    except (OSError, http.client.HTTPException):
        status = None
    finally:
        conn.close()
    return status, time.monotonic() - start


def huge_heads(pid: int, addr: tuple[str, int]) -> int:
    line = b"X-Big: " + b"a" * (64 * 1024 - 10) + b"\r\n"
    stop = threading.Event()

    def huge() -> None:
        with contextlib.suppress(OSError), socket.create_connection(addr, 10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            for _ in range(99):
                s.sendall(line)
            s.sendall(b"\r\n")
            while s.recv(65536):
                pass

    def hang() -> None:
        with contextlib.suppress(OSError), socket.create_connection(addr, 10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"b" * 60000)
            stop.wait(10)

    threads = [threading.Thread(target=huge) for _ in range(48)]
    threads += [threading.Thread(target=hang) for _ in range(48)]
    for t in threads:
        t.start()
    for t in threads[:48]:
        t.join()
    stop.set()
    for t in threads[48:]:
        t.join()
    return vm_hwm(pid)


def slow_clients(addr: tuple[str, int], auth: str, seconds: float) -> tuple[float, float]:
    stop = threading.Event()
    socks: list[socket.socket] = []

    def drip() -> None:
        n = 0
        while not stop.wait(1.0):
            for s in list(socks):
                try:
                    s.sendall(b"X-%d: y\r\n" % n)
                except OSError:  # cut at the head deadline: come back
                    socks.remove(s)
                    with contextlib.suppress(OSError):
                        s.close()
                        fresh = socket.create_connection(addr, 5)
                        fresh.sendall(b"GET /metrics HTTP/1.1\r\n")
                        socks.append(fresh)
            n += 1

    for _ in range(160):
        s = socket.create_connection(addr, 5)
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        socks.append(s)
    dripper = threading.Thread(target=drip)
    dripper.start()
    health: list[bool] = []
    scrapes: list[bool] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            status, took = get(addr, "/-/healthy")
            health.append(status == 200 and took <= 1.0)
            status, took = get(addr, "/metrics", auth)
            scrapes.append(status == 200 and took <= 1.0)
            time.sleep(0.2)
    finally:
        stop.set()
        dripper.join()
        for s in socks:
            s.close()
    return 100 * sum(health) / len(health), 100 * sum(scrapes) / len(scrapes)


def bcrypt_flood(addr: tuple[str, int], valid: str, *, distinct: bool) -> float:
    stop = threading.Event()

    def flood(n: int) -> None:
        while not stop.is_set():
            get(addr, "/metrics", f"alice:wrong{n if distinct else ''}")

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(60)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # the flood is at full strength
    _, took = get(addr, "/metrics", valid)
    stop.set()
    for t in threads:
        t.join()
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="slow-client probe time")
    args = parser.parse_args()
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(10)).decode()
    rows: list[tuple[str, str, str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with exporter(work, f"alice={hashed}") as (proc, addr):
            time.sleep(1)
            idle = vm_hwm(proc.pid)
            peak = huge_heads(proc.pid, addr)
            rows.append(("peak RSS, idle", f"{idle / MiB:.0f} MiB", "", True))
            rows.append((
                "peak RSS, 48 huge + 48 hanging heads",
                f"{peak / MiB:.0f} MiB", "<= 128 MiB", peak <= 128 * MiB,
            ))
        with exporter(work, f"alice={hashed}") as (proc, addr):
            health, scrapes = slow_clients(addr, "alice:secret", args.seconds)
            rows.append(("160 slow clients: /-/healthy 200 within 1 s",
                         f"{health:.0f} %", ">= 95 %", health >= 95))
            rows.append(("160 slow clients: /metrics 200 within 1 s",
                         f"{scrapes:.0f} %", ">= 95 %", scrapes >= 95))
        for distinct in (False, True):
            with exporter(work, f"alice={hashed}") as (proc, addr):
                took = bcrypt_flood(addr, "alice:secret", distinct=distinct)
            kind = "60 distinct" if distinct else "one shared"
            target = "" if distinct else "<= 500 ms"
            rows.append((f"first valid login, 60 clients, {kind} wrong password",
                         f"{took * 1000:.0f} ms", target, distinct or took <= 0.5))
    print(f"cores: {os.cpu_count()}, load: {statistics.fmean(os.getloadavg()):.1f}\n")
    print("| attack | measured | target | met |")
    print("|---|---:|---|---|")
    for name, measured, target, ok in rows:
        print(f"| {name} | {measured} | {target} | {'yes' if ok else 'NO'} |")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
