"""Every data line of a streamed turn is JSON, and every error answer can be sent.

- A row a tool reads may hold NaN or an infinity (an application wrote it): the
  stream sent ``Infinity`` in its ``tool_result`` and ``done`` lines, which no
  JSON parser (the web page's included) reads. It must send null, as
  ``POST /api/chat`` does.
- A provider's error text may hold a lone surrogate: ``POST /api/chat``
  answered 500 (the body could not be encoded) and the stream was cut without
  its ``error`` event. Both must answer 502 with U+FFFD in its place.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, NoReturn

import httpx
from langchain_core.language_models import BaseChatModel

from chatwright import hookimpl
from chatwright.registry import Plugins
from tests.hostile.serving import serving, settings_for

AGENT = "assistant"


def strict(data: str) -> Any:
    """``data`` read as JSON proper: NaN and the infinities are not JSON."""

    def refuse(name: str) -> NoReturn:
        raise ValueError(f"not JSON: {name}")

    return json.loads(data, parse_constant=refuse)


def events(raw: str) -> list[tuple[str, str]]:
    """(event, data) of each event of a stream."""
    out = []
    for block in raw.split("\n\n"):
        if block.startswith("event:"):
            head, data = block.split("\ndata: ", 1)
            out.append((head.removeprefix("event: "), data))
    return out


async def test_a_row_with_an_infinity_streams_as_json(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path)) as served:
        db = sqlite3.connect(tmp_path / "hostile-server.db")
        db.execute(
            "CREATE TABLE prices (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, "
            "item TEXT, amount REAL)"
        )
        db.execute("INSERT INTO prices (user_id, item, amount) VALUES ('local', 'moon', 9e999)")
        db.execute("INSERT INTO prices (user_id, item, amount) VALUES ('local', 'sun', 2.5)")
        db.commit()
        db.close()
        storage = served.runtime.storage
        await storage.tools.add(
            AGENT,
            "list_prices",
            type="crud",
            config={"table": "prices", "operation": "read", "returning": ["id", "item", "amount"]},
            description="List the user's prices.",
        )
        turn = [{"tool_calls": [{"name": "list_prices", "args": {}}]}, {"content": "Here."}]
        await storage.agents.update(
            AGENT, model="scripted:x", model_settings={"responses": turn * 2}
        )
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            chat = (await client.post("/api/sessions", json={"agent_name": AGENT})).json()
            body = {"agent_name": AGENT, "chat_id": chat["chat_id"], "message": "prices?"}
            async with client.stream("POST", "/api/chat/stream", json=body) as answer:
                raw = (await answer.aread()).decode()
            posted = await client.post("/api/chat", json=body)
        streamed = {name: strict(data) for name, data in events(raw)}
        assert set(streamed) >= {"tool_call", "tool_result", "done"}, raw
        rows = streamed["tool_result"]["result"]["rows"]
        assert sorted((r["item"], r["amount"]) for r in rows) == [("moon", None), ("sun", 2.5)]
        assert streamed["done"]["response"] == "Here."
        assert posted.status_code == 200
        # The same value both ways.
        assert posted.json()["tool_calls"][0]["result"] == streamed["tool_result"]["result"]


class Failing(BaseChatModel):
    """A provider whose error echoes broken input back: a lone surrogate."""

    @property
    def _llm_type(self) -> str:
        return "failing"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("provider said: bad input '\ud83d'")

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("provider said: bad input '\ud83d'")


class Models:
    @hookimpl
    def register_models(self, register: Any) -> None:
        register("failing", lambda name, settings: Failing())


async def test_an_error_text_with_a_lone_surrogate_is_answered(tmp_path: Path) -> None:
    plugins = Plugins.load()
    plugins.register(Models(), "test-failing")
    async with serving(settings_for(tmp_path, plugins), plugins) as served:
        await served.runtime.storage.agents.update(AGENT, model="failing:x")
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            chat = (await client.post("/api/sessions", json={"agent_name": AGENT})).json()
            body = {"agent_name": AGENT, "chat_id": chat["chat_id"], "message": "hi"}
            posted = await client.post("/api/chat", json=body)
            async with client.stream("POST", "/api/chat/stream", json=body) as answer:
                raw = (await answer.aread()).decode()
            assert posted.status_code == 502, posted.text
            assert "bad input '\ufffd'" in posted.json()["error"]
            last, data = events(raw)[-1]
            assert last == "error", raw
            assert strict(data)["status"] == 502
            assert "bad input '\ufffd'" in strict(data)["error"]
            # The chat was given back: the next turn runs.
            await served.runtime.storage.agents.update(AGENT, model="offline:assistant")
            assert (await client.post("/api/chat", json=body)).status_code == 200
