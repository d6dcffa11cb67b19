"""Command line: ``du-exporter [--config FILE] [flags] [COMMAND]``.

Every config key is also a flag of the same name, on the main command
and on every subcommand.  Errors are translated here, and only here,
into one line on stderr and the exit code of their class.

What only the daemon or one subcommand needs is imported where it is
used: mode ``file`` is timed against du, start-up included, and the
daemon (the HTTP server, watch mode) and the operator commands cost
~0.05 s of imports it never uses.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog
import yaml

from du_exporter import __version__
from du_exporter.config import KEYS, TABLE, Config, load, service_links
from du_exporter.errors import DuExporterError, ScanAbortedError
from du_exporter.log import configure_logging
from du_exporter.oneshot import run_once
from du_exporter.progress import Terminal


F = TypeVar("F", bound=Callable[..., Any])

log = structlog.get_logger("du_exporter")


def config_options(f: F) -> F:
    """Add ``--config`` and one flag per config key."""
    for key in reversed(TABLE):
        name = key.name.replace("-", "_")
        if key.boolean:
            decl = f"--{key.name}/--no-{key.name}"
            f = click.option(decl, name, default=None, help=key.help)(f)
        else:
            shown = f" [default: {key.shown}]" if key.shown else ""
            f = click.option(f"--{key.name}", name, default=None,
                             metavar="VALUE", help=key.help + shown)(f)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="YAML config file [env: DU_EXPORTER_CONFIG].",
    )(f)


class Settings:
    """The raw sources of the configuration, loaded on demand."""

    def __init__(self) -> None:
        self.config_file: Path | None = None
        self.flags: dict[str, object] = {}

    def add(self, config_file: Path | None, params: dict[str, Any]) -> None:
        if config_file is not None:
            self.config_file = config_file
        for key in KEYS:
            value = params.get(key.replace("-", "_"))
            if value is not None:
                self.flags[key] = value

    def load(self) -> Config:
        file = self.config_file
        if file is None and os.environ.get("DU_EXPORTER_CONFIG"):
            file = Path(os.environ["DU_EXPORTER_CONFIG"])
        return load(file, self.flags, os.environ)


def _settings(ctx: click.Context, /, config_file: Path | None, params: dict[str, Any]) -> Settings:
    settings = ctx.ensure_object(Settings)
    settings.add(config_file, params)
    return settings


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="du-exporter")
@config_options
@click.pass_context
def cli(ctx: click.Context, /, config_file: Path | None, **params: Any) -> None:
    """Prometheus exporter of exact per-directory disk usage.

    Without a command, runs the exporter: mode http serves /metrics and
    scans in the background; mode file scans once and writes a textfile.
    """
    settings = _settings(ctx, config_file, params)
    if ctx.invoked_subcommand is not None:
        return
    config = settings.load()
    # Log lines and the progress line of mode file share stderr.
    terminal = Terminal(sys.stderr)
    configure_logging(config.log_level, config.log_format, terminal)
    if links := service_links(os.environ):
        log.debug("environment_ignored", variables=links,
                  reason="Kubernetes service links, not config keys")
    if config.mode == "file":
        ctx.exit(_run_once(config, terminal))
    from du_exporter.web import webconfig as web_config  # noqa: PLC0415 - see the module docstring

    # The TLS material loads before anything starts: a certificate that
    # does not match its key stops the exporter with nothing created.
    web_config.load(config.web_config_file, config.basic_auth_users)
    _serve(config, settings.load)


def _run_once(config: Config, terminal: Terminal) -> int:
    """Mode file; SIGTERM or SIGINT abandon the scan and end the process
    by that signal (exit status 143 or 130), as an unhandled one would."""
    stop, stopped_by = threading.Event(), []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return run_once(config, progress=terminal, stop=stop)
    except ScanAbortedError:
        if not stopped_by:
            raise
    log.info("stopped", signal=signal.Signals(stopped_by[0]).name)
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(stopped_by[0], signal.SIG_DFL)
    os.kill(os.getpid(), stopped_by[0])
    return 128 + stopped_by[0]  # not reached: the signal ends the process


def _serve(config: Config, reload_config: Callable[[], Config]) -> None:
    from du_exporter.daemon import Daemon, Requests, one_malloc_arena  # noqa: PLC0415 - see the module docstring

    requests = Requests()
    signal.signal(signal.SIGTERM, lambda *_: requests.ask(requests.stop))
    signal.signal(signal.SIGINT, lambda *_: requests.ask(requests.stop))
    signal.signal(signal.SIGHUP, lambda *_: requests.ask(requests.reload))
    signal.signal(signal.SIGUSR1, lambda *_: requests.ask(requests.scan))
    one_malloc_arena()  # before the daemon starts its threads
    Daemon(config, reload_config).run(requests)


@cli.command("check-config")
@config_options
@click.pass_context
def check_config(ctx: click.Context, /, config_file: Path | None, **params: Any) -> None:
    """Validate the configuration and print the effective values.

    The web config's certificates and keys are loaded as the server
    would, so a certificate that does not match its key fails here.
    """
    from du_exporter.web import webconfig as web_config  # noqa: PLC0415 - see the module docstring

    config = _settings(ctx, config_file, params).load()
    web_config.load(config.web_config_file, config.basic_auth_users)
    click.echo(yaml.safe_dump(config.summary(), sort_keys=False), nl=False)


def _point_in_time(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """``365d``, ``12h``, … ago, or an ISO timestamp; as a Unix time."""
    from du_exporter.ops.select import parse_since  # noqa: PLC0415 - see the module docstring

    if value is None:
        return None
    try:
        return parse_since(value, time.time())
    except ValueError as e:
        raise click.BadParameter(str(e), param=param) from None


@cli.command("top")
@click.argument("path", required=False)
@click.option("-n", "count", type=click.IntRange(min=1), default=20,
              show_default=True, help="How many directories.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True, help="Output format.")
@click.option("--stale", metavar="DURATION|TIMESTAMP",
              callback=_point_in_time,
              help="Only directories whose newest modification time in the "
              "whole subtree is older than this (e.g. 365d, 2025-01-01).")
@config_options
@click.pass_context
def top(
    ctx: click.Context,
    /,
    path: str | None,
    count: int,
    fmt: str,
    stale: float | None,
    config_file: Path | None,
    **params: Any,
) -> None:
    """Largest directories from the last complete scan (no rescan)."""
    from du_exporter.ops.top import render_top, top_rows  # noqa: PLC0415 - see the module docstring
    from du_exporter.store.reader import Reader  # noqa: PLC0415 - see the module docstring

    config = _settings(ctx, config_file, params).load()
    rows = top_rows(Reader(config.db_path), config, path, count, stale)
    click.echo(
        render_top(rows, config, fmt, stale=stale is not None), nl=False
    )


@cli.command("diff")
@click.argument("path", required=False)
@click.option("--since", metavar="DURATION|TIMESTAMP",
              callback=_point_in_time,
              help="Compare with the newest scan finished at or before this "
              "(e.g. 1d, 2w, 2026-11-20T00:00) instead of the previous one.")
@click.option("-n", "count", type=click.IntRange(min=1), default=20,
              show_default=True, help="How many directories.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True, help="Output format.")
@config_options
@click.pass_context
def diff(
    ctx: click.Context,
    /,
    path: str | None,
    since: float | None,
    count: int,
    fmt: str,
    config_file: Path | None,
    **params: Any,
) -> None:
    """Growth per directory between the last two complete scans.

    Sorted by absolute change; directories that appeared or vanished are
    marked new or gone.  Needs two kept scans of the root
    (keep-generations, default 2).
    """
    from du_exporter.ops.diff import compare, render_diff  # noqa: PLC0415 - see the module docstring
    from du_exporter.store.reader import Reader  # noqa: PLC0415 - see the module docstring

    config = _settings(ctx, config_file, params).load()
    result = compare(Reader(config.db_path), config, path, count, since)
    click.echo(render_diff(result, fmt), nl=False)


@cli.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]),
              default="csv", show_default=True,
              help="csv (with a header) or json (JSON Lines: one object "
              "per line).")
@click.option("--generation", type=click.IntRange(min=1), default=None,
              help="Export this generation (see db check) instead of the "
              "latest complete one of each root.")
@config_options
@click.pass_context
def export(
    ctx: click.Context,
    /,
    fmt: str,
    generation: int | None,
    config_file: Path | None,
    **params: Any,
) -> None:
    """Every exported directory of the last complete scan, streamed."""
    from du_exporter.ops.export import stream  # noqa: PLC0415 - see the module docstring
    from du_exporter.store.reader import Reader  # noqa: PLC0415 - see the module docstring

    config = _settings(ctx, config_file, params).load()
    try:
        stream(Reader(config.db_path), generation, fmt, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as Python's docs
        # advise, without a second error when stdout is flushed at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        ctx.exit(1)


@cli.group("db")
def db() -> None:
    """Inspect and back up the database."""


@db.command("check")
@config_options
@click.pass_context
def db_check(ctx: click.Context, /, config_file: Path | None, **params: Any) -> None:
    """Check integrity, schema version and the generations present."""
    from du_exporter.ops.dbadmin import check  # noqa: PLC0415 - see the module docstring

    config = _settings(ctx, config_file, params).load()
    ok, report = check(config.db_path)
    click.echo(report, nl=False)
    ctx.exit(0 if ok else 1)


@db.command("backup")
@click.argument("dest", type=click.Path(path_type=Path, dir_okay=False))
@config_options
@click.pass_context
def db_backup(
    ctx: click.Context, /, dest: Path, config_file: Path | None, **params: Any
) -> None:
    """Copy the database to DEST with SQLite's online backup."""
    from du_exporter.ops.dbadmin import backup  # noqa: PLC0415 - see the module docstring

    config = _settings(ctx, config_file, params).load()
    backup(config.db_path, dest)
    click.echo(f"backed up {config.db_path} to {dest}")


