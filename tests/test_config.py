"""Configuration: sources, precedence and validation (README "Configuration")."""

# The project asks for `assert expected == actual` (STYLE.md, structlog).
from __future__ import annotations

import os
import re
import string

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml

from hypothesis import given, settings
from hypothesis import strategies as st

from du_exporter import config
from du_exporter.config import KEYS, TABLE, Config, Root
from du_exporter.errors import ConfigError


ENVIRON = {"HOME": "/home/tester"}
ANY_HOST = "0.0.0.0"  # noqa: S104 - the documented default


def build(
    file_values: Mapping[str, object] | None = None,
    env_values: Mapping[str, object] | None = None,
    flag_values: Mapping[str, object] | None = None,
) -> Config:
    return config.build(
        file_values or {}, env_values or {}, flag_values or {}, ENVIRON
    )


def env_name(key: str) -> str:
    return "DU_EXPORTER_" + key.upper().replace("-", "_")


def config_file(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "du-exporter.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def config_or_error(
    file_values: Mapping[str, object],
    env_values: Mapping[str, object],
    flag_values: Mapping[str, object],
    environ: Mapping[str, str],
    *,
    read_env: bool = False,
) -> Config | ConfigError:
    """The Config, or the ConfigError; any other exception propagates.

    With ``read_env``, ``DU_EXPORTER_*`` variables in ``environ`` are
    read as the environment layer (instead of ``env_values``).
    """
    try:
        if read_env:
            env_values = config.read_environ(environ)
        return config.build(file_values, env_values, flag_values, environ)
    except ConfigError as e:
        return e


README = Path(__file__).parent.parent / "README.md"


def readme_keys() -> dict[str, str]:
    """The README's config reference: {key: default as shown}.

    A row may document two keys (``a`` / ``b``) and then two defaults.
    """
    text = README.read_text(encoding="utf-8")
    table = text.split("| key | meaning | default |", 1)[1].split("\n\n", 1)[0]
    out: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        key_cell, _, default_cell = (c.strip() for c in line.strip("|").split(" | "))
        names = re.findall(r"`([^`]+)`", key_cell)
        shown = [d.strip() for d in default_cell.split(" / ")]
        if len(shown) != len(names):
            shown = [default_cell] * len(names)
        for name, cell in zip(names, shown, strict=True):
            ticked = re.match(r"`([^`]*)`", cell)
            out[name] = ticked.group(1) if ticked else cell.replace("\N{EN DASH}", "")
    return out


class TestKeyTable:
    """One table defines every key: the parser, the flags and the README."""

    def test_readme_lists_every_key_with_its_default(self) -> None:
        """The README's config reference has the table's keys and defaults."""
        assert {k.name: k.shown for k in TABLE} == readme_keys()

    def test_shown_defaults_are_the_defaults(self) -> None:
        """The default shown for a key is the value it gets."""
        defaults = config.defaults(ENVIRON)
        for key in TABLE:
            if key.name in {"db-path", "max-procs"}:
                continue  # shown as where they come from
            value = defaults.get(key.name)
            if isinstance(value, list):
                value = ",".join(value)
            if isinstance(value, bool):
                value = str(value).lower()
            assert key.shown == ("" if value is None else str(value)), key.name

    def test_every_key_fills_the_config(self) -> None:
        """A key ``a-b`` fills ``Config.a_b``; the roots and the address
        are the only keys folded into other fields."""
        folded = {"analyzed-path", "dir-level", "multi-paths", "bind-address"}
        fields = set(Config.__dataclass_fields__)

        assert fields - {"roots", "bind_host", "bind_port"} == {
            k.replace("-", "_") for k in KEYS if k not in folded
        }

    def test_environment_names(self) -> None:
        """Each key's variable is DU_EXPORTER_ and the key in capitals."""
        assert [env_name(k) for k in KEYS] == [k.env for k in TABLE]


