"""A JSON-valued setting given in the environment is reported by its variable when wrong.

Before, ``CHATWRIGHT_USAGE__PRICES=notjson`` (any setting holding a table or a
list, given as text that is not JSON) was "cannot read settings from the
environment (error parsing value for field "usage" …)", naming neither the
variable nor what was wrong; JSON of the wrong shape was reported as if from
``CHATWRIGHT_USAGE__PRICES__OPENAI:GPT-4O__INPUT``, a variable no shell can
set, and nothing said the value came from the environment. Now the message
names the setting, the variable it came from, what is wrong, and a good value,
which is one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatwright.errors import SettingsError
from chatwright.settings import load_settings
from tests.harness import assert_error, run

PRICES = "CHATWRIGHT_USAGE__PRICES"

# Every setting the environment gives as JSON: its variable, its key, what it holds.
JSON_SETTINGS = [
    (PRICES, "usage.prices", "object"),
    ("CHATWRIGHT_SERVER__ALLOWED_HOSTS", "server.allowed_hosts", "array"),
    ("CHATWRIGHT_SERVER__JWT_ALGORITHMS", "server.jwt_algorithms", "array"),
    ("CHATWRIGHT_TOOLS__UNSCOPED_TABLES", "tools.unscoped_tables", "array"),
    ("CHATWRIGHT_PLUGINS", "plugins", "object"),
    ("CHATWRIGHT_PLUGINS__REDIS", "plugins.redis", "object"),
    ("CHATWRIGHT_STORAGE", "storage", "object"),
    ("CHATWRIGHT_USAGE", "usage", "object"),
]


# Every test in its own empty working directory.
pytestmark = pytest.mark.usefixtures("workdir")


def refusal(monkeypatch: pytest.MonkeyPatch, variable: str, text: str) -> str:
    monkeypatch.setenv(variable, text)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    return str(refused.value)


def the_example(message: str, variable: str) -> str:
    found = re.search(rf"e\.g\. {variable}='([^']*)'", message)
    assert found, message
    return found.group(1)


@pytest.mark.parametrize(("variable", "key", "kind"), JSON_SETTINGS)
@pytest.mark.parametrize("text", ["notjson", "{'single': 'quotes'}", '{"cut": ', "a,b"])
def test_text_that_is_not_json_names_the_variable_and_a_good_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, key: str, kind: str, text: str
) -> None:
    message = refusal(monkeypatch, variable, text)
    assert message.startswith(
        f"setting {key!r} from environment variable {variable} is not JSON ("
    ), message
    assert f"{variable} must hold a JSON {kind}, e.g. {variable}='" in message
    assert "error parsing value" not in message
    # The good value shown is one.
    monkeypatch.setenv(variable, the_example(message, variable))
    load_settings()


def test_an_empty_value_is_called_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, PRICES, "")
    assert message.startswith(f"setting 'usage.prices' from environment variable {PRICES} is empty")
    assert f"{PRICES} must hold a JSON object" in message


def test_the_prices_example_is_a_price(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, PRICES, "gpt-4o=2.5")
    monkeypatch.setenv(PRICES, the_example(message, PRICES))
    prices = load_settings().usage.prices
    assert prices["openai:gpt-4o-mini"].input == 0.15
    assert prices["openai:gpt-4o-mini"].output == 0.6


@pytest.mark.parametrize(
    ("text", "key", "wrong"),
    [
        ("[1, 2]", "usage.prices", "got [1, 2]"),
        ('{"openai:gpt-4o": 5}', "usage.prices.openai:gpt-4o", "got 5"),
        ('{"openai:gpt-4o": {"input": "x"}}', "usage.prices.openai:gpt-4o.input", "got 'x'"),
        ('{"openai:gpt-4o": {"input": -1}}', "usage.prices.openai:gpt-4o.input", "got -1"),
    ],
)
def test_json_of_the_wrong_shape_says_it_came_from_the_variable(
    monkeypatch: pytest.MonkeyPatch, text: str, key: str, wrong: str
) -> None:
    message = refusal(monkeypatch, PRICES, text)
    assert f"setting {key!r} is invalid: " in message
    assert f"{wrong} from environment variable {PRICES};" in message
    assert f"{PRICES} must hold a JSON object, e.g. {PRICES}='" in message
    # Only variables that can be set are named.
    assert f"{PRICES}__" not in message


def test_an_unknown_key_inside_prices_suggests_the_right_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refusal(monkeypatch, PRICES, '{"openai:gpt-4o": {"inptu": 2.5}}')
    assert message.startswith(
        "unknown setting 'usage.prices.openai:gpt-4o.inptu'; "
        "did you mean 'usage.prices.openai:gpt-4o.input'? "
        f"(in environment variable {PRICES}; {PRICES} must hold a JSON object"
    ), message


def test_a_toml_price_is_not_said_to_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> None:
    # The environment prices one model, the file (wrongly) another: the two are merged.
    (workdir / "chatwright.toml").write_text(
        '[usage.prices."b:model"]\ninput = "cheap"\n', encoding="utf-8"
    )
    message = refusal(monkeypatch, PRICES, '{"a:model": {"input": 1.0}}')
    assert "setting 'usage.prices.b:model.input' is invalid" in message
    assert "environment variable" not in message
    assert "set it with CHATWRIGHT_USAGE__PRICES or [usage] in" in message


def test_the_cli_reports_it_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRICES, "gpt-4o: 2.5")
    line = assert_error(
        run("config", "show"),
        f"setting 'usage.prices' from environment variable {PRICES} is not JSON",
        f"{PRICES} must hold a JSON object, e.g. {PRICES}='",
    )
    assert "error parsing value" not in line
