"""Errors over HTTP: one JSON shape, ``{"error": "..."}``, for every 4xx and 5xx.

:func:`install` registers the exception handlers that turn chatwright errors,
FastAPI's validation errors, Starlette's HTTP errors and anything unexpected
into that shape; :func:`responses` declares it in OpenAPI for the status codes
a route can answer, so the documented errors are the real ones.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatwright.errors import (
    ApprovalPendingError,
    BudgetExceededError,
    ChatwrightError,
    InvalidInputError,
    PreviewChangedError,
)
from chatwright.plugins.server.auth import AuthError
from chatwright.plugins.server.schemas import (
    BudgetErrorBody,
    ErrorBody,
    PendingActionOut,
    PendingErrorBody,
    PreviewChangedBody,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import Request

log = logging.getLogger(__name__)

WHY = {
    400: "The Authorization header is given more than once: send one.",
    401: "No bearer token, or an expired, malformed or wrongly signed one.",
    403: "A service-role token, refused on user endpoints; in local mode, a foreign Host "
    "header or a public bind.",
    404: "Not found, or not the caller's.",
    409: "A conflict: the chat waits for decisions, the action was decided already or "
    "expired, the rows changed since the preview, or an undo would overwrite later changes.",
    413: "The message or the request body is too large (for an export: the bundle it "
    "would write, which an import would refuse).",
    422: "The request is invalid: the error names each field at fault (a query parameter "
    "or a JSON key given twice included).",
    429: "The caller's token budget is spent (or would be by their other running turns): "
    "no model ran and nothing was stored; retry after Retry-After seconds (resets_at says "
    "when the budget resets).",
    431: "The request's head (its target and headers) is over 16 KiB.",
    502: "The model failed during the turn; the human message is kept.",
    503: "The database or the model's configuration is unavailable.",
    504: "The turn ran past its time limit and was stopped; the human message is kept.",
}

LONGEST_WAIT = 32 * 86400
"""The longest Retry-After: a monthly budget resets within a month."""

# What every route that acts for a user can answer.
USER = (401, 403, 503)


SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate, which a UTF-8 answer cannot carry."""