class TestDefaults:
    """With no file, no environment and no flags, the README's defaults apply."""

    def test_documented_defaults(self) -> None:
        """Every key with a documented default has it."""
        cfg = build()

        assert (Root("/", 2),) == cfg.roots
        assert (ANY_HOST, 9995) == (cfg.bind_host, cfg.bind_port)
        assert "http" == cfg.mode
        assert Path("./du-exporter.prom") == cfg.output_file
        assert 1000 == cfg.batch_size
        assert (os.cpu_count() or 1) == cfg.max_procs
        assert ("/proc", "/dev", "/sys", "/run") == cfg.ignore_dirs
        assert cfg.one_file_system is False
        assert cfg.follow_symlinks is False
        assert "disk" == cfg.size_mode
        assert (True, True, True) == (
            cfg.dir_count,
            cfg.file_count,
            cfg.size_bucket,
        )
        assert 0 == cfg.max_iops
        assert "info" == cfg.log_level
        assert "auto" == cfg.log_format

    def test_db_path_under_xdg_state_home(self) -> None:
        """The default database lives in the XDG state directory."""
        cfg = config.build({}, {}, {}, {"XDG_STATE_HOME": "/var/st"})

        assert Path("/var/st/du-exporter/du-exporter.db") == cfg.db_path

    def test_db_path_under_home(self) -> None:
        """Without XDG_STATE_HOME the database is under ~/.local/state."""
        cfg = build()

        assert (
            Path("/home/tester/.local/state/du-exporter/du-exporter.db")
            == cfg.db_path
        )

    def test_empty_file_is_all_defaults(self, tmp_path: Path) -> None:
        """An empty YAML file configures nothing."""
        path = tmp_path / "empty.yml"
        path.write_text("# nothing\n", encoding="utf-8")

        assert build() == config.load(path, {}, ENVIRON)

    def test_summary_round_trips(self) -> None:
        """The summary (what check-config prints) loads back as a file."""
        cfg = build(flag_values={"multi-paths": "/a=1,/b=3"})

        summary = yaml.safe_load(yaml.safe_dump(cfg.summary()))

        assert cfg == build(file_values=summary)


def _level(cfg: Config) -> object:
    return cfg.roots[0].dir_level


# key, value in the file (YAML data), in the environment (a string), as a
# flag (what click passes), the default, and how to read it from a Config.
# Neighbouring layers always differ, so the winner is visible.
PRECEDENCE: list[
    tuple[str, object, str, object, object, Callable[[Config], object]]
] = [
    ("dir-level", 3, "4", "5", 2, _level),
    (
        "size-mode",
        "apparent",
        "disk",
        "apparent",
        "disk",
        lambda c: c.size_mode,
    ),
    (
        "one-file-system",
        True,
        "false",
        True,
        False,
        lambda c: c.one_file_system,
    ),
    (
        "ignore-dirs",
        ["/a", "b"],
        "/c,/d",
        " /e , f ",
        ("/proc", "/dev", "/sys", "/run"),
        lambda c: c.ignore_dirs,
    ),
    (
        "multi-paths",
        {"/a": 1, "/b": 2},
        "/c=3,/d=0",
        "/e=1",
        ((Root("/", 2),)),
        lambda c: c.roots,
    ),
    (
        "bind-address",
        "127.0.0.1:9100",
        "[::1]:9995",
        "localhost:1234",
        (ANY_HOST, 9995),
        lambda c: (c.bind_host, c.bind_port),
    ),
    (
        "analyzed-path",
        "/Srv/Data",
        "/srv/DATA",
        "/SRV/data",
        "/",
        lambda c: c.roots[0].path,
    ),
]
# What each layer's value above parses to.
PARSED: dict[str, tuple[object, object, object]] = {
    "dir-level": (3, 4, 5),
    "size-mode": ("apparent", "disk", "apparent"),
    "one-file-system": (True, False, True),
    "ignore-dirs": (("/a", "b"), ("/c", "/d"), ("/e", "f")),
    "multi-paths": (
        (Root("/a", 1), Root("/b", 2)),
        (Root("/c", 3), Root("/d", 0)),
        (Root("/e", 1),),
    ),
    "bind-address": (("127.0.0.1", 9100), ("::1", 9995), ("localhost", 1234)),
    "analyzed-path": ("/Srv/Data", "/srv/DATA", "/SRV/data"),
}
LAYERS = [
    pytest.param(f, e, g, id=f"file{int(f)}-env{int(e)}-flag{int(g)}")
    for f in (False, True)
    for e in (False, True)
    for g in (False, True)
]