@cli.command("healthcheck")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, metavar="SECONDS",
              help="Give up on the probe after this long.")
@config_options
@click.pass_context
def healthcheck(
    ctx: click.Context, /, timeout: float, config_file: Path | None, **params: Any
) -> None:
    """Probe the running exporter's /-/healthy: exit 0 when it answers.

    Reads the same configuration and environment as the exporter: the
    port of bind-address (on loopback when it listens on every
    address), and TLS from web-config-file.  For a container HEALTHCHECK.
    """
    from du_exporter.web import healthcheck as health  # noqa: PLC0415 - see the module docstring

    config = _settings(ctx, config_file, params).load()
    click.echo(health.probe(config, timeout))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main() -> None:
    """Console script entry point."""
    try:
        code = cli.main(prog_name="du-exporter", standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.UsageError as e:
        # One line, like every other error: the message and where to look.
        where = e.ctx.command_path if e.ctx is not None else "du-exporter"
        msg = _one_line(e.format_message()).rstrip(".")
        click.echo(f"du-exporter: error: {msg}; see '{where} --help'", err=True)
        code = e.exit_code
    except click.ClickException as e:
        click.echo(f"du-exporter: error: {_one_line(e.format_message())}", err=True)
        code = e.exit_code
    except click.exceptions.Abort:
        code = 1
    except DuExporterError as e:
        click.echo(f"du-exporter: error: {e}", err=True)
        code = e.exit_code
    sys.exit(code if isinstance(code, int) else 0)
