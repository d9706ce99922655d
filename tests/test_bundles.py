"""Agent bundles through the CLI: ``agents export``/``import`` on SQLite and PostgreSQL.

Each test runs ``chatwright init --example`` on the test's database (the
zero-configuration SQLite file, or the run's PostgreSQL database through the
``CHATWRIGHT_STORAGE__*`` variables) and drives the commands with click's
runner; what is stored is read back through a storage of the same database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, SecretStr

from chatwright import hookimpl
from chatwright.registry import LoadPolicy, Plugins
from tests import harness
from tests.harness import DB_FILE, assert_error, ok, run

AGENT = "assistant"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of the test's database, the example agent in it."""
    url = f"sqlite+aiosqlite:///{workdir / DB_FILE}"
    if request.param == "postgresql":
        request.getfixturevalue("pg_storage")
        url = request.getfixturevalue("pg_url")
        for key, value in harness.pg_env(url).items():
            monkeypatch.setenv(key, value)
    ok("init", "--example")
    return url


def on_storage(url: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """``work(storage)`` on a storage of ``url`` (the CLI runs its own event loop: not here)."""

    async def run_it() -> Any:
        storage = harness.storage_for(url)
        try:
            return await work(storage)
        finally:
            await storage.close()

    return asyncio.run(run_it())


def stored_agent(url: str, name: str = AGENT) -> Any:
    return on_storage(url, lambda s: s.agents.get(name))


def stored_tools(url: str, name: str = AGENT) -> list[Any]:
    tools: list[Any] = on_storage(url, lambda s: s.tools.list(name))
    return tools


def export(*args: str) -> str:
    return ok("agents", "export", AGENT, *args).stdout


def write(path: Path, bundle: dict[str, Any]) -> Path:
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_import_export_gives_the_same_bytes(db: str, fmt: str, workdir: Path) -> None:
    ok("agents", "set", AGENT, "--setting", "api_key=sk-live-1", "--setting", "temperature=0.2")
    ok("agents", "set", AGENT, "--max-model-calls", "7", "--summarize")
    first = export("--format", fmt)
    path = workdir / f"agent.{fmt}"
    path.write_text(first, encoding="utf-8")
    report = json.loads(ok("agents", "import", str(path), "--json").stdout)
    assert report["action"] == "unchanged" and not report["tools"]["updated"]
    assert export("--format", fmt) == first

    # Into a fresh agent of another name (the secret given): the same bundle but the name.
    text = first.replace("name: assistant", "name: copy").replace('"assistant"', '"copy"')
    other = workdir / f"copy.{fmt}"
    other.write_text(text, encoding="utf-8")
    ok("agents", "import", str(other), "--secret", "model_settings.api_key=sk-live-2")
    assert ok("agents", "export", "copy", "--format", fmt).stdout == text
    copied = stored_agent(db, "copy")
    assert copied.model_settings["api_key"] == "sk-live-2"
    assert copied.max_model_calls == 7 and copied.summarize is True
    names = [t.name for t in stored_tools(db, "copy")]
    assert names == [t.name for t in stored_tools(db)]


def test_secrets_are_left_out_marked_and_kept_on_update(db: str, workdir: Path) -> None:
    ok("agents", "set", AGENT, "--setting", 'auth={"accessToken": "tok-1", "region": "eu"}')
    ok("agents", "set", AGENT, "--setting", "api_key=sk-live-1", "--setting", "max_tokens=50")
    text = export()
    assert "sk-live-1" not in text and "tok-1" not in text
    settings = json.loads(text)["agent"]["model_settings"]
    assert settings["api_key"] == {"$secret": "model_settings.api_key"}
    assert settings["auth"] == {
        "accessToken": {"$secret": "model_settings.auth.accessToken"},
        "region": "eu",
    }
    assert settings["max_tokens"] == 50  # not a secret: "tokens" is no secret word
    bundle = json.loads(text)
    bundle["agent"]["model_settings"]["temperature"] = 0.5
    ok("agents", "import", str(write(workdir / "b.json", bundle)))
    agent = stored_agent(db)
    assert agent.model_settings["api_key"] == "sk-live-1"
    assert agent.model_settings["auth"]["accessToken"] == "tok-1"
    assert agent.model_settings["temperature"] == 0.5


def test_a_new_agent_needs_its_secrets_given(
    db: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok("agents", "set", AGENT, "--setting", "api_key=sk-live-1")
    bundle = json.loads(export())
    bundle["agent"]["name"] = "fresh"
    path = write(workdir / "fresh.json", bundle)
    error = assert_error(run("agents", "import", str(path)), "model_settings.api_key", "--secret")
    assert "CHATWRIGHT_SECRET_MODEL_SETTINGS_API_KEY" in error
    assert stored_agent(db, "fresh") is None
    assert_error(
        run(
            "agents",
            "import",
            str(path),
            "--secret",
            "model_settings.api_key=sk-1",
            "--secret",
            "model_settings.nope=1",
        ),
        "no secret marker at model_settings.nope",
    )
    monkeypatch.setenv("CHATWRIGHT_SECRET_MODEL_SETTINGS_API_KEY", "sk-from-env")
    ok("agents", "import", str(path))
    assert stored_agent(db, "fresh").model_settings["api_key"] == "sk-from-env"


def test_one_bad_tool_row_changes_nothing(db: str, workdir: Path) -> None:
    before = export()
    bundle = json.loads(before)
    bundle["agent"]["system_prompt"] = "Changed."
    bundle["tools"][0]["description"] = "Changed too."
    good = {**bundle["tools"][1], "name": "another_list", "position": 40}
    bad = {**bundle["tools"][1], "name": "broken", "config": {"table": "no_such_table"}}
    bundle["tools"] += [good, bad]
    result = run("agents", "import", str(write(workdir / "bad.json", bundle)))
    assert_error(result, "bundle not imported", "'broken'", "config")
    assert export() == before


def test_tools_absent_from_the_bundle_are_kept_or_pruned(db: str, workdir: Path) -> None:
    bundle = json.loads(export())
    dropped = bundle["tools"].pop()["name"]
    path = write(workdir / "fewer.json", bundle)
    report = json.loads(ok("agents", "import", str(path), "--json").stdout)
    assert report["tools"]["kept"] == [dropped]
    assert dropped in [t.name for t in stored_tools(db)]

    dry = json.loads(ok("agents", "import", str(path), "--prune", "--dry-run", "--json").stdout)
    assert dry["tools"]["removed"] == [dropped] and dry["dry_run"] is True
    assert dropped in [t.name for t in stored_tools(db)]

    out = ok("agents", "import", str(path), "--prune").stdout
    assert f"tools removed: {dropped}" in out
    assert dropped not in [t.name for t in stored_tools(db)]


def test_import_updates_changed_tools_and_adds_new_ones(db: str, workdir: Path) -> None:
    bundle = json.loads(export())
    first = bundle["tools"][0]
    first["description"] = "A new description."
    first["approval"] = "required"
    bundle["tools"].append({**bundle["tools"][1], "name": "list_again", "position": 99})
    report = json.loads(
        ok("agents", "import", str(write(workdir / "c.json", bundle)), "--json").stdout
    )
    assert report["tools"]["updated"] == [first["name"]]
    assert report["tools"]["safety"] == {first["name"]: ["approval auto -> required"]}
    assert report["tools"]["added"] == ["list_again"]
    rows = {t.name: t for t in stored_tools(db)}
    assert rows[first["name"]].description == "A new description."
    assert rows[first["name"]].approval == "required"
    assert rows["list_again"].position == 99
    assert json.loads(export()) == bundle


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda b: b.update(version=2), ("bundle version 2 is not supported",)),
        (lambda b: b.update(format="other"), ('"format" must be',)),
        (lambda b: b.update(extra=1), ("unknown field 'extra'",)),
        (lambda b: b["agent"].update(colour="red"), ("agent: unknown field 'colour'",)),
        (lambda b: b["tools"][0].update(id=5), ("tools[0]: unknown field 'id'",)),
        (lambda b: b["tools"].append(b["tools"][0]), ("a second tool named",)),
        (lambda b: b["agent"].update(history_window=0), ("history_window",)),
        (lambda b: b["agent"].update(model="nope:x"), ("no model provider 'nope'",)),
    ],
)
def test_a_malformed_bundle_is_refused_by_name(
    db: str, workdir: Path, change: Any, needles: tuple[str, ...]
) -> None:
    before = export()
    bundle = json.loads(before)
    change(bundle)
    assert_error(run("agents", "import", str(write(workdir / "m.json", bundle))), *needles)
    assert export() == before


