"""Agent bundles that get past a dry run and fail in the database, leak, or say two things.

- Text no database stores as given: a NUL character (PostgreSQL's text and
  jsonb refuse it, SQLite keeps it) or a lone surrogate (``"\\ud800"`` in JSON;
  a byte that is not UTF-8 in a secret's environment variable), anywhere in
  the bundle, and a model spec longer than its column. The import and its dry
  run refuse them, naming the place, on SQLite and PostgreSQL alike.
- A write the database refuses halfway through an import (a rule of the
  database, here a trigger): the writes before it are undone, the agent created
  deleted, the rows changed, replaced or pruned put back, and the error names
  the write that failed; through the CLI and the admin API.
- A tool row whose type's plugin is not loaded: its secrets are unknown, so its
  agent is not exported at all (CLI and HTTP).
- A key given twice in a JSON or YAML bundle: refused, naming the key and where.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from chatwright.bundles import parse
from chatwright.errors import InvalidInputError
from chatwright.plugins.example import assistant as example
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from tests.harness import assert_error, libpq, ok, run
from tests.hostile.conftest import AGENT, MakeServer, Server, assert_error_body, bearer, sql
from tests.test_bundles import db as db
from tests.test_bundles import keyed as keyed
from tests.test_bundles import stored_agent, stored_tools

ADMIN = bearer("root", app_metadata={"role": "chatwright_admin"})
REFUSAL = "value refused by a rule of this database"


def export() -> str:
    return ok("agents", "export", AGENT).stdout


def write(path: Path, bundle: dict[str, Any]) -> Path:
    path.write_text(json.dumps(bundle), encoding="utf-8")  # NUL and surrogates as \u escapes
    return path


# -- a rule of the database that refuses one tool row --------------------------------------


def run_sql(url: str, *statements: str) -> None:
    """Statements run as the database's owner: on the SQLite file, or PostgreSQL directly."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1]) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def refuse(url: str, when: str, name: str) -> None:
    """Make the database refuse, as a value it cannot hold, the ``when`` (INSERT or DELETE)
    of a tool row named ``name``."""
    row = "NEW" if when == "INSERT" else "OLD"
    if url.startswith("sqlite"):
        run_sql(
            url,
            f"CREATE TRIGGER refuse_tool_row BEFORE {when} ON agent_tools "
            f"WHEN {row}.name = '{name}' BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
        )
        return
    run_sql(
        url,
        "CREATE OR REPLACE FUNCTION refuse_tool_row() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = '22000'; END $$",
        f"CREATE TRIGGER refuse_tool_row BEFORE {when} ON agent_tools FOR EACH ROW "
        f"WHEN ({row}.name = '{name}') EXECUTE FUNCTION refuse_tool_row()",
    )


def allow(url: str) -> None:
    if url.startswith("sqlite"):
        run_sql(url, "DROP TRIGGER IF EXISTS refuse_tool_row")
    else:
        run_sql(
            url,
            "DROP TRIGGER IF EXISTS refuse_tool_row ON agent_tools",
            "DROP FUNCTION IF EXISTS refuse_tool_row()",
        )


@pytest.fixture
def refusing(db: str) -> Iterator[str]:
    """The test's database, the rule dropped afterwards (PostgreSQL's outlives the test)."""
    yield db
    allow(db)


def rows(url: str, agent: str = AGENT) -> list[tuple[Any, ...]]:
    """The agent's tool rows as a bundle has them (ids aside)."""
    return [
        (t.name, t.type, t.description, t.config, t.is_active, t.position, t.approval)
        for t in stored_tools(url, agent)
    ]


