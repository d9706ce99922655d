"""The caller's own data: ``GET /api/me/export``, ``DELETE /api/me``, ``DELETE /api/chats/{id}``.

Only ever the caller's: the user id comes from the token. Erasing everything
asks for ``?confirm=`` with the caller's own user id, so that no stray request
(a retried ``DELETE``, a misrouted client) erases an account; a chat is deleted
without one, as the web page's delete button would. The work is the storage's
:class:`~chatwright.userdata.UserDataStore` (see docs/privacy.md).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from chatwright.errors import InvalidInputError
from chatwright.plugins.server.dependencies import JSONRoute, RuntimeDep, SettingsDep, User
from chatwright.plugins.server.errors import USER, responses
from chatwright.plugins.server.settings import ServerSettings
from chatwright.plugins.server.userdata_schemas import ErasureOut, UserArchiveOut
from chatwright.userdata import user_data_of

router = APIRouter(tags=["me"], route_class=JSONRoute)

FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def archive_name(user_id: str) -> str:
    """The archive's file name: the user id with anything but letters, digits, . _ - as -."""
    safe = FILE_NAME.sub("-", user_id).strip(".-")[:64]
    return f"chatwright-{safe or 'user'}.json"


@router.get("/api/me/export", responses=responses(*USER, 413))
async def export(
    runtime: RuntimeDep, settings: SettingsDep, who: User, response: Response
) -> UserArchiveOut:
    """Everything of the caller's as one JSON archive (a file to save: Content-Disposition).

    413 when it would hold more than server.max_export_rows rows; an operator exports
    it with `chatwright users export`.
    """
    bound = settings.section(ServerSettings).max_export_rows
    archive = await user_data_of(runtime.storage).export(who.user_id, max_rows=bound)
    response.headers["Content-Disposition"] = f'attachment; filename="{archive_name(who.user_id)}"'
    return UserArchiveOut.of(archive)


@router.delete("/api/me", responses=responses(*USER, 409, 422))
async def erase(
    runtime: RuntimeDep,
    who: User,
    confirm: Annotated[
        str | None,
        Query(max_length=255, description="The caller's own user id: required, as a check."),
    ] = None,
) -> ErasureOut:
    """Erase everything of the caller's; the rows deleted per table.

    409 while a turn of one of the caller's chats runs: try again when it ends.
    """
    if confirm is None:
        raise InvalidInputError(
            "erasing all your data needs ?confirm= with your user id (GET /api/me/export "
            "first keeps a copy)"
        )
    if confirm != who.user_id:
        raise InvalidInputError(
            "?confirm= is not your user id: nothing was erased; pass your own user id"
        )
    # What the user's budget counts stays: erasing one's data must not lift one's budget.
    report = await user_data_of(runtime.storage).erase(
        who.user_id, requested_by="user", keep_budget=True
    )
    return ErasureOut.of(report)


@router.delete("/api/chats/{chat_id}", responses=responses(*USER, 404, 409, 422))
async def delete_chat(chat_id: uuid.UUID, runtime: RuntimeDep, who: User) -> ErasureOut:
    """Delete one of the caller's chats: its messages, summary, sessions and pending actions.

    404 for a chat that is not the caller's, whoever's it is; 409 while a turn of it runs.
    """
    report = await user_data_of(runtime.storage).delete_chat(who.user_id, chat_id)
    return ErasureOut.of(report)