class TestPrecedence:
    """flag > environment > file > default, key by key."""

    @pytest.mark.parametrize(("in_file", "in_env", "as_flag"), LAYERS)
    @pytest.mark.parametrize(
        ("key", "file_value", "env_value", "flag_value", "default", "get"),
        PRECEDENCE,
        ids=[p[0] for p in PRECEDENCE],
    )
    def test_highest_layer_wins(
        self,
        tmp_path: Path,
        key: str,
        file_value: object,
        env_value: str,
        flag_value: object,
        default: object,
        get: Callable[[Config], object],
        in_file: bool,
        in_env: bool,
        as_flag: bool,
    ) -> None:
        """The value comes from the highest layer that sets the key."""
        path = config_file(tmp_path, {key: file_value}) if in_file else None
        environ = dict(ENVIRON)
        if in_env:
            environ[env_name(key)] = env_value
        flags = {key: flag_value} if as_flag else {}
        expected = default
        for present, parsed in zip(
            (in_file, in_env, as_flag), PARSED[key], strict=True
        ):
            if present:
                expected = parsed

        assert expected == get(config.load(path, flags, environ))

    def test_layers_merge_key_by_key(self, tmp_path: Path) -> None:
        """Each layer contributes its own keys; none masks another's."""
        path = config_file(tmp_path, {"dir-level": 1, "mode": "file"})
        environ = {**ENVIRON, "DU_EXPORTER_SIZE_MODE": "apparent"}

        cfg = config.load(path, {"batch-size": "7"}, environ)

        assert (1, "file", "apparent", 7) == (
            cfg.roots[0].dir_level,
            cfg.mode,
            cfg.size_mode,
            cfg.batch_size,
        )

    def test_config_variable_is_not_a_key(self) -> None:
        """DU_EXPORTER_CONFIG names the file; it is not a config key."""
        environ = {**ENVIRON, "DU_EXPORTER_CONFIG": "/nonexistent.yml"}

        assert build() == config.load(None, {}, environ)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("true", True),
            ("YES", True),
            ("on", True),
            ("1", True),
            ("false", False),
            ("No", False),
            (" off ", False),
            ("0", False),
        ],
    )
    def test_boolean_words_from_environment(
        self, text: str, expected: object
    ) -> None:
        """Environment booleans accept the usual words, any case."""
        environ = {**ENVIRON, "DU_EXPORTER_FOLLOW_SYMLINKS": text}

        assert expected is config.load(None, {}, environ).follow_symlinks

    def test_multi_paths_from_flag_string(self) -> None:
        """``PATH=LEVEL,...`` parses; paths are normalised and sorted."""
        cfg = build(flag_values={"multi-paths": "/b/=1, /a//x=0"})

        assert (Root("/a/x", 0), Root("/b", 1)) == cfg.roots

    def test_bare_ipv6_host(self) -> None:
        """An unbracketed IPv6 host is split at its last colon."""
        cfg = build(flag_values={"bind-address": "[::]:0"})

        assert ("::", 0) == (cfg.bind_host, cfg.bind_port)


