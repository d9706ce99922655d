"""The HTTP server: a JSON API over the runtime, streaming turns, and the web chat page.

:func:`create_app` builds a FastAPI application around one :class:`Runtime`.
Its lifespan starts the runtime (migrating the schema), runs the session
sweeper in the background, and closes everything on shutdown. Every error a
client can cause is answered as JSON ``{"error": "..."}`` with a 4xx status;
a failing model gives 502 (the human message is kept), a database that cannot
be reached gives 503. OpenAPI is served at ``/docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatwright import __version__
from chatwright.errors import ChatwrightError, InvalidInputError, NotFoundError
from chatwright.plugins.server.auth import AuthError, Principal, bearer, principal_from_token
from chatwright.plugins.server.metrics import ServerMetrics
from chatwright.registry import Plugins
from chatwright.runtime import Runtime
from chatwright.settings import Settings
from chatwright.stores import ChatSession, Message

log = logging.getLogger(__name__)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text cannot hold NUL characters; refuse them up front, not mid-turn.
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, str) and "\x00" in value:
                    raise ValueError(f"{key} contains a NUL character")
        return data


class OpenSession(_Body):
    agent_name: str = Field(min_length=1, max_length=200)
    chat_id: uuid.UUID | None = None
    client_key: str | None = Field(None, min_length=1, max_length=200)


class ChatRequest(_Body):
    agent_name: str = Field(min_length=1, max_length=200)
    session_id: uuid.UUID = Field(
        description="The chat_id of the conversation (as in the original)."
    )
    message: str = Field(min_length=1)


class Customization(_Body):
    kind: str = Field("instruction_set", min_length=1, max_length=100)
    content: str = Field(max_length=20_000)
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1)
    is_active: bool = True


class TooLargeError(ChatwrightError):
    http_status = 413


def session_json(session: ChatSession) -> dict[str, Any]:
    return {
        "id": str(session.id),
        "chat_id": str(session.chat_id),
        "agent_name": session.agent_name,
        "is_active": session.is_active,
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
    }


def message_json(message: Message) -> dict[str, Any]:
    data = dict(message.content.get("data", {}))
    content = data.get("content", "")
    text = (
        content
        if isinstance(content, str)
        else "".join(part.get("text", "") for part in content if isinstance(part, dict))
    )
    out: dict[str, Any] = {
        "id": message.id,
        "role": message.role,
        "text": text,
        "created_at": message.created_at.isoformat(),
    }
    if data.get("tool_calls"):
        out["tool_calls"] = [
            {"id": c.get("id"), "name": c.get("name"), "args": c.get("args")}
            for c in data["tool_calls"]
        ]
    if message.role == "tool":
        out["tool_call_id"] = data.get("tool_call_id")
        out["name"] = data.get("name")
        out["status"] = data.get("status", "success")
    return out


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode()


def create_app(settings: Settings, plugins: Plugins | None = None) -> FastAPI:
    runtime = Runtime(settings, plugins)
    metrics = ServerMetrics()

    async def sweeper() -> None:
        from chatwright.sessions import sweep

        while True:
            await asyncio.sleep(settings.sessions.sweep_interval)
            try:
                report = await sweep(runtime)
                if report.deactivated or report.evicted:
                    log.info(
                        "sweeper: %d idle session(s) deactivated, %d agent(s) evicted",
                        len(report.deactivated),
                        len(report.evicted),
                    )
            except Exception:
                log.exception("sweeper pass failed; retrying at the next interval")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(upgrade=True)
        try:
            runtime.cache  # noqa: B018  (an unknown cache.policy fails now, not at the first turn)
            tasks = [
                asyncio.create_task(sweeper()),
                # Config changed by another process (PostgreSQL NOTIFY): rebuild at once.
                asyncio.create_task(runtime.storage.watch_config(runtime.config_changed)),
            ]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await runtime.close()

    app = FastAPI(
        title="chatwright",
        version=__version__,
        lifespan=lifespan,
        description="Chat with agents whose configuration lives in a database.",
    )
    app.state.runtime = runtime
    app.state.metrics = metrics

    # -- errors: always JSON, never a bare 500 --------------------------------

    @app.exception_handler(ChatwrightError)
    async def user_error(request: Request, exc: ChatwrightError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(AuthError)
    async def unauthenticated(request: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc)},
            status_code=exc.http_status,
            headers={"WWW-Authenticate": exc.challenge()},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
            problems.append(f"{where}: {e['msg']}")
        return JSONResponse({"error": "invalid request: " + "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        # Refuse oversized bodies before reading them (a message is capped anyway).
        limit = settings.server.max_message_chars * 4 + 16_384
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return JSONResponse(
                {"error": f"request body too large ({length} bytes; at most {limit})"},
                status_code=413,
            )
        return await call_next(request)

    # -- who is calling ---------------------------------------------------------

    def principal(request: Request) -> Principal:
        return principal_from_token(settings, bearer(request.headers.get("authorization")))

    User = Depends(principal)

    def check_message(message: str) -> None:
        cap = settings.server.max_message_chars
        if len(message) > cap:
            raise TooLargeError(f"message too long ({len(message)} characters; at most {cap})")

    async def agent_exists(name: str) -> None:
        if await runtime.storage.agents.get(name) is None:
            raise NotFoundError(f"no agent named {name!r}")

    # -- pages and health ---------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("chatwright.plugins.server").joinpath("static/index.html")
        return HTMLResponse(html.read_text(encoding="utf-8"))

    @app.get("/api/config")
    async def client_config() -> dict[str, Any]:
        """What the web page needs to know before it signs in."""
        return {
            "auth": settings.server.auth,
            "heartbeat_interval": settings.sessions.heartbeat_interval,
            "max_message_chars": settings.server.max_message_chars,
            "version": __version__,
        }

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            await runtime.storage.ping()
        except ChatwrightError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "database": runtime.storage.description})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        stats = runtime.cache.stats
        text = metrics.render(
            hits=stats.hits,
            misses=stats.misses,
            builds=stats.builds,
            evictions=dict(stats.evictions),
            cached=len(runtime.cache),
            active_sessions=await runtime.storage.sessions.count_active(),
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # -- sessions ----------------------------------------------------------------

    @app.post("/api/sessions")
    async def open_session(body: OpenSession, who: Principal = User) -> dict[str, Any]:
        await agent_exists(body.agent_name)
        session = await runtime.storage.sessions.open(
            who.user_id, body.agent_name, chat_id=body.chat_id, client_key=body.client_key
        )
        return session_json(session)

    @app.get("/api/sessions")
    async def list_sessions(
        active: bool | None = None, who: Principal = User
    ) -> list[dict[str, Any]]:
        return [
            session_json(s) for s in await runtime.storage.sessions.list(who.user_id, active=active)
        ]

    @app.post("/api/sessions/{session_id}/heartbeat")
    async def heartbeat(session_id: uuid.UUID, who: Principal = User) -> dict[str, Any]:
        session = await runtime.storage.sessions.heartbeat(who.user_id, session_id)
        if session is None:
            raise NotFoundError(f"no session {session_id}")
        return session_json(session)

    @app.post("/api/sessions/{session_id}/deactivate")
    async def deactivate(session_id: uuid.UUID, request: Request) -> dict[str, Any]:
        from chatwright.sessions import deactivate as close

        token = bearer(request.headers.get("authorization"))
        if token is None and settings.server.auth == "jwt":
            # navigator.sendBeacon cannot set headers: the page sends the token in the body.
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                sent = json.loads(await request.body() or b"{}")
                token = sent.get("access_token") if isinstance(sent, dict) else None
        who = principal_from_token(settings, token)
        return session_json(await close(runtime, who.user_id, session_id))

    # -- chats ---------------------------------------------------------------------

    @app.get("/api/chats/{chat_id}/messages")
    async def messages(
        chat_id: uuid.UUID,
        limit: int = Query(50, ge=1, le=500),
        before: int | None = Query(None, ge=1, le=2**63 - 1),
        who: Principal = User,
    ) -> dict[str, Any]:
        owner = await runtime.storage.sessions.chat_owner(chat_id)
        if owner is None or owner[0] != who.user_id:
            raise NotFoundError(f"no chat {chat_id}")
        # One extra row tells whether an older page exists.
        page = await runtime.storage.messages.page(
            who.user_id, chat_id, limit=limit + 1, before=before
        )
        return {
            "chat_id": str(chat_id),
            "agent_name": owner[1],
            "messages": [message_json(m) for m in page[-limit:]],
            "more": len(page) > limit,
        }

    @app.post("/api/chat")
    async def chat(body: ChatRequest, who: Principal = User) -> JSONResponse:
        check_message(body.message)
        started = time.perf_counter()
        try:
            turn = await runtime.chat(who.user_id, body.agent_name, body.session_id, body.message)
        except ChatwrightError as exc:
            metrics.turns["error"] += 1
            if isinstance(exc, NotFoundError | InvalidInputError):
                raise
            return JSONResponse(
                {
                    "session_id": str(body.session_id),
                    "response": "",
                    "tool_calls": [],
                    "error": str(exc),
                },
                status_code=exc.http_status,
            )
        metrics.turns["ok"] += 1
        metrics.turn_seconds.observe(time.perf_counter() - started)
        return JSONResponse(
            {
                "session_id": str(turn.chat_id),
                "response": turn.response,
                "tool_calls": [c.as_dict() for c in turn.tool_calls],
                "error": None,
            }
        )

    @app.post("/api/chat/stream")
    async def chat_stream(body: ChatRequest, who: Principal = User) -> StreamingResponse:
        """Server-sent events: token, tool_call, tool_result, then done or error."""
        from langchain_core.messages import AIMessage, ToolMessage

        check_message(body.message)
        # Refuse what can be refused before the stream starts, with a status code.
        owner = await runtime.storage.sessions.chat_owner(body.session_id)
        if owner != (who.user_id, body.agent_name):
            raise NotFoundError(f"no chat {body.session_id} with agent {body.agent_name!r}")
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def on_token(text: str) -> None:
            await queue.put(sse("token", {"text": text}))

        async def on_message(message: Any) -> None:
            if isinstance(message, AIMessage):
                for call in message.tool_calls:
                    await queue.put(
                        sse(
                            "tool_call",
                            {"id": call.get("id"), "name": call["name"], "args": call["args"]},
                        )
                    )
            elif isinstance(message, ToolMessage):
                await queue.put(
                    sse(
                        "tool_result",
                        {
                            "id": message.tool_call_id,
                            "name": message.name,
                            "result": message.text,
                            "error": message.status == "error",
                        },
                    )
                )

        async def run() -> None:
            started = time.perf_counter()
            try:
                turn = await runtime.chat(
                    who.user_id,
                    body.agent_name,
                    body.session_id,
                    body.message,
                    on_message=on_message,
                    on_token=on_token,
                )
            except ChatwrightError as exc:
                metrics.turns["error"] += 1
                await queue.put(sse("error", {"error": str(exc), "status": exc.http_status}))
            except Exception as exc:
                metrics.turns["error"] += 1
                log.exception("streamed turn failed")
                await queue.put(
                    sse("error", {"error": f"internal error ({type(exc).__name__})", "status": 500})
                )
            else:
                metrics.turns["ok"] += 1
                metrics.turn_seconds.observe(time.perf_counter() - started)
                await queue.put(
                    sse(
                        "done",
                        {
                            "session_id": str(turn.chat_id),
                            "response": turn.response,
                            "tool_calls": [c.as_dict() for c in turn.tool_calls],
                        },
                    )
                )
            finally:
                await queue.put(None)

        async def events() -> AsyncIterator[bytes]:
            task = asyncio.create_task(run())
            try:
                while (item := await queue.get()) is not None:
                    yield item
            finally:
                # A client that leaves does not cancel the turn: it finishes and is stored.
                await asyncio.shield(task)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- agents ------------------------------------------------------------------

    @app.get("/api/agents")
    async def agents(who: Principal = User) -> list[dict[str, Any]]:
        return [
            {"name": a.name, "model": a.model, "history_window": a.history_window}
            for a in await runtime.storage.agents.list()
        ]

    @app.get("/api/agents/{name}")
    async def agent(name: str, who: Principal = User) -> dict[str, Any]:
        from chatwright.tools import check_tools

        found = await runtime.storage.agents.get(name)
        if found is None:
            raise NotFoundError(f"no agent named {name!r}")
        reports = await check_tools(runtime.storage, settings, runtime.plugins, name)
        tools = []
        for report in reports:
            entry: dict[str, Any] = {
                "id": report.row.id,
                "name": report.row.name,
                "type": report.row.type,
                "description": report.row.description,
                "is_active": report.row.is_active,
            }
            if who.admin:
                entry["ok"] = report.ok
                entry["problems"] = [p.brief() for p in report.problems]
            tools.append(entry)
        return {
            "name": found.name,
            "model": found.model,
            "history_window": found.history_window,
            "tools": tools,
        }

    @app.get("/api/agents/{name}/customizations")
    async def get_customizations(name: str, who: Principal = User) -> list[dict[str, Any]]:
        await agent_exists(name)
        return [
            {"kind": c.kind, "content": c.content, "priority": c.priority, "is_active": c.is_active}
            for c in await runtime.storage.customizations.list(who.user_id, name)
        ]

    @app.put("/api/agents/{name}/customizations")
    async def put_customization(
        name: str, body: Customization, who: Principal = User
    ) -> list[dict[str, Any]]:
        await agent_exists(name)
        await runtime.storage.customizations.put(
            who.user_id,
            name,
            body.kind,
            body.content,
            priority=body.priority,
            is_active=body.is_active,
        )
        return await get_customizations(name, who)

    return app


def app_from_environment() -> FastAPI:
    """The application for ``uvicorn --factory`` (and ``serve --workers N``)."""
    import os

    from chatwright.settings import load_settings

    overrides = json.loads(os.environ.get("CHATWRIGHT_SERVE_OVERRIDES", "{}"))
    return create_app(load_settings(overrides=overrides))
