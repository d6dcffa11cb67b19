"""Configuration: one YAML file, flags and ``DU_EXPORTER_*`` variables.

Precedence is flag > environment > file > default.  Every value is
checked here, before anything starts; a bad one raises
:class:`~du_exporter.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import os
import posixpath
import re

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from du_exporter.errors import ConfigError, did_you_mean
from du_exporter.log import LEVELS as LOG_LEVELS
from du_exporter.scan.priority import PRIORITIES
from du_exporter.web import webconfig as web_config


ENV_PREFIX = "DU_EXPORTER_"
DEFAULT_IGNORE = ("/proc", "/dev", "/sys", "/run")


@dataclass(frozen=True)
class Root:
    """One configured root and its dir-level: the deepest level reported."""

    path: str
    dir_level: int


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
    scan_threads: int
    scan_priority: str
    owner_usage: bool
    #: Follow changes with fanotify between scans (mode http only).
    watch: bool
    watch_delay_seconds: float
    log_level: str
    log_format: str
    #: TLS, basic auth and headers (exporter-toolkit format); checked by
    #: :func:`build`, loaded again by the server when it starts.
    web_config_file: Path | None
    #: (user, bcrypt hash) pairs, merged with the web config's users.
    basic_auth_users: tuple[tuple[str, str], ...]

    def web(self) -> web_config.WebConfig | None:
        """Read the web config file and the users: TLS context, hashes.

        :func:`build` calls it so that a bad file stops the start; the
        server calls it again when it starts, as certificates may have
        been renewed since.  A file broken in between is a ConfigError.
        """
        return web_config.load(self.web_config_file, self.basic_auth_users)

    def summary(self) -> dict[str, Any]:
        """The effective configuration as plain data, keyed like the file."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "roots":
                out["multi-paths"] = {r.path: r.dir_level for r in value}
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
    return tuple(Root(p, dir_level) for p, dir_level in sorted(roots.items()))


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
    # Imported here: the web server reads Config and must not load the
    # scan machinery (walker, C engine) for it.
    from du_exporter.scan.walker import ENGINES, engine_available  # noqa: PLC0415

    engine = _choice(*ENGINES)(value, key)
    if not engine_available(engine):
        missing = "scandir-rs is not installed" if engine == "scandir-rs" \
            else "the C scanner is not built"
        raise _fail(key, f"{missing} in this installation")
    return engine


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


def _as_ignore_dirs(value: object, key: str) -> tuple[str, ...]:
    out = []
    for pattern in _as_list(value, key):
        if "/" in pattern and not pattern.startswith("/"):
            raise _fail(
                key,
                f"{pattern!r} must be an absolute path or a name without '/'",
            )
        out.append(pattern.rstrip("/") or "/")
    return tuple(out)


def _at_least_one(value: object, key: str) -> int:
    return _as_int(value, key, 1)


#: The default of a key that is unset unless configured (multi-paths).
UNSET = object()


@dataclass(frozen=True)
class Key:
    """One config key: the file key, also a flag and a variable."""

    name: str
    #: Checks the raw value (YAML data, or a string from a flag or the
    #: environment) and returns the typed one.
    parse: Callable[[object, str], Any]
    #: The default value, or a function of the environment computing it;
    #: UNSET: the key is unset unless configured.
    default: object
    #: The default as the README and ``--help`` show it ("" for none).
    shown: str
    help: str

    @property
    def env(self) -> str:
        """The ``DU_EXPORTER_*`` variable setting the key."""
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def boolean(self) -> bool:
        """A switch: ``--key/--no-key`` on the command line."""
        return self.parse is _as_bool

    def default_in(self, environ: Mapping[str, str]) -> object:
        return self.default(environ) if callable(self.default) else self.default


def _cpu_count(_environ: Mapping[str, str]) -> int:
    return os.cpu_count() or 1


