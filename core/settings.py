"""Settings: one pydantic model, four layers.

From lowest to highest precedence: the defaults written here, the TOML file
(``chatwright.toml`` in the working directory, or the path given by
``--config`` / ``CHATWRIGHT_CONFIG``), ``CHATWRIGHT_*`` environment variables
(nested keys joined by ``__``, as in ``CHATWRIGHT_STORAGE__URL``), and finally
command-line flags. Zero configuration works: the defaults use a SQLite file
``chatwright.db`` in the working directory.

Unknown keys are errors, so a typo in the TOML file or an environment variable
is reported instead of silently ignored. :func:`load_settings` turns every
validation problem into one :class:`~chatwright.errors.SettingsError` whose
message names the key, where it can be set, and what is wrong.
"""

from __future__ import annotations

import contextvars
import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from chatwright.errors import SettingsError

CONFIG_FILE_NAME = "chatwright.toml"
ENV_PREFIX = "CHATWRIGHT_"
CONFIG_ENV = "CHATWRIGHT_CONFIG"
# CHATWRIGHT_* variables that are read directly, not settings.
NOT_SETTINGS = frozenset(
    {
        "config",
        "load_plugins",
        "disable_plugins",
        "strict_plugins",
        "debug",
        "test_database_url",
        "serve_overrides",
    }
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageSettings(_Section):
    backend: str = Field(
        "sql", description="Storage backend, by the name a plugin registered it under."
    )
    url: str = Field(
        "sqlite+aiosqlite:///chatwright.db",
        description="Database URL (SQLAlchemy form); postgresql://… selects PostgreSQL.",
    )
    pool_size: int = Field(5, ge=1, description="Pooled connections kept open (PostgreSQL).")
    max_overflow: int = Field(10, ge=0, description="Extra connections beyond pool_size.")
    pool_timeout: float = Field(30.0, gt=0, description="Seconds to wait for a free connection.")
    busy_timeout: float = Field(
        5.0, ge=0, description="Seconds SQLite waits on a locked database before failing."
    )
    echo: bool = Field(False, description="Log every SQL statement.")
    pooler: Literal["none", "session", "transaction"] = Field(
        "none",
        description="A connection pooler in front of PostgreSQL (Supabase's Supavisor, "
        "PgBouncer); 'transaction' turns prepared statements off.",
    )
    direct_url: str | None = Field(
        None,
        description="PostgreSQL URL without a transaction pooler, for LISTEN/NOTIFY and "
        "advisory locks (default: url).",
    )
    pool_recycle: float = Field(
        900.0,
        gt=0,
        description="Seconds after which a pooled connection is replaced (below the idle "
        "timeouts of poolers and load balancers).",
    )


class ModelsSettings(_Section):
    default: str = Field(
        "offline:assistant",
        description="Model spec given to agents created without one (provider:name).",
    )


class SessionsSettings(_Section):
    store: str = Field(
        "default",
        description="Where sessions live: 'default' (the storage backend) or a session "
        "store a plugin registers (e.g. 'redis').",
    )
    idle_timeout: float = Field(
        1800.0, gt=0, description="Seconds without a heartbeat after which a session is idle."
    )
    sweep_interval: float = Field(
        60.0, gt=0, description="Seconds between two passes of the server's session sweeper."
    )
    heartbeat_interval: float = Field(
        60.0, gt=0, description="Seconds between two heartbeats of the web page."
    )


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address `chatwright serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `chatwright serve` listens on.")
    workers: int = Field(1, ge=1, description="Server processes (PostgreSQL only beyond 1).")
    auth: Literal["local", "jwt"] = Field(
        "local",
        description="local: one user 'local', loopback binds only; jwt: bearer JWTs (HS256 "
        "with jwt_secret, RS256/ES256 with a JWKS).",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret of the JWTs (jwt auth), at least 32 bytes."
    )
    jwt_audience: str = Field("authenticated", description="Required `aud` claim of the JWTs.")
    jwt_issuer: str | None = Field(None, description="Required `iss` claim of the JWTs, when set.")
    jwt_jwks_url: str | None = Field(
        None,
        description="https URL of the JWKS whose public keys sign RS256/ES256 JWTs (Supabase: "
        "https://<project>.supabase.co/auth/v1/.well-known/jwks.json).",
    )
    jwt_jwks_file: Path | None = Field(
        None, description="A JWKS file with the public keys of RS256/ES256 JWTs."
    )
    jwt_algorithms: list[Literal["HS256", "RS256", "ES256"]] | None = Field(
        None,
        min_length=1,
        description="Accepted JWT algorithms (default: HS256 with jwt_secret, RS256 and ES256 "
        "with a JWKS).",
    )
    max_message_chars: int = Field(
        16_000, ge=1, description="Longest chat message accepted, in characters (413 beyond)."
    )


class CacheSettings(_Section):
    policy: str = Field(
        "idle-session", description="Eviction policy of the executor cache, by plugin name."
    )
    max_entries: int = Field(100, ge=1, description="Most built agents kept at once.")
    ttl: float = Field(900.0, gt=0, description="Idle seconds before the ttl policy evicts.")


class ToolsSettings(_Section):
    unscoped_tables: list[str] = Field(
        default_factory=list,
        description="Tables a crud tool may use without a user scope column (shared data).",
    )
    max_result_chars: int = Field(
        4000, ge=200, description="Longest tool result, in characters, sent back to the model."
    )


_toml_layer: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "toml", default=None
)


class _TomlLayer(PydanticBaseSettingsSource):
    """The parsed TOML file, handed over by :func:`load_settings`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_toml_layer.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_layer.get() or {})


class Settings(BaseSettings):
    """Every setting of chatwright. Plugins read the sections that concern them."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    models: ModelsSettings = Field(default_factory=ModelsSettings)  # type: ignore[arg-type]
    tools: ToolsSettings = Field(default_factory=ToolsSettings)  # type: ignore[arg-type]
    cache: CacheSettings = Field(default_factory=CacheSettings)  # type: ignore[arg-type]
    sessions: SessionsSettings = Field(default_factory=SessionsSettings)  # type: ignore[arg-type]
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings of installed plugins, a table per plugin: [plugins.redis] url = ….",
    )

    config_file: Path | None = Field(
        None, exclude=True, description="The TOML file these settings were read from."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags (init), then the environment, then the TOML file.
        return (init_settings, env_settings, _TomlLayer(settings_cls))


def _config_path(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    """The TOML file to read, or None when the default file does not exist."""
    if explicit is not None:
        return Path(explicit)
    from_env = environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    default = Path.cwd() / CONFIG_FILE_NAME
    return default if default.exists() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(
            f"configuration file {path} does not exist; create it with `chatwright init` "
            f"or point --config / {CONFIG_ENV} at an existing file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"configuration file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SettingsError(f"configuration file {path} is nested too deeply to read") from None
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from None


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def env_var(key: str) -> str:
    """The environment variable that sets a dotted key: storage.url -> CHATWRIGHT_STORAGE__URL."""
    return ENV_PREFIX + key.replace(".", "__").upper()


def _describe(error: Mapping[str, Any], config_file: Path | None) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, _known_keys(Settings), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown setting {key!r}{hint}"
    where = f"{env_var(key)} or [{key.rpartition('.')[0] or 'top level'}] in "
    where += str(config_file) if config_file else CONFIG_FILE_NAME
    got = error.get("input")
    return f"setting {key!r} is invalid: {error['msg']} (got {got!r}; set it with {where})"


def _check_environment(environ: Mapping[str, str]) -> None:
    """Report CHATWRIGHT_* variables that look like settings but name none.

    pydantic-settings checks keys inside a known section; a misspelled section
    (CHATWRIGHT_STORGE__URL) or a single underscore (CHATWRIGHT_STORAGE_URL)
    would otherwise be ignored without a word.
    """
    sections = {name for name in Settings.model_fields if name != "config_file"}
    for variable in environ:
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name in NOT_SETTINGS or name in sections:
            continue
        section, nested, _ = name.partition("__")
        if nested and section not in sections:
            close = difflib.get_close_matches(section, sorted(sections), n=1)
            hint = f"; did you mean {env_var(close[0])}__…?" if close else ""
            raise SettingsError(
                f"unknown setting in environment variable {variable}: no section {section!r}{hint}"
            )
        for known in sections:
            if not nested and name.startswith(known + "_"):
                rest = name[len(known) + 1 :]
                raise SettingsError(
                    f"unknown setting in environment variable {variable}; nested keys are "
                    f"joined by two underscores: {env_var(known + '.' + rest)}"
                )


def load_settings(
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings from defaults, the TOML file, the environment and ``overrides``.

    :param config: path of the TOML file; by default ``$CHATWRIGHT_CONFIG`` or
        ``./chatwright.toml`` when it exists.
    :param overrides: nested values from command-line flags (highest precedence).
    """
    path = _config_path(config, os.environ)
    data = _read_toml(path) if path is not None else {}
    _check_environment(os.environ)
    token = _toml_layer.set(data)
    try:
        settings = Settings(**dict(overrides or {}))
    except ValidationError as exc:
        problems = [_describe(e, path) for e in exc.errors()]
        raise SettingsError("; ".join(problems)) from None
    except SourceError as exc:
        raise SettingsError(
            f"cannot read settings from the environment ({exc}); a whole-section variable "
            "such as CHATWRIGHT_STORAGE must hold a JSON object, or set one key with "
            "CHATWRIGHT_STORAGE__URL"
        ) from None
    finally:
        _toml_layer.reset(token)
    settings.config_file = path
    return settings