# -- text no database stores -----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "place", "what"),
    [
        (
            lambda b: b["tools"][3].update(description="bad\x00description"),
            "tools[3].description holds a NUL character",
            "\\u0000",
        ),
        (
            lambda b: b["agent"].update(system_prompt="one\x00two"),
            "agent.system_prompt holds a NUL character",
            "\\u0000",
        ),
        (
            lambda b: b["agent"]["model_settings"].update(stop=["ok", "\ud800"]),
            "agent.model_settings.stop[1] holds a lone surrogate",
            "\\ud800",
        ),
        (
            lambda b: b["tools"][0]["config"].update(extra={"deep": {"\udfff": 1}}),
            "tools[0].config.extra.deep has a key '\\udfff' holding a lone surrogate",
            "\\udfff",
        ),
        (
            lambda b: b["tools"][1].update(name="list\x00tasks"),
            "tools[1].name holds a NUL character",
            "\\u0000",
        ),
    ],
)
def test_text_no_database_stores_is_refused_by_its_place(
    db: str, workdir: Path, change: Any, place: str, what: str
) -> None:
    before = export()
    bundle = json.loads(before)
    change(bundle)
    path = write(workdir / "b.json", bundle)
    # The dry run says what the import would: both refuse it, naming the place.
    assert_error(run("agents", "import", str(path), "--dry-run"), place, what, "cannot")
    assert_error(run("agents", "import", str(path)), place, what)
    assert export() == before
    # Into a new agent: nothing of it stored, where PostgreSQL used to keep the first rows.
    bundle["agent"]["name"] = "copy"
    assert_error(run("agents", "import", str(write(workdir / "c.json", bundle))), place)
    assert stored_agent(db, "copy") is None


def test_a_nul_in_a_yaml_bundle_is_refused_by_its_place(db: str, workdir: Path) -> None:
    bundle = json.loads(export())
    bundle["agent"]["name"] = "copy"
    bundle["tools"][3]["description"] = "bad\x00description"
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(bundle), encoding="utf-8")
    assert_error(run("agents", "import", str(path)), "tools[3].description holds a NUL")
    assert stored_agent(db, "copy") is None


def test_a_json_bundle_after_a_byte_order_mark_is_read_as_json(db: str, workdir: Path) -> None:
    """Before: read as YAML (it did not start with "{"), whose escapes of a surrogate pair
    are decoded one by one: "agent.system_prompt holds a lone surrogate"."""
    bundle = json.loads(export())
    bundle["agent"]["name"] = "bommed"
    bundle["agent"]["system_prompt"] = "I am a robot \U0001f916"
    path = workdir / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(bundle, ensure_ascii=True).encode("ascii"))
    assert "\\ud83e\\udd16" in path.read_text(encoding="utf-8-sig")
    ok("agents", "import", str(path))
    shown = json.loads(ok("agents", "export", "bommed").stdout)
    assert shown["agent"]["system_prompt"] == "I am a robot \U0001f916"


@pytest.mark.parametrize("suffix", ["json", "yaml"])
def test_a_bundle_with_a_number_of_thousands_of_digits_is_refused_plainly(
    db: str, workdir: Path, suffix: str
) -> None:
    """Before: "... use sys.set_int_max_str_digits() to increase the limit"."""
    text = export().replace('"history_window": 50', '"history_window": ' + "9" * 5000)
    assert "9" * 5000 in text
    if suffix == "yaml":
        text = yaml.safe_dump(json.loads(text.replace("9" * 5000, "1"))).replace(
            "history_window: 1", "history_window: " + "9" * 5000
        )
    path = workdir / f"digits.{suffix}"
    path.write_text(text, encoding="utf-8")
    error = assert_error(run("agents", "import", str(path)), "more than 4300 digits")
    assert "set_int_max" not in error


