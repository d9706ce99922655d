"""The tool screen of a connection: what it keeps, over any number of listings.

A call's connection is shared by every call of its server, and the session lists
the tools again before it checks a result: the screen of such a connection kept
every tool it took out, once per listing, for as long as the connection lived, and
the id of every listing a server answered with an error.
"""

from __future__ import annotations

from typing import Any

import mcp_types
from chatwright_mcp.screen import ToolScreen
from mcp.shared.message import SessionMessage

VERSION = "2025-06-18"
GOOD = {"name": "fine", "inputSchema": {"type": "object", "properties": {}}}
BAD = {"name": "broken", "inputSchema": {"type": "object", "properties": ["not", "a", "map"]}}


def listed(screen: ToolScreen, request_id: int, answer: Any) -> Any:
    screen.outgoing(
        SessionMessage(mcp_types.JSONRPCRequest(jsonrpc="2.0", id=request_id, method="tools/list"))
    )
    return screen.incoming(SessionMessage(answer)).message


def tools_answer(request_id: int) -> Any:
    return mcp_types.JSONRPCResponse(jsonrpc="2.0", id=request_id, result={"tools": [GOOD, BAD]})


def test_a_listing_screen_records_each_tool_it_leaves_out() -> None:
    screen = ToolScreen(records=True)
    screen.version = VERSION
    answer = listed(screen, 1, tools_answer(1))
    assert [t["name"] for t in answer.result["tools"]] == ["fine"]
    assert [name for name, _ in screen.left_out] == ["broken"]
    assert "properties" in screen.left_out[0][1]


def test_tools_without_a_name_on_two_pages_are_told_apart() -> None:
    screen = ToolScreen(records=True)
    screen.version = VERSION
    unnamed = {"inputSchema": {"type": "object"}}
    for request_id in (1, 2):
        page = (
            {"tools": [GOOD, unnamed], "nextCursor": "more"}
            if request_id == 1
            else {"tools": [unnamed]}
        )
        answer = mcp_types.JSONRPCResponse(jsonrpc="2.0", id=request_id, result=page)
        listed(screen, request_id, answer)
    assert [name for name, _ in screen.left_out] == ["#2 of page 1", "#1 of page 2"]


def test_a_calls_screen_stays_the_same_size_over_any_number_of_listings() -> None:
    screen = ToolScreen()
    screen.version = VERSION
    for request_id in range(1, 2001):
        answer = listed(screen, request_id, tools_answer(request_id))
        assert [t["name"] for t in answer.result["tools"]] == ["fine"]
    assert screen.left_out == []
    assert not screen._asked


def test_a_listing_answered_with_an_error_is_forgotten() -> None:
    screen = ToolScreen()
    screen.version = VERSION
    error = mcp_types.ErrorData(code=-32603, message="no")
    for request_id in range(1, 101):
        refused = mcp_types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
        listed(screen, request_id, refused)
    assert not screen._asked