class TestKeys:
    """Keys are case-preserving; unknown keys are named with a suggestion."""

    def test_paths_keep_their_case(self, tmp_path: Path) -> None:
        """A path with capitals is used exactly as written."""
        path = config_file(
            tmp_path,
            {"multi-paths": {"/Data/Projects": 1, "/data/projects": 2}},
        )

        cfg = config.load(path, {}, ENVIRON)

        assert (
            Root("/Data/Projects", 1),
            Root("/data/projects", 2),
        ) == cfg.roots

    def test_key_case_matters(self, tmp_path: Path) -> None:
        """``Dir-Level`` is not ``dir-level``, but it is suggested."""
        path = config_file(tmp_path, {"Dir-Level": 3})

        with pytest.raises(ConfigError) as exc:
            config.load(path, {}, ENVIRON)

        message = str(exc.value)
        assert message.startswith("unknown config key 'Dir-Level'")
        assert "did you mean 'dir-level'?" in message
        assert str(path) in message

    @pytest.mark.parametrize(
        ("key", "suggested"),
        [
            ("dir-levl", "dir-level"),
            ("analysed-path", "analyzed-path"),
            ("bind_address", "bind-address"),
            ("ignore-dir", "ignore-dirs"),
        ],
    )
    def test_unknown_key_in_file(
        self, tmp_path: Path, key: str, suggested: str
    ) -> None:
        """An unknown key is rejected and the nearest key suggested."""
        path = config_file(tmp_path, {key: 1})

        with pytest.raises(ConfigError) as exc:
            config.load(path, {}, ENVIRON)

        assert (
            f"unknown config key {key!r} in {path}; "
            f"did you mean {suggested!r}?"
        ) == str(exc.value)

    def test_unknown_key_without_suggestion(self, tmp_path: Path) -> None:
        """With no near key, the message says so without a guess."""
        path = config_file(tmp_path, {"zzzzzzzz": 1})

        with pytest.raises(ConfigError) as exc:
            config.load(path, {}, ENVIRON)

        assert f"unknown config key 'zzzzzzzz' in {path}" == str(exc.value)

    def test_unknown_environment_variable(self) -> None:
        """A misspelt DU_EXPORTER_ variable is named, with a suggestion."""
        environ = {**ENVIRON, "DU_EXPORTER_DIR_LEVL": "3"}

        with pytest.raises(ConfigError) as exc:
            config.load(None, {}, environ)

        message = str(exc.value)
        assert "DU_EXPORTER_DIR_LEVL" in message
        assert "did you mean 'dir-level'?" in message

    def test_unknown_flag_key(self) -> None:
        """build() rejects unknown keys in any layer."""
        with pytest.raises(ConfigError, match="unknown config key 'nope'"):
            build(flag_values={"nope": 1})

    @pytest.mark.parametrize(
        "name", ["DU_EXPORTER_dir_level", "DU_EXPORTER_DIR-LEVEL"]
    )
    def test_misspelt_variable_spelling(self, name: str) -> None:
        """Only DU_EXPORTER_<KEY> (upper, ``_``) is a key; others are named."""
        with pytest.raises(ConfigError) as exc:
            config.read_environ({name: "3"})

        message = str(exc.value)
        assert name in message
        assert "did you mean 'dir-level'?" in message

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("web-config-file", "/etc/du-exporter/web.yml"),
            ("basic-auth-users", {"admin": "$2b$12$hash"}),
        ],
    )
    def test_unsupported_keys_are_named(
        self, tmp_path: Path, key: str, value: object
    ) -> None:
        """Known but unimplemented keys are refused, naming the key."""
        path = config_file(tmp_path, {key: value})

        with pytest.raises(ConfigError) as exc:
            config.load(path, {}, ENVIRON)

        assert str(exc.value).startswith(f"config key {key!r}: ")

    @pytest.mark.parametrize("key", ["web-config-file", "basic-auth-users"])
    def test_unsupported_keys_from_environment(self, key: str) -> None:
        """The unsupported keys are refused from the environment too."""
        environ = {**ENVIRON, env_name(key): "x"}

        with pytest.raises(ConfigError, match=f"^config key '{key}': "):
            config.load(None, {}, environ)


