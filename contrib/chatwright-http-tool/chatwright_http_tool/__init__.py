"""chatwright-http-tool: the ``http`` tool type, calls to allow-listed HTTP endpoints.

One ``agent_tools`` row of type ``http`` gives the model one endpoint: a
method, a URL template, the arguments the model fills in and where each one
goes (a path segment, a query parameter, a JSON body field), constant headers
whose secrets stay in the environment, and the hosts the tool may reach. See
the distribution's README for the config reference.

Registration is free: the config model is imported when the first ``http``
row is validated, and httpx and LangChain when the first one is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatwright import hookimpl

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from pydantic import BaseModel

    from chatwright import ToolTypeRegister
    from chatwright.stores import ToolRow
    from chatwright.tools import ToolContext

__version__ = "0.1.0"


class LazyHttpType:
    """Stands in for :class:`.tool.HttpToolType` until a row needs it."""

    @property
    def config_model(self) -> type[BaseModel]:
        from chatwright_http_tool.config import HttpConfig

        return HttpConfig

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> BaseTool:
        from chatwright_http_tool.tool import HttpToolType

        return await HttpToolType().build(row, config, context)


@hookimpl
def register_tool_types(register: ToolTypeRegister) -> None:
    register("http", LazyHttpType())
