"""Concurrent customizations past the limit of 50 per user and agent.

Each put counted the user's customizations in one transaction and wrote in
another, so 60 puts of different kinds sent at once all saw fewer than 50 and
all were stored. The count and the write are now one transaction, serialised
per user and agent: exactly 50 are kept and the rest are refused with the
documented 413, on every backend.
"""

from __future__ import annotations

import asyncio

from chatwright.errors import TooLargeError
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql.stores import MAX_CUSTOMIZATIONS
from tests.hostile.conftest import MakeRuntime, MakeServer, assert_error_body, bearer, sql

AGENT = example.AGENT
SENT = MAX_CUSTOMIZATIONS + 10
REFUSED = "give the kind of one of them to replace it"


async def test_concurrent_puts_through_the_api_keep_at_most_the_limit(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    path = f"/api/agents/{AGENT}/customizations"
    mallory = bearer("mallory")
    answers = await asyncio.gather(
        *(
            server.client.put(path, json={"kind": f"k{i}", "content": "x"}, headers=mallory)
            for i in range(SENT)
        )
    )
    stored = await sql(
        server.runtime,
        "SELECT kind FROM prompt_customizations WHERE user_id = 'mallory' AND agent_name = :a",
        a=AGENT,
    )
    assert len(stored) == MAX_CUSTOMIZATIONS
    taken = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert len(taken) == MAX_CUSTOMIZATIONS and len(refused) == SENT - MAX_CUSTOMIZATIONS
    for answer in refused:
        assert REFUSED in assert_error_body(answer, 413)
    # Another user's puts are not held back by mallory's.
    other = await server.client.put(
        path, json={"kind": "k0", "content": "y"}, headers=bearer("eve")
    )
    assert other.status_code == 200, other.text[:300]


async def test_concurrent_puts_of_the_store_keep_at_most_the_limit(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await make_runtime()
    await example.seed(runtime.storage, "scripted:x")
    store = runtime.storage.customizations
    for i in range(MAX_CUSTOMIZATIONS - 5):
        await store.put("mallory", AGENT, f"old{i}", "x")
    # New kinds, and replacements of kept ones, at once: a replacement is never refused.
    puts = [store.put("mallory", AGENT, f"new{i}", "x") for i in range(40)]
    puts += [store.put("mallory", AGENT, f"old{i}", "replaced") for i in range(10)]
    results = await asyncio.gather(*puts, return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, TooLargeError) and REFUSED in str(r) for r in refused), refused
    assert len(refused) == 35
    assert all(not isinstance(r, BaseException) for r in results[40:])
    kept = await store.list("mallory", AGENT)
    assert len(kept) == MAX_CUSTOMIZATIONS
    assert sum(c.content == "replaced" for c in kept) == 10
