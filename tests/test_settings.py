"""Settings: defaults < chatwright.toml < CHATWRIGHT_* env < overrides (CLI flags)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, SecretStr

from chatwright import SettingsRegister, hookimpl
from chatwright.cli import build_cli
from chatwright.commands.init import config_text
from chatwright.errors import DuplicateRegistrationError, PluginError, SettingsError
from chatwright.plugins.crud.settings import CrudSettings
from chatwright.plugins.eviction.settings import TTLSettings
from chatwright.plugins.server.settings import ServerSettings
from chatwright.plugins.sql.settings import SQLStorageSettings
from chatwright.registry import LoadPolicy, Plugins
from chatwright.settings import Settings, env_var, load_settings, settings_class
from tests.harness import run

DEFAULT_URL = "sqlite+aiosqlite:///chatwright.db"


def sql(settings: Settings) -> SQLStorageSettings:
    """The sql plugin's keys of [storage]."""
    return settings.section(SQLStorageSettings)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (conftest removes every CHATWRIGHT_* variable)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- zero configuration -----------------------------------------------------------


def test_zero_config_defaults() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.storage.backend == "sql"
    assert settings.storage.url == DEFAULT_URL
    assert sql(settings).pool_size == 15
    assert sql(settings).max_overflow == 0
    assert sql(settings).pool_timeout == 30.0
    assert sql(settings).busy_timeout == 5.0
    assert sql(settings).echo is False
    # The core names no model: the example plugin supplies its own (see test_cli).
    assert settings.models.default is None
    assert settings.config_file is None


def test_zero_config_does_not_create_files(clean_env: Path) -> None:
    load_settings()
    assert list(clean_env.iterdir()) == []


def test_config_file_is_not_dumped() -> None:
    settings = load_settings()
    data = settings.model_dump()
    assert set(data) == set(type(settings).model_fields) - {"config_file"}
    assert {"storage", "server", "plugins"} <= set(data)


def test_env_var_names() -> None:
    assert env_var("storage.url") == "CHATWRIGHT_STORAGE__URL"
    assert env_var("storage.pool_size") == "CHATWRIGHT_STORAGE__POOL_SIZE"


# -- precedence ---------------------------------------------------------------------


def test_toml_in_cwd_beats_defaults(clean_env: Path) -> None:
    path = write_toml(
        clean_env / "chatwright.toml",
        '[storage]\nurl = "sqlite+aiosqlite:///toml.db"\npool_size = 2\necho = true\n'
        '[models]\ndefault = "toml:model"\n',
    )
    settings = load_settings()
    assert settings.config_file == path
    assert settings.storage.url == "sqlite+aiosqlite:///toml.db"
    assert sql(settings).pool_size == 2
    assert sql(settings).echo is True
    assert settings.models.default == "toml:model"
    # Keys the file does not set keep their defaults.
    assert settings.storage.backend == "sql"
    assert sql(settings).max_overflow == 0


