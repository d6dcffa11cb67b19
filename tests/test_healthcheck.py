"""``du-exporter healthcheck`` against a real exporter, plain and over
TLS; the web config checked without loading its TLS material; a renewed
certificate picked up by SIGHUP.

Every exporter and every command is a real process.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import threading
import time

from pathlib import Path

import bcrypt

from exporter import Exporter
from helpers import run
from pki import Ca, der


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"


def users() -> str:
    """A basic auth user (cost 4: fast); /-/healthy must not need it."""
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    return f"basic_auth_users:\n  alice: {hashed}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web_config(tmp_path: Path, text: str, *, client: bool = False) -> Path:
    """A CA, a server certificate (also for client use if ``client``)
    and the web config ``text`` in tmp_path/tls."""
    tls = tmp_path / "tls"
    tls.mkdir()
    ca = Ca()
    ca.write(tls)
    ca.issue(tls, "server", client=client)
    path = tls / "web.yml"
    path.write_text(text, encoding="utf-8")
    return path


def exporter(tmp_path: Path, port: int, *args: str) -> Exporter:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return Exporter(
        tmp_path, "--bind-address", f"127.0.0.1:{port}",
        "--analyzed-path", str(root), *args,
    )


def healthcheck(tmp_path: Path, port: int, *args: str) -> tuple[int, str, str]:
    proc = run(tmp_path, "healthcheck", "--bind-address", f"0.0.0.0:{port}",
               "--timeout", "5", *args)
    return proc.returncode, proc.stdout, proc.stderr


class TestHealthcheck:
    def test_plain(self, tmp_path: Path) -> None:
        """0.0.0.0 in bind-address is probed on loopback; stopped: exit 1."""
        port = free_port()
        with exporter(tmp_path, port):
            code, out, err = healthcheck(tmp_path, port)
            assert (0, "") == (code, err)
            assert f"healthy: http://127.0.0.1:{port}/-/healthy: HTTP 200\n" == out
        code, out, err = healthcheck(tmp_path, port)
        assert (1, "") == (code, out)
        assert 1 == len(err.splitlines())
        assert err.startswith(f"du-exporter: error: http://127.0.0.1:{port}/-/healthy: ")
        assert "refused" in err

    def test_tls_with_basic_auth(self, tmp_path: Path) -> None:
        """TLS from the same web config; no credentials needed."""
        web = web_config(tmp_path, TLS + users())
        port = free_port()
        with exporter(tmp_path, port, "--web-config-file", str(web)):
            code, out, err = healthcheck(tmp_path, port, "--web-config-file", str(web))
            assert (0, "") == (code, err)
            assert f"healthy: https://127.0.0.1:{port}/-/healthy: HTTP 200\n" == out
            # Without the web config the probe speaks plain HTTP to TLS.
            code, out, err = healthcheck(tmp_path, port)
            assert 1 == code
            assert 1 == len(err.splitlines())

    def test_environment(self, tmp_path: Path) -> None:
        """The same environment variables as the exporter."""
        web = web_config(tmp_path, TLS)
        port = free_port()
        with exporter(tmp_path, port, "--web-config-file", str(web)):
            proc = run(tmp_path, "healthcheck", env={
                "DU_EXPORTER_BIND_ADDRESS": f":{port}",
                "DU_EXPORTER_WEB_CONFIG_FILE": str(web),
            })
            assert 0 == proc.returncode, proc.stderr
            assert f"https://127.0.0.1:{port}/-/healthy: HTTP 200" in proc.stdout

    def test_client_certificate_from_the_client_ca(self, tmp_path: Path) -> None:
        """RequireAndVerifyClientCert: the server's own certificate, issued
        by client_ca for client use too, gets the probe to /-/healthy."""
        web = web_config(tmp_path, MTLS, client=True)
        port = free_port()
        with exporter(tmp_path, port, "--web-config-file", str(web)):
            code, out, err = healthcheck(tmp_path, port, "--web-config-file", str(web))
            assert (0, "") == (code, err)
            assert out.endswith("/-/healthy: HTTP 200\n")

    def test_client_certificate_refused(self, tmp_path: Path) -> None:
        """A server certificate client_ca does not accept for clients:
        the handshake is answered (the server is up), said in the line."""
        web = web_config(tmp_path, MTLS, client=False)
        port = free_port()
        with exporter(tmp_path, port, "--web-config-file", str(web)):
            code, out, err = healthcheck(tmp_path, port, "--web-config-file", str(web))
            assert (0, "") == (code, err)
            assert "TLS handshake answered" in out
            assert 1 == len(out.splitlines())
        code, out, err = healthcheck(tmp_path, port, "--web-config-file", str(web))
        assert 1 == code
        assert 1 == len(err.splitlines())

    def test_not_http_200(self, tmp_path: Path) -> None:
        """Something else on the port that does not answer 200: exit 1."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            listener.settimeout(10)
            # Answer the probe's request with a 404 from this process.
            def answer() -> None:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")

            t = threading.Thread(target=answer)
            t.start()
            code, out, err = healthcheck(tmp_path, port)
            t.join()
        assert (1, "") == (code, out)
        assert err.endswith("/-/healthy: HTTP 404 Not Found\n")