def error_response(
    message: str, status_code: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    # A lone surrogate (from a provider's or a tool's error text), which UTF-8 cannot
    # carry, becomes U+FFFD rather than a failed answer.
    text = SURROGATE.sub("\ufffd", message)
    return JSONResponse(
        ErrorBody(error=text).model_dump(), status_code=status_code, headers=headers
    )


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """The methods the app answers on the request's path (what a 405's ``Allow`` lists).

    FastAPI's 405 lists those of the first route on the path only, while a path
    may be served by several (``GET`` and ``PATCH`` of an agent are two routes):
    each method is tried against every route, on a scope of its own.
    """
    from starlette.routing import Match

    scope = request.scope
    allowed = []
    for method in METHODS:
        probe = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": scope.get("headers", []),
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def unparsed_body(exc: StarletteHTTPException) -> str | None:
    """What is wrong with a request body that could not be parsed as JSON, or None.

    FastAPI answers 400 ``There was an error parsing the body`` when reading the
    JSON fails other than by a syntax error; the cause says why. An object giving
    a key twice is refused as it is read
    (:class:`~chatwright.plugins.server.dependencies.JSONBodyRequest`), and that
    refusal says it all.
    """
    if exc.status_code != 400:
        return None
    cause = exc.__cause__
    if isinstance(cause, InvalidInputError):
        return str(cause)
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"the request body is not UTF-8 JSON ({cause.reason} at byte {cause.start}); "
            "send the JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "the request body is JSON nested too deeply to read; send a flatter body"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        # Python's bound on the digits of an integer read from text.
        return (
            f"the request body holds a whole number of more than {sys.get_int_max_str_digits()} "
            "digits, longer than any value chatwright reads; send a shorter one"
        )
    return None


def responses(
    *codes: int, conflict: type[ErrorBody] = ErrorBody, why: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring the error body for each of ``codes``.

    A 409 may answer a richer body (``conflict``) with its own explanation
    (``why``); a 429 answers the budget's body with a ``Retry-After`` header.
    """
    declared: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        model = {409: conflict, 429: BudgetErrorBody}.get(code, ErrorBody)
        declared[code] = {
            "model": model,
            "description": (why or WHY[code]) if code == 409 else WHY[code],
        }
        if code == 429:
            declared[code]["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer"},
                }
            }
    return declared


def retry_after(exc: BudgetExceededError) -> int:
    """Whole seconds to wait, at least one (what ``Retry-After`` can say)."""
    try:
        seconds = math.ceil(float(exc.retry_after))
    except (TypeError, ValueError, OverflowError):
        return 1
    return min(max(seconds, 1), LONGEST_WAIT)


def resets_at(exc: BudgetExceededError) -> str | None:
    when = exc.resets_at
    return when.isoformat() if isinstance(when, datetime) else None


def budget_response(exc: BudgetExceededError) -> JSONResponse:
    """The 429 of a refused turn: the error, when the budget resets, and Retry-After."""
    wait = retry_after(exc)
    body = BudgetErrorBody(error=str(exc), resets_at=resets_at(exc), retry_after=wait)
    return JSONResponse(
        body.model_dump(), status_code=exc.http_status, headers={"Retry-After": str(wait)}
    )


def pending_of(actions: list[object]) -> list[PendingActionOut]:
    """The pending actions an error carries (records only; anything else is left out)."""
    from chatwright.approvals import PendingAction

    return [PendingActionOut.of(a) for a in actions if isinstance(a, PendingAction)]


def openapi_with_json_errors(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI, its error answers declared as they are sent.

    FastAPI declares a 422 in its validation-error shape on every route with
    parameters; routes that can answer 422 declare it with :func:`responses`,
    so what is left of FastAPI's (on routes whose parameters cannot fail, such
    as a plain string in the path) is dropped with its schemas. FastAPI also
    files a route's errors under the route's media type (``text/event-stream``
    for the stream), but errors are always JSON.
    """
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                answers = operation.get("responses", {})
                if "HTTPValidationError" in str(answers.get("422")):
                    del answers["422"]
                for code, answer in answers.items():
                    if code[0] in "45" and "content" in answer:
                        body = next(iter(answer["content"].values()))
                        answer["content"] = {"application/json": body}
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def install(app: FastAPI) -> None:
    """Answer every error as JSON with the one error body; never a bare 500."""
    app.openapi = lambda: openapi_with_json_errors(app)  # type: ignore[method-assign]

    @app.exception_handler(ChatwrightError)
    async def user_error(request: Request, exc: ChatwrightError) -> JSONResponse:
        return error_response(str(exc), exc.http_status)

    @app.exception_handler(ApprovalPendingError)
    async def waiting(request: Request, exc: ApprovalPendingError) -> JSONResponse:
        # The client needs the waiting calls to show them and decide: they come with the error.
        body = PendingErrorBody(error=str(exc), pending=pending_of(exc.actions))
        return JSONResponse(body.model_dump(mode="json"), status_code=exc.http_status)

    @app.exception_handler(BudgetExceededError)
    async def over_budget(request: Request, exc: BudgetExceededError) -> JSONResponse:
        return budget_response(exc)

    @app.exception_handler(PreviewChangedError)
    async def changed(request: Request, exc: PreviewChangedError) -> JSONResponse:
        from chatwright.approvals import PendingAction

        action = exc.action if isinstance(exc.action, PendingAction) else None
        body = PreviewChangedBody(
            error=str(exc), action=PendingActionOut.of(action) if action else None
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=exc.http_status)

    @app.exception_handler(AuthError)
    async def unauthenticated(request: Request, exc: AuthError) -> JSONResponse:
        response = error_response(str(exc), exc.http_status)
        response.headers["WWW-Authenticate"] = exc.challenge()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                # Its "loc" is the offset where the parser gave up, not a field.
                at = e["loc"][-1] if e.get("loc") else "?"
                why = str((e.get("ctx") or {}).get("error") or "not JSON")
                problems.append(
                    f"the body is not valid JSON ({why}, at character {at}); send a JSON object"
                )
                continue
            where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
            problems.append(f"{where}: {e['msg']}")
        return error_response("invalid request: " + "; ".join(problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        message, status = str(exc.detail), exc.status_code
        if status == 405:
            allowed = allowed_methods(request) or [
                m.strip() for m in headers.get("Allow", "").split(",") if m.strip()
            ]
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                message = (
                    f"method {request.method} is not allowed on {request.url.path}; "
                    f"it takes {', '.join(allowed)}"
                )
        if status == 404 and message == "Not Found":  # no route has this path
            path = request.url.path
            shown = path if len(path) <= 200 else path[:197] + "..."
            message = f"no such path: {shown}; GET /docs lists the API's paths"
        problem = unparsed_body(exc)
        if problem is not None:
            message, status = problem, 422
        return error_response(message, status, headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        from chatwright.plugins.server.headers import error_headers

        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # Sent from outside every middleware: the security headers are added here.
        return error_response(
            f"internal error ({type(exc).__name__}); see the server log",
            500,
            error_headers(request.scope),
        )