def test_a_secret_whose_variable_is_not_utf8_is_refused_by_its_place(
    db: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok("agents", "set", AGENT, "--setting", "api_key=sk-live-1")
    bundle = json.loads(export())
    bundle["agent"]["name"] = "copy"
    # The byte 0xff of the variable, read as Python reads the environment.
    monkeypatch.setenv("CHATWRIGHT_SECRET_MODEL_SETTINGS_API_KEY", "sk-\udcff")
    result = run("agents", "import", str(write(workdir / "c.json", bundle)))
    assert_error(
        result,
        "secret in CHATWRIGHT_SECRET_MODEL_SETTINGS_API_KEY for model_settings.api_key",
        "lone surrogate (\\udcff)",
    )
    assert stored_agent(db, "copy") is None


def test_a_model_spec_longer_than_its_column_is_refused(db: str, workdir: Path) -> None:
    before = export()
    bundle = json.loads(before)
    bundle["agent"]["model"] = "offline:" + "x" * 300
    path = write(workdir / "b.json", bundle)
    assert_error(run("agents", "import", str(path), "--dry-run"), "agent.model is 308 characters")
    assert_error(run("agents", "import", str(path)), "at most 200")
    assert export() == before


# -- a write the database refuses halfway ----------------------------------------------


def test_a_new_agent_whose_tool_row_the_database_refuses_is_not_stored(
    refusing: str, workdir: Path
) -> None:
    bundle = json.loads(export())
    bundle["agent"]["name"] = "copy"
    fourth = bundle["tools"][3]["name"]
    refuse(refusing, "INSERT", fourth)
    path = write(workdir / "c.json", bundle)
    ok("agents", "import", str(path), "--dry-run")  # the rule is the database's own
    error = assert_error(run("agents", "import", str(path)), f"adding tools[3] {fourth!r} failed")
    assert "nothing was changed" in error
    assert stored_agent(refusing, "copy") is None
    assert stored_tools(refusing, "copy") == []
    allow(refusing)
    ok("agents", "import", str(path))
    assert [t[0] for t in rows(refusing, "copy")] == [t[0] for t in rows(refusing)]


def test_a_refused_write_puts_back_the_agent_and_the_rows_changed_or_replaced(
    refusing: str, workdir: Path, keyed: Plugins
) -> None:
    before, agent_before = rows(refusing), stored_agent(refusing)
    bundle = json.loads(export())
    bundle["agent"]["system_prompt"] = "Changed."
    bundle["agent"]["max_model_calls"] = 7
    bundle["tools"][0]["description"] = "Changed too."
    bundle["tools"][0]["is_active"] = False
    # The second row becomes another type: the stored row is removed, a new one added.
    bundle["tools"][1] = {
        "name": bundle["tools"][1]["name"],
        "type": "keyed",
        "config": {"endpoint": "e", "token": "t-1"},
    }
    bundle["tools"].append({**bundle["tools"][2], "name": "added_first", "position": 50})
    bundle["tools"].append({**bundle["tools"][2], "name": "refused", "position": 51})
    refuse(refusing, "INSERT", "refused")
    path = write(workdir / "b.json", bundle)
    result = run("agents", "import", str(path), plugins=keyed)
    error = assert_error(result, "adding tools[", "'refused' failed", "the database")
    assert "nothing was changed (the writes before it were undone)" in error
    assert rows(refusing) == before
    after = stored_agent(refusing)
    assert (after.system_prompt, after.max_model_calls) == (
        agent_before.system_prompt,
        agent_before.max_model_calls,
    )


def test_a_refused_prune_puts_back_the_rows_removed_before_it(refusing: str, workdir: Path) -> None:
    before = rows(refusing)
    bundle = json.loads(export())
    first, second = bundle["tools"][-2]["name"], bundle["tools"][-1]["name"]
    del bundle["tools"][-2:]
    bundle["tools"][0]["description"] = "Changed."
    refuse(refusing, "DELETE", second)
    result = run("agents", "import", str(write(workdir / "b.json", bundle)), "--prune")
    assert result.exit_code == 1, result.output
    assert rows(refusing) == before  # `first` removed, then added again
    names = [t[0] for t in before]
    assert first in names and second in names


# -- the same over the admin API -------------------------------------------------------


async def test_a_refused_write_over_the_admin_api_stores_nothing(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    got = await server.client.get(f"/api/agents/{AGENT}/export", headers=ADMIN)
    assert got.status_code == 200, got.text
    bundle = got.json()
    bundle["agent"]["name"] = "copy"
    fourth = bundle["tools"][3]["name"]
    owner = server.backend.admin_url or server.backend.url
    refuse(owner, "INSERT", fourth)
    try:
        response = await server.client.post(
            "/api/agents/import", json={"bundle": bundle}, headers=ADMIN
        )
    finally:
        allow(owner)
    error = assert_error_body(response, 422)
    assert f"adding tools[3] {fourth!r} failed" in error and "nothing was changed" in error
    assert await server.runtime.storage.agents.get("copy") is None
    assert await server.runtime.storage.tools.list("copy") == []


# -- a tool row whose type is not loaded -----------------------------------------------


def test_an_agent_with_a_tool_row_of_a_type_not_loaded_is_not_exported(
    db: str, keyed: Plugins
) -> None:
    row = {"name": "lookup", "type": "keyed", "config": {"endpoint": "e", "token": "t-secret-1"}}
    ok("tools", "add", "--agent", AGENT, input=json.dumps(row), plugins=keyed)
    (stored,) = [t for t in stored_tools(db) if t.name == "lookup"]
    # The plugin declaring the secret is uninstalled or blocked since; the row stays.
    for fmt in ("json", "yaml"):
        result = run("agents", "export", AGENT, "--format", fmt)
        assert "t-secret-1" not in result.output
        assert_error(
            result,
            f"tool row {stored.id} ('lookup') of agent {AGENT!r} has type 'keyed'",
            "load the plugin of tool type 'keyed'",
            f"chatwright tools remove {stored.id}",
        )
    # With its plugin loaded, the row is exported, its token marked.
    text = ok("agents", "export", AGENT, plugins=keyed).stdout
    assert "t-secret-1" not in text and "tools.lookup.config.token" in text


async def test_the_admin_api_does_not_export_a_tool_row_of_a_type_not_loaded(
    make_server: MakeServer,
) -> None:
    server: Server = await make_server()
    await example.seed(server.runtime.storage, "offline:assistant")
    await sql(
        server.runtime,
        "INSERT INTO agent_tools (agent_id, name, type, config) "
        "SELECT id, 'lookup', 'keyed', :config FROM agents WHERE name = :agent",
        config=json.dumps({"endpoint": "e", "token": "t-secret-1"}),
        agent=AGENT,
    )
    for fmt in ("json", "yaml"):
        response = await server.client.get(
            f"/api/agents/{AGENT}/export?format={fmt}", headers=ADMIN
        )
        assert "t-secret-1" not in response.text
        error = assert_error_body(response, 422)
        assert "type 'keyed'" in error and "load the plugin" in error


# -- keys given twice ------------------------------------------------------------------


def test_a_json_bundle_giving_a_key_twice_is_refused(db: str, workdir: Path) -> None:
    before = export()
    text = before.rstrip().removesuffix("}")
    text += ', "agent": {"name": "other", "model": "offline:assistant"}}\n'
    path = workdir / "top.json"
    path.write_text(text, encoding="utf-8")
    assert_error(run("agents", "import", str(path)), "the top level gives the key 'agent' twice")
    assert stored_agent(db, "other") is None
    nested = before.replace('"is_active": true,', '"is_active": true, "is_active": false,', 1)
    path.write_text(nested, encoding="utf-8")
    assert_error(run("agents", "import", str(path)), "tools[0] gives the key 'is_active' twice")
    assert export() == before


def test_a_yaml_bundle_giving_a_key_twice_is_refused(db: str, workdir: Path) -> None:
    before = ok("agents", "export", AGENT, "--format", "yaml").stdout
    text = before + "agent:\n  name: other\n  model: offline:assistant\n"
    path = workdir / "top.yaml"
    path.write_text(text, encoding="utf-8")
    line = len(before.splitlines()) + 1
    assert_error(
        run("agents", "import", str(path)),
        f"line {line}, column 1: the key 'agent' is given twice",
    )
    assert stored_agent(db, "other") is None
    assert ok("agents", "export", AGENT, "--format", "yaml").stdout == before


def test_a_key_a_yaml_merge_brings_in_may_be_given_again() -> None:
    text = "base: &b {a: 1, b: 2}\nmerged:\n  <<: *b\n  a: 3\n"
    assert parse(text, "m.yaml")["merged"] == {"a": 3, "b": 2}
    with pytest.raises(InvalidInputError, match="line 5, column 3: the key 'a' is given twice"):
        parse(text + "  a: 4\n", "m.yaml")
    with pytest.raises(InvalidInputError, match=r"x\[1\]\.y gives the key 'k' twice"):
        parse('{"x": [{}, {"y": {"k": 1, "k": 2}}]}', "m.json")


@pytest.fixture
async def example_runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, dict[str, Any]]]:
    """A runtime on a SQLite file holding the example agent, and that agent's bundle."""
    from chatwright.bundles import export_bundle
    from chatwright.registry import LoadPolicy
    from chatwright.testing import settings

    plugins = Plugins.load(LoadPolicy())
    runtime = Runtime(settings(plugins, storage={"url": f"sqlite:///{tmp_path}/b.db"}), plugins)
    await runtime.start(upgrade=True)
    try:
        await example.seed(runtime.storage, "offline:x")
        agent = await runtime.storage.agents.get(example.AGENT)
        assert agent is not None
        yield runtime, export_bundle(agent, await runtime.storage.tools.list(agent.name), plugins)
    finally:
        await runtime.close()


