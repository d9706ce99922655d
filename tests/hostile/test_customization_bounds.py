"""A user's customizations bounded: how many they keep, and how much a prompt shows.

Any signed-in user could store any number of 20,000-character customizations
(each PUT answering with all of them), and every turn read and sent them all:
300 of them made a 6,000,000-character system prompt. Now one user keeps at
most 50 per agent (413 past it, naming what to do), and a prompt shows at most
``turns.customization_chars`` of them, highest priority first.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatwright import prompts as prompt_module
from chatwright.plugins.example import assistant as example
from chatwright.plugins.sql.stores import MAX_CUSTOMIZATIONS
from tests.hostile.conftest import MakeServer, assert_error_body, bearer, open_chat, script

AGENT = example.AGENT


async def test_customizations_are_bounded_in_number_and_in_the_prompt(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server()
    await example.seed(server.runtime.storage, "scripted:x")
    await server.runtime.storage.agents.update(
        AGENT, system_prompt="You help. {custom_instructions}", model_settings=script()
    )
    client, mallory = server.client, bearer("mallory")
    path = f"/api/agents/{AGENT}/customizations"
    big = "A" * 20_000
    for i in range(MAX_CUSTOMIZATIONS):
        body = {"kind": f"k{i}", "content": big, "priority": -i}
        answer = await client.put(path, json=body, headers=mallory)
        assert answer.status_code == 200, answer.text[:300]
    refused = await client.put(path, json={"kind": "one more", "content": "x"}, headers=mallory)
    assert_error_body(refused, 413)
    assert "give the kind of one of them to replace it" in refused.json()["error"]
    # Replacing one of them is still possible.
    replaced = await client.put(
        path, json={"kind": "k0", "content": "Be brief.", "priority": 10}, headers=mallory
    )
    assert replaced.status_code == 200, replaced.text[:300]

    # The runtime takes fill from chatwright.prompts at each turn.
    prompts: list[str] = []
    original = prompt_module.fill

    def spy(*args: Any, **kwargs: Any) -> str:
        made = original(*args, **kwargs)
        prompts.append(made)
        return made

    monkeypatch.setattr(prompt_module, "fill", spy)
    session = await open_chat(client, "mallory")
    body = {"agent_name": AGENT, "chat_id": session["chat_id"], "message": "hi"}
    turn = await client.post("/api/chat", json=body, headers=mallory)
    assert turn.status_code == 200, turn.text[:300]
    (prompt,) = prompts
    limit = server.runtime.settings.turns.customization_chars
    assert len(prompt) <= len("You help. ") + limit
    # The highest priority first: the replaced one leads.
    assert prompt.startswith("You help. Be brief.")
    assert prompt.endswith("(the rest of the customizations left out)")
