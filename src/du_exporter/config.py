"""Configuration: one YAML file, flags and ``DU_EXPORTER_*`` variables.

Precedence is flag > environment > file > default.  Every value is
checked here, before anything starts; a bad one raises
:class:`~du_exporter.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from du_exporter.errors import ConfigError
from du_exporter.scan.walker import ENGINES, engine_available
from du_exporter.web import webconfig as web_config


ENV_PREFIX = "DU_EXPORTER_"
DEFAULT_IGNORE = ("/proc", "/dev", "/sys", "/run")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Root:
    """One configured root and the deepest level reported below it."""

    path: str
    level: int


@dataclass(frozen=True)
class Config:
    """The effective configuration, every value checked."""

    roots: tuple[Root, ...]
    bind_host: str
    bind_port: int
    mode: str
    output_file: Path
    db_path: Path
    batch_size: int
    max_procs: int
    scan_interval_minutes: float
    keep_generations: int
    ignore_dirs: tuple[str, ...]
    one_file_system: bool
    follow_symlinks: bool
    size_mode: str
    dir_count: bool
    file_count: bool
    size_bucket: bool
    max_iops: int
    scan_engine: str
    scan_priority: str
    owner_usage: bool
    log_level: str
    log_format: str
    #: TLS, basic auth and headers (exporter-toolkit format); checked by
    #: :func:`build`, loaded again by the server when it starts.
    web_config_file: Path | None
    #: (user, bcrypt hash) pairs, merged with the web config's users.
    basic_auth_users: tuple[tuple[str, str], ...]

    def summary(self) -> dict[str, Any]:
        """The effective configuration as plain data, keyed like the file."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "roots":
                out["multi-paths"] = {r.path: r.level for r in value}
            elif f.name == "bind_host":
                out["bind-address"] = format_address(value, self.bind_port)
            elif f.name == "bind_port":
                continue
            elif f.name == "basic_auth_users":
                # A hash is not the password, but nothing shows it either.
                out["basic-auth-users"] = {u: "<secret>" for u, _ in value}
            elif value is None:
                out[f.name.replace("_", "-")] = None
            elif isinstance(value, Path):
                out[f.name.replace("_", "-")] = str(value)
            elif isinstance(value, tuple):
                out[f.name.replace("_", "-")] = list(value)
            else:
                out[f.name.replace("_", "-")] = value
        return out


