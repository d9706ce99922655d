"""Memory that cannot clobber: appending saves, the offline model's memory, the prompt bound.

The example's ``save_memory`` appends one fact to the notes of the user's
``agent_memories`` row in the write's own statement; two chats saving at once
both keep their fact. The prompt shows the newest ``turns.memory_chars``
characters of the notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import uuid
from typing import Any

import pytest

from chatwright.approvals import Preview, Write
from chatwright.errors import PreviewChangedError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.example.assistant import AGENT
from chatwright.plugins.sql.settings import SQLStorageSettings
from chatwright.plugins.supabase.storage import SupabaseStorage
from chatwright.prompts import OLDER_LEFT_OUT, fill, newest
from chatwright.runtime import Runtime
from tests import test_supabase
from tests.conftest import MakeRuntime
from tests.harness import DB_FILE, Recorder, ok

ALICE = "alice"
BOB = "bob"


@pytest.fixture(autouse=True)
def _users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users of this test only: application tables outlive a test on PostgreSQL."""
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setattr(sys.modules[__name__], "ALICE", f"alice-{suffix}")
    monkeypatch.setattr(sys.modules[__name__], "BOB", f"bob-{suffix}")


async def notes(runtime: Runtime, user: str) -> str:
    memory = await runtime.storage.memories.get(user, AGENT)
    return memory.notes if memory is not None else ""


async def chat_of(runtime: Runtime, user: str) -> uuid.UUID:
    return (await runtime.storage.sessions.open(user, AGENT, chat_id=uuid.uuid4())).chat_id


def memory_write(user: str, fact: str) -> Write:
    """What the example's save_memory asks of the record store."""
    scope = {"user_id": user, "agent_name": AGENT}
    return Write(
        table="agent_memories",
        operation="upsert",
        values={"notes": fact, **scope},
        scope=scope,
        returning=["notes"],
        conflict=list(scope),
        append={"notes": "\n"},
    )


# -- concurrent saves -------------------------------------------------------------------


async def test_two_chats_saving_at_once_both_keep_their_fact(runtimes: MakeRuntime) -> None:
    # Two "processes", each with its own engine and locks, one chat each of one user.
    first, second = await runtimes(), await runtimes()
    await example.seed(first.storage, "offline:assistant")
    one, two = await chat_of(first, ALICE), await chat_of(second, ALICE)

    for round_ in range(3):
        turns = await asyncio.gather(
            first.chat(ALICE, AGENT, one, f"remember that I like tea {round_}"),
            second.chat(ALICE, AGENT, two, f"remember that I live in Oslo {round_}"),
        )
        for turn in turns:
            assert turn.status == "done"
            assert [c.name for c in turn.tool_calls] == ["save_memory"]
            assert not turn.tool_calls[0].error
            assert turn.response.startswith("Noted:")

    lines = (await notes(first, ALICE)).splitlines()
    expected = {f"I like tea {n}" for n in range(3)} | {f"I live in Oslo {n}" for n in range(3)}
    assert sorted(lines) == sorted(expected)
    assert await notes(first, BOB) == ""


async def test_many_appends_at_once_are_all_kept_with_chained_images(
    runtimes: MakeRuntime,
) -> None:
    first, second = await runtimes(), await runtimes()
    await example.seed(first.storage, "offline:assistant")
    facts = [f"fact {n}" for n in range(24)]
    stores = [first.storage.records, second.storage.records]
    applied = await asyncio.gather(
        *(
            stores[n % 2].apply(ALICE, memory_write(ALICE, fact), cap=10)
            for n, fact in enumerate(facts)
        )
    )

    stored = await notes(first, ALICE)
    assert sorted(stored.split("\n")) == sorted(facts)
    # Each write's images say what it did: its fact after the text it found.
    befores = []
    for fact, result in zip(facts, applied, strict=True):
        (change,) = result.changes
        assert change.after is not None
        before = change.before["notes"] if change.before is not None else ""
        befores.append(before)
        assert change.after["notes"] == (f"{before}\n{fact}" if before else fact)
        assert result.rows == [{"notes": change.after["notes"]}]
    # One write created the row; every other found a different text (no lost update).
    assert befores.count("") == 1
    assert len(set(befores)) == len(facts)


