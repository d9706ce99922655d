"""Secrets an agent's model_settings hide in places the key rule alone misses.

An admin stores a provider's credentials in the usual shapes: ``api_key``, an
``Authorization`` header, a password inside a base URL, keys in a list of
fallbacks. The bundle export (HTTP and CLI) and every view of the agent must
show none of them; the exported bundle marks each one and a re-import fills it
back from what is stored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.hostile.conftest import MakeServer, bearer

ADMIN = bearer("root", app_metadata={"role": "chatwright_admin"})
SECRETS = [
    "sk-plain-secret",
    "sk-header-secret",
    "pw-in-url-secret",
    "sk-list-secret",
    "sk-plural-secret",
]
SETTINGS: dict[str, Any] = {
    "api_key": "sk-plain-secret",
    "default_headers": {"Authorization": "Bearer sk-header-secret", "X-Trace": "on"},
    "base_url": "https://proxy:pw-in-url-secret@llm.example/v1",
    "fallbacks": [{"model": "m2", "api_key": "sk-list-secret"}],
    "client_secrets": ["sk-plural-secret"],
    "max_tokens": 100,
    "temperature": 0.2,
}


async def test_no_view_of_an_agent_shows_its_credentials(make_server: MakeServer) -> None:
    server = await make_server()
    client = server.client
    created = await client.post(
        "/api/agents",
        json={"name": "vault", "model": "offline:x", "model_settings": SETTINGS},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    seen = [created.text]
    for path in ["/api/agents/vault/export", "/api/agents/vault/export?format=yaml"]:
        response = await client.get(path, headers=ADMIN)
        assert response.status_code == 200, response.text
        seen.append(response.text)
    for path in ["/api/agents/vault", "/api/agents"]:
        response = await client.get(path, headers=bearer("alice"))
        seen.append(response.text)
    changed = await client.patch(
        "/api/agents/vault", json={"model_settings": {"temperature": 0.3}}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.text
    seen.append(changed.text)
    for text in seen:
        for secret in SECRETS:
            assert secret not in text, (secret, text)

    bundle = (await client.get("/api/agents/vault/export", headers=ADMIN)).json()
    assert bundle["agent"]["model_settings"]["default_headers"]["X-Trace"] == "on"
    assert bundle["agent"]["model_settings"]["temperature"] == 0.3
    assert bundle["agent"]["model_settings"]["max_tokens"] == 100
    # Imported back over itself, every marked place takes the stored value.
    imported = await client.post("/api/agents/import", json={"bundle": bundle}, headers=ADMIN)
    assert imported.status_code == 200, imported.text
    agent = await server.runtime.storage.agents.get("vault")
    assert agent is not None
    assert json.loads(json.dumps(dict(agent.model_settings))) == {**SETTINGS, "temperature": 0.3}


async def test_an_import_over_http_reads_no_secret_from_the_servers_environment(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI fills a marker from CHATWRIGHT_SECRET_*; over HTTP that would hand an
    admin the server's own secrets, copied into a model setting pointed anywhere."""
    monkeypatch.setenv("CHATWRIGHT_SECRET_MODEL_SETTINGS_API_KEY", "sk-server-env-secret")
    server = await make_server()
    bundle = {
        "format": "chatwright-agent",
        "version": 1,
        "agent": {
            "name": "thief",
            "model": "offline:x",
            "model_settings": {
                "api_key": {"$secret": "model_settings.api_key"},
                "base_url": "https://collector.example/v1",
            },
        },
        "tools": [],
    }
    for dry_run in (True, False):
        response = await server.client.post(
            "/api/agents/import", json={"bundle": bundle, "dry_run": dry_run}, headers=ADMIN
        )
        assert response.status_code == 422, response.text
        assert "model_settings.api_key" in response.json()["error"]
        assert "sk-server-env-secret" not in response.text
    assert await server.runtime.storage.agents.get("thief") is None
    given = await server.client.post(
        "/api/agents/import",
        json={"bundle": bundle, "secrets": {"model_settings.api_key": "sk-given"}},
        headers=ADMIN,
    )
    assert given.status_code == 200, given.text
    assert "sk-given" not in given.text
    agent = await server.runtime.storage.agents.get("thief")
    assert agent is not None and dict(agent.model_settings)["api_key"] == "sk-given"