def test_env_beats_toml(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(clean_env / "chatwright.toml", '[storage]\npool_size = 2\nurl = "toml-url"\n')
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOL_SIZE", "7")
    settings = load_settings()
    assert sql(settings).pool_size == 7
    assert settings.storage.url == "toml-url"  # the nested env var replaced only its key


def test_env_beats_defaults_without_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOL_SIZE", "9")
    monkeypatch.setenv("CHATWRIGHT_MODELS__DEFAULT", "env:model")
    settings = load_settings()
    assert sql(settings).pool_size == 9
    assert settings.models.default == "env:model"
    assert settings.storage.url == DEFAULT_URL


def test_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", "env-url")
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOL_SIZE", "7")
    settings = load_settings(overrides={"storage": {"url": "flag-url"}})
    assert settings.storage.url == "flag-url"
    assert sql(settings).pool_size == 7  # an override of one key keeps the others


def test_precedence_key_by_key(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each key is set in a different set of layers; the highest layer wins for each."""
    write_toml(
        clean_env / "chatwright.toml",
        """
[storage]
url = "toml-url"
pool_size = 2
max_overflow = 3
backend = "toml-backend"

[models]
default = "toml:model"
""",
    )
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOL_SIZE", "7")
    monkeypatch.setenv("CHATWRIGHT_STORAGE__BACKEND", "env-backend")
    monkeypatch.setenv("CHATWRIGHT_STORAGE__BUSY_TIMEOUT", "1.5")
    monkeypatch.setenv("CHATWRIGHT_MODELS__DEFAULT", "env:model")
    settings = load_settings(
        overrides={"storage": {"backend": "flag-backend", "echo": True}},
    )
    assert sql(settings).pool_timeout == 30.0  # default only
    assert settings.storage.url == "toml-url"  # default < toml
    assert sql(settings).max_overflow == 3  # default < toml
    assert sql(settings).pool_size == 7  # default < toml < env
    assert sql(settings).busy_timeout == 1.5  # default < env
    assert settings.models.default == "env:model"  # default < toml < env
    assert settings.storage.backend == "flag-backend"  # default < toml < env < flag
    assert sql(settings).echo is True  # default < flag


def test_chatwright_config_env_selects_another_file(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(clean_env / "chatwright.toml", '[storage]\nurl = "cwd-url"\n')
    other = write_toml(tmp_path / "other.toml", '[storage]\nurl = "other-url"\n')
    monkeypatch.setenv("CHATWRIGHT_CONFIG", str(other))
    settings = load_settings()
    assert settings.storage.url == "other-url"
    assert settings.config_file == other


def test_explicit_config_beats_chatwright_config_env(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(clean_env / "chatwright.toml", '[storage]\nurl = "cwd-url"\n')
    from_env = write_toml(tmp_path / "env.toml", '[storage]\nurl = "env-file-url"\n')
    explicit = write_toml(tmp_path / "explicit.toml", '[storage]\nurl = "explicit-url"\n')
    monkeypatch.setenv("CHATWRIGHT_CONFIG", str(from_env))
    settings = load_settings(config=explicit)
    assert settings.storage.url == "explicit-url"
    assert settings.config_file == explicit
    # A str path works as well.
    assert load_settings(config=str(explicit)).storage.url == "explicit-url"


def test_env_still_beats_explicit_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write_toml(tmp_path / "explicit.toml", "[storage]\npool_size = 3\n")
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOL_SIZE", "4")
    assert sql(load_settings(config=explicit)).pool_size == 4


def test_loading_leaves_no_state_behind(clean_env: Path, tmp_path: Path) -> None:
    explicit = write_toml(tmp_path / "explicit.toml", '[storage]\nurl = "explicit-url"\n')
    assert load_settings(config=explicit).storage.url == "explicit-url"
    # Settings built directly (not through load_settings) see no TOML layer.
    assert Settings().storage.url == DEFAULT_URL
    settings = load_settings()
    assert settings.storage.url == DEFAULT_URL
    assert settings.config_file is None


# -- errors -------------------------------------------------------------------------


def test_invalid_type_in_toml_names_the_key(clean_env: Path) -> None:
    path = write_toml(clean_env / "chatwright.toml", '[storage]\npool_size = "lots"\n')
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert "'storage.pool_size'" in message
    assert "CHATWRIGHT_STORAGE__POOL_SIZE" in message
    assert "'lots'" in message
    assert str(path) in message
    assert "\n" not in message


def test_invalid_value_in_env_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOL_SIZE", "0")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert "'storage.pool_size'" in message
    assert "CHATWRIGHT_STORAGE__POOL_SIZE" in message
    assert "chatwright.toml" in message


def test_invalid_override_names_the_key() -> None:
    with pytest.raises(SettingsError, match=r"'storage\.echo' is invalid"):
        load_settings(overrides={"storage": {"echo": "maybe"}})


def test_unknown_key_in_toml_suggests_the_right_one(clean_env: Path) -> None:
    write_toml(clean_env / "chatwright.toml", '[storage]\nurll = "sqlite:///x.db"\n')
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert "unknown setting 'storage.urll'" in message
    assert "did you mean 'storage.url'?" in message


def test_unknown_section_in_toml_suggests_the_section(clean_env: Path) -> None:
    write_toml(clean_env / "chatwright.toml", '[storag]\nurl = "x"\n')
    with pytest.raises(
        SettingsError, match=r"unknown setting 'storag'; did you mean the section 'storage'\?"
    ):
        load_settings()
    # A top-level name far from any: no guess.
    write_toml(clean_env / "chatwright.toml", "zzzz = 1\n")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    assert "did you mean" not in str(excinfo.value)


def test_unknown_env_var_suggests_the_right_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URLL", "sqlite:///x.db")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert "unknown setting 'storage.urll'" in message
    assert "did you mean 'storage.url'?" in message


def test_several_problems_in_one_message(clean_env: Path) -> None:
    write_toml(
        clean_env / "chatwright.toml",
        '[storage]\npool_size = "lots"\nurll = "x"\n',
    )
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert "'storage.pool_size'" in message
    assert "'storage.urll'" in message


def test_invalid_toml_syntax_names_the_file(clean_env: Path) -> None:
    path = write_toml(clean_env / "chatwright.toml", "[storage\nurl = \n")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert str(path) in message
    assert "not valid TOML" in message


def test_missing_explicit_config_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "missing.toml"
    with pytest.raises(SettingsError) as excinfo:
        load_settings(config=missing)
    assert str(missing) in str(excinfo.value)
    assert "does not exist" in str(excinfo.value)


def test_missing_config_from_env_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing-from-env.toml"
    monkeypatch.setenv("CHATWRIGHT_CONFIG", str(missing))
    with pytest.raises(SettingsError, match=r"missing-from-env\.toml"):
        load_settings()


def test_unreadable_config_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read configuration file"):
        load_settings(config=tmp_path)  # a directory


def test_deeply_nested_toml_is_a_settings_error(clean_env: Path) -> None:
    write_toml(clean_env / "chatwright.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SettingsError, match=r"chatwright\.toml"):
        load_settings()


def test_non_json_section_env_var_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE", "oops")
    with pytest.raises(SettingsError, match="CHATWRIGHT_STORAGE"):
        load_settings()


def test_env_var_with_unknown_section_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORGE__URL", "sqlite:///typo.db")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings()


def test_plugin_policy_env_vars_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CHATWRIGHT_LOAD_PLUGINS": "",
        "CHATWRIGHT_DISABLE_PLUGINS": "sql",
        "CHATWRIGHT_STRICT_PLUGINS": "1",
        "CHATWRIGHT_DEBUG": "1",
    }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().storage.url == DEFAULT_URL


# -- through the command line ----------------------------------------------------------


def show(args: list[str]) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_database_flag_beats_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(clean_env / "chatwright.toml", '[storage]\nurl = "sqlite+aiosqlite:///toml.db"\n')
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", "sqlite+aiosqlite:///env.db")

    data = json.loads(show(["config", "show", "--json"]))
    assert data["storage"]["url"] == "sqlite+aiosqlite:///env.db"

    data = json.loads(
        show(["--database", "sqlite+aiosqlite:///flag.db", "config", "show", "--json"])
    )
    assert data["storage"]["url"] == "sqlite+aiosqlite:///flag.db"
    assert data["storage"]["backend"] == "sql"
    assert set(data) == set(type(load_settings()).model_fields) - {"config_file"}


def test_cli_config_option_selects_file(tmp_path: Path) -> None:
    other = write_toml(tmp_path / "other.toml", '[models]\ndefault = "file:model"\n')
    out = show(["--config", str(other), "config", "show"])
    assert f"# settings file: {other}" in out
    assert 'default = "file:model"' in out


def test_cli_config_show_text(clean_env: Path) -> None:
    out = show(["config", "show"])
    assert "# settings file: none" in out
    assert "[storage]" in out
    assert f'url = "{DEFAULT_URL}"' in out
    assert "pool_size = 15" in out
    assert "echo = false" in out
    assert "[models]" in out


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_config_show_redacts_password(as_json: bool) -> None:
    args = ["--database", "postgresql://u:pa55word@h/db", "config", "show"]
    out = show([*args, "--json"] if as_json else args)
    assert "pa55word" not in out
    assert "***" in out
    assert "postgresql://u:***@h/db" in out


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:a@b@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pa#ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p?w/x@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_a_password_with_unencoded_delimiters_is_hidden_whole(url: str, shown: str) -> None:
    # "@", "#", "?" and "/" should be percent-encoded in a URL's password; left as they
    # are, no part of the password may show.
    data = json.loads(show(["--database", url, "config", "show", "--json"]))
    assert data["storage"]["url"] == shown


def test_cli_config_show_redacts_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", "postgresql+psycopg://me:hunter2@db:5432/x")
    data = json.loads(show(["config", "show", "--json"]))
    assert "hunter2" not in json.dumps(data)
    assert data["storage"]["url"] == "postgresql+psycopg://me:***@db:5432/x"


def test_cli_settings_error_is_one_line(clean_env: Path) -> None:
    write_toml(clean_env / "chatwright.toml", '[storage]\npool_size = "lots"\n')
    result = run("config", "show")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert result.output.count("\n") == 1
    assert "storage.pool_size" in result.output
    assert "Traceback" not in result.output


# -- plugin settings (register_settings) ------------------------------------------------


class VaultSettings(BaseModel):
    address: str = Field("http://127.0.0.1:8200", description="Where the vault answers.")
    token: SecretStr | None = Field(None, description="The vault token.")
    retries: int = Field(3, ge=0, description="Attempts before giving up.")


class StorageExtra(BaseModel):
    read_only: bool = Field(False, description="Refuse writes.")


def plugin(name: str, *registrations: tuple[str, type[BaseModel]]) -> object:
    class SettingsPlugin:
        @hookimpl
        def register_settings(self, register: SettingsRegister) -> None:
            for section, model in registrations:
                register(section, model)

    SettingsPlugin.__name__ = name
    return SettingsPlugin()


def with_plugins(*extra: tuple[str, object], policy: LoadPolicy | None = None) -> Plugins:
    """The bundled plugins (and installed ones) plus ``extra`` (name, plugin) pairs."""
    plugins = Plugins.load(policy or LoadPolicy())
    for name, obj in extra:
        plugins.register(obj, name)
    return plugins


def test_bundled_plugins_settings_keep_their_keys_and_env_vars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATWRIGHT_SERVER__PORT", "9000")
    monkeypatch.setenv("CHATWRIGHT_CACHE__TTL", "12.5")
    monkeypatch.setenv("CHATWRIGHT_TOOLS__UNSCOPED_TABLES", '["faq"]')
    monkeypatch.setenv("CHATWRIGHT_STORAGE__POOLER", "transaction")
    settings = load_settings()
    assert settings.section(ServerSettings).port == 9000
    assert settings.section(TTLSettings).ttl == 12.5
    assert settings.section(CrudSettings).unscoped_tables == ["faq"]
    assert sql(settings).pooler == "transaction"
    # An extended core section is one object: the core's keys and the plugin's.
    assert settings.section(SQLStorageSettings) is settings.storage
    assert settings.storage.url == DEFAULT_URL
    assert settings.section(TTLSettings) is settings.cache


def test_plugin_section_is_validated_at_load(clean_env: Path) -> None:
    path = write_toml(clean_env / "chatwright.toml", "[server]\nport = 70000\n")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert "'server.port'" in message
    assert "CHATWRIGHT_SERVER__PORT" in message
    assert "70000" in message and str(path) in message


def test_a_third_party_section_and_an_extended_core_section(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = with_plugins(
        ("vault", plugin("Vault", ("vault", VaultSettings), ("storage", StorageExtra)))
    )
    write_toml(clean_env / "chatwright.toml", "[vault]\nretries = 5\n[storage]\nread_only = true\n")
    monkeypatch.setenv("CHATWRIGHT_VAULT__ADDRESS", "http://vault:8200")
    settings = load_settings(plugins=plugins)
    vault = settings.section(VaultSettings)
    assert (vault.address, vault.retries, vault.token) == ("http://vault:8200", 5, None)
    assert settings.section(StorageExtra).read_only is True
    assert sql(settings).pool_size == 15  # two plugins extend [storage] side by side

    monkeypatch.setenv("CHATWRIGHT_VAULT__RETRIES", "-1")
    with pytest.raises(SettingsError, match=r"'vault\.retries'.*CHATWRIGHT_VAULT__RETRIES"):
        load_settings(plugins=plugins)


def test_unknown_plugin_key_suggests_the_plugin_key(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = with_plugins(("vault", plugin("Vault", ("vault", VaultSettings))))
    write_toml(clean_env / "chatwright.toml", "[vault]\nretrys = 5\n")
    with pytest.raises(
        SettingsError, match=r"unknown setting 'vault\.retrys'; did you mean 'vault\.retries'\?"
    ):
        load_settings(plugins=plugins)
    write_toml(clean_env / "chatwright.toml", "[server]\nprot = 1\n")
    with pytest.raises(SettingsError, match=r"did you mean 'server\.port'\?"):
        load_settings()
    (clean_env / "chatwright.toml").unlink()
    monkeypatch.setenv("CHATWRIGHT_SERVR__PORT", "1")
    with pytest.raises(
        SettingsError, match=r"CHATWRIGHT_SERVR__PORT.*did you mean CHATWRIGHT_SERVER__"
    ):
        load_settings()
    monkeypatch.delenv("CHATWRIGHT_SERVR__PORT")
    monkeypatch.setenv("CHATWRIGHT_VAULT_RETRIES", "1")
    with pytest.raises(SettingsError, match="CHATWRIGHT_VAULT__RETRIES"):
        load_settings(plugins=plugins)


@pytest.mark.parametrize("as_json", [False, True])
def test_config_show_hides_a_plugin_secret(monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    monkeypatch.setenv("CHATWRIGHT_SERVER__JWT_SECRET", "s3cr3t-jwt")
    monkeypatch.setenv("CHATWRIGHT_VAULT__TOKEN", "s3cr3t-vault")
    monkeypatch.setenv("CHATWRIGHT_STORAGE__DIRECT_URL", "postgresql://u:pa55@db/x")
    plugins = with_plugins(("vault", plugin("Vault", ("vault", VaultSettings))))
    result = CliRunner().invoke(
        build_cli(plugins), ["config", "show", *(["--json"] if as_json else [])]
    )
    assert result.exit_code == 0, result.output
    assert "s3cr3t" not in result.output and "pa55" not in result.output
    if as_json:
        data = json.loads(result.stdout)
        assert data["server"]["jwt_secret"] == "**********"
        assert data["vault"] == {
            "address": "http://127.0.0.1:8200",
            "token": "**********",
            "retries": 3,
        }
        assert data["storage"]["direct_url"] == "postgresql://u:***@db/x"
    else:
        assert "[server]" in result.stdout and "[vault]" in result.stdout
        assert 'token = "**********"' in result.stdout
        assert "port = 8000" in result.stdout and "ttl = 900.0" in result.stdout


def test_a_key_defined_by_two_plugins_names_both() -> None:
    class Clash(BaseModel):
        retries: int = 1

    plugins = with_plugins(
        ("vault", plugin("Vault", ("vault", VaultSettings))),
        ("vault-extras", plugin("Extras", ("vault", Clash))),
    )
    with pytest.raises(DuplicateRegistrationError) as excinfo:
        load_settings(plugins=plugins)
    message = str(excinfo.value)
    assert "'vault.retries'" in message
    assert "'vault'" in message and "'vault-extras'" in message
    assert "CHATWRIGHT_DISABLE_PLUGINS" in message


def test_a_plugin_may_not_redefine_a_core_key_or_take_a_reserved_name() -> None:
    class Url(BaseModel):
        url: str = "mine"

    plugins = with_plugins(("hijack", plugin("Hijack", ("storage", Url))))
    with pytest.raises(
        DuplicateRegistrationError, match=r"'hijack' redefines the setting 'storage\.url'"
    ):
        settings_class(plugins)
    plugins = with_plugins(("greedy", plugin("Greedy", ("plugins", VaultSettings))))
    with pytest.raises(PluginError, match=r"'greedy'.*'plugins'"):
        settings_class(plugins)


def test_a_bad_registration_skips_the_plugin(caplog: pytest.LogCaptureFixture) -> None:
    plugins = with_plugins()
    plugins.register(plugin("Upper", ("Vault", VaultSettings)), "upper")
    plugins.register(plugin("NotAModel", ("vault", dict)), "not-a-model")  # type: ignore[arg-type]
    settings = load_settings(plugins=plugins)
    assert "vault" not in type(settings).model_fields
    errors = {i.name: i.error for i in plugins.infos()}
    assert "lower case" in (errors["upper"] or "")
    assert "pydantic model" in (errors["not-a-model"] or "")


def test_blocked_plugin_has_no_section(clean_env: Path) -> None:
    blocked = with_plugins(policy=LoadPolicy(block=frozenset({"server"})))
    settings = load_settings(plugins=blocked)
    assert "server" not in settings.model_dump()
    # Code that asks anyway gets the defaults.
    assert settings.section(ServerSettings).port == 8000
    write_toml(clean_env / "chatwright.toml", "[server]\nport = 9000\n")
    with pytest.raises(SettingsError) as excinfo:
        load_settings(plugins=blocked)
    message = str(excinfo.value)
    assert "unknown setting 'server'" in message
    assert "CHATWRIGHT_DISABLE_PLUGINS blocks server" in message
    # Loaded again, the plugin's section is back.
    assert load_settings().section(ServerSettings).port == 9000


def test_settings_class_is_built_once_per_set_of_registrations() -> None:
    assert settings_class(with_plugins()) is settings_class(with_plugins())
    extended = with_plugins(("vault", plugin("Vault", ("vault", VaultSettings))))
    assert settings_class(extended) is not settings_class(with_plugins())
    assert issubclass(settings_class(extended), Settings)


def test_settings_built_without_a_plugin_give_its_defaults() -> None:
    settings = Settings()
    assert "server" not in settings.model_dump()
    server = settings.section(ServerSettings)
    assert server.port == 8000 and server.auth == "local"
    assert settings.section(ServerSettings) is server

    class Required(BaseModel):
        endpoint: str

    with pytest.raises(SettingsError, match="Required"):
        settings.section(Required)


def test_free_form_plugin_tables_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWRIGHT_PLUGINS__REDIS__URL", "redis://cache:6379/0")
    assert load_settings().plugins == {"redis": {"url": "redis://cache:6379/0"}}


@pytest.mark.parametrize("model", [None, "offline:assistant", 'odd:"quoted" \\ name'])
def test_init_template_is_valid(clean_env: Path, model: str | None) -> None:
    path = write_toml(clean_env / "chatwright.toml", config_text(model))
    settings = load_settings()
    assert settings.config_file == path
    assert settings.storage.url == DEFAULT_URL
    assert settings.models.default == model


# -- property: arbitrary files never crash -----------------------------------------------

KEYS = [
    "backend",
    "url",
    "pool_size",
    "max_overflow",
    "pool_timeout",
    "busy_timeout",
    "echo",
    "default",
    "storage",
    "models",
    "config_file",
    "urll",
    "storage.url",
    "models.default",
    '"quoted key"',
]
VALUES = [
    "1",
    "0",
    "-3",
    "99999999999999999999999",
    "1.5",
    "inf",
    "-inf",
    "nan",
    "1e400",
    "true",
    "false",
    '"x"',
    '"sqlite:///x.db"',
    '"postgresql://u:p@h/db"',
    "''",
    "[]",
    '[1, "a"]',
    "{}",
    '{ url = "x", pool_size = 2 }',
    "1979-05-27",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    '"""multi\nline"""',
]
HEADERS = ["[storage]", "[models]", "[other]", "[[storage]]", "[storage.url]", "[models.x]"]

toml_like = st.lists(
    st.one_of(
        st.sampled_from(HEADERS),
        st.builds(
            "{} = {}".format,
            st.sampled_from(KEYS) | st.from_regex(r"[A-Za-z_]{1,8}", fullmatch=True),
            st.sampled_from(VALUES) | st.text(max_size=10).map(json.dumps),
        ),
        st.text(max_size=20),
    ),
    max_size=12,
).map("\n".join)


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.one_of(st.text(), toml_like))
@example(text="")
@example(text="[storage]\npool_size = 0\n")
@example(text="storage = 1\n")
@example(text="[[storage]]\nurl = 1\n")
@example(text="config_file = 3\n")
@example(text="[storage]\nurl = 1979-05-27\n")
@example(text="\x00")
def test_any_toml_text_gives_settings_or_settings_error(clean_env: Path, text: str) -> None:
    (clean_env / "chatwright.toml").write_text(text, encoding="utf-8")
    try:
        result = load_settings()
    except SettingsError as exc:
        message = str(exc)
    else:
        assert isinstance(result, Settings)
        assert result.config_file == clean_env / "chatwright.toml"
        return
    assert message  # a SettingsError always says what is wrong