async def test_an_import_cancelled_again_while_it_undoes_still_undoes_it_all(
    example_runtime: tuple[Runtime, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second cancellation (a second Ctrl-C, a server stopping) must not stop the undo of
    a failed import halfway: the new agent is gone all the same."""
    import asyncio

    from chatwright import catalog
    from chatwright.bundles import check, import_bundle
    from chatwright.errors import StorageError

    runtime, data = example_runtime
    data["agent"]["name"] = "copy"
    bundle = check(data, "bundle")
    real_insert, real_delete = catalog.insert_row, runtime.storage.agents.delete
    inserted: list[str] = []
    undoing = asyncio.Event()

    async def insert_row(*args: Any, **kwargs: Any) -> Any:
        if inserted:
            raise StorageError("the database went away")
        inserted.append("one")
        return await real_insert(*args, **kwargs)

    async def delete(name: str) -> bool:
        undoing.set()
        await asyncio.sleep(0.5)
        return await real_delete(name)

    monkeypatch.setattr(catalog, "insert_row", insert_row)
    monkeypatch.setattr(runtime.storage.agents, "delete", delete)
    importing = asyncio.ensure_future(import_bundle(runtime, bundle))
    await asyncio.wait_for(undoing.wait(), 10)
    importing.cancel()
    with pytest.raises((asyncio.CancelledError, StorageError)):
        await importing
    assert await runtime.storage.agents.get("copy") is None
    assert await runtime.storage.tools.list("copy") == []


@pytest.mark.parametrize(
    ("field", "value", "wanted"),
    [
        ("history_window", True, "valid integer"),
        ("max_model_calls", False, "valid integer"),
        ("history_window", "20", "valid integer"),
        ("summarize", "yes", "valid boolean"),
        ("summarize", 1, "valid boolean"),
        ("turn_timeout", "30", "valid number"),
    ],
)
def test_an_agent_field_of_another_json_type_is_refused_not_converted(
    db: str, workdir: Path, field: str, value: Any, wanted: str
) -> None:
    before = export()
    bundle = json.loads(before)
    bundle["agent"][field] = value
    path = write(workdir / "b.json", bundle)
    assert_error(run("agents", "import", str(path)), field, wanted)
    assert export() == before


async def test_a_new_bundle_imported_twice_at_once_updates_what_the_other_created(
    example_runtime: tuple[Runtime, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two operators import one new bundle at once: both read 'no such agent', one creates
    it, and the other's create is refused. That one now imports it as an update (it told
    the operator to use `agents set`, the wrong advice for an import)."""
    from chatwright.bundles import check, import_bundle

    runtime, data = example_runtime
    data["agent"]["name"] = "copy"
    data["agent"]["history_window"] = 7
    real_get = runtime.storage.agents.get
    reads: list[str] = []

    async def get(name: str) -> Any:
        reads.append(name)
        if len(reads) == 1:
            # The other import creates it right after this one read it missing.
            other = {**data, "agent": {**data["agent"], "history_window": 3}}
            await import_bundle(runtime, check(other, "other"))
            return None
        return await real_get(name)

    monkeypatch.setattr(runtime.storage.agents, "get", get)
    report = await import_bundle(runtime, check(data, "bundle"))
    assert report.action == "updated"
    assert report.changed == ["history_window"]
    copy = await real_get("copy")
    assert copy is not None and copy.history_window == 7
    names = sorted(t.name for t in await runtime.storage.tools.list("copy"))
    assert names == sorted(t["name"] for t in data["tools"])


async def test_an_import_refused_again_after_its_retry_is_one_clear_error(
    example_runtime: tuple[Runtime, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent reads missing twice and exists twice: the second refusal is said as any
    refusal is, not as the import's own signal (a traceback, a 500)."""
    from chatwright.bundles import check, import_bundle
    from chatwright.errors import AlreadyExistsError

    runtime, data = example_runtime

    creates: list[str] = []

    async def never(name: str) -> Any:
        return None

    async def made_meanwhile(name: str, **fields: Any) -> Any:
        creates.append(name)
        raise AlreadyExistsError(f"an agent named {name!r} already exists")

    monkeypatch.setattr(runtime.storage.agents, "get", never)
    monkeypatch.setattr(runtime.storage.agents, "create", made_meanwhile)
    with pytest.raises(AlreadyExistsError, match="bundle not imported: creating agent"):
        await import_bundle(runtime, check(data, "bundle"))
    assert creates == [example.AGENT, example.AGENT]  # once again, not for ever
