"""The storage contract suite, for backend authors.

Every storage backend, bundled or third-party, must pass the same tests. To
run them against yours, subclass :class:`StorageContract` in a test module and
provide a ``storage`` fixture that yields a started, migrated and *empty*
instance of your backend::

    import pytest
    from chatwright.testing import StorageContract

    class TestMyBackend(StorageContract):
        @pytest.fixture
        async def storage(self):
            backend = MyStorage(...)
            await backend.upgrade()
            yield backend
            await backend.close()

To test only a session store, subclass :class:`SessionStoreContract` the same
way with a ``sessions`` fixture.

:func:`settings` builds settings that include the plugins' sections, for
tests that set a plugin's keys (``settings(server={"auth": "jwt"})``).

The tests use pytest-asyncio (``asyncio_mode = "auto"``). They only go through
the :class:`chatwright.stores.Storage` protocol, so they also document what a
backend promises: isolation by ``user_id``, ordering, idempotent session open
under concurrency, and the sweep and history-window semantics.

Longer than 450 lines because it is one suite: each test states one rule of
the storage protocol, and a backend author reads them together.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from chatwright.approvals import NewPending, Preview, RowChange
from chatwright.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from chatwright.stores import NewMessage, SessionStore, Storage

if TYPE_CHECKING:
    from chatwright.registry import Plugins
    from chatwright.settings import Settings

ALICE = "alice"
BOB = "bob"


def settings(plugins: Plugins | None = None, **sections: Any) -> Settings:
    """Settings with the sections of ``plugins`` (by default the installed ones).

    Like constructing :class:`~chatwright.settings.Settings` directly, it reads
    the environment but no file, and an invalid value raises pydantic's
    ``ValidationError``; unlike it, the plugins' keys are accepted:
    ``settings(storage={"url": url, "pool_size": 1}, server={"auth": "jwt"})``.
    """
    from chatwright.registry import Plugins
    from chatwright.settings import settings_class

    model = settings_class(plugins if plugins is not None else Plugins.load())
    return model(**sections)


def ai_with_tool_call(call_id: str) -> NewMessage:
    return NewMessage(
        role="ai",
        content={
            "type": "ai",
            "content": "",
            "tool_calls": [
                {
                    "name": "add_task",
                    "args": {"title": "Tea ☕"},
                    "id": call_id,
                    "type": "tool_call",
                }
            ],
        },
    )


class SessionStoreContract:
    """Behaviour every :class:`~chatwright.stores.SessionStore` must show.

    Subclass it with a ``sessions`` fixture yielding an empty store, to test a
    session store on its own (a plugin that keeps sessions in Redis, say).
    """

    # -- sessions ----------------------------------------------------------

    async def test_open_starts_then_resumes_the_latest_chat(self, sessions: SessionStore) -> None:
        first = await sessions.open(ALICE, "helper")
        assert first.is_active and first.user_id == ALICE and first.agent_name == "helper"
        again = await sessions.open(ALICE, "helper")
        assert again.id != first.id
        assert again.chat_id == first.chat_id
        fresh_chat = uuid.uuid4()
        explicit = await sessions.open(ALICE, "helper", chat_id=fresh_chat)
        assert explicit.chat_id == fresh_chat
        assert (await sessions.open(ALICE, "helper")).chat_id == fresh_chat
        other_agent = await sessions.open(ALICE, "other")
        assert other_agent.chat_id not in {first.chat_id, fresh_chat}
        assert await sessions.chat_owner(fresh_chat) == (ALICE, "helper")
        assert await sessions.chat_owner(uuid.uuid4()) is None

    async def test_open_is_idempotent_per_client_key(self, sessions: SessionStore) -> None:
        one = await sessions.open(ALICE, "helper", client_key="tab-1")
        same = await sessions.open(ALICE, "helper", client_key="tab-1")
        assert same.id == one.id
        other_tab = await sessions.open(ALICE, "helper", client_key="tab-2")
        assert other_tab.id != one.id
        bobs = await sessions.open(BOB, "helper", client_key="tab-1")
        assert bobs.id != one.id
        await sessions.deactivate(ALICE, one.id)
        reopened = await sessions.open(ALICE, "helper", client_key="tab-1")
        assert reopened.id != one.id and reopened.is_active

    async def test_concurrent_open_with_one_client_key_makes_one_session(
        self, sessions: SessionStore
    ) -> None:
        opened = await asyncio.gather(
            *(sessions.open(ALICE, "helper", client_key="page") for _ in range(8))
        )
        assert len({s.id for s in opened}) == 1
        assert len(await sessions.list(ALICE, active=True)) == 1

    async def test_a_chat_belongs_to_its_user(self, sessions: SessionStore) -> None:
        alices = await sessions.open(ALICE, "helper")
        with pytest.raises(NotFoundError):
            await sessions.open(BOB, "helper", chat_id=alices.chat_id)
        with pytest.raises(InvalidInputError, match="helper"):
            await sessions.open(ALICE, "other", chat_id=alices.chat_id)
        assert await sessions.get(BOB, alices.id) is None
        assert await sessions.heartbeat(BOB, alices.id) is None
        assert await sessions.deactivate(BOB, alices.id) is None
        still = await sessions.get(ALICE, alices.id)
        assert still is not None and still.is_active
        assert await sessions.list(BOB) == []

    async def test_touch_chat_marks_its_active_sessions_used(self, sessions: SessionStore) -> None:
        one = await sessions.open(ALICE, "helper", client_key="a")
        two = await sessions.open(ALICE, "helper", client_key="b", chat_id=one.chat_id)
        other = await sessions.open(ALICE, "helper", chat_id=uuid.uuid4())
        await sessions.deactivate(ALICE, two.id)
        assert await sessions.touch_chat(BOB, one.chat_id) == 0
        assert await sessions.touch_chat(ALICE, one.chat_id) == 1
        touched = await sessions.get(ALICE, one.id)
        untouched = await sessions.get(ALICE, other.id)
        assert touched is not None and untouched is not None
        assert touched.updated_at > one.updated_at
        assert untouched.updated_at == other.updated_at

    async def test_heartbeat_and_deactivate(self, sessions: SessionStore) -> None:
        opened = await sessions.open(ALICE, "helper", metadata={"ua": "test"})
        beat = await sessions.heartbeat(ALICE, opened.id)
        assert beat is not None and beat.updated_at >= opened.updated_at
        assert beat.metadata == {"ua": "test"}
        closed = await sessions.deactivate(ALICE, opened.id)
        assert closed is not None and not closed.is_active
        assert await sessions.list(ALICE, active=True) == []
        assert [s.id for s in await sessions.list(ALICE, active=False)] == [opened.id]
        assert await sessions.get(ALICE, uuid.uuid4()) is None

    async def test_deactivate_once_says_whether_this_call_deactivated(
        self, sessions: SessionStore
    ) -> None:
        """Optional (``deactivate_once``): skipped for a store without it."""
        own = getattr(type(sessions), "deactivate_once", None)
        if own is None or own is SessionStore.deactivate_once:
            pytest.skip("the store has no deactivate_once (optional)")
        opened = await sessions.open(ALICE, "helper")
        first = await sessions.deactivate_once(ALICE, opened.id)
        assert first is not None and first[1] is True
        assert first[0].id == opened.id and not first[0].is_active
        again = await sessions.deactivate_once(ALICE, opened.id)
        assert again is not None and again[1] is False and not again[0].is_active
        assert await sessions.deactivate_once(BOB, opened.id) is None
        assert await sessions.deactivate_once(ALICE, uuid.uuid4()) is None
        assert await sessions.list(ALICE, active=True) == []

    async def test_sweep_deactivates_only_stale_active_sessions(
        self, sessions: SessionStore
    ) -> None:
        stale = await sessions.open(ALICE, "helper")
        closed = await sessions.open(ALICE, "other")
        await sessions.deactivate(ALICE, closed.id)
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        fresh_time_session = await sessions.open(BOB, "helper")
        before_fresh = fresh_time_session.updated_at - timedelta(microseconds=1)
        swept = await sessions.sweep(before_fresh, limit=10)
        assert {s.id for s in swept} == {stale.id}
        assert all(not s.is_active for s in swept)
        assert await sessions.active_keys() == {(BOB, "helper")}
        assert await sessions.count_active() == 1
        swept_all = await sessions.sweep(cutoff, limit=10)
        assert {s.id for s in swept_all} == {fresh_time_session.id}
        assert await sessions.active_keys() == set()
        assert await sessions.sweep(cutoff, limit=10) == []

    async def test_a_swept_session_keeps_when_it_was_last_used(
        self, sessions: SessionStore
    ) -> None:
        opened = await sessions.open(ALICE, "helper")
        await asyncio.sleep(0.002)
        beat = await sessions.heartbeat(ALICE, opened.id)
        assert beat is not None and beat.updated_at > opened.updated_at
        swept = await sessions.sweep(beat.updated_at + timedelta(seconds=1), limit=10)
        assert [(s.id, s.updated_at) for s in swept] == [(opened.id, beat.updated_at)]
        found = await sessions.get(ALICE, opened.id)
        assert found is not None and not found.is_active
        assert found.updated_at == beat.updated_at

    async def test_sweep_returns_at_most_limit_per_call(self, sessions: SessionStore) -> None:
        opened = [await sessions.open(f"user-{i}", "helper") for i in range(7)]
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        sizes, seen = [], []
        while True:
            batch = await sessions.sweep(cutoff, limit=3)
            sizes.append(len(batch))
            seen += [s.id for s in batch]
            assert all(not s.is_active for s in batch)
            if len(batch) < 3:
                break
        assert sizes == [3, 3, 1]
        assert sorted(seen) == sorted(s.id for s in opened)
        assert await sessions.count_active() == 0
        assert await sessions.sweep(cutoff, limit=3) == []
        with pytest.raises(InvalidInputError, match="at least 1"):
            await sessions.sweep(cutoff, limit=0)

    async def test_sweep_count_deactivates_like_sweep(self, sessions: SessionStore) -> None:
        opened = [await sessions.open(BOB, "helper", chat_id=uuid.uuid4()) for _ in range(5)]
        cutoff = max(s.updated_at for s in opened) + timedelta(microseconds=1)
        await asyncio.sleep(0.002)  # a session opened after the cutoff stays active
        kept = await sessions.open(ALICE, "helper")
        assert await sessions.sweep_count(cutoff, limit=3) == 3
        assert await sessions.sweep_count(cutoff, limit=3) == 2
        assert await sessions.sweep_count(cutoff, limit=3) == 0
        assert await sessions.list(BOB, active=True) == []
        assert {s.id for s in await sessions.list(BOB, active=False)} == {s.id for s in opened}
        assert [s.id for s in await sessions.list(ALICE, active=True)] == [kept.id]
        with pytest.raises(InvalidInputError, match="at least 1"):
            await sessions.sweep_count(cutoff, limit=0)

    async def test_sweep_ids_deactivates_like_sweep(self, sessions: SessionStore) -> None:
        opened = [await sessions.open(ALICE, "helper", chat_id=uuid.uuid4()) for _ in range(5)]
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        first = await sessions.sweep_ids(cutoff, limit=4)
        rest = await sessions.sweep_ids(cutoff, limit=4)
        assert (len(first), len(rest)) == (4, 1)
        assert sorted(first + rest) == sorted(s.id for s in opened)
        assert await sessions.list(ALICE, active=True) == []
        assert await sessions.sweep_ids(cutoff, limit=4) == []

    async def test_concurrent_sweeps_never_return_a_session_twice(
        self, sessions: SessionStore
    ) -> None:
        opened = [await sessions.open(f"user-{i}", "helper") for i in range(20)]
        cutoff = datetime.now(UTC) + timedelta(seconds=1)

        async def sweeper() -> list[uuid.UUID]:
            mine: list[uuid.UUID] = []
            while batch := await sessions.sweep(cutoff, limit=2):
                mine += [s.id for s in batch]
            return mine

        results = await asyncio.gather(*(sweeper() for _ in range(4)))
        every = [i for ids in results for i in ids]
        assert sorted(every) == sorted(s.id for s in opened)  # each once, none missing


class StorageContract(SessionStoreContract):
    """Behaviour every :class:`~chatwright.stores.Storage` implementation must show."""

    @pytest.fixture
    def sessions(self, storage: Storage) -> SessionStore:
        return storage.sessions

    # -- schema ------------------------------------------------------------

    async def test_schema_is_current(self, storage: Storage) -> None:
        assert storage.head_revision() is not None
        assert await storage.current_revision() == storage.head_revision()
        assert await storage.upgrade() == storage.head_revision()  # idempotent
        await storage.ping()

    # -- agents ------------------------------------------------------------

    async def test_agent_round_trip(self, storage: Storage) -> None:
        created = await storage.agents.create(
            "helper",
            system_prompt="Be kind. {memory}",
            model="openai:gpt-4o-mini",
            model_settings={"temperature": 0.2, "base_url": "http://127.0.0.1:9/v1"},
            history_window=12,
        )
        fetched = await storage.agents.get("helper")
        assert fetched == created
        assert fetched.model_settings == {"temperature": 0.2, "base_url": "http://127.0.0.1:9/v1"}
        assert fetched.history_window == 12
        assert fetched.created_at.tzinfo is not None
        assert await storage.agents.get("nobody") is None

    async def test_agents_listed_by_name(self, storage: Storage) -> None:
        for name in ("zed", "amy", "max"):
            await storage.agents.create(name, system_prompt="", model="offline:x")
        assert [a.name for a in await storage.agents.list()] == ["amy", "max", "zed"]

    async def test_agent_name_is_unique(self, storage: Storage) -> None:
        await storage.agents.create("dup", system_prompt="first", model="offline:x")
        with pytest.raises(AlreadyExistsError, match="dup"):
            await storage.agents.create("dup", system_prompt="second", model="offline:x")
        agent = await storage.agents.get("dup")
        assert agent is not None
        assert agent.system_prompt == "first"

    async def test_agent_update_changes_only_given_fields(self, storage: Storage) -> None:
        before = await storage.agents.create("a", system_prompt="p", model="offline:x")
        after = await storage.agents.update("a", model="openai:gpt-4o", history_window=7)
        assert (after.model, after.history_window, after.system_prompt) == ("openai:gpt-4o", 7, "p")
        assert after.updated_at >= before.updated_at
        assert after.created_at == before.created_at
        with pytest.raises(NotFoundError, match="ghost"):
            await storage.agents.update("ghost", model="offline:x")
        with pytest.raises(InvalidInputError, match="created_at"):
            await storage.agents.update("a", created_at=before.created_at)

    async def test_agent_delete_removes_its_tools(self, storage: Storage) -> None:
        await storage.agents.create("gone", system_prompt="", model="offline:x")
        await storage.tools.add("gone", "t", type="crud", config={})
        await storage.agents.create("kept", system_prompt="", model="offline:x")
        kept_tool = await storage.tools.add("kept", "t", type="crud", config={})
        assert await storage.agents.delete("gone") is True
        assert await storage.agents.delete("gone") is False
        assert await storage.tools.list() == [kept_tool]

    # -- tools -------------------------------------------------------------

    async def test_tools_ordered_by_position(self, storage: Storage) -> None:
        await storage.agents.create("a", system_prompt="", model="offline:x")
        await storage.agents.create("b", system_prompt="", model="offline:x")
        first = await storage.tools.add("a", "first", type="crud", config={"table": "tasks"})
        second = await storage.tools.add("a", "second", type="crud", config={})
        early = await storage.tools.add("a", "early", type="crud", config={}, position=-1)
        other = await storage.tools.add("b", "other", type="http", config={})
        assert (first.position, second.position) == (0, 1)
        assert [t.name for t in await storage.tools.list("a")] == ["early", "first", "second"]
        assert [t.id for t in await storage.tools.list()] == [
            early.id,
            first.id,
            second.id,
            other.id,
        ]
        assert await storage.tools.list("nobody") == []

    async def test_tool_config_round_trips_any_json(self, storage: Storage) -> None:
        await storage.agents.create("a", system_prompt="", model="offline:x")
        config = {
            "table_name": "agent_long_term_memory",
            "method": "create",
            "field_map": {"memory_content": "notes"},
            "runtime_args_schema": '{"data": {"type": "dict"}}',
            "nested": [1, 2.5, None, True, {"ü": "✓"}],
        }
        row = await storage.tools.add("a", "mem", type="CRUDTool", config=config, description="d")
        fetched = await storage.tools.get(row.id)
        assert fetched is not None
        assert fetched.config == config
        assert (fetched.type, fetched.description, fetched.is_active) == ("CRUDTool", "d", True)
        assert await storage.tools.get(row.id + 1000) is None

    async def test_tool_errors_name_the_thing(self, storage: Storage) -> None:
        with pytest.raises(NotFoundError, match="ghost"):
            await storage.tools.add("ghost", "t", type="crud", config={})
        await storage.agents.create("a", system_prompt="", model="offline:x")
        await storage.tools.add("a", "t", type="crud", config={})
        with pytest.raises(AlreadyExistsError, match="'t'"):
            await storage.tools.add("a", "t", type="crud", config={})
        with pytest.raises(NotFoundError, match="9999"):
            await storage.tools.set_active(9999, False)

    async def test_tool_delete_removes_one_row(self, storage: Storage) -> None:
        await storage.agents.create("a", system_prompt="", model="offline:x")
        gone = await storage.tools.add("a", "gone", type="crud", config={})
        kept = await storage.tools.add("a", "kept", type="crud", config={})
        assert await storage.tools.delete(gone.id) is True
        assert await storage.tools.delete(gone.id) is False
        assert await storage.tools.list("a") == [kept]
        assert await storage.tools.get(gone.id) is None

    async def test_tool_disable(self, storage: Storage) -> None:
        await storage.agents.create("a", system_prompt="", model="offline:x")
        on = await storage.tools.add("a", "on", type="crud", config={})
        off = await storage.tools.add("a", "off", type="crud", config={})
        disabled = await storage.tools.set_active(off.id, False)
        assert disabled.is_active is False
        assert [t.id for t in await storage.tools.list("a", active_only=True)] == [on.id]
        assert len(await storage.tools.list("a")) == 2

    async def test_config_version_follows_agent_and_tool_rows(self, storage: Storage) -> None:
        assert await storage.agents.config_version("ghost") is None
        await storage.agents.create("a", system_prompt="p", model="offline:x")
        await storage.agents.create("b", system_prompt="p", model="offline:x")
        first = await storage.agents.config_version("a")
        assert first is not None and first == await storage.agents.config_version("a")
        await storage.tools.add("b", "t", type="crud", config={})
        assert await storage.agents.config_version("a") == first  # another agent's tool
        row = await storage.tools.add("a", "t", type="crud", config={"x": 1})
        second = await storage.agents.config_version("a")
        assert second != first
        await storage.tools.set_active(row.id, False)
        third = await storage.agents.config_version("a")
        assert third != second
        await storage.agents.update("a", system_prompt="q")
        assert await storage.agents.config_version("a") != third

    async def test_tool_approval_round_trips_and_is_validated(self, storage: Storage) -> None:
        await storage.agents.create("a", system_prompt="", model="offline:x")
        plain = await storage.tools.add("a", "plain", type="crud", config={})
        assert (plain.approval, plain.approval_default) == ("auto", "required")
        asked = await storage.tools.add(
            "a", "asked", type="crud", config={}, approval="user", approval_default="auto"
        )
        fetched = await storage.tools.get(asked.id)
        assert fetched is not None
        assert (fetched.approval, fetched.approval_default) == ("user", "auto")
        with pytest.raises(InvalidInputError, match=r"'maybe'.*auto, required, user"):
            await storage.tools.add("a", "bad", type="crud", config={}, approval="maybe")
        with pytest.raises(InvalidInputError, match=r"'user'.*auto, required"):
            await storage.tools.add("a", "bad", type="crud", config={}, approval_default="user")
        assert [t.name for t in await storage.tools.list("a")] == ["plain", "asked"]

    async def test_tool_update_changes_given_fields_and_the_config_version(
        self, storage: Storage
    ) -> None:
        await storage.agents.create("a", system_prompt="", model="offline:x")
        row = await storage.tools.add("a", "t", type="crud", config={"x": 1}, description="d")
        other = await storage.tools.add("a", "u", type="crud", config={})
        before = await storage.agents.config_version("a")
        changed = await storage.tools.update(row.id, approval="required")
        assert (changed.approval, changed.config, changed.description) == (
            "required",
            {"x": 1},
            "d",
        )
        assert await storage.agents.config_version("a") != before
        changed = await storage.tools.update(
            row.id, approval="user", approval_default="auto", description="e", config={"y": 2}
        )
        assert (changed.approval, changed.approval_default, changed.description) == (
            "user",
            "auto",
            "e",
        )
        assert changed.config == {"y": 2}
        with pytest.raises(InvalidInputError, match="'never'"):
            await storage.tools.update(row.id, approval="never")
        with pytest.raises(InvalidInputError, match=r"agent_id.*changeable fields"):
            await storage.tools.update(row.id, agent_id=other.agent_id)
        with pytest.raises(AlreadyExistsError, match="'u'"):
            await storage.tools.update(row.id, name="u")
        with pytest.raises(NotFoundError, match="9999"):
            await storage.tools.update(9999, approval="auto")
        fetched = await storage.tools.get(row.id)
        assert fetched is not None and (fetched.name, fetched.approval) == ("t", "user")

    # -- messages ----------------------------------------------------------

    async def test_append_and_window(self, storage: Storage) -> None:
        chat = uuid.uuid4()
        stored = await storage.messages.append(
            ALICE,
            chat,
            [
                NewMessage("human", {"type": "human", "content": "add tea"}),
                ai_with_tool_call("call-1"),
                NewMessage(
                    "tool",
                    {
                        "type": "tool",
                        "content": '{"id": 1}',
                        "tool_call_id": "call-1",
                        "name": "add_task",
                    },
                ),
                NewMessage("ai", {"type": "ai", "content": "Added."}),
            ],
        )
        assert [m.role for m in stored] == ["human", "ai", "tool", "ai"]
        assert [m.id for m in stored] == sorted(m.id for m in stored)
        window = await storage.messages.window(ALICE, chat, 3)
        assert [m.id for m in window] == [m.id for m in stored[1:]]
        assert window[0].content["tool_calls"][0]["args"] == {"title": "Tea ☕"}
        assert await storage.messages.window(ALICE, chat, 0) == []
        assert await storage.messages.append(ALICE, chat, []) == []

    async def test_messages_are_isolated_by_chat_and_user(self, storage: Storage) -> None:
        chat, other = uuid.uuid4(), uuid.uuid4()
        await storage.messages.append(
            ALICE, chat, [NewMessage("human", {"type": "human", "content": "a"})]
        )
        await storage.messages.append(
            ALICE, other, [NewMessage("human", {"type": "human", "content": "b"})]
        )
        assert [m.content["content"] for m in await storage.messages.window(ALICE, chat, 10)] == [
            "a"
        ]
        assert await storage.messages.window(BOB, chat, 10) == []

    async def test_pages_walk_back_through_a_chat(self, storage: Storage) -> None:
        chat = uuid.uuid4()
        stored = await storage.messages.append(
            ALICE,
            chat,
            [NewMessage("human", {"type": "human", "content": str(i)}) for i in range(7)],
        )
        newest = await storage.messages.page(ALICE, chat, limit=3)
        assert [m.content["content"] for m in newest] == ["4", "5", "6"]
        older = await storage.messages.page(ALICE, chat, limit=3, before=newest[0].id)
        assert [m.content["content"] for m in older] == ["1", "2", "3"]
        oldest = await storage.messages.page(ALICE, chat, limit=3, before=older[0].id)
        assert [m.id for m in oldest] == [stored[0].id]

    async def test_pages_walk_forward_after_a_message(self, storage: Storage) -> None:
        chat = uuid.uuid4()
        stored = await storage.messages.append(
            ALICE,
            chat,
            [NewMessage("human", {"type": "human", "content": str(i)}) for i in range(7)],
        )
        first = await storage.messages.page(ALICE, chat, limit=3, after=stored[0].id)
        assert [m.content["content"] for m in first] == ["1", "2", "3"]
        between = await storage.messages.page(
            ALICE, chat, limit=10, after=first[-1].id, before=stored[5].id
        )
        assert [m.content["content"] for m in between] == ["4"]
        assert await storage.messages.page(ALICE, chat, limit=3, after=stored[-1].id) == []
        assert await storage.messages.page(BOB, chat, limit=3, after=0) == []

    async def test_chats_are_listed_per_user_newest_first_and_paged(self, storage: Storage) -> None:
        def said(role: str, text: str) -> NewMessage:
            return NewMessage(role, {"type": role, "data": {"content": text}})

        older, newer, bobs = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await storage.messages.append(ALICE, older, [said("ai", "hi"), said("human", "first")])
        await storage.messages.append(ALICE, newer, [said("human", "second")])
        await storage.messages.append(BOB, bobs, [said("human", "bob's")])
        listed = await storage.messages.chats(ALICE, limit=10)
        assert [(c.chat_id, c.title, c.messages) for c in listed] == [
            (newer, "second", 1),
            (older, "first", 2),
        ]
        assert listed[0].last_id > listed[1].last_id
        assert all(c.created_at <= c.last_activity for c in listed)
        page = await storage.messages.chats(ALICE, limit=1, before=listed[0].last_id)
        assert [c.chat_id for c in page] == [older]
        assert [c.chat_id for c in await storage.messages.chats(BOB, limit=10)] == [bobs]
        assert await storage.messages.chats("nobody", limit=10) == []

    # -- customizations and memories ---------------------------------------

    async def test_customizations_upsert_and_order(self, storage: Storage) -> None:
        low = await storage.customizations.put(ALICE, "helper", "tone", "Be brief.", priority=1)
        await storage.customizations.put(ALICE, "helper", "lang", "Answer in French.", priority=5)
        await storage.customizations.put(ALICE, "helper", "off", "Ignored.", is_active=False)
        replaced = await storage.customizations.put(
            ALICE, "helper", "tone", "Be very brief.", priority=1
        )
        assert replaced.id == low.id and replaced.content == "Be very brief."
        assert replaced.created_at == low.created_at
        every = await storage.customizations.list(ALICE, "helper")
        assert [c.kind for c in every] == ["lang", "tone", "off"]
        active = await storage.customizations.list(ALICE, "helper", active_only=True)
        assert [c.kind for c in active] == ["lang", "tone"]
        assert await storage.customizations.list(BOB, "helper") == []

    async def test_memories_upsert_per_user_and_agent(self, storage: Storage) -> None:
        assert await storage.memories.get(ALICE, "helper") is None
        await storage.memories.put(ALICE, "helper", "likes tea")
        updated = await storage.memories.put(ALICE, "helper", "likes tea; lives in Lyon")
        await storage.memories.put(BOB, "helper", "likes coffee")
        assert updated.notes == "likes tea; lives in Lyon"
        fetched = await storage.memories.get(ALICE, "helper")
        assert fetched is not None and fetched.notes == "likes tea; lives in Lyon"
        bobs = await storage.memories.get(BOB, "helper")
        assert bobs is not None and bobs.notes == "likes coffee"
        assert await storage.memories.get(ALICE, "other") is None

    async def test_a_turn_reads_its_inputs_and_stores_its_messages(self, storage: Storage) -> None:
        from chatwright.turns import turn_store

        turns = turn_store(storage)
        await storage.agents.create("helper", system_prompt="{memory}", model="x:y")
        await storage.memories.put(ALICE, "helper", "likes tea")
        await storage.customizations.put(ALICE, "helper", "b", "second", priority=1)
        await storage.customizations.put(ALICE, "helper", "a", "first", priority=2)
        chat = (await storage.sessions.open(ALICE, "helper", chat_id=uuid.uuid4())).chat_id
        await storage.messages.append(ALICE, chat, [human("before")])
        start = await turns.begin(ALICE, "helper", chat, human("now"))
        assert start.agent.name == "helper" and start.agent.version == (
            await storage.agents.config_version("helper")
        )
        assert [m.content["text"] for m in start.history] == ["before"]
        assert (start.memory, start.instructions) == ("likes tea", ["first", "second"])
        await turns.append(start, [human("exchange")])
        await turns.finish(start, [human("reply")], touch=True)
        stored = await storage.messages.window(ALICE, chat, 10)
        assert [m.content["text"] for m in stored] == ["before", "now", "exchange", "reply"]
        # The chat was given back: the next turn starts at once.
        again = await asyncio.wait_for(turns.begin(ALICE, "helper", chat, human("next")), 5)
        await turns.finish(again, [], touch=False)

    async def test_a_turn_on_another_users_chat_is_refused_and_stores_nothing(
        self, storage: Storage
    ) -> None:
        from chatwright.errors import UnknownAgentError
        from chatwright.turns import turn_store

        turns = turn_store(storage)
        await storage.agents.create("helper", system_prompt="", model="x:y")
        await storage.agents.create("other", system_prompt="", model="x:y")
        chat = (await storage.sessions.open(ALICE, "helper", chat_id=uuid.uuid4())).chat_id
        with pytest.raises(NotFoundError):
            await turns.begin(BOB, "helper", chat, human("mine now"))
        with pytest.raises(NotFoundError):
            await turns.begin(ALICE, "other", chat, human("another agent"))
        with pytest.raises(UnknownAgentError):
            await turns.begin(ALICE, "ghost", chat, human("no agent"))
        assert await storage.messages.window(ALICE, chat, 10) == []
        assert await storage.messages.window(BOB, chat, 10) == []
        start = await asyncio.wait_for(turns.begin(ALICE, "helper", chat, human("ok")), 5)
        await turns.finish(start, [], touch=False)

    # -- write safety: pending actions, approval choices, the audit log -------

    async def test_pending_actions_are_stored_and_belong_to_their_user(
        self, storage: Storage
    ) -> None:
        chat, other_chat = uuid.uuid4(), uuid.uuid4()
        first, second = await storage.pending.create(
            ALICE, "helper", chat, [new_pending("update_task", preview=True), new_pending("x")]
        )
        (bobs,) = await storage.pending.create(BOB, "helper", other_chat, [new_pending("y")])
        assert (first.status, first.user_id, first.agent_name, first.chat_id) == (
            "pending",
            ALICE,
            "helper",
            chat,
        )
        fetched = await storage.pending.get(ALICE, first.id)
        assert fetched == first
        assert fetched.args == {"id": 3, "title": "Ünïcode ✓", "tags": ["a", None]}
        assert fetched.preview is not None and fetched.preview.same_as(PREVIEW)
        assert fetched.decided_at is None and fetched.result is None
        assert second.preview is None
        # Another user's id answers as a missing one.
        assert await storage.pending.get(BOB, first.id) is None
        assert await storage.pending.get(ALICE, bobs.id) is None
        assert await storage.pending.get(ALICE, uuid.uuid4()) is None
        assert await storage.pending.get(None, bobs.id) == bobs  # administration
        assert [a.id for a in await storage.pending.list(ALICE)] == [first.id, second.id]
        assert [a.id for a in await storage.pending.list(BOB)] == [bobs.id]
        assert [a.id for a in await storage.pending.list(ALICE, chat_id=other_chat)] == []
        assert {a.id for a in await storage.pending.list(None)} == {first.id, second.id, bobs.id}
        assert [a.id for a in await storage.pending.list(ALICE, limit=1)] == [first.id]
        with pytest.raises(InvalidInputError, match="'sideways'"):
            await storage.pending.list(ALICE, status="sideways")

    async def test_a_pending_action_is_decided_once_by_its_user(self, storage: Storage) -> None:
        (action,) = await storage.pending.create(ALICE, "helper", uuid.uuid4(), [new_pending()])
        assert await storage.pending.decide(BOB, action.id, "approved", BOB) is None
        approved = await storage.pending.decide(ALICE, action.id, "approved", "alice@web")
        assert approved is not None
        assert (approved.status, approved.decided_by) == ("approved", "alice@web")
        assert approved.decided_at is not None
        assert await storage.pending.decide(ALICE, action.id, "denied", ALICE) is None
        assert await storage.pending.list(ALICE) == []
        assert [a.id for a in await storage.pending.list(ALICE, status="approved")] == [action.id]
        assert await storage.pending.complete(BOB, action.id, "done", "ok") is None
        done = await storage.pending.complete(ALICE, action.id, "done", '{"id": 3}')
        assert done is not None and (done.status, done.result) == ("done", '{"id": 3}')
        assert await storage.pending.complete(ALICE, action.id, "failed", "again") is None
        assert await storage.pending.list(ALICE, status=None) == [done]
        with pytest.raises(InvalidInputError, match="'done'"):
            await storage.pending.decide(ALICE, action.id, "done", ALICE)
        with pytest.raises(InvalidInputError, match="'denied'"):
            await storage.pending.complete(ALICE, action.id, "denied", "")

    async def test_concurrent_decisions_have_exactly_one_winner(self, storage: Storage) -> None:
        (action,) = await storage.pending.create(ALICE, "helper", uuid.uuid4(), [new_pending()])
        results = await asyncio.gather(
            *(
                storage.pending.decide(ALICE, action.id, "approved" if i % 2 else "denied", str(i))
                for i in range(8)
            )
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await storage.pending.get(ALICE, action.id)
        assert stored is not None and stored.status == winners[0].status

    async def test_an_approved_action_reopens_with_a_fresh_preview(self, storage: Storage) -> None:
        (action,) = await storage.pending.create(
            ALICE, "helper", uuid.uuid4(), [new_pending(preview=True)]
        )
        later = datetime.now(UTC) + timedelta(hours=2)
        fresh = replace(PREVIEW, count=7)
        assert await storage.pending.reopen(ALICE, action.id, fresh, later) is None  # not approved
        await storage.pending.decide(ALICE, action.id, "approved", ALICE)
        assert await storage.pending.reopen(BOB, action.id, fresh, later) is None
        again = await storage.pending.reopen(ALICE, action.id, fresh, later)
        assert again is not None
        assert (again.status, again.decided_by, again.decided_at) == ("pending", None, None)
        assert again.preview is not None and again.preview.count == 7
        assert abs((again.expires_at - later).total_seconds()) < 1
        assert await storage.pending.decide(ALICE, action.id, "denied", ALICE) is not None

    async def test_expiry_is_stored_and_an_expired_action_is_decided_as_expired(
        self, storage: Storage
    ) -> None:
        past = datetime.now(UTC) - timedelta(seconds=5)
        (action,) = await storage.pending.create(
            ALICE, "helper", uuid.uuid4(), [new_pending(expires_at=past)]
        )
        assert abs((action.expires_at - past).total_seconds()) < 1
        stored = await storage.pending.get(ALICE, action.id)
        assert stored is not None and stored.expired(datetime.now(UTC))
        assert not stored.expired(past - timedelta(seconds=10))
        expired = await storage.pending.decide(ALICE, action.id, "expired", "expiry")
        assert expired is not None and expired.status == "expired"
        assert not expired.expired(datetime.now(UTC))  # decided: no longer pending
        assert await storage.pending.decide(ALICE, action.id, "approved", ALICE) is None

    async def test_approval_choices_are_per_user_and_per_tool_row(self, storage: Storage) -> None:
        await storage.agents.create("helper", system_prompt="", model="offline:x")
        await storage.agents.create("other", system_prompt="", model="offline:x")
        mine = await storage.tools.add("helper", "t", type="crud", config={}, approval="user")
        theirs = await storage.tools.add("other", "t", type="crud", config={}, approval="user")
        assert await storage.pending.choices(ALICE, "helper") == {}
        await storage.pending.choose(ALICE, mine.id, "auto")
        await storage.pending.choose(ALICE, theirs.id, "required")
        await storage.pending.choose(BOB, mine.id, "required")
        assert await storage.pending.choices(ALICE, "helper") == {mine.id: "auto"}
        assert await storage.pending.choices(BOB, "helper") == {mine.id: "required"}
        assert await storage.pending.choices(ALICE, "other") == {theirs.id: "required"}
        await storage.pending.choose(ALICE, mine.id, "required")  # changes it
        assert await storage.pending.choices(ALICE, "helper") == {mine.id: "required"}
        await storage.pending.choose(ALICE, mine.id, None)
        assert await storage.pending.choices(ALICE, "helper") == {}
        assert await storage.pending.choices(BOB, "helper") == {mine.id: "required"}
        assert await storage.pending.choices(ALICE, "ghost") == {}
        with pytest.raises(InvalidInputError, match="'sometimes'"):
            await storage.pending.choose(ALICE, mine.id, "sometimes")
        with pytest.raises(NotFoundError, match="9999"):
            await storage.pending.choose(ALICE, 9999, "auto")
        await storage.agents.delete("helper")  # the choices go with the tool rows
        assert await storage.pending.choices(BOB, "helper") == {}

    async def test_an_auto_choice_counts_only_for_the_row_it_was_made_for(
        self, storage: Storage
    ) -> None:
        await storage.agents.create("helper", system_prompt="", model="offline:x")
        row = await storage.tools.add(
            "helper", "t", type="crud", config={"operation": "read"}, approval="user"
        )
        await storage.pending.choose(ALICE, row.id, "auto")
        await storage.pending.choose(BOB, row.id, "required")
        # What the row is called and says does not change what a call does.
        await storage.tools.update(row.id, description="Reads.", name="t2")
        assert await storage.pending.choices(ALICE, "helper") == {row.id: "auto"}
        # What it does changed: Alice's trust was for the read; Bob's caution stays.
        await storage.tools.update(row.id, config={"operation": "delete"})
        assert await storage.pending.choices(ALICE, "helper") == {}
        assert await storage.pending.choices(BOB, "helper") == {row.id: "required"}
        await storage.pending.choose(ALICE, row.id, "auto")  # chosen again, for the delete
        assert await storage.pending.choices(ALICE, "helper") == {row.id: "auto"}

    async def test_a_choice_for_a_row_seen_before_it_changed_is_refused(
        self, storage: Storage
    ) -> None:
        from chatwright.approvals import tool_digest
        from chatwright.errors import ToolChangedError

        await storage.agents.create("helper", system_prompt="", model="offline:x")
        row = await storage.tools.add(
            "helper", "t", type="crud", config={"operation": "read"}, approval="user"
        )
        seen = tool_digest(row)
        changed = await storage.tools.update(row.id, config={"operation": "delete"})
        for choice in ("auto", "required", None):
            with pytest.raises(ToolChangedError, match=f"tool row {row.id} has changed"):
                await storage.pending.choose(ALICE, row.id, choice, digest=seen)
        assert await storage.pending.choices(ALICE, "helper") == {}
        await storage.pending.choose(ALICE, row.id, "auto", digest=tool_digest(changed))
        assert await storage.pending.choices(ALICE, "helper") == {row.id: "auto"}
        with pytest.raises(ToolChangedError):
            await storage.pending.choose(ALICE, row.id, None, digest=seen)
        assert await storage.pending.choices(ALICE, "helper") == {row.id: "auto"}

    async def test_audit_entries_are_listed_newest_first_per_user(self, storage: Storage) -> None:
        from chatwright.approvals import NewAuditEntry, RowChange

        chat, turn = uuid.uuid4(), uuid.uuid4()
        change = RowChange(
            key={"id": 3}, before={"id": 3, "title": "old"}, after={"id": 3, "title": "new"}
        )
        first = await storage.audit.record(
            NewAuditEntry(
                user_id=ALICE,
                agent_name="helper",
                tool_name="update_task",
                operation="update",
                chat_id=chat,
                turn_id=turn,
                tool_id=5,
                table="tasks",
                args={"id": 3, "title": "new"},
                row_ids=[3],
                approval="approved",
                decided_by=ALICE,
                pending_id=uuid.uuid4(),
                changes=[change],
            )
        )
        assert first.id > 0 and first.at is not None
        assert first.changes == (change,) and list(first.row_ids) == [3]
        second = await storage.audit.record(
            NewAuditEntry(
                user_id=ALICE,
                agent_name="helper",
                tool_name="send",
                operation="send",
                outcome="error",
                error="refused",
            )
        )
        bobs = await storage.audit.record(
            NewAuditEntry(user_id=BOB, agent_name="helper", tool_name="t", operation="create")
        )
        listed = await storage.audit.list(ALICE)
        assert [e.id for e in listed] == [second.id, first.id]
        assert listed[1] == first
        assert (listed[0].outcome, listed[0].error, listed[0].chat_id) == ("error", "refused", None)
        assert [e.id for e in await storage.audit.list(BOB)] == [bobs.id]
        assert [e.id for e in await storage.audit.list(None)] == [bobs.id, second.id, first.id]
        assert [e.id for e in await storage.audit.list(ALICE, before_id=second.id)] == [first.id]
        assert [e.id for e in await storage.audit.list(ALICE, limit=1)] == [second.id]
        assert [e.id for e in await storage.audit.list(ALICE, chat_id=chat)] == [first.id]
        assert [e.id for e in await storage.audit.list(ALICE, turn_id=turn)] == [first.id]
        assert await storage.audit.list(ALICE, turn_id=uuid.uuid4()) == []
        undo = await storage.audit.record(
            NewAuditEntry(
                user_id=ALICE,
                agent_name="helper",
                tool_name="undo",
                operation="undo",
                chat_id=chat,
                turn_id=uuid.uuid4(),
                undo_of=turn,
            )
        )
        assert [e.id for e in await storage.audit.list(ALICE, undo_of=turn)] == [undo.id]
        assert await storage.audit.list(BOB, undo_of=turn) == []
        assert await storage.audit.list(ALICE, undo_of=uuid.uuid4()) == []
        future = datetime.now(UTC) + timedelta(minutes=5)
        assert await storage.audit.list(None, since=future) == []
        past = datetime.now(UTC) - timedelta(minutes=5)
        assert len(await storage.audit.list(ALICE, since=past)) == 3
        with pytest.raises(InvalidInputError, match="limit"):
            await storage.audit.list(ALICE, limit=0)

    # -- bounded turns: agent limits, usage, budgets, summaries ----------------------------

    async def test_agent_limits_round_trip_and_none_follows_the_setting(
        self, storage: Storage
    ) -> None:
        made = await storage.agents.create(
            "a", system_prompt="p", model="offline:x", max_model_calls=5, summarize=True
        )
        assert (made.max_model_calls, made.max_tool_calls, made.summarize) == (5, None, True)
        before = await storage.agents.config_version("a")
        await storage.agents.update("a", max_model_calls=None, turn_timeout=9.5)
        assert await storage.agents.config_version("a") != before
        agent = await storage.agents.get("a")
        assert agent is not None
        assert (agent.max_model_calls, agent.turn_timeout, agent.summarize) == (None, 9.5, True)
        with pytest.raises(InvalidInputError, match="max_tool_calls"):
            await storage.agents.update("a", max_tool_calls=0)

    async def test_usage_is_recorded_and_added_up_per_user_day_and_month(
        self, storage: Storage
    ) -> None:
        from chatwright.usage import TurnUsage

        at = datetime(2026, 5, 31, 23, 30, tzinfo=UTC)
        chat = uuid.uuid4()
        for user, agent, when, usage in (
            (ALICE, "a", at, TurnUsage("m:1", 2, 100, 20, 50, 0.25)),
            (ALICE, "a", at, TurnUsage("m:1", 1, 10, 5)),
            (ALICE, "b", at, TurnUsage("m:2", 1, 7, 0)),
            (ALICE, "a", at + timedelta(hours=1), TurnUsage("m:1", 1, 1, 1)),
            (BOB, "a", at, TurnUsage("m:1", 1, 1000, 1000)),
            (ALICE, "a", at, None),  # a turn that called no model
        ):
            await storage.usage.record(user, agent, chat, uuid.uuid4(), usage, when)
        lines = await storage.usage.lines(ALICE)
        assert [(str(x.day), x.agent_name, x.model, x.turns, x.total) for x in lines] == [
            ("2026-05-31", "a", "m:1", 2, 135),
            ("2026-05-31", "b", "m:2", 1, 7),
            ("2026-06-01", "a", "m:1", 1, 2),
        ]
        assert (lines[0].model_calls, lines[0].cached_tokens) == (3, 50)
        assert lines[0].cost == pytest.approx(0.25) and lines[1].cost is None
        assert {x.user_id for x in await storage.usage.lines(None)} == {ALICE, BOB}
        assert [x.total for x in await storage.usage.lines(ALICE, agent_name="b")] == [7]
        spent = await storage.usage.spent(ALICE, at)
        assert (spent.day, spent.month) == (142, 142)
        spent = await storage.usage.spent(ALICE, at + timedelta(hours=1))
        assert (spent.day, spent.month) == (2, 2)
        assert (await storage.usage.spent(BOB, at)).day == 2000

    async def test_reserve_checks_the_budgets_and_running_turns(self, storage: Storage) -> None:
        from chatwright.errors import BudgetExceededError
        from chatwright.usage import BudgetLimits, TurnUsage, next_day

        at = datetime.now(UTC)
        limits = BudgetLimits(daily=1000, monthly=None, estimate=100, hold=60)
        running = uuid.uuid4()
        await storage.usage.reserve(ALICE, running, limits, at)
        await storage.usage.record(
            ALICE, "a", uuid.uuid4(), uuid.uuid4(), TurnUsage("m", 1, 850, 0), at
        )
        # 850 spent and 100 held by the running turn: another 100 does not fit beside it.
        with pytest.raises(BudgetExceededError) as refused:
            await storage.usage.reserve(ALICE, uuid.uuid4(), limits, at)
        assert refused.value.resets_at is None
        await storage.usage.reserve(BOB, uuid.uuid4(), limits, at)  # another user's budget
        # The running turn ends having spent 200: the budget is spent until tomorrow.
        await storage.usage.record(
            ALICE, "a", uuid.uuid4(), running, TurnUsage("m", 1, 150, 50), at
        )
        with pytest.raises(BudgetExceededError) as refused:
            await storage.usage.reserve(ALICE, uuid.uuid4(), limits, at)
        assert refused.value.resets_at == next_day(at)
        await storage.usage.reserve(ALICE, uuid.uuid4(), limits, next_day(at))

    async def test_budget_overrides_round_trip(self, storage: Storage) -> None:
        assert await storage.usage.budget(ALICE) is None
        assert await storage.usage.budgets() == []
        made = await storage.usage.set_budget(ALICE, daily_tokens=-1, monthly_tokens=5000)
        assert (made.user_id, made.daily_tokens, made.monthly_tokens) == (ALICE, -1, 5000)
        changed = await storage.usage.set_budget(ALICE, daily_tokens=10, monthly_tokens=None)
        await storage.usage.set_budget(BOB, daily_tokens=None, monthly_tokens=None)
        assert await storage.usage.budget(ALICE) == changed
        assert [b.user_id for b in await storage.usage.budgets()] == [ALICE, BOB]
        with pytest.raises(InvalidInputError):
            await storage.usage.set_budget(ALICE, daily_tokens=-5, monthly_tokens=None)
        assert await storage.usage.clear_budget(ALICE) is True
        assert await storage.usage.clear_budget(ALICE) is False
        assert [b.user_id for b in await storage.usage.budgets()] == [BOB]

    async def test_chat_summaries_belong_to_their_user(self, storage: Storage) -> None:
        from chatwright.stores import NewSummary

        await storage.agents.create("a", system_prompt="p", model="offline:x")
        chat = (await storage.sessions.open(ALICE, "a")).chat_id
        assert await storage.summaries.get(ALICE, chat) is None
        first = await storage.summaries.put(ALICE, chat, NewSummary("tea ☕", 4, 3))
        assert (first.chat_id, first.user_id, first.text, first.through_id) == (
            chat,
            ALICE,
            "tea ☕",
            4,
        )
        second = await storage.summaries.put(ALICE, chat, NewSummary("tea, coffee", 9, 7))
        assert await storage.summaries.get(ALICE, chat) == second
        assert second.messages == 7
        assert await storage.summaries.get(BOB, chat) is None


PREVIEW = Preview(
    table="tasks",
    operation="update",
    rows=(
        RowChange(
            key={"id": 3},
            before={"id": 3, "title": "old", "due": "2026-12-01"},
            after={"id": 3, "title": "Ünïcode ✓", "due": "2026-12-01"},
        ),
    ),
    count=1,
)


def new_pending(
    tool_name: str = "update_task",
    *,
    preview: bool = False,
    expires_at: datetime | None = None,
) -> NewPending:
    """A tool call to hold, as a stopped turn stores it."""
    return NewPending(
        turn_id=uuid.uuid4(),
        tool_id=None,
        tool_name=tool_name,
        tool_call_id=f"call_{uuid.uuid4().hex[:8]}",
        args={"id": 3, "title": "Ünïcode ✓", "tags": ["a", None]},
        preview=PREVIEW if preview else None,
        expires_at=expires_at or datetime.now(UTC) + timedelta(hours=1),
    )


def human(text: str) -> NewMessage:
    return NewMessage(role="human", content={"type": "human", "text": text})