def default_db_path(environ: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/du-exporter/du-exporter.db`` (or ``~/.local/state``)."""
    state = environ.get("XDG_STATE_HOME") or str(
        Path(environ.get("HOME") or "~").expanduser() / ".local" / "state"
    )
    return str(Path(state) / "du-exporter" / "du-exporter.db")


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- value parsers: each takes the raw value (YAML data or a string from a
# flag or the environment) and the key, and returns the checked value.


def _fail(key: str, reason: str) -> ConfigError:
    return ConfigError(f"config key {key!r}: {reason}")


def _as_int(value: object, key: str, minimum: int = 0) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise _fail(key, f"{value!r} is not an integer") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"{value!r} is not an integer")
    if value < minimum:
        raise _fail(key, f"{value} is less than {minimum}")
    return value


def _as_float(value: object, key: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _fail(key, f"{value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, f"{value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise _fail(key, "the number is too large") from None
    if not 0 <= number < float("inf"):
        raise _fail(key, f"{value} must be a finite number >= 0")
    return number


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _as_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _fail(key, f"{value!r} is not a boolean (true or false)")


def _as_str(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(key, f"{value!r} is not a non-empty string")
    if "\0" in value:
        raise _fail(key, "contains a NUL byte")
    return value


def _choice(*choices: str) -> Callable[[object, str], str]:
    def parse(value: object, key: str) -> str:
        text = _as_str(value, key)
        if text not in choices:
            raise _fail(key, f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _as_list(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(key, f"{value!r} is not a list of paths")
    return tuple(_as_str(v, key) for v in value)


def _as_root(value: object, key: str) -> str:
    path = _as_str(value, key)
    if not path.startswith("/"):
        path = os.path.abspath(path)
    norm = posixpath.normpath(path)
    return "/" if norm.startswith("//") else norm


def _as_multi_paths(value: object, key: str) -> tuple[Root, ...]:
    if isinstance(value, str):
        pairs: dict[object, object] = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            path, sep, level = item.rpartition("=")
            if not sep or not path:
                raise _fail(key, f"{item!r} is not PATH=LEVEL")
            pairs[path] = level
        value = pairs
    if not isinstance(value, dict) or not value:
        raise _fail(key, f"{value!r} is not a non-empty map of path: level")
    roots: dict[str, int] = {}
    for path, level in value.items():
        root = _as_root(path, key)
        if root in roots:
            raise _fail(key, f"root {root!r} is listed twice")
        roots[root] = _as_int(level, f"{key}: {path}")
    return tuple(Root(p, lvl) for p, lvl in sorted(roots.items()))


def _as_address(value: object, key: str) -> tuple[str, int]:
    text = _as_str(value, key)
    host, sep, port_text = text.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise _fail(key, f"{text!r} is not HOST:PORT")
    port = int(port_text)
    if port > 65535:  # noqa: PLR2004 - the largest TCP port
        raise _fail(key, f"port {port} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port  # noqa: S104 - listening on all is the documented default


def _as_path(value: object, key: str) -> Path:
    text = _as_str(value, key)
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~user of an unknown user
        raise _fail(key, f"{text!r}: cannot expand the home directory") from None


def _as_engine(value: object, key: str) -> str:
    engine = _choice(*ENGINES)(value, key)
    if not engine_available(engine):
        missing = "scandir-rs is not installed" if engine == "scandir-rs" \
            else "the C scanner is not built"
        raise _fail(key, f"{missing} in this installation")
    return engine


def _as_log_format(value: object, key: str) -> str:
    return _choice("auto", "json", "console")(value, key)


def _as_optional_path(value: object, key: str) -> Path | None:
    return None if value is None or value == "" else _as_path(value, key)


def _as_users(value: object, key: str) -> tuple[tuple[str, str], ...]:
    """user: bcrypt hash; ``USER=HASH,USER=HASH`` from a flag or variable.

    Hashes hold ``$``, ``/`` and ``.`` but never ``,`` or ``=``, so the
    last ``=`` of an item ends the user name.
    """
    if isinstance(value, str):
        pairs: dict[object, object] = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            user, sep, hashed = item.rpartition("=")
            if not sep or not user:
                # Not quoted: it may hold a password pasted by mistake.
                raise _fail(key, "each item must be USER=BCRYPT_HASH")
            if user in pairs:
                raise _fail(key, f"user {user!r} is listed twice")
            pairs[user] = hashed
        value = pairs
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _fail(key, "is not a map of user: bcrypt hash")
    try:
        users = {
            web_config.check_user(u): web_config.check_hash(str(u), h)
            for u, h in value.items()
        }
    except ValueError as e:
        raise _fail(key, str(e)) from None
    return tuple(sorted(users.items()))


PARSERS: dict[str, Callable[[object, str], Any]] = {
    "analyzed-path": _as_root,
    "dir-level": _as_int,
    "multi-paths": _as_multi_paths,
    "bind-address": _as_address,
    "mode": _choice("http", "file"),
    "output-file": _as_path,
    "db-path": _as_path,
    "batch-size": lambda v, k: _as_int(v, k, 1),
    "max-procs": lambda v, k: _as_int(v, k, 1),
    "scan-interval-minutes": _as_float,
    "keep-generations": lambda v, k: _as_int(v, k, 1),
    "ignore-dirs": _as_list,
    "one-file-system": _as_bool,
    "follow-symlinks": _as_bool,
    "size-mode": _choice("disk", "apparent"),
    "dir-count": _as_bool,
    "file-count": _as_bool,
    "size-bucket": _as_bool,
    "max-iops": _as_int,
    "scan-engine": _as_engine,
    "scan-priority": _choice("normal", "low", "idle"),
    "owner-usage": _as_bool,
    "log-level": _choice(*LOG_LEVELS),
    "log-format": _as_log_format,
    "web-config-file": _as_optional_path,
    "basic-auth-users": _as_users,
}
KEYS = tuple(PARSERS)
BOOLEAN_KEYS = frozenset(k for k, p in PARSERS.items() if p is _as_bool)


def defaults(environ: Mapping[str, str]) -> dict[str, object]:
    return {
        "analyzed-path": "/",
        "dir-level": 2,
        "bind-address": "0.0.0.0:9995",
        "mode": "http",
        "output-file": "./du-exporter.prom",
        "db-path": default_db_path(environ),
        "batch-size": 1000,
        "max-procs": os.cpu_count() or 1,
        "scan-interval-minutes": 60,
        "keep-generations": 2,
        "ignore-dirs": list(DEFAULT_IGNORE),
        "one-file-system": False,
        "follow-symlinks": False,
        "size-mode": "disk",
        "dir-count": True,
        "file-count": True,
        "size-bucket": True,
        "max-iops": 0,
        "scan-engine": "auto",
        "scan-priority": "normal",
        "owner-usage": False,
        "log-level": "info",
        "log-format": "auto",
    }


def _check_key(key: object, source: str) -> str:
    if isinstance(key, str) and key in KEYS:
        return key
    hint = difflib.get_close_matches(str(key), KEYS, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    msg = f"unknown config key {key!r} in {source}{suggestion}"
    raise ConfigError(msg)


def read_file(path: Path) -> dict[str, object]:
    """Read the YAML file: a mapping of known keys (values unchecked)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        msg = f"cannot read config file {str(path)!r}: {e}"
        raise ConfigError(msg) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        msg = f"config file {str(path)!r} is not valid YAML: {e}".replace(
            "\n", " "
        )
        raise ConfigError(msg) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"config file {str(path)!r} must be a mapping of key: value"
        raise ConfigError(msg)
    return {_check_key(k, str(path)): v for k, v in data.items()}


#: What Kubernetes injects for a Service named du-exporter (docker links
#: too): ``DU_EXPORTER_SERVICE_HOST``, ``DU_EXPORTER_PORT_9995_TCP_ADDR``…
_SERVICE_LINK = re.compile(
    ENV_PREFIX + r"(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT"
    r"|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)"
)


def service_links(environ: Mapping[str, str]) -> list[str]:
    """The service-link variables in ``environ``: not config, ignored."""
    return sorted(n for n in environ if _SERVICE_LINK.fullmatch(n))


def read_environ(environ: Mapping[str, str]) -> dict[str, object]:
    """``DU_EXPORTER_<KEY>`` variables (``DU_EXPORTER_CONFIG`` excluded)."""
    by_env = {ENV_PREFIX + k.upper().replace("-", "_"): k for k in KEYS}
    out: dict[str, object] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        if name not in by_env and _SERVICE_LINK.fullmatch(name):
            continue
        if name not in by_env:
            guess = name.removeprefix(ENV_PREFIX).lower().replace("_", "-")
            hint = difflib.get_close_matches(guess, KEYS, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            msg = (
                f"unknown config key {guess!r} in environment variable "
                f"{name}{suggestion}"
            )
            raise ConfigError(msg)
        out[_check_key(by_env[name], "the environment")] = value
    return out


def build(
    file_values: Mapping[str, object],
    env_values: Mapping[str, object],
    flag_values: Mapping[str, object],
    environ: Mapping[str, str],
) -> Config:
    """Merge the sources by precedence and check every value."""
    layers = (defaults(environ), file_values, env_values, flag_values)
    merged: dict[str, object] = {}
    source_of: dict[str, int] = {}
    for rank, layer in enumerate(layers):
        for key, value in layer.items():
            merged[_check_key(key, "flags")] = value
            source_of[key] = rank
    v = {key: PARSERS[key](value, key) for key, value in merged.items()}
    roots = _roots(v, source_of)
    host, port = v["bind-address"]
    return Config(
        roots=roots,
        bind_host=host,
        bind_port=port,
        mode=v["mode"],
        output_file=v["output-file"],
        db_path=v["db-path"],
        batch_size=v["batch-size"],
        max_procs=v["max-procs"],
        scan_interval_minutes=v["scan-interval-minutes"],
        keep_generations=v["keep-generations"],
        ignore_dirs=_ignore_dirs(v["ignore-dirs"]),
        one_file_system=v["one-file-system"],
        follow_symlinks=v["follow-symlinks"],
        size_mode=v["size-mode"],
        dir_count=v["dir-count"],
        file_count=v["file-count"],
        size_bucket=v["size-bucket"],
        max_iops=v["max-iops"],
        scan_engine=v["scan-engine"],
        scan_priority=v["scan-priority"],
        owner_usage=v["owner-usage"],
        log_level=v["log-level"],
        log_format=v["log-format"],
        **_web(v),
    )


def _web(v: Mapping[str, Any]) -> dict[str, Any]:
    """The two web keys, the file checked so a bad one stops here; its
    TLS material is loaded only where it is used (the server, check-config)."""
    path: Path | None = v.get("web-config-file")
    users: tuple[tuple[str, str], ...] = v.get("basic-auth-users", ())
    web_config.check(path, users)
    return {"web_config_file": path, "basic_auth_users": users}


def _roots(v: Mapping[str, Any], source_of: Mapping[str, int]) -> tuple[Root, ...]:
    """multi-paths replaces analyzed-path and dir-level (SPEC §2).

    Setting either of those in the same or a higher-precedence source as
    multi-paths is ambiguous and rejected; from a lower source (say, an
    image's environment under a mounted config file) it is replaced.
    """
    if "multi-paths" not in v:
        return (Root(v["analyzed-path"], v["dir-level"]),)
    for key in ("analyzed-path", "dir-level"):
        if source_of.get(key, 0) >= source_of["multi-paths"]:
            raise _fail(key, "cannot be combined with multi-paths")
    roots: tuple[Root, ...] = v["multi-paths"]
    return roots


def _ignore_dirs(patterns: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for pattern in patterns:
        if "/" in pattern and not pattern.startswith("/"):
            raise _fail(
                "ignore-dirs",
                f"{pattern!r} must be an absolute path or a name without '/'",
            )
        out.append(pattern.rstrip("/") or "/")
    return tuple(out)


def load(
    config_file: Path | None,
    flag_values: Mapping[str, object],
    environ: Mapping[str, str],
) -> Config:
    """Load the configuration from its three sources."""
    file_values = read_file(config_file) if config_file is not None else {}
    return build(file_values, read_environ(environ), flag_values, environ)
