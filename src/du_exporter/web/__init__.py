"""The HTTP side: server, TLS and auth, landing page, usage browser."""