async def test_an_update_that_appends_adds_to_the_stored_text(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await example.seed(runtime.storage, "offline:assistant")
    await runtime.storage.records.apply(ALICE, memory_write(ALICE, "first"), cap=10)
    scope = {"user_id": ALICE, "agent_name": AGENT}
    update = Write(
        table="agent_memories",
        operation="update",
        values={"notes": "second"},
        where=scope,
        scope=scope,
        returning=["notes"],
        append={"notes": " | "},
    )
    preview = await runtime.storage.records.preview(ALICE, update, cap=10)
    (row,) = preview.rows
    assert row.before is not None and row.after is not None
    assert (row.before["notes"], row.after["notes"]) == ("first", "first | second")
    applied = await runtime.storage.records.apply(ALICE, update, expect=preview, cap=10)
    assert applied.rows == [{"notes": "first | second"}]
    assert await notes(runtime, ALICE) == "first | second"


# -- the offline model ------------------------------------------------------------------


async def test_the_offline_model_remembers_in_one_call_and_recalls(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await example.seed(runtime.storage, "offline:assistant")
    chat = await chat_of(runtime, ALICE)

    turn = await runtime.chat(ALICE, AGENT, chat, "Remember that I like green tea")
    assert [(c.name, dict(c.args)) for c in turn.tool_calls] == [
        ("save_memory", {"fact": "I like green tea"})
    ]
    await runtime.chat(ALICE, AGENT, chat, "remember that my cat is called Miso.")
    assert await notes(runtime, ALICE) == "I like green tea\nmy cat is called Miso"

    recall = await runtime.chat(ALICE, AGENT, chat, "what do you remember?")
    assert [c.name for c in recall.tool_calls] == ["read_memory"]
    assert "I like green tea" in recall.response and "my cat is called Miso" in recall.response


async def test_memories_saved_in_turns_and_a_customization_evict_no_cached_build(
    runtimes: MakeRuntime,
) -> None:
    """A save through the tool's write path (audited) changes the user's data, not the agent."""
    recorder = Recorder()
    one = await runtimes(recorder)
    two = await runtimes()  # another process saves too
    await example.seed(one.storage, "offline:assistant")
    listening = asyncio.create_task(one.storage.watch_config(one.config_changed))
    try:
        chat = await chat_of(one, ALICE)
        saved = await one.chat(ALICE, AGENT, chat, "Remember that I like green tea")
        other = await two.chat(ALICE, AGENT, await chat_of(two, ALICE), "remember that I row.")
        for turn in (saved, other):
            assert [(c.name, c.error) for c in turn.tool_calls] == [("save_memory", False)]
        await two.storage.customizations.put(ALICE, AGENT, "style", "Answer briefly.")
        recall = await one.chat(ALICE, AGENT, chat, "what do you remember?")
        assert "I like green tea" in recall.response and "I row" in recall.response
        await asyncio.sleep(0.5)  # any notification would have arrived
        assert recorder.evicted == []
        assert one.cache.stats.builds == 1
        # The listener works: a change of the agent itself does reach it (PostgreSQL,
        # unless reached through a transaction pooler with no direct_url to listen on).
        await two.storage.agents.update(AGENT, system_prompt=example.PROMPT + " ")
        sql = one.settings.section(SQLStorageSettings)
        if one.storage.dialect == "postgresql" and (  # type: ignore[attr-defined]
            sql.pooler != "transaction" or sql.direct_url is not None
        ):
            for _ in range(50):
                if recorder.evicted:
                    break
                await asyncio.sleep(0.1)
            assert recorder.evicted == [(AGENT, "config-changed")]
        await one.chat(ALICE, AGENT, chat, "what do you remember?")
        assert one.cache.stats.builds == 2
    finally:
        listening.cancel()


async def with_a_replacing_tool(runtimes: MakeRuntime) -> tuple[Runtime, uuid.UUID]:
    """The example on the offline model, its save_memory row as old installs had it (it
    replaces the notes), and a chat of ALICE's."""
    runtime = await runtimes()
    await example.seed(runtime.storage, "offline:assistant")
    old = example.OLD_TOOLS["save_memory"]
    (row,) = [r for r in await runtime.storage.tools.list(AGENT) if r.name == "save_memory"]
    await runtime.storage.tools.update(row.id, config=old["config"])
    return runtime, await chat_of(runtime, ALICE)


async def test_with_a_replacing_tool_the_offline_model_reads_then_saves(
    runtimes: MakeRuntime,
) -> None:
    runtime, chat = await with_a_replacing_tool(runtimes)

    await runtime.chat(ALICE, AGENT, chat, "remember that I like tea")
    turn = await runtime.chat(ALICE, AGENT, chat, "remember that I live in Oslo")
    assert [c.name for c in turn.tool_calls] == ["read_memory", "save_memory"]
    assert turn.response == "Noted: I live in Oslo."
    assert await notes(runtime, ALICE) == "- I like tea\n- I live in Oslo"


async def test_with_a_replacing_tool_notes_too_long_to_read_are_not_replaced(
    runtimes: MakeRuntime,
) -> None:
    # The read shows no row when the notes are longer than tools.max_result_chars: the
    # offline model must not take that for "no notes" and save the new fact alone.
    runtime, chat = await with_a_replacing_tool(runtimes)
    long_notes = "\n".join(f"- fact number {n} is true" for n in range(400))
    await runtime.storage.memories.put(ALICE, AGENT, long_notes)
    assert len(long_notes) > runtime.settings.tools.max_result_chars

    turn = await runtime.chat(ALICE, AGENT, chat, "remember that I live in Oslo")
    assert [c.name for c in turn.tool_calls] == ["read_memory"]
    assert "too long for me to read whole" in turn.response
    assert await notes(runtime, ALICE) == long_notes


# -- existing installs ------------------------------------------------------------------


async def test_an_untouched_old_save_memory_row_is_updated_and_a_changed_one_kept(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    await example.seed(runtime.storage, "offline:assistant")
    rows = {r.name: r for r in await runtime.storage.tools.list(AGENT)}
    old = example.OLD_TOOLS["save_memory"]
    await runtime.storage.tools.update(
        rows["save_memory"].id, config=old["config"], description=old["description"]
    )

    done = await example.seed(runtime.storage, "offline:assistant")
    assert done == ["tool save_memory (replacing the old one, which rewrote all notes)"]
    row = await runtime.storage.tools.get(rows["save_memory"].id)
    assert row is not None and row.config == example.TOOLS[-1]["config"]
    assert row.config["append"] == {"notes": "\n"}
    assert await example.seed(runtime.storage, "offline:assistant") == []

    # A user's own edit of the old row (here: its description) is theirs.
    mine = "Replace the notes; I check them myself."
    await runtime.storage.tools.update(row.id, config=old["config"], description=mine)
    assert await example.seed(runtime.storage, "offline:assistant") == []
    kept = await runtime.storage.tools.get(row.id)
    assert kept is not None and (kept.config, kept.description) == (old["config"], mine)


# -- approvals and undo -----------------------------------------------------------------


async def test_an_appending_save_is_previewed_approved_and_undone(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    await example.seed(runtime.storage, "scripted:x")
    script = [
        {"tool_calls": [{"name": "save_memory", "args": {"fact": "likes jazz"}}]},
        {"content": "Saved."},
    ]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    (row,) = [r for r in await runtime.storage.tools.list(AGENT) if r.name == "save_memory"]
    await runtime.storage.tools.update(row.id, approval="required")
    await runtime.storage.records.apply(ALICE, memory_write(ALICE, "likes tea"), cap=10)
    chat = await chat_of(runtime, ALICE)

    turn = await runtime.chat(ALICE, AGENT, chat, "I like jazz")
    (action,) = turn.pending
    assert action.preview is not None
    (change,) = action.preview.rows
    assert change.before is not None and change.after is not None
    assert (change.before["notes"], change.after["notes"]) == (
        "likes tea",
        "likes tea\nlikes jazz",
    )
    assert await notes(runtime, ALICE) == "likes tea"

    done = await runtime.decide(ALICE, action.id, True)
    assert done.status == "done" and done.response == "Saved."
    assert await notes(runtime, ALICE) == "likes tea\nlikes jazz"
    (entry,) = [e for e in await runtime.storage.audit.list(ALICE) if e.operation == "upsert"]
    (image,) = entry.changes
    assert image.before is not None and image.after is not None
    assert (image.before["notes"], image.after["notes"]) == ("likes tea", "likes tea\nlikes jazz")

    await runtime.undo(ALICE, chat, turn_id=turn.turn_id)
    assert await notes(runtime, ALICE) == "likes tea"


async def test_an_approval_is_asked_again_when_a_fact_was_added_meanwhile(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    await example.seed(runtime.storage, "scripted:x")
    script = [
        {"tool_calls": [{"name": "save_memory", "args": {"fact": "likes jazz"}}]},
        {"content": "Saved."},
    ]
    await runtime.storage.agents.update(AGENT, model_settings={"responses": script})
    (row,) = [r for r in await runtime.storage.tools.list(AGENT) if r.name == "save_memory"]
    await runtime.storage.tools.update(row.id, approval="required")
    await runtime.storage.records.apply(ALICE, memory_write(ALICE, "likes tea"), cap=10)
    chat = await chat_of(runtime, ALICE)
    (action,) = (await runtime.chat(ALICE, AGENT, chat, "I like jazz")).pending

    await runtime.storage.records.apply(ALICE, memory_write(ALICE, "lives in Oslo"), cap=10)
    with pytest.raises(PreviewChangedError, match="no longer as shown") as raised:
        await runtime.decide(ALICE, action.id, True)
    fresh = raised.value.preview
    assert isinstance(fresh, Preview) and fresh.rows[0].after is not None
    assert fresh.rows[0].after["notes"] == "likes tea\nlives in Oslo\nlikes jazz"
    assert await notes(runtime, ALICE) == "likes tea\nlives in Oslo"


# -- the prompt's bound -----------------------------------------------------------------


def test_the_prompt_shows_the_newest_lines_within_the_bound() -> None:
    lines = [f"fact number {n:03}" for n in range(200)]
    shown = newest("\n".join(lines), 200)
    assert len(shown) <= 200
    kept = shown.splitlines()
    assert kept[0] == OLDER_LEFT_OUT
    assert kept[1:] == lines[-len(kept) + 1 :]
    assert len(kept) > 5  # as many lines as fit, not just one

    prompt = fill("Notes:\n{memory}\nEnd", "\n".join(lines), [], 200)
    assert "fact number 199" in prompt and "fact number 000" not in prompt
    assert OLDER_LEFT_OUT in prompt
    # Short notes are shown whole, without the note.
    assert fill("{memory}", "likes tea\nlives in Oslo", [], 200) == "likes tea\nlives in Oslo"
    # A newest line longer than the bound is shown by its end.
    long = newest("old\n" + "x" * 150 + "END", 100)
    assert len(long) <= 100 and long.endswith("END") and long.startswith(OLDER_LEFT_OUT)


async def test_a_turn_shows_the_newest_notes_within_turns_memory_chars(
    sql_url: str,
) -> None:
    from chatwright import testing
    from chatwright.registry import LoadPolicy, Plugins
    from tests.harness import EchoModels, pg_storage_settings

    plugins = Plugins.load(LoadPolicy())
    plugins.register(EchoModels(), "test-echo")
    settings = testing.settings(
        plugins, storage=pg_storage_settings(sql_url), turns={"memory_chars": 120}
    )
    runtime = Runtime(settings, plugins)
    await runtime.start(upgrade=True)
    try:
        await example.seed(runtime.storage, "offline:assistant")
        await runtime.storage.agents.update(
            AGENT, system_prompt="Remembered:\n{memory}", model="echo:x"
        )
        facts = [f"fact {n:02}" for n in range(30)]
        for fact in facts:
            await runtime.storage.records.apply(ALICE, memory_write(ALICE, fact), cap=10)
        chat = await chat_of(runtime, ALICE)

        turn = await runtime.chat(ALICE, AGENT, chat, "hello")
        system = json.loads(turn.response)["system"]
        memory = system.removeprefix("Remembered:\n")
        assert len(memory) <= 120
        shown = memory.splitlines()
        assert shown[0] == OLDER_LEFT_OUT
        assert shown[1:] == facts[-len(shown) + 1 :] and len(shown) > 5
        # The stored notes are whole.
        assert await notes(runtime, ALICE) == "\n".join(facts)
    finally:
        await runtime.close()


# -- the supabase backend, under row-level security -------------------------------------

cluster = test_supabase.cluster
supa = test_supabase.supa


@pytest.mark.postgresql
async def test_appends_at_once_under_row_level_security_are_all_kept(
    cluster: test_supabase.Cluster, supa: SupabaseStorage
) -> None:
    await example.seed(supa, "offline:assistant")
    other = test_supabase.supabase(cluster.url())
    try:
        facts = [f"fact {n}" for n in range(12)]
        stores = [supa.records, other.records]
        await asyncio.gather(
            *(
                stores[n % 2].apply(ALICE, memory_write(ALICE, fact), cap=10)
                for n, fact in enumerate(facts)
            ),
            other.records.apply(BOB, memory_write(BOB, "bob's fact"), cap=10),
        )
        alice = await supa.memories.get(ALICE, AGENT)
        bob = await supa.memories.get(BOB, AGENT)
        assert alice is not None and sorted(alice.notes.split("\n")) == sorted(facts)
        assert bob is not None and bob.notes == "bob's fact"
    finally:
        await other.close()


@pytest.mark.usefixtures("example")
def test_init_example_brings_an_old_untouched_save_memory_up_to_date() -> None:
    old = example.OLD_TOOLS["save_memory"]

    def save_memory() -> tuple[Any, str]:
        with contextlib.closing(sqlite3.connect(DB_FILE)) as conn:
            ((config, description),) = conn.execute(
                "SELECT config, description FROM agent_tools WHERE name = 'save_memory'"
            ).fetchall()
            return json.loads(config), description

    with contextlib.closing(sqlite3.connect(DB_FILE)) as conn:
        conn.execute(
            "UPDATE agent_tools SET config = ?, description = ? WHERE name = 'save_memory'",
            (json.dumps(old["config"]), old["description"]),
        )
        conn.commit()

    out = ok("init", "--example").stdout
    assert "Created tool save_memory (replacing the old one, which rewrote all notes)" in out, out
    config, _ = save_memory()
    assert config["append"] == {"notes": "\n"} and "fact" in config["args"]
    assert "already there" in ok("init", "--example").stdout
