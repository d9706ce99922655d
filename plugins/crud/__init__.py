"""The ``crud`` tool type: rows of ``agent_tools`` that read and write application tables.

Registration is free: the config model and LangChain are imported when the
first ``crud`` row is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatwright import hookimpl

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from pydantic import BaseModel

    from chatwright import SettingsRegister, ToolTypeRegister
    from chatwright.stores import ToolRow
    from chatwright.tools import ToolContext


class LazyCrudType:
    """Stands in for :class:`.tool.CrudToolType` until a row needs it."""

    @property
    def config_model(self) -> type[BaseModel]:
        from chatwright.plugins.crud.config import CrudConfig

        return CrudConfig

    async def build(self, row: ToolRow, config: Any, context: ToolContext) -> BaseTool:
        from chatwright.plugins.crud.tool import CrudToolType

        return await CrudToolType().build(row, config, context)


@hookimpl
def register_tool_types(register: ToolTypeRegister) -> None:
    crud = LazyCrudType()
    register("crud", crud)
    # The original system's type name, so its rows load unchanged.
    register("CRUDTool", crud)


@hookimpl
def register_settings(register: SettingsRegister) -> None:
    from chatwright.plugins.crud.settings import CrudSettings

    register("tools", CrudSettings)
