"""Credentials the key rule missed: in a URL's query, under a plural key, in an auth header.

``agents export`` wrote in clear a ``base_url`` carrying ``?api_key=``, a list
of ``api_keys``, the ``cookies`` and an ``X-Auth`` header. They are marked now,
and hidden by ``agents show`` (the same rule); an import of the bundle still
needs each of them given again, or takes the stored one. What is no secret
(``max_tokens``, ``history_tokens``, the ``auth`` setting, ``?api-version=``)
stays as it is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatwright.bundles import export_bundle
from chatwright.redaction import HIDDEN, is_secret_key, redacted, secret_parameters
from chatwright.registry import LoadPolicy, Plugins
from chatwright.stores import Agent
from tests.harness import assert_error, ok, run
from tests.hostile.conftest import AGENT
from tests.test_bundles import db as db
from tests.test_bundles import stored_agent

SECRET_KEYS = [
    "api_keys",
    "apiKeys",
    "apikeys",
    "access_tokens",
    "refresh_tokens",
    "cookies",
    "secrets",
    "passwords",
    "X-Auth",
    "x-auth-user",
    "X-Api-Key",
    "X-Auth-Token",
    "Authorization",
    "Proxy-Authorization",
]
PLAIN_KEYS = [
    "max_tokens",
    "max_completion_tokens",
    "history_tokens",
    "daily_tokens",
    "tokens",
    "keys",
    "max_keys",
    "tokenizer",
    "auth",
    "auth_type",
    "author",
    "X-Author",
    "temperature",
]
SECRET_URLS = [
    "https://gw.example.com/v1?api_key=sk-1",
    "https://gw.example.com/v1?apikey=sk-1",
    "https://gw.example.com/v1?api-version=1&key=sk-1",
    "https://gw.example.com/v1?access_token=sk-1",
    "https://store.example.com/c?sv=2024&sig=sk-1",
    "https://s3.example.com/o?X-Amz-Date=1&X-Amz-Signature=sk-1",
    "https://gw.example.com/cb#access_token=sk-1",
]
PLAIN_URLS = [
    "https://gw.example.com/v1",
    "https://gw.example.com/v1?api-version=2024-06-01",
    "https://gw.example.com/v1?key=",
    "https://gw.example.com/v1?keyword=x&monkey=1&passage=2&max_tokens=5",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_plural_and_header_names_are_secret_keys(key: str) -> None:
    assert is_secret_key(key)
    assert redacted({"nested": {key: "value"}})["nested"][key] == HIDDEN


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_names_that_hold_no_secret_are_not(key: str) -> None:
    assert not is_secret_key(key)
    assert redacted({"nested": {key: "value"}})["nested"][key] == "value"


def bundle_of(settings: dict[str, Any]) -> Any:
    """The model settings of an exported agent holding ``settings``."""
    now = datetime.now(UTC)
    agent = Agent(1, "a", "", "offline:x", settings, 50, now, now)
    return export_bundle(agent, [], Plugins.load(LoadPolicy()))["agent"]["model_settings"]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_url_with_a_credential_parameter_is_marked_and_hidden(url: str) -> None:
    assert secret_parameters(url)
    assert bundle_of({"base_url": url}) == {"base_url": {"$secret": "model_settings.base_url"}}
    assert "sk-1" not in redacted({"base_url": url})["base_url"]


@pytest.mark.parametrize("url", PLAIN_URLS)
def test_a_url_without_one_is_left_as_it_is(url: str) -> None:
    assert secret_parameters(url) == []
    assert bundle_of({"base_url": url}) == {"base_url": url}


def test_export_marks_them_and_import_needs_them_again(db: str, workdir: Path) -> None:
    settings = [
        "base_url=https://gw.example.com/v1?api-version=1&api_key=sk-LEAK1",
        'api_keys=["sk-LEAK2","sk-LEAK3"]',
        'cookies={"session":"LEAK4"}',
        'default_headers={"X-Auth":"LEAK5","X-Trace":"on"}',
        "max_tokens=64",
    ]
    ok("agents", "set", AGENT, *[arg for s in settings for arg in ("--setting", s)])
    text = ok("agents", "export", AGENT).stdout
    assert "LEAK" not in text
    assert "LEAK" not in ok("agents", "show", AGENT).stdout
    bundle = json.loads(text)
    marked = bundle["agent"]["model_settings"]
    places = [
        "model_settings.api_keys",
        "model_settings.base_url",
        "model_settings.cookies",
        "model_settings.default_headers.X-Auth",
    ]
    assert marked == {
        "api_keys": {"$secret": places[0]},
        "base_url": {"$secret": places[1]},
        "cookies": {"$secret": places[2]},
        "default_headers": {"X-Auth": {"$secret": places[3]}, "X-Trace": "on"},
        "max_tokens": 64,
    }

    # Onto the agent it came from, the stored values are taken.
    path = workdir / "b.json"
    path.write_text(text, encoding="utf-8")
    ok("agents", "import", str(path))
    assert stored_agent(db).model_settings["cookies"] == {"session": "LEAK4"}

    # A new agent needs every one of them given.
    bundle["agent"]["name"] = "copy"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    error = assert_error(run("agents", "import", str(path)), "are secrets")
    assert all(place in error for place in places)
    given = ["base_url=https://gw.example.com/v1?key=sk-2", "api_keys=sk-3"]
    given += ["cookies=c-4", "default_headers.X-Auth=a-5"]
    ok(
        "agents",
        "import",
        str(path),
        *[a for g in given for a in ("--secret", f"model_settings.{g}")],
    )
    copy = stored_agent(db, "copy").model_settings
    assert copy["base_url"] == "https://gw.example.com/v1?key=sk-2"
    assert (copy["api_keys"], copy["cookies"]) == ("sk-3", "c-4")
    assert copy["default_headers"] == {"X-Auth": "a-5", "X-Trace": "on"}


def test_headers_as_pairs_bearer_auth_header_and_an_azure_code_are_marked(
    db: str, workdir: Path
) -> None:
    """Found by an attack on moving out: each of these was exported in clear."""
    settings = [
        'extra_headers=[["Authorization","Bearer LEAK1"],["X-Trace","on"]]',
        "endpoint=https://fn.example.net/api/run?code=LEAK2&country_code=fr",
        "bearer=LEAK3",
        "authHeader=LEAK4",
        "auth=none",
    ]
    ok("agents", "set", AGENT, *[arg for s in settings for arg in ("--setting", s)])
    text = ok("agents", "export", AGENT).stdout
    assert "LEAK" not in text
    shown = ok("agents", "show", AGENT).stdout
    assert "LEAK" not in shown
    assert "country_code=fr" in shown and "X-Trace" in shown
    marked = json.loads(text)["agent"]["model_settings"]
    assert marked["extra_headers"] == [
        ["Authorization", {"$secret": "model_settings.extra_headers.0.1"}],
        ["X-Trace", "on"],
    ]
    assert marked["endpoint"] == {"$secret": "model_settings.endpoint"}
    assert marked["bearer"] == {"$secret": "model_settings.bearer"}
    assert marked["authHeader"] == {"$secret": "model_settings.authHeader"}
    assert marked["auth"] == "none"
    # Imported as a new agent, each is asked for again by its place, and stored as given.
    bundle = json.loads(text)
    bundle["agent"]["name"] = "copy"
    path = workdir / "pairs.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    error = assert_error(run("agents", "import", str(path)), "are secrets")
    assert "model_settings.extra_headers.0.1" in error
    given = ["extra_headers.0.1=Bearer new", "endpoint=https://fn.example.net/api?code=n2"]
    given += ["bearer=n3", "authHeader=n4"]
    ok(
        "agents",
        "import",
        str(path),
        *[a for g in given for a in ("--secret", f"model_settings.{g}")],
    )
    stored = stored_agent(db, "copy").model_settings
    assert stored["extra_headers"] == [["Authorization", "Bearer new"], ["X-Trace", "on"]]
    assert stored["bearer"] == "n3"


def test_a_marker_with_other_keys_is_refused_not_stored_as_an_object(
    db: str, workdir: Path
) -> None:
    bundle = json.loads(ok("agents", "export", AGENT).stdout)
    bundle["agent"]["name"] = "odd"
    bundle["agent"]["model_settings"]["api_key"] = {
        "$secret": "model_settings.api_key",
        "extra": 1,
    }
    path = workdir / "odd.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    assert_error(
        run("agents", "import", str(path)),
        "the object at model_settings.api_key has '$secret' and also 'extra'",
    )
    assert stored_agent(db, "odd") is None
