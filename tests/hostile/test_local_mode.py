"""Review finding "local auth mode", replayed against a real uvicorn server.

Local mode has no authentication. A web page on a DNS-rebound name
(``Host: attacker.example``, resolving to 127.0.0.1) used to read the local
user's chats, and the app built by ``uvicorn --factory … --host 0.0.0.0``
served anyone, since only ``chatwright serve`` refused a public bind. Here the
foreign Host and the public bind must both get 403 with the error body, while
the loopback names (and ``server.allowed_hosts``) are still served.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.harness import uvicorn_serving
from tests.hostile.serving import serving, settings_for

FACTORY = "chatwright.plugins.server.app:app_from_environment"


async def get(port: int, path: str, host: str | None = None) -> httpx.Response:
    headers = {"Host": host} if host is not None else {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        return await client.get(path, headers=headers)


async def test_a_rebound_host_name_cannot_read_the_local_users_chats(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path)) as served:
        port = served.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            opened = await client.post("/api/sessions", json={"agent_name": "assistant"})
            assert opened.status_code == 200, opened.text
        chat = opened.json()["chat_id"]
        for path in ("/api/sessions", f"/api/chats/{chat}/messages", "/api/agents", "/"):
            refused = await get(port, path, "attacker.example")
            assert refused.status_code == 403, path
            assert "refusing Host 'attacker.example'" in refused.json()["error"]
            assert chat not in refused.text
        for host in (f"attacker.example:{port}", "127.0.0.1.attacker.example", "localhost.:80"):
            assert (await get(port, "/api/sessions", host)).status_code == 403, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]:8000", "LOCALHOST"):
            assert (await get(port, "/api/sessions", host)).status_code == 200, host


async def test_allowed_hosts_adds_names_to_the_loopback_ones(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, server={"allowed_hosts": ["chat.home.arpa"]})
    async with serving(settings) as served:
        port = served.port
        assert (await get(port, "/api/sessions", "chat.home.arpa:8000")).status_code == 200
        assert (await get(port, "/api/sessions", f"127.0.0.1:{port}")).status_code == 200
        assert (await get(port, "/api/sessions", "other.home.arpa")).status_code == 403


async def test_the_factory_under_uvicorn_on_0_0_0_0_serves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `uvicorn --factory chatwright.plugins.server.app:app_from_environment
    # --host 0.0.0.0` runs; the connection below still arrives on 127.0.0.1, so
    # the server must tell the bind from its listening socket.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", f"sqlite+aiosqlite:///{tmp_path}/factory.db")
    async with uvicorn_serving(FACTORY, "0.0.0.0", factory=True) as port:
        for path in ("/api/sessions", "/api/agents", "/healthz", "/"):
            refused = await get(port, path)
            assert refused.status_code == 403, path
            assert "listens on 0.0.0.0" in refused.json()["error"]


async def test_the_factory_on_loopback_still_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", f"sqlite+aiosqlite:///{tmp_path}/factory.db")
    async with uvicorn_serving(FACTORY, "127.0.0.1", factory=True) as port:
        assert (await get(port, "/api/sessions")).status_code == 200


async def test_jwt_mode_on_0_0_0_0_is_served_with_a_token_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHATWRIGHT_STORAGE__URL", f"sqlite+aiosqlite:///{tmp_path}/factory.db")
    monkeypatch.setenv("CHATWRIGHT_SERVER__AUTH", "jwt")
    monkeypatch.setenv("CHATWRIGHT_SERVER__JWT_SECRET", "x" * 32)
    async with uvicorn_serving(FACTORY, "0.0.0.0", factory=True) as port:
        assert (await get(port, "/api/sessions", "attacker.example")).status_code == 401


async def test_a_page_of_another_site_cannot_make_the_local_server_act(tmp_path: Path) -> None:
    """A page the local user visits can send a form or a fetch that needs no preflight to
    127.0.0.1: its answer cannot be read, but what it asks would be done. Browsers name
    the page's origin; local mode serves only its own hosts' pages (and programs, which
    send no Origin)."""
    settings = settings_for(tmp_path, server={"allowed_hosts": ["chat.home.arpa"]})
    async with serving(settings) as served:
        port = served.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            async def open_from(origin: str | None) -> httpx.Response:
                headers = {"Origin": origin} if origin is not None else {}
                return await client.post(
                    "/api/sessions", json={"agent_name": "assistant"}, headers=headers
                )

            for origin in (
                "https://attacker.example",
                f"http://attacker.example:{port}",
                "http://127.0.0.1.attacker.example",
                "null",
                "",
                "http://[::1",
            ):
                refused = await open_from(origin)
                assert refused.status_code == 403, (origin, refused.text)
                assert "refusing a request from the web page at" in refused.json()["error"]
            listed = await client.get("/api/sessions")
            assert listed.status_code == 200 and listed.json() == [], listed.text
            for origin in (
                None,
                f"http://127.0.0.1:{port}",
                "http://localhost:3000",
                "http://[::1]:8000",
                "https://chat.home.arpa",
            ):
                opened = await open_from(origin)
                assert opened.status_code == 200, (origin, opened.text)
            listed = await client.get("/api/sessions")
            assert len(listed.json()) == 5, listed.text