#: Every config key, in the order of the README's reference and --help.
#: The key ``foo-bar`` fills ``Config.foo_bar``, except the roots
#: (``analyzed-path``, ``dir-level``, ``multi-paths``) and ``bind-address``.
TABLE = (
    Key("analyzed-path", _as_root, "/", "/", "Root directory to scan."),
    Key("dir-level", _as_int, 2, "2",
        "Deepest directory level reported; root = 0."),
    Key("multi-paths", _as_multi_paths, UNSET, "",
        "Roots and their levels, PATH=LEVEL,...; replaces --analyzed-path "
        "and --dir-level."),
    Key("bind-address", _as_address, "0.0.0.0:9995", "0.0.0.0:9995",
        "HOST:PORT to listen on."),
    Key("mode", _choice("http", "file"), "http", "http",
        "http (daemon) or file (scan once, write --output-file)."),
    Key("output-file", _as_path, "./du-exporter.prom", "./du-exporter.prom",
        "Textfile written in mode file."),
    Key("db-path", _as_path, default_db_path,
        "$XDG_STATE_HOME/du-exporter/du-exporter.db", "SQLite database."),
    Key("batch-size", _at_least_one, 1000, "1000",
        "Rows per SQLite transaction."),
    Key("max-procs", _at_least_one, _cpu_count, "CPU count",
        "Worker processes in the scan pool."),
    Key("scan-interval-minutes", _as_float, 60, "60",
        "Minutes between scan starts; 0 scans once."),
    Key("keep-generations", _at_least_one, 2, "2",
        "Complete scans kept per root."),
    Key("ignore-dirs", _as_ignore_dirs, list(DEFAULT_IGNORE),
        ",".join(DEFAULT_IGNORE),
        "Comma-separated absolute paths, globs or names not scanned."),
    Key("one-file-system", _as_bool, False, "false",
        "Do not cross mount points (du -x)."),
    Key("follow-symlinks", _as_bool, False, "false",
        "Follow symlinks, loop-safe, each inode once."),
    Key("size-mode", _choice("disk", "apparent"), "disk", "disk",
        "disk (du -B1) or apparent (du -b)."),
    Key("dir-count", _as_bool, True, "true",
        "Export recursive directory counts."),
    Key("file-count", _as_bool, True, "true", "Export recursive file counts."),
    Key("size-bucket", _as_bool, True, "true",
        "Export the file-size histogram."),
    Key("max-iops", _as_int, 0, "0",
        "Directory reads plus stats per second, whole pool; 0 = unlimited."),
    Key("scan-engine", _as_engine, "auto", "auto",
        "auto (the C reader when built, else scandir-rs), c, scandir-rs or "
        "python."),
    # Chosen by benchmarks/bench_storage.py (README, Performance).
    Key("scan-threads", _at_least_one, 8, "8",
        "Threads per worker reading directories and stat'ing entries (the C "
        "reader): I/O in flight is max-procs x scan-threads."),
    Key("scan-priority", _choice(*PRIORITIES), "normal", "normal",
        "Workers' CPU/IO priority: normal, low (nice 10, best-effort 7) or "
        "idle (nice 19, idle I/O class)."),
    Key("owner-usage", _as_bool, False, "false",
        "Export usage per owner (uid) of each walked root."),
    Key("watch", _as_bool, False, "false",
        "Follow changes with fanotify between scans (mode http; needs "
        "CAP_SYS_ADMIN)."),
    Key("watch-delay-seconds", _as_float, 2, "2",
        "Seconds changes are coalesced before a watch publication."),
    Key("log-level", _choice(*LOG_LEVELS), "info", "info",
        "debug, info, warning or error."),
    Key("log-format", _choice("auto", "json", "console"), "auto", "auto",
        "json, console or auto (console on a terminal)."),
    Key("web-config-file", _as_optional_path, None, "",
        "TLS, basic auth and headers: a Prometheus exporter-toolkit web "
        "config file."),
    Key("basic-auth-users", _as_users, None, "",
        "Users and bcrypt hashes, USER=HASH,...; merged with the web "
        "config's basic_auth_users."),
)
BY_NAME = {k.name: k for k in TABLE}
KEYS = tuple(BY_NAME)
BOOLEAN_KEYS = frozenset(k.name for k in TABLE if k.boolean)


def defaults(environ: Mapping[str, str]) -> dict[str, object]:
    """The default of every key that has one."""
    return {
        k.name: k.default_in(environ) for k in TABLE if k.default is not UNSET
    }


def _check_key(key: object, source: str) -> str:
    if isinstance(key, str) and key in KEYS:
        return key
    msg = f"unknown config key {key!r} in {source}{did_you_mean(key, KEYS)}"
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
    by_env = {k.env: k.name for k in TABLE}
    out: dict[str, object] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        if name not in by_env and _SERVICE_LINK.fullmatch(name):
            continue
        if name not in by_env:
            guess = name.removeprefix(ENV_PREFIX).lower().replace("_", "-")
            msg = (
                f"unknown config key {guess!r} in environment variable "
                f"{name}{did_you_mean(guess, KEYS)}"
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
    v = {key: BY_NAME[key].parse(value, key) for key, value in merged.items()}
    host, port = v["bind-address"]
    plain = {f.name for f in fields(Config)}
    config = Config(
        roots=_roots(v, source_of),
        bind_host=host,
        bind_port=port,
        **{
            f: value
            for key, value in v.items()
            if (f := key.replace("-", "_")) in plain
        },
    )
    _check_watch(config)
    # A bad web config file stops here, before anything starts; its TLS
    # material is loaded only where it is used (the server, check-config).
    web_config.check(config.web_config_file, config.basic_auth_users)
    return config


def _check_watch(config: Config) -> None:
    """Watch mode follows a running daemon's roots, exactly or not at all."""
    if config.watch and config.mode == "file":
        raise _fail("watch", "needs mode http (mode file scans once and exits)")
    if config.watch and config.follow_symlinks:
        raise _fail(
            "watch",
            "cannot be combined with follow-symlinks (no event reports a "
            "change behind a symlink)",
        )


def _roots(v: Mapping[str, Any], source_of: Mapping[str, int]) -> tuple[Root, ...]:
    """multi-paths replaces analyzed-path and dir-level.

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


def load(
    config_file: Path | None,
    flag_values: Mapping[str, object],
    environ: Mapping[str, str],
) -> Config:
    """Load the configuration from its three sources."""
    file_values = read_file(config_file) if config_file is not None else {}
    return build(file_values, read_environ(environ), flag_values, environ)
