"""A number setting takes a number: never a boolean, and text only from the environment.

Before, ``pool_size = true`` in the settings file was read as 1 (and ``false``
as 0, ``busy_timeout = true`` as one second), and ``pool_size = "10"`` as 10:
pydantic's lax mode turns booleans and numeric strings into numbers. Every
integer and number setting, the core's and the bundled plugins', now refuses a
boolean wherever it comes from, and a string in the TOML file (which has
numbers), naming the setting and the type of the value; the environment, whose
values are all text, still gives numbers as text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from chatwright.errors import SettingsError
from chatwright.registry import Plugins
from chatwright.settings import env_var, load_settings, settings_class
from tests.harness import assert_error, run


def number_kind(annotation: object) -> type | None:
    for kind in (int, float):
        if annotation in (kind, kind | None):
            return kind
    return None


def number_settings() -> list[tuple[str, str, type, object]]:
    """(section, key, int or float, a valid value) of every number setting loaded."""
    found = []
    model = settings_class(Plugins.load())
    for section, field in model.model_fields.items():
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        for key, inner in annotation.model_fields.items():
            kind = number_kind(inner.annotation)
            if kind is not None:
                value = inner.default if inner.default is not None else 1000
                found.append((section, key, kind, value))
    return found


NUMBERS = number_settings()
IDS = [f"{s}.{k}" for s, k, _, _ in NUMBERS]


def test_the_number_settings_are_all_there() -> None:
    keys = set(IDS)
    assert {"storage.pool_size", "storage.busy_timeout", "server.port", "cache.ttl"} <= keys
    assert {"turns.timeout", "budgets.daily_tokens", "models.max_retries"} <= keys
    assert len(keys) > 30


# Every test in its own empty working directory.
pytestmark = pytest.mark.usefixtures("workdir")


def toml_refusal(workdir: Path, text: str) -> str:
    path = workdir / "chatwright.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    return str(refused.value)


def wanted(kind: type) -> str:
    return "a whole number" if kind is int else "a number"


@pytest.mark.parametrize(("section", "key", "kind", "value"), NUMBERS, ids=IDS)
@pytest.mark.parametrize("boolean", ["true", "false"])
def test_a_boolean_in_the_file_is_refused(
    workdir: Path, section: str, key: str, kind: type, value: object, boolean: str
) -> None:
    message = toml_refusal(workdir, f"[{section}]\n{key} = {boolean}\n")
    assert message.startswith(
        f"setting '{section}.{key}' is invalid: must be {wanted(kind)}, not a boolean "
        f"(got {boolean}; set it with {env_var(f'{section}.{key}')} or [{section}] in "
    ), message


@pytest.mark.parametrize(("section", "key", "kind", "value"), NUMBERS, ids=IDS)
def test_text_in_the_file_is_refused(
    workdir: Path, section: str, key: str, kind: type, value: object
) -> None:
    message = toml_refusal(workdir, f'[{section}]\n{key} = "{value}"\n')
    assert message.startswith(
        f"setting '{section}.{key}' is invalid: must be {wanted(kind)}, not a string: "
        f"write the number without quotes (got '{value}';"
    ), message


@pytest.mark.parametrize(("section", "key", "kind", "value"), NUMBERS, ids=IDS)
def test_the_same_number_unquoted_in_the_file_and_as_text_in_the_environment_is_taken(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: str,
    key: str,
    kind: type,
    value: object,
) -> None:
    (workdir / "chatwright.toml").write_text(f"[{section}]\n{key} = {value}\n", encoding="utf-8")
    assert getattr(getattr(load_settings(), section), key) == value
    (workdir / "chatwright.toml").unlink()
    monkeypatch.setenv(env_var(f"{section}.{key}"), str(value))
    assert getattr(getattr(load_settings(), section), key) == value


@pytest.mark.parametrize(("section", "key", "kind", "value"), NUMBERS, ids=IDS)
def test_a_boolean_in_an_environment_json_section_is_refused(
    monkeypatch: pytest.MonkeyPatch, section: str, key: str, kind: type, value: object
) -> None:
    variable = env_var(section)
    monkeypatch.setenv(variable, json.dumps({key: True}))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(
        f"setting '{section}.{key}' is invalid: must be {wanted(kind)}, not a boolean "
        f"(got true from environment variable {variable};"
    ), message


def test_a_boolean_price_is_refused(workdir: Path) -> None:
    message = toml_refusal(workdir, '[usage.prices."openai:gpt-4o"]\ninput = true\n')
    assert "setting 'usage.prices.openai:gpt-4o.input' is invalid: must be a number, not a " in (
        message
    )
    assert "boolean (got true;" in message


def test_a_price_as_text_is_refused(workdir: Path) -> None:
    message = toml_refusal(workdir, '[usage.prices."openai:gpt-4o"]\noutput = "10"\n')
    assert "'usage.prices.openai:gpt-4o.output' is invalid: must be a number, not a string" in (
        message
    )


def test_boolean_settings_still_take_booleans(workdir: Path) -> None:
    (workdir / "chatwright.toml").write_text("[storage]\necho = true\n", encoding="utf-8")
    settings = load_settings()
    assert settings.model_dump()["storage"]["echo"] is True


def test_several_wrong_types_are_reported_together(workdir: Path) -> None:
    message = toml_refusal(
        workdir, '[storage]\npool_size = true\n[turns]\ntimeout = "5"\n[server]\nport = false\n'
    )
    assert "'storage.pool_size' is invalid: must be a whole number, not a boolean" in message
    assert "'turns.timeout' is invalid: must be a number, not a string" in message
    assert "'server.port' is invalid: must be a whole number, not a boolean" in message


def test_the_cli_refuses_pool_size_true(workdir: Path) -> None:
    (workdir / "chatwright.toml").write_text("[storage]\npool_size = true\n", encoding="utf-8")
    assert_error(
        run("config", "show"),
        "setting 'storage.pool_size' is invalid: must be a whole number, not a boolean (got true;",
    )
