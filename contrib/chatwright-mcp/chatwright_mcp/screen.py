"""Tools the MCP SDK would refuse, taken out of a server's ``tools/list`` answers.

The SDK checks a listing's page as a whole, so one tool whose entry is not
valid MCP would lose every tool of the server, and fail every call on a
connection (the session lists the tools again to check a call's result).
:class:`ToolScreen` sits between a connection's transport and its session and
leaves only that tool out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.shared.message import SessionMessage


class ToolScreen:
    """Takes out of a server's ``tools/list`` answers each tool the MCP SDK would refuse.

    The SDK checks an answer as a whole: one tool whose entry is not valid MCP
    (an input schema whose ``properties`` is a list, a property's schema that is
    a number, ``required`` naming something other than a string, a schema whose
    ``type`` is not ``object``) fails the whole listing, and every tool of it
    is lost. The screen sits between the transport and the session of a
    listing: it notes the ids of ``tools/list`` requests on their way out, and
    takes each tool the protocol version's own check refuses out of their
    answers before the session reads them. A screen that ``records`` (a listing's)
    keeps what it took out in :attr:`left_out`, as the tool's name (or its place:
    which page of the listing, where in it) and why; a call's connection, which
    the session lists again before each result it checks, records nothing, so that
    its memory stays the same over
    any number of calls.
    """

    def __init__(self, *, records: bool = False) -> None:
        self.version: str | None = None
        """The protocol version agreed on; set once the session is initialised."""
        self.records = records
        self.left_out: list[tuple[str, str]] = []
        self._asked: set[str | int] = set()
        self._pages = 0  # pages of tools answered so far, when it records

    def outgoing(self, message: SessionMessage) -> None:
        import mcp_types

        sent = message.message
        if isinstance(sent, mcp_types.JSONRPCRequest) and sent.method == "tools/list":
            self._asked.add(sent.id)

    def incoming(self, message: SessionMessage | Exception) -> SessionMessage | Exception:
        import mcp_types

        if isinstance(message, Exception):
            return message
        answer = message.message
        if isinstance(answer, mcp_types.JSONRPCError):
            self._asked.discard(answer.id)  # answered: nothing to screen
            return message
        if not isinstance(answer, mcp_types.JSONRPCResponse) or answer.id not in self._asked:
            return message
        self._asked.discard(answer.id)
        tools = answer.result.get("tools")
        if self.version is None or not isinstance(tools, list):
            return message  # the session's own check says what is wrong
        self._pages += self.records
        refused = self._refused(answer.result)
        if not refused:
            return message
        for index, reason in sorted(refused.items()) if self.records else ():
            entry = tools[index]
            name = entry.get("name") if isinstance(entry, dict) else None
            # A tool without a name is told apart by its place: which page, where in it.
            shown = name if isinstance(name, str) else f"#{index + 1} of page {self._pages}"
            self.left_out.append((shown, reason))
        kept = [entry for index, entry in enumerate(tools) if index not in refused]
        answer.result = {**answer.result, "tools": kept}
        return message

    def _refused(self, result: dict[str, Any]) -> dict[int, str]:
        """The tools of the answer that the version's check refuses: why, by index."""
        from mcp_types.methods import validate_server_result
        from pydantic import ValidationError

        assert self.version is not None
        try:
            validate_server_result("tools/list", self.version, result)
        except ValidationError as exc:
            refused: dict[int, str] = {}
            for error in exc.errors():
                where = error["loc"]
                if len(where) >= 2 and where[0] == "tools" and isinstance(where[1], int):
                    # Leave out the names pydantic gives the members of a union.
                    parts = [str(part) for part in where[2:] if "[" not in str(part)]
                    at = ".".join(parts) or "the tool"
                    refused.setdefault(where[1], f"{at}: {error['msg']}")
            return refused
        except (KeyError, ValueError):
            return {}  # a version or method this SDK has no check for
        return {}


class ScreenedReader:
    """A transport's read stream, its messages passed through a :class:`ToolScreen`."""

    def __init__(self, stream: Any, screen: ToolScreen) -> None:
        self._stream = stream
        self._screen = screen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def receive(self) -> Any:
        return self._screen.incoming(await self._stream.receive())

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __aiter__(self) -> ScreenedReader:
        return self

    async def __anext__(self) -> Any:
        return self._screen.incoming(await self._stream.__anext__())

    async def __aenter__(self) -> ScreenedReader:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        result: bool | None = await self._stream.__aexit__(*exc)
        return result


class ScreenedWriter:
    """A transport's write stream, its messages noted by a :class:`ToolScreen`."""

    def __init__(self, stream: Any, screen: ToolScreen) -> None:
        self._stream = stream
        self._screen = screen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def send(self, item: SessionMessage) -> None:
        self._screen.outgoing(item)
        await self._stream.send(item)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> ScreenedWriter:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        result: bool | None = await self._stream.__aexit__(*exc)
        return result