class TestWrongValues:
    """Wrong types and impossible values are rejected with key and reason."""

    @pytest.mark.parametrize(
        ("yaml_text", "key"),
        [
            ('dir-level: "x"', "dir-level"),
            ("dir-level: true", "dir-level"),
            ("dir-level: 1.5", "dir-level"),
            ("one-file-system: 3", "one-file-system"),
            ("one-file-system: maybe", "one-file-system"),
            ("multi-paths: [a]", "multi-paths"),
            ("multi-paths: {}", "multi-paths"),
            ("multi-paths: {/a: x}", "multi-paths"),
            ("ignore-dirs: {a: 1}", "ignore-dirs"),
            ("ignore-dirs: [1]", "ignore-dirs"),
            ("bind-address: 9995", "bind-address"),
            ("mode: [http]", "mode"),
            ("db-path: ''", "db-path"),
            ("scan-interval-minutes: x", "scan-interval-minutes"),
            ("scan-interval-minutes: .inf", "scan-interval-minutes"),
            ("scan-interval-minutes: .nan", "scan-interval-minutes"),
        ],
    )
    def test_wrong_type_in_file(
        self, tmp_path: Path, yaml_text: str, key: str
    ) -> None:
        """A value of the wrong YAML type names its key."""
        path = tmp_path / "c.yml"
        path.write_text(yaml_text + "\n", encoding="utf-8")

        with pytest.raises(ConfigError) as exc:
            config.load(path, {}, ENVIRON)

        assert str(exc.value).startswith(f"config key '{key}")

    @pytest.mark.parametrize(
        ("key", "value", "reason"),
        [
            ("dir-level", -1, "-1 is less than 0"),
            ("dir-level", "-3", "-3 is less than 0"),
            ("batch-size", 0, "0 is less than 1"),
            ("max-procs", 0, "0 is less than 1"),
            ("keep-generations", 0, "0 is less than 1"),
            ("max-iops", -5, "-5 is less than 0"),
            ("scan-interval-minutes", -1, "must be a finite number >= 0"),
            ("bind-address", "0.0.0.0:70000", "port 70000 is out of range"),
            ("bind-address", "[::1]:65536", "port 65536 is out of range"),
            ("bind-address", "localhost", "is not HOST:PORT"),
            ("bind-address", "host:-1", "is not HOST:PORT"),
            ("mode", "foo", "'foo' is not one of http, file"),
            ("size-mode", "foo", "'foo' is not one of disk, apparent"),
            ("size-mode", "Disk", "'Disk' is not one of disk, apparent"),
            ("log-level", "trace", "is not one of"),
            ("log-format", "xml", "is not one of"),
            ("ignore-dirs", ["/ok", "rel/path"], "'rel/path' must be an"),
            ("ignore-dirs", "/ok,rel/path", "'rel/path' must be an"),
            ("multi-paths", "/a", "'/a' is not PATH=LEVEL"),
            ("multi-paths", "/a=1,/a/=2", "root '/a' is listed twice"),
            ("analyzed-path", "/a\0b", "contains a NUL byte"),
        ],
    )
    def test_impossible_value(
        self, key: str, value: object, reason: str
    ) -> None:
        """An impossible value is rejected with the key and the reason."""
        with pytest.raises(ConfigError) as exc:
            build(flag_values={key: value})

        message = str(exc.value)
        assert message.startswith(f"config key '{key}': ")
        assert reason in message

    def test_multi_paths_level_names_the_path(self) -> None:
        """A bad level inside multi-paths names the key and the path."""
        with pytest.raises(ConfigError) as exc:
            build(file_values={"multi-paths": {"/a": 1, "/b": -2}})

        assert "config key 'multi-paths: /b': -2 is less than 0" == str(
            exc.value
        )

    @pytest.mark.parametrize(
        "pattern", ["/abs/path", "name", "*.tmp", "/srv/*/cache", "/x/"]
    )
    def test_ignore_dirs_accepted_forms(self, pattern: str) -> None:
        """Absolute paths, globs and bare names are valid ignore-dirs."""
        cfg = build(flag_values={"ignore-dirs": [pattern]})

        assert (pattern.rstrip("/"),) == cfg.ignore_dirs

    def test_non_decimal_digit_port(self) -> None:
        """A port of non-decimal digits is a ConfigError, not a crash."""
        with pytest.raises(ConfigError, match="bind-address"):
            build(flag_values={"bind-address": "localhost:²"})

    def test_huge_scan_interval(self) -> None:
        """An integer too large for a float is a ConfigError."""
        with pytest.raises(ConfigError, match="scan-interval-minutes"):
            build(file_values={"scan-interval-minutes": 10**400})

    @pytest.mark.parametrize("key", ["db-path", "output-file"])
    def test_unknown_user_home(self, key: str) -> None:
        """``~nosuchuser`` is a ConfigError naming the key, or kept as is."""
        result = config_or_error({key: "~nosuchuser/x"}, {}, {}, ENVIRON)

        if isinstance(result, ConfigError):
            assert key in str(result)


