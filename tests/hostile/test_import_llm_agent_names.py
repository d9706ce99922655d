"""``chatwright import llm-agent`` and agents ``chatwright agents add`` would refuse.

The original system kept any text as an agent's name and any provider in its
``llm_config``. An agent named ``My Agent`` or ``../evil``, or whose provider
no plugin registers (``Azure OpenAI``), is reported on its row and not created
(never renamed: its tools, chats and memory name it as it is); with ``--model``
an agent of an unknown provider takes that model, said so in the report. The
agents that pass are created as ``agents add`` creates them, into SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import assert_error, ok, run
from tests.test_bundles import db as db
from tests.test_bundles import on_storage
from tests.test_import_llm_agent import ORIGINAL_SCHEMA, original_database

USER = "6f1c3c2e-58a4-4a1e-9d4f-0d1b2c3d4e5f"
AGENTS = [
    ("My Agent", {"model": "gpt-4o"}),
    ("../evil", {"model": "gpt-4o"}),
    ("prov", {"model": "gpt-4o", "provider": "Azure OpenAI"}),
    ("fine", {"model": "gpt-4o"}),
]


def build_original(conn: Any) -> None:
    """Agents of every kind above, a tool and memory of 'My Agent'."""
    conn.execute(ORIGINAL_SCHEMA)
    ids = {}
    for agent, llm in AGENTS:
        ids[agent] = conn.execute(
            "INSERT INTO agent_configurations (agent_name, llm_config, system_prompt) "
            "VALUES (%s, %s, 'hi') RETURNING id",
            (agent, json.dumps(llm)),
        ).fetchone()[0]
    conn.execute(
        "INSERT INTO agent_tools (agent_id, name, type, config) "
        "VALUES (%s, 'list_tasks', 'CRUDTool', %s)",
        (ids["My Agent"], json.dumps({"table_name": "tasks", "method": "fetch"})),
    )
    conn.execute(
        "INSERT INTO agent_long_term_memory (user_id, agent_id, notes) "
        "VALUES (%s, 'My Agent', 'likes tea')",
        (USER,),
    )


@pytest.fixture(scope="module")
def original() -> Iterator[str]:
    """The original's database: see :func:`build_original`."""
    with original_database("llm_agent_names", build_original) as url:
        yield url


def imported(original: str, *extra: str) -> dict[str, Any]:
    out = ok("import", "llm-agent", "--from", original, "--yes", "--json", *extra).stdout
    report: dict[str, Any] = json.loads(out)
    return report


def items(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["target"]: i for i in report["items"]}


def stored_models(url: str) -> dict[str, str]:
    return {a.name: a.model for a in on_storage(url, lambda s: s.agents.list())}


def test_an_agent_name_agents_add_refuses_is_reported_and_not_created(
    db: str, original: str
) -> None:
    report = imported(original)
    found = items(report)
    for name in ("My Agent", "../evil"):
        item = found[f"agent {name!r}"]
        assert item["action"] == "skip", item
        (problem,) = item["problems"]
        assert f"agent name {name!r} is not one chatwright takes" in problem
        assert "rename the agent in the original" in problem
    # What names the agent is not imported either: it has no agent to belong to.
    assert found["tool ?/list_tasks"]["action"] == "skip"
    assert found[f"memory {USER}/My Agent"]["action"] == "skip"
    models = stored_models(db)
    assert "My Agent" not in models and "../evil" not in models
    assert models["fine"] == "openai:gpt-4o"
    # Every agent stored is one `agents show` (and a bundle export) takes.
    for name in models:
        ok("agents", "show", name)


def test_a_provider_no_plugin_registers_is_reported_and_not_created(db: str, original: str) -> None:
    report = imported(original)
    item = items(report)["agent 'prov'"]
    assert item["action"] == "skip", item
    problem = " ".join(item["problems"])
    assert "model 'azure openai:gpt-4o': no model provider 'azure openai'" in problem
    assert "--model SPEC" in problem
    assert "prov" not in stored_models(db)


def test_a_provider_no_plugin_registers_takes_the_model_given(db: str, original: str) -> None:
    report = imported(original, "--model", "offline:assistant")
    item = items(report)["agent 'prov'"]
    assert item["action"] == "import", item
    assert any("given model 'offline:assistant'" in p for p in item["problems"])
    assert stored_models(db)["prov"] == "offline:assistant"


@pytest.mark.parametrize(
    ("model", "needle"),
    [("Azure OpenAI:gpt-4o", "no model provider 'Azure OpenAI'"), ("offline:a b", "provider:name")],
)
def test_a_model_given_that_agents_add_refuses_is_refused(
    db: str, original: str, model: str, needle: str
) -> None:
    before = stored_models(db)
    result = run("import", "llm-agent", "--from", original, "--yes", "--model", model)
    assert_error(result, f"--model {model!r}", needle)
    assert stored_models(db) == before
