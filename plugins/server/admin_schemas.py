"""The JSON of the admin routes (:mod:`.routes.admin`): agents and tool rows as stored.

Request bodies are plain JSON objects checked by :mod:`chatwright.catalog`,
not by these models, so that a bad field gets the very text the CLI prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from chatwright.plugins.server.schemas import Timestamp

if TYPE_CHECKING:
    from chatwright.bundles import ImportReport
    from chatwright.stores import Agent, ToolRow


class AgentOut(BaseModel):
    """An agent row; model settings whose keys look like secrets are hidden."""

    name: str
    model: str
    system_prompt: str
    model_settings: dict[str, Any]
    history_window: int
    turn_timeout: float | None
    max_model_calls: int | None
    max_tool_calls: int | None
    history_tokens: int | None
    summarize: bool
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        from chatwright.redaction import redacted
        from chatwright.stores import as_dict

        data = as_dict(agent)
        data["model_settings"] = redacted(data["model_settings"])
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})


class ToolRowOut(BaseModel):
    """A tool row; config fields its type declares secret are hidden."""

    id: int
    agent: str
    name: str
    type: str
    description: str
    config: Any
    is_active: bool
    position: int
    approval: str
    approval_default: str
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: ToolRow, agent: str, secrets: frozenset[str] = frozenset()) -> ToolRowOut:
        from chatwright.redaction import HIDDEN
        from chatwright.stores import as_dict

        data = as_dict(row)
        config = data["config"]
        if isinstance(config, dict) and secrets:
            data["config"] = {
                k: HIDDEN if k in secrets and v not in (None, "") else v for k, v in config.items()
            }
        fields = {k: v for k, v in data.items() if k in cls.model_fields}
        return cls.model_validate({**fields, "agent": agent})


class BundleOut(BaseModel):
    """An agent bundle (see docs/tools.md, "Agent bundles"); YAML has the same content."""

    format: str = Field(description='Always "chatwright-agent".')
    version: int
    agent: dict[str, Any]
    tools: list[dict[str, Any]]


class DeletedAgentOut(BaseModel):
    name: str
    tools: int = Field(description="Tool rows deleted with the agent.")


class RemovedToolOut(BaseModel):
    id: int
    name: str
    agent: str


class ImportedTools(BaseModel):
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]
    kept: list[str] = Field(description="Stored tools not in the bundle, kept (no prune).")
    safety: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per updated tool whose approval, approval_default or is_active changes, "
        'the changes ("approval required -> auto").',
    )


class ImportReportOut(BaseModel):
    """What an import did, or would do (``dry_run``)."""

    agent: str
    action: str = Field(description="created, updated or unchanged.")
    changed: list[str] = Field(description="The agent's fields that change.")
    tools: ImportedTools
    dry_run: bool

    @classmethod
    def of(cls, report: ImportReport) -> ImportReportOut:
        return cls.model_validate(report.as_dict())
