"""The command line, as operators run it: real processes."""

# The project asks for `assert expected == actual` (STYLE.md, structlog).
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from du_exporter import __version__
from du_exporter.cli import cli
from du_exporter.config import BOOLEAN_KEYS, KEYS
from helpers import clean_env, invoke, one_error_line, run


COMMANDS = [
    [],
    ["check-config"],
    ["top"],
    ["db"],
    ["db", "check"],
    ["db", "backup"],
]
# Commands that take the configuration (all but the `db` group).
CONFIGURED = [c for c in COMMANDS if c != ["db"]]


def command_id(command: list[str]) -> str:
    return " ".join(command) or "main"


def du_bytes(path: str, flag: str = "-sB1") -> int:
    """GNU ``du FLAG PATH`` (one path per call: du counts an inode once)."""
    out = subprocess.run(
        ["du", flag, path], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split("\t", 1)[0])


def all_commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


class TestHelpAndVersion:
    """--version and --help work everywhere and describe everything."""

    def test_usage_error_in_a_real_process(self, tmp_path: Path) -> None:
        """Exit 2 and click's message on one line, from a real process."""
        proc = run(tmp_path, "top", "-n", "0")

        assert 2 == proc.returncode
        assert "--help" in one_error_line(proc)

    def test_version(self, tmp_path: Path) -> None:
        """--version prints the package version and exits 0."""
        proc = run(tmp_path, "--version")

        assert 0 == proc.returncode
        assert f"du-exporter, version {__version__}\n" == proc.stdout

    @pytest.mark.parametrize("command", COMMANDS, ids=command_id)
    @pytest.mark.parametrize("flag", ["--help", "-h"])
    def test_help(self, tmp_path: Path, command: list[str], flag: str) -> None:
        """--help (and -h) prints usage for every command and exits 0."""
        proc = invoke(tmp_path, *command, flag)

        assert 0 == proc.returncode, proc.stderr
        assert proc.stdout.startswith(
            f"Usage: du-exporter {' '.join(command)}".rstrip()
        )
        assert "" == proc.stderr

    @pytest.mark.parametrize("command", CONFIGURED, ids=command_id)
    def test_every_key_is_a_flag(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        """Every config key is listed as a flag of every command."""
        text = invoke(tmp_path, *command, "--help").stdout

        missing = [
            key
            for key in KEYS
            if (f"--{key} / --no-{key}" if key in BOOLEAN_KEYS else f"--{key}")
            not in text
        ]
        assert [] == missing
        assert "--config" in text

    def test_commands_have_help(self) -> None:
        """Every command and option has help text (sqlite-utils' test)."""
        assert cli.help
        for name, command in [((), cli), *all_commands(cli)]:
            assert command.help, (
                f"{command_id(list(name))} is missing its help"
            )
            for param in command.params:
                if isinstance(param, click.Option):
                    assert param.help, f"{command_id(list(name))} {param.opts}"

    def test_subcommands_are_listed(self, tmp_path: Path) -> None:
        """The main help lists the operator subcommands."""
        text = run(tmp_path, "--help").stdout  # one real process: exit 0

        for name in ("check-config", "top", "db"):
            assert name in text


def check_config(
    home: Path, *args: str | Path, env: Mapping[str, str] | None = None
) -> dict[str, object]:
    proc = invoke(home, "check-config", *args, env=env)
    assert 0 == proc.returncode, proc.stderr
    data = yaml.safe_load(proc.stdout)
    assert isinstance(data, dict)
    return data


class TestCheckConfig:
    """check-config validates and prints the effective config as YAML."""

    def test_defaults(self, tmp_path: Path) -> None:
        """With nothing configured, the defaults print, keyed like the file."""
        data = check_config(tmp_path)

        assert {"/": 2} == data["multi-paths"]
        assert "0.0.0.0:9995" == data["bind-address"]
        assert "http" == data["mode"]
        assert "disk" == data["size-mode"]
        assert ["/proc", "/dev", "/sys", "/run"] == data["ignore-dirs"]
        assert (
            str(tmp_path / "state" / "du-exporter" / "du-exporter.db")
            == data["db-path"]
        )

    def test_output_is_a_valid_config_file(self, tmp_path: Path) -> None:
        """What check-config prints can be used as the config file."""
        first = run(tmp_path, "check-config", "--multi-paths", "/a=1,/B=0")
        path = tmp_path / "effective.yml"
        path.write_text(first.stdout, encoding="utf-8")

        again = run(tmp_path, "check-config", "--config", path)

        assert 0 == again.returncode, again.stderr
        assert first.stdout == again.stdout

    @pytest.mark.parametrize(
        ("in_file", "in_env", "as_flag", "expected"),
        [
            (False, False, False, 2),
            (True, False, False, 3),
            (True, True, False, 4),
            (False, True, False, 4),
            (True, True, True, 5),
            (True, False, True, 5),
            (False, True, True, 5),
        ],
    )
    def test_precedence(
        self,
        tmp_path: Path,
        in_file: bool,
        in_env: bool,
        as_flag: bool,
        expected: int,
    ) -> None:
        """flag > environment > file > default."""
        args: list[str | Path] = []
        env = clean_env(tmp_path)
        if in_file:
            path = tmp_path / "c.yml"
            path.write_text("dir-level: 3\n", encoding="utf-8")
            args += ["--config", path]
        if in_env:
            env["DU_EXPORTER_DIR_LEVEL"] = "4"
        if as_flag:
            args += ["--dir-level", "5"]

        data = check_config(tmp_path, *args, env=env)

        assert {"/": expected} == data["multi-paths"]

    def test_precedence_across_keys(self, tmp_path: Path) -> None:
        """Each key comes from its own highest source."""
        path = tmp_path / "c.yml"
        path.write_text(
            "size-mode: apparent\n"
            "one-file-system: true\n"
            "ignore-dirs: [/a, /b]\n"
            "bind-address: 127.0.0.1:9100\n",
            encoding="utf-8",
        )
        env = clean_env(
            tmp_path,
            DU_EXPORTER_ONE_FILE_SYSTEM="false",
            DU_EXPORTER_IGNORE_DIRS="/c,/d",
        )

        data = check_config(
            tmp_path,
            "--config",
            path,
            "--bind-address",
            "[::1]:9995",
            "--one-file-system",
            env=env,
        )

        assert "apparent" == data["size-mode"]  # file
        assert ["/c", "/d"] == data["ignore-dirs"]  # env over file
        assert data["one-file-system"] is True  # flag over env over file
        assert "[::1]:9995" == data["bind-address"]  # flag over file

    def test_no_flag_overrides_file(self, tmp_path: Path) -> None:
        """--no-KEY sets a boolean false over the file's true."""
        path = tmp_path / "c.yml"
        path.write_text("dir-count: true\n", encoding="utf-8")

        data = check_config(tmp_path, "--config", path, "--no-dir-count")

        assert data["dir-count"] is False

    def test_config_from_environment(self, tmp_path: Path) -> None:
        """DU_EXPORTER_CONFIG names the file; --config overrides it."""
        env_file = tmp_path / "env.yml"
        env_file.write_text("dir-level: 7\n", encoding="utf-8")
        flag_file = tmp_path / "flag.yml"
        flag_file.write_text("dir-level: 8\n", encoding="utf-8")
        env = clean_env(tmp_path, DU_EXPORTER_CONFIG=str(env_file))

        assert {"/": 7} == check_config(tmp_path, env=env)["multi-paths"]
        assert {"/": 8} == check_config(
            tmp_path, "--config", flag_file, env=env
        )["multi-paths"]

    def test_main_flags_reach_subcommands(self, tmp_path: Path) -> None:
        """Flags before the subcommand apply; the subcommand's win."""
        proc = run(
            tmp_path,
            "--dir-level",
            "3",
            "--mode",
            "file",
            "check-config",
            "--dir-level",
            "4",
        )

        assert 0 == proc.returncode, proc.stderr
        data = yaml.safe_load(proc.stdout)
        assert ({"/": 4}, "file") == (data["multi-paths"], data["mode"])

    def test_paths_keep_their_case(self, tmp_path: Path) -> None:
        """Paths are printed exactly as configured."""
        data = check_config(tmp_path, "--analyzed-path", "/Data/Projects")

        assert {"/Data/Projects": 2} == data["multi-paths"]


BAD_CONFIGS = [
    pytest.param(
        {"file": "dir-levl: 3\n"},
        "unknown config key 'dir-levl' in FILE; did you mean 'dir-level'?",
        id="unknown-key-in-file",
    ),
    pytest.param(
        {"file": "Dir-Level: 3\n"},
        "unknown config key 'Dir-Level' in FILE; did you mean 'dir-level'?",
        id="key-case-in-file",
    ),
    pytest.param(
        {"args": ["--dir-level", "x"]},
        "config key 'dir-level': 'x' is not an integer",
        id="bad-flag-value",
    ),
    pytest.param(
        {"args": ["--bind-address", "0.0.0.0:70000"]},
        "config key 'bind-address': port 70000 is out of range 0-65535",
        id="bad-port-flag",
    ),
    pytest.param(
        {"env": {"DU_EXPORTER_SIZE_MODE": "foo"}},
        "config key 'size-mode': 'foo' is not one of disk, apparent",
        id="bad-env-value",
    ),
    pytest.param(
        {"env": {"DU_EXPORTER_DIR_LEVL": "3"}},
        "'dir-levl' in environment variable DU_EXPORTER_DIR_LEVL",
        id="unknown-env-variable",
    ),
    pytest.param(
        {"args": ["--config", "missing.yml"]},
        "cannot read config file 'missing.yml'",
        id="missing-config-file",
    ),
    pytest.param(
        {"env": {"DU_EXPORTER_CONFIG": "missing.yml"}},
        "cannot read config file 'missing.yml'",
        id="missing-config-file-from-env",
    ),
    pytest.param(
        {"file": "dir-level: [\n"},
        "config file 'FILE' is not valid YAML",
        id="invalid-yaml",
    ),
    pytest.param(
        {"file": "- a\n- b\n"},
        "config file 'FILE' must be a mapping of key: value",
        id="not-a-mapping",
    ),
    pytest.param(
        {"file": "multi-paths: {/a: 1}\n", "args": ["--analyzed-path", "/x"]},
        "config key 'analyzed-path': cannot be combined with multi-paths",
        id="multi-paths-and-analyzed-path",
    ),
    pytest.param(
        {"file": "web-config-file: /etc/web.yml\n"},
        "config key 'web-config-file': ",
        id="web-config-file",
    ),
    pytest.param(
        {"args": ["--bind-address", "localhost:\u00b2"]},
        "config key 'bind-address'",
        id="superscript-port",
    ),
    pytest.param(
        {"args": ["--db-path", "~nosuchuser/db"]},
        "config key 'db-path'",
        id="unknown-user-home",
    ),
    pytest.param(
        {"env": {"DU_EXPORTER_dir_level": "3"}},
        "DU_EXPORTER_dir_level",
        id="lower-case-env-variable",
    ),
]


def reject(
    tmp_path: Path,
    command: list[str],
    setup: dict[str, Any],
    message: str,
    *,
    process: bool = False,
) -> None:
    """Run ``command`` with the bad ``setup``; check the one-line error.

    In this process, or with ``process`` in a real one.
    """
    args = list(setup.get("args", []))
    if "file" in setup:
        path = tmp_path / "c.yml"
        path.write_text(setup["file"], encoding="utf-8")
        args += ["--config", str(path)]
        message = message.replace("FILE", str(path))
    env = clean_env(tmp_path, **setup.get("env", {}))
    if command == ["db", "backup"]:
        args.insert(0, str(tmp_path / "backup.db"))

    proc = (run if process else invoke)(tmp_path, *command, *args, env=env)

    line = one_error_line(proc)
    assert 2 == proc.returncode, proc.stderr
    assert message in line
    assert "" == proc.stdout
    # Nothing started: no database, no textfile, no backup.
    assert {p.name for p in tmp_path.iterdir()} <= {"c.yml"}


class TestBadConfig:
    """A bad config is exit 2 and one line naming the key or the file."""

    @pytest.mark.parametrize(("setup", "message"), BAD_CONFIGS)
    def test_check_config(
        self, tmp_path: Path, setup: dict[str, Any], message: str
    ) -> None:
        """Each class of bad config is rejected with its reason."""
        reject(tmp_path, ["check-config"], setup, message)

    @pytest.mark.parametrize("command", CONFIGURED, ids=command_id)
    def test_real_process(self, tmp_path: Path, command: list[str]) -> None:
        """A real process: one line on stderr, exit 2, nothing started."""
        setup = {"file": "dir-levl: 3\n"}
        message = "unknown config key 'dir-levl' in FILE; did you mean 'dir-level'?"
        reject(tmp_path, command, setup, message, process=True)

    @pytest.mark.parametrize("command", CONFIGURED, ids=command_id)
    @pytest.mark.parametrize(
        ("setup", "message"),
        [
            p
            for p in BAD_CONFIGS
            if p.id
            in {"unknown-key-in-file", "bad-flag-value", "bad-env-value"}
        ],
    )
    def test_every_command(
        self,
        tmp_path: Path,
        command: list[str],
        setup: dict[str, Any],
        message: str,
    ) -> None:
        """Every command, the daemon included, rejects before starting."""
        reject(tmp_path, command, setup, message)

    @pytest.mark.parametrize(
        "args",
        [
            ["--no-such-flag"],
            ["top", "-n", "0"],
            ["top", "--format", "xml"],
            ["db", "backup"],
            ["no-such-command"],
        ],
        ids=command_id,
    )
    def test_usage_errors(self, tmp_path: Path, args: list[str]) -> None:
        """Bad usage is exit 2 with click's message on one line."""
        proc = invoke(tmp_path, *args)

        assert 2 == proc.returncode
        assert "Traceback" not in proc.stderr
        assert 1 == len(proc.stderr.splitlines()), proc.stderr
        assert proc.stderr.startswith("du-exporter: error: ")
        assert "--help" in proc.stderr


@dataclass
class Scanned:
    """A real tree, scanned once by ``du-exporter --mode file``."""

    home: Path
    tree: Path
    db: Path

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run(self.home, *args)

    def top(self, *args: str | Path, db: Path | None = None) -> str:
        proc = self.run("top", "--db-path", db or self.db, *args)
        assert 0 == proc.returncode, proc.stderr
        return proc.stdout

    def top_json(self, *args: str | Path) -> list[dict[str, Any]]:
        rows = json.loads(self.top("--format", "json", *args))
        assert isinstance(rows, list)
        return rows


def make_tree(root: Path) -> Path:
    """Directories three deep, files of assorted sizes, an empty dir."""
    sizes = {
        "a/f1": 10_000,
        "a/b/f2": 50_000,
        "ab/f5": 20_000,  # a sibling of "a" that starts like it
        "a/b/c/deep": 123_457,  # below dir-level 2: counted, not listed
        "a/b/c/d/deeper": 70_000,
        "e/f3": 3_000,
        "e/g/f4": 1,
        "h/empty.txt": 0,
        "top.bin": 4_097,
    }
    for name, size in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (root / "i" / "j" / "k").mkdir(parents=True)
    return root


@pytest.fixture(name="scanned", scope="module")
def _scanned(tmp_path_factory: pytest.TempPathFactory) -> Scanned:
    home = tmp_path_factory.mktemp("cli")
    tree = make_tree(home / "Tree")
    db = home / "state" / "du.db"
    proc = run(
        home,
        "--mode", "file",
        "--analyzed-path", tree,
        "--dir-level", "2",
        "--db-path", db,
        "--output-file", home / "out.prom",
        "--max-procs", "2",
    )  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    return Scanned(home, tree, db)


class TestTop:
    """top lists the largest directories of the last scan, exactly."""

    def test_json_sizes_equal_du(self, scanned: Scanned) -> None:
        """JSON bytes equal ``du -sB1`` for every directory listed."""
        rows = scanned.top_json("-n", "100")

        listed = {str(r["path"]): r["bytes"] for r in rows}
        assert {p: du_bytes(p) for p in listed} == listed

    def test_apparent_sizes_equal_du_b(self, scanned: Scanned) -> None:
        """With --size-mode apparent, bytes equal ``du -sb``."""
        rows = scanned.top_json("-n", "100", "--size-mode", "apparent")

        listed = {str(r["path"]): r["bytes"] for r in rows}
        assert {p: du_bytes(p, "-sb") for p in listed} == listed

    def test_lists_every_directory_to_dir_level(
        self, scanned: Scanned
    ) -> None:
        """Every directory down to dir-level 2 is a row, none deeper."""
        rows = scanned.top_json("-n", "100")

        tree = scanned.tree
        expected = {str(tree): 0}
        for path in tree.rglob("*"):
            depth = len(path.relative_to(tree).parts)
            if path.is_dir() and depth <= 2:
                expected[str(path)] = depth
        assert expected == {str(r["path"]): r["level"] for r in rows}

    def test_sorted_largest_first(self, scanned: Scanned) -> None:
        """Rows come largest first."""
        sizes = [r["bytes"] for r in scanned.top_json("-n", "100")]

        assert sorted(sizes, reverse=True) == sizes

    def test_csv(self, scanned: Scanned) -> None:
        """CSV parses, with a header and integer byte counts."""
        text = scanned.top("--format", "csv", "-n", "100")

        rows = list(csv.DictReader(io.StringIO(text)))
        by_json = {
            str(r["path"]): r["bytes"] for r in scanned.top_json("-n", "100")
        }
        assert by_json == {r["path"]: int(r["bytes"]) for r in rows}
        assert all(r["bytes"].isdigit() for r in rows)

    def test_limit(self, scanned: Scanned) -> None:
        """-n N keeps the N largest rows."""
        everything = scanned.top_json("-n", "100")

        assert everything[:2] == scanned.top_json("-n", "2")
        assert 2 == len(
            list(
                csv.DictReader(
                    io.StringIO(scanned.top("--format", "csv", "-n", "2"))
                )
            )
        )

    def test_default_limit_is_twenty(self, scanned: Scanned) -> None:
        """Without -n, at most 20 rows (the tree has fewer)."""
        assert scanned.top_json("-n", "20") == scanned.top_json()

    def test_subpath(self, scanned: Scanned) -> None:
        """top PATH lists only PATH and directories below it."""
        sub = scanned.tree / "a"

        rows = scanned.top_json(str(sub), "-n", "100")

        # Not TREE/ab: a sibling is not below PATH though it shares a prefix.
        assert {str(sub), str(sub / "b")} == {str(r["path"]) for r in rows}

    def test_subpath_trailing_slash(self, scanned: Scanned) -> None:
        """``PATH/`` selects the same directories as ``PATH``."""
        sub = str(scanned.tree / "e")

        assert scanned.top_json(sub) == scanned.top_json(sub + "/")

    @pytest.mark.parametrize("command", ["top", "diff"])
    @pytest.mark.parametrize("where", ["outside", "inside"])
    def test_subpath_not_scanned(
        self, tmp_path: Path, command: str, where: str
    ) -> None:
        """A path that is no directory of the scan: one line, exit 1."""
        tree = make_tree(tmp_path / "Tree")
        db = tmp_path / "du.db"
        for _ in range(2):  # a diff needs two scans
            scan = run(tmp_path, "--mode", "file", "--analyzed-path", tree,
                       "--db-path", db, "--output-file", tmp_path / "o.prom")
            assert 0 == scan.returncode, scan.stderr
        path = "/nonexistent/elsewhere" if where == "outside" else str(
            tree / "no-such-dir"
        )
        proc = run(tmp_path, command, path, "--db-path", db)
        assert 1 == proc.returncode, proc.stderr
        assert [proc.stderr.strip()] == proc.stderr.splitlines()
        assert proc.stderr.startswith(f"du-exporter: error: {command}: ")
        assert "" == proc.stdout

    def test_table(self, scanned: Scanned) -> None:
        """The table has a header and one line per row."""
        lines = scanned.top("-n", "3").splitlines()

        assert 4 == len(lines)
        assert ["SIZE", "FILES", "DIRS", "PATH"] == lines[0].split()
        assert lines[1].endswith(str(scanned.tree))

    def test_config_file(self, scanned: Scanned, tmp_path: Path) -> None:
        """top takes the same config file as the daemon."""
        path = tmp_path / "c.yml"
        path.write_text(f"db-path: {scanned.db}\n", encoding="utf-8")

        proc = scanned.run("top", "--config", path, "--format", "json")

        assert 0 == proc.returncode, proc.stderr
        assert scanned.top_json() == json.loads(proc.stdout)


class TestDbCheck:
    """db check reports integrity, schema version and generations."""

    def test_ok(self, scanned: Scanned) -> None:
        """A fresh database is ok, exit 0."""
        proc = scanned.run("db", "check", "--db-path", scanned.db)

        assert 0 == proc.returncode, proc.stderr
        lines = proc.stdout.splitlines()
        assert "integrity: ok" in lines
        assert "ok" == lines[-1]
        assert "complete" in proc.stdout
        assert str(scanned.tree) in proc.stdout


class TestDbBackup:
    """db backup DEST makes a consistent copy and never overwrites."""

    def test_backup_is_a_working_database(
        self, scanned: Scanned, tmp_path: Path
    ) -> None:
        """The copy opens in sqlite3, is intact, and top reads the same."""
        dest = tmp_path / "copy.db"

        proc = scanned.run("db", "backup", dest, "--db-path", scanned.db)

        assert 0 == proc.returncode, proc.stderr
        assert f"backed up {scanned.db} to {dest}\n" == proc.stdout
        assert [dest.name] == [p.name for p in tmp_path.iterdir()]
        conn = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
        try:
            assert [("ok",)] == conn.execute(
                "PRAGMA integrity_check"
            ).fetchall()
        finally:
            conn.close()
        assert scanned.top("--format", "json") == scanned.top(
            "--format", "json", db=dest
        )

    def test_backup_passes_db_check(
        self, scanned: Scanned, tmp_path: Path
    ) -> None:
        """db check on the copy is ok."""
        dest = tmp_path / "copy.db"
        backup = scanned.run("db", "backup", dest, "--db-path", scanned.db)
        assert 0 == backup.returncode, backup.stderr

        proc = scanned.run("db", "check", "--db-path", dest)

        assert 0 == proc.returncode, proc.stdout + proc.stderr

    def test_existing_destination(
        self, scanned: Scanned, tmp_path: Path
    ) -> None:
        """An existing DEST is refused, exit 1, and left untouched."""
        dest = tmp_path / "precious"
        dest.write_bytes(b"do not overwrite")

        proc = scanned.run("db", "backup", dest, "--db-path", scanned.db)

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert str(dest) in line
        assert b"do not overwrite" == dest.read_bytes()


class TestMissingDatabase:
    """Operator tools on a db-path with no database: exit 1, one line."""

    @pytest.mark.parametrize(
        "command",
        [["top"], ["top", "--format", "json"], ["db", "check"]],
        ids=command_id,
    )
    def test_read_commands(self, tmp_path: Path, command: list[str]) -> None:
        """top and db check name the missing database and create nothing."""
        db = tmp_path / "nothere" / "du.db"

        proc = run(tmp_path, *command, "--db-path", db)

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert str(db) in line
        assert "" == proc.stdout
        assert not db.parent.exists()

    def test_backup(self, tmp_path: Path) -> None:
        """db backup of a missing database fails and writes no DEST."""
        db = tmp_path / "nothere.db"
        dest = tmp_path / "copy.db"

        proc = run(tmp_path, "db", "backup", dest, "--db-path", db)

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert str(db) in line
        assert not db.exists()
        assert not dest.exists()

    def test_default_db_path(self, tmp_path: Path) -> None:
        """Without --db-path, the default under XDG_STATE_HOME is named."""
        proc = run(tmp_path, "top")

        line = one_error_line(proc)
        assert 1 == proc.returncode
        assert (
            str(tmp_path / "state" / "du-exporter" / "du-exporter.db") in line
        )