class TestMultiPathsExclusive:
    """multi-paths replaces analyzed-path and dir-level."""

    @pytest.mark.parametrize("other", ["analyzed-path", "dir-level"])
    def test_same_layer(self, tmp_path: Path, other: str) -> None:
        """Both in one file is rejected, naming the replaced key."""
        value = "/x" if other == "analyzed-path" else 1
        path = config_file(tmp_path, {"multi-paths": {"/a": 1}, other: value})

        with pytest.raises(ConfigError) as exc:
            config.load(path, {}, ENVIRON)

        assert (
            f"config key {other!r}: cannot be combined with multi-paths"
            == str(exc.value)
        )

    @pytest.mark.parametrize("layer", ["env", "flag"])
    def test_higher_layer(self, tmp_path: Path, layer: str) -> None:
        """analyzed-path above a file's multi-paths is rejected."""
        path = config_file(tmp_path, {"multi-paths": {"/a": 1}})
        environ = dict(ENVIRON)
        flags = {}
        if layer == "env":
            environ["DU_EXPORTER_ANALYZED_PATH"] = "/x"
        else:
            flags["analyzed-path"] = "/x"

        with pytest.raises(ConfigError, match=r"^config key 'analyzed-path'"):
            config.load(path, flags, environ)

    def test_defaults_do_not_conflict(self) -> None:
        """multi-paths alone replaces the default root and level."""
        cfg = build(flag_values={"multi-paths": {"/a": 0, "/a/b": 4}})

        assert (Root("/a", 0), Root("/a/b", 4)) == cfg.roots


class TestConfigFile:
    """The YAML file itself: a mapping, valid YAML, readable."""

    @pytest.mark.parametrize(
        "text", ["- dir-level\n- 2\n", "just a string\n", "42\n"]
    )
    def test_not_a_mapping(self, tmp_path: Path, text: str) -> None:
        """A YAML document that is not a mapping is rejected."""
        path = tmp_path / "c.yml"
        path.write_text(text, encoding="utf-8")

        with pytest.raises(ConfigError) as exc:
            config.read_file(path)

        assert (
            f"config file {str(path)!r} must be a mapping of key: value"
            == str(exc.value)
        )

    @pytest.mark.parametrize(
        "text", ["dir-level: [\n", "a: b: c\n", "\tdir-level: 1\n"]
    )
    def test_invalid_yaml(self, tmp_path: Path, text: str) -> None:
        """Invalid YAML is one line naming the file."""
        path = tmp_path / "c.yml"
        path.write_text(text, encoding="utf-8")

        with pytest.raises(ConfigError) as exc:
            config.read_file(path)

        message = str(exc.value)
        assert message.startswith(f"config file {str(path)!r} is not valid")
        assert "\n" not in message

    def test_missing_file(self, tmp_path: Path) -> None:
        """A file that does not exist is named."""
        path = tmp_path / "missing.yml"

        with pytest.raises(ConfigError) as exc:
            config.load(path, {}, ENVIRON)

        assert str(exc.value).startswith(f"cannot read config file '{path}'")

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is not a config file."""
        with pytest.raises(ConfigError, match="cannot read config file"):
            config.read_file(tmp_path)

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 text is rejected, not a crash."""
        path = tmp_path / "c.yml"
        path.write_bytes(b"dir-level: \xff\xfe\n")

        with pytest.raises(ConfigError, match="cannot read config file"):
            config.read_file(path)

    @pytest.mark.skipif(
        os.geteuid() == 0, reason="root reads files whatever their mode"
    )
    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A file without read permission is rejected, naming it."""
        path = config_file(tmp_path, {"dir-level": 1})
        path.chmod(0)

        with pytest.raises(ConfigError, match="cannot read config file"):
            config.read_file(path)

    def test_values_are_not_checked_by_read_file(self, tmp_path: Path) -> None:
        """read_file checks keys; values are checked by build()."""
        path = config_file(tmp_path, {"dir-level": "x", "mode": "file"})

        assert {"dir-level": "x", "mode": "file"} == config.read_file(path)

    def test_example_config_loads(self) -> None:
        """The repository's example config is valid."""
        example = Path(__file__).parent.parent / "config-sqlite.yml"

        cfg = config.load(example, {}, ENVIRON)

        assert cfg.roots