def test_agents_delete_takes_the_tools_and_keeps_the_chats(db: str) -> None:
    from chatwright.stores import NewMessage

    async def chat(storage: Any) -> Any:
        session = await storage.sessions.open("ann", AGENT)
        message = NewMessage("human", {"type": "human", "content": "hi"})
        await storage.messages.append("ann", session.chat_id, [message])
        return session

    session = on_storage(db, chat)
    tools = len(stored_tools(db))
    assert run("agents", "delete", AGENT, input="n\n").exit_code == 1
    assert stored_agent(db) is not None
    out = ok("agents", "delete", AGENT, "--yes").stdout
    assert f"its {tools} tool row(s)" in out
    assert stored_agent(db) is None and stored_tools(db) == []
    assert_error(run("agents", "delete", AGENT, "--yes"), f"no agent named {AGENT!r}")
    kept = on_storage(db, lambda s: s.messages.window("ann", session.chat_id, 10))
    assert [m.content["content"] for m in kept] == ["hi"]


# -- a tool type that declares a secret ------------------------------------------------


class KeyedConfig(BaseModel):
    endpoint: str
    token: SecretStr


class KeyedType:
    config_model = KeyedConfig

    async def build(self, row: Any, config: Any, context: Any) -> Any:
        return StructuredTool.from_function(
            func=lambda: config.token.get_secret_value()[:0] + "ok",
            name=row.name,
            description=row.description or "keyed",
        )


class KeyedPlugin:
    @hookimpl
    def register_tool_types(self, register: Any) -> None:
        register("keyed", KeyedType())


@pytest.fixture
def keyed() -> Plugins:
    plugins = Plugins.load(LoadPolicy())
    plugins.register(KeyedPlugin(), "keyed-test")
    return plugins


def test_a_tool_config_field_declared_secret_is_marked(
    db: str, workdir: Path, keyed: Plugins
) -> None:
    row = {"name": "lookup", "type": "keyed", "config": {"endpoint": "e", "token": "t-secret-1"}}
    ok("tools", "add", "--agent", AGENT, input=json.dumps(row), plugins=keyed)
    text = ok("agents", "export", AGENT, plugins=keyed).stdout
    assert "t-secret-1" not in text
    (tool,) = [t for t in json.loads(text)["tools"] if t["name"] == "lookup"]
    assert tool["config"] == {"endpoint": "e", "token": {"$secret": "tools.lookup.config.token"}}
    path = workdir / "k.json"
    path.write_text(text, encoding="utf-8")
    ok("agents", "import", str(path), plugins=keyed)
    assert ok("agents", "export", AGENT, plugins=keyed).stdout == text
    (stored,) = [t for t in stored_tools(db) if t.name == "lookup"]
    assert stored.config["token"] == "t-secret-1"