class TestNoSideEffects:
    """Commands that serve nothing check the web config, not load it."""

    def test_unreadable_certificate_is_rejected_everywhere(self, tmp_path: Path) -> None:
        web = web_config(tmp_path, TLS)
        cert = web.parent / "server.crt"
        cert.unlink()
        cert.mkdir()  # unreadable as a file, even for root
        for command in (["check-config"], ["top"], ["db", "check"], ["healthcheck"]):
            proc = run(tmp_path, *command, "--web-config-file", web)
            assert 2 == proc.returncode, command
            assert "" == proc.stdout
            expected = (
                f"du-exporter: error: config key 'web-config-file': {str(web)!r}: "
                f"tls_server_config.cert_file: {str(cert)!r}: cannot read: "
                "Is a directory"
            )
            assert [expected] == proc.stderr.splitlines()

    def test_key_is_loaded_only_where_used(self, tmp_path: Path) -> None:
        """A key that does not match its certificate: check-config (and
        the server) load it and fail; top never loads it."""
        web = web_config(tmp_path, TLS)
        Ca().issue(web.parent, "other")
        shutil.copy(web.parent / "other.key", web.parent / "server.key")
        proc = run(tmp_path, "check-config", "--web-config-file", web)
        assert 2 == proc.returncode
        assert "do not load as a certificate and its private key" in proc.stderr
        proc = run(tmp_path, "top", "--web-config-file", web,
                   "--db-path", tmp_path / "none.db")
        assert "private key" not in proc.stderr
        assert "web-config-file" not in proc.stderr


class TestCertificateRenewal:
    def test_sighup_serves_the_new_certificate(self, tmp_path: Path) -> None:
        """Certificate and key files replaced, SIGHUP: the next handshake
        gets the new certificate, from the same process."""
        tls = tmp_path / "tls"
        tls.mkdir()
        ca = Ca()
        ca.write(tls)
        old = ca.issue(tls, "server")
        web = tls / "web.yml"
        web.write_text(TLS, encoding="utf-8")
        port = free_port()
        client = ssl.create_default_context(cafile=tls / "ca.crt")
        with exporter(tmp_path, port, "--web-config-file", str(web)) as exp:
            assert der(old) == peer_certificate(client, port)
            # Renewed as certbot or cert-manager do: new files renamed in.
            new_dir = tmp_path / "renewed"
            new_dir.mkdir()
            new = ca.issue(new_dir, "server")
            for name in ("server.crt", "server.key"):
                (new_dir / name).rename(tls / name)
            assert der(old) == peer_certificate(client, port)
            exp.signal(signal.SIGHUP)
            exp.wait_event("reloaded")
            assert der(new) == peer_certificate(client, port)
            assert exp.proc.poll() is None


def peer_certificate(client: ssl.SSLContext, port: int) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    client.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                cert = conn.getpeercert(binary_form=True)
                assert cert is not None
                return cert
        except ConnectionRefusedError:  # between two servers of a reload
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)