# Strategies: hostile text includes non-decimal digits ('²'), a leading
# '~' (home of an unknown user) and integers too large for a float.
FRAGMENTS = st.lists(
    st.sampled_from(
        [
            "/",
            ":",
            "=",
            ",",
            "[",
            "]",
            "0",
            "7",
            "65535",
            "99999",
            "-1",
            " ",
            "a",
            "B",
            "é",
            "\udcff",
            "*",
            "~/",
            ".",
            "²",
            "~nosuchuser/",
            "true",
            "\0",
        ]
    ),
    max_size=8,
).map("".join)
TEXT = (
    st.text(max_size=20) | FRAGMENTS
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(TEXT | st.integers(), inner, max_size=4)
    ),
    max_leaves=8,
)
ALL_KEYS = st.sampled_from(KEYS) | TEXT


def _named(error: ConfigError, keys: object) -> bool:
    """Whether the message names one of ``keys`` (unknown ones quoted)."""
    message = str(error)
    return any(
        (k in message) if k in KEYS else (repr(k) in message)
        for k in keys  # type: ignore[attr-defined]
    )


class TestProperties:
    """Any input yields a Config or a ConfigError naming a key."""

    @settings(max_examples=200, deadline=None)
    @given(data=st.dictionaries(ALL_KEYS, VALUES, max_size=6))
    def test_arbitrary_file_values(self, data: dict[str, object]) -> None:
        """File data never raises anything but a ConfigError naming a key."""
        file_values = yaml.safe_load(yaml.safe_dump(data))

        result = config_or_error(file_values, {}, {}, ENVIRON)

        if isinstance(result, ConfigError):
            assert _named(result, data), str(result)

    @settings(max_examples=200, deadline=None)
    @given(
        flags=st.dictionaries(
            st.sampled_from(KEYS), TEXT | st.booleans(), max_size=6
        )
    )
    def test_arbitrary_flag_strings(self, flags: dict[str, object]) -> None:
        """Flags as click passes them (strings, booleans) are safe too."""
        result = config_or_error({}, {}, flags, ENVIRON)

        if isinstance(result, ConfigError):
            assert _named(result, flags), str(result)

    @settings(max_examples=200, deadline=None)
    @given(
        key=st.sampled_from(["dir-level", "multi-paths", "bind-address"]),
        value=TEXT,
    )
    def test_arbitrary_environment_values(self, key: str, value: str) -> None:
        """Any DU_EXPORTER_* value is a Config or a ConfigError naming it."""
        environ = {**ENVIRON, env_name(key): value}

        result = config_or_error({}, {}, {}, environ, read_env=True)

        if isinstance(result, ConfigError):
            assert key in str(result)

    @settings(max_examples=100, deadline=None)
    @given(
        roots=st.dictionaries(
            st.text(
                alphabet=string.ascii_letters + "/._-", min_size=1, max_size=12
            ).map(lambda s: "/" + s),
            st.integers(min_value=0, max_value=50),
            min_size=1,
            max_size=5,
        )
    )
    def test_multi_paths_string_matches_map(
        self, roots: dict[str, int]
    ) -> None:
        """``P=L,P=L`` and the YAML map give the same roots."""
        text = ",".join(f"{p}={lvl}" for p, lvl in roots.items())

        from_map = config_or_error({"multi-paths": roots}, {}, {}, ENVIRON)
        from_text = config_or_error({}, {"multi-paths": text}, {}, ENVIRON)

        assert type(from_map) is type(from_text)
        if isinstance(from_map, Config):
            assert from_map == from_text
