"""``du-exporter healthcheck``: probe the running exporter's ``/-/healthy``.

A container's health check runs inside the container, with the same
configuration as the exporter: it connects to the configured port on
loopback, over TLS when the web config has a ``tls_server_config``
(see :func:`~du_exporter.web.webconfig.probe_context` for what it checks
and which certificate it offers), and without credentials, which
``/-/healthy`` never asks for.
"""

from __future__ import annotations

import http.client
import ssl

from du_exporter.config import Config, format_address
from du_exporter.errors import Unhealthy
from du_exporter.web.webconfig import probe_context, requires_client_cert


# What a server sends when it refuses the certificate the probe offered
# (its own): it ran the handshake, so it is serving, but it keeps
# /-/healthy behind the client certificate check like every path.
_REFUSED_CERTIFICATE = frozenset({
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "TLSV1_ALERT_UNKNOWN_CA",
})
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def probe(config: Config, timeout: float) -> str:
    """One line saying the exporter is healthy, or :class:`Unhealthy`."""
    if config.bind_port == 0:
        msg = "bind-address has port 0 (any free port): no port to probe"
        raise Unhealthy(msg)
    host = _LOOPBACK.get(config.bind_host, config.bind_host)
    context = probe_context(config.web_config_file)
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://{format_address(host, config.bind_port)}/-/healthy"
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, config.bind_port, context=context,
                                    timeout=timeout)
        if context is not None
        else http.client.HTTPConnection(host, config.bind_port, timeout=timeout)
    )
    try:
        conn.request("GET", "/-/healthy", headers={"User-Agent": "du-exporter healthcheck"})
        resp = conn.getresponse()
        resp.read(1024)
    except ssl.SSLError as e:
        if e.reason in _REFUSED_CERTIFICATE:
            return (
                f"healthy: {url}: TLS handshake answered; the server requires "
                "a client certificate that client_ca_file issued, so "
                "/-/healthy itself was not reached"
            )
        msg = f"{url}: TLS failed: {e.reason or e}"
        raise Unhealthy(msg) from None
    except http.client.RemoteDisconnected:
        if context is None or not requires_client_cert(config.web_config_file):
            msg = f"{url}: the server closed the connection without a response"
            raise Unhealthy(msg) from None
        # TLS 1.3: the client's side of the handshake ends before the
        # server has checked the client certificate; a server on asyncio
        # then drops the connection without sending its alert.  The
        # handshake (the server's certificate) came from a serving
        # exporter all the same.
        return (
            f"healthy: {url}: TLS handshake answered; the server requires "
            "a client certificate that client_ca_file issued, so "
            "/-/healthy itself was not reached"
        )
    except (OSError, http.client.HTTPException) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        msg = f"{url}: {reason}"
        raise Unhealthy(msg) from None
    finally:
        conn.close()
    if resp.status != http.client.OK:
        msg = f"{url}: HTTP {resp.status} {resp.reason}"
        raise Unhealthy(msg)
    return f"healthy: {url}: HTTP 200"

