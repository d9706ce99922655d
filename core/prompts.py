"""Prompt assembly: an agent's system prompt with the user's memory and instructions.

The agent row's ``system_prompt`` may hold two placeholders, filled per turn
(so an edit to either shows on the very next turn, without rebuilding the
cached agent):

``{memory}``
    the notes of this user's ``agent_memories`` row for this agent (which the
    example agent's memory tools edit), or "(nothing yet)";
``{custom_instructions}``
    the content of the user's active ``prompt_customizations`` for this
    agent, highest priority first, separated by blank lines.

Literal braces in a prompt are doubled, as in :meth:`str.format`.
"""

from __future__ import annotations

from chatwright.stores import Agent, Storage

NO_MEMORY = "(nothing yet)"


def fill(template: str, memory: str, instructions: list[str]) -> str:
    return template.format_map(
        {
            "memory": memory.strip() or NO_MEMORY,
            "custom_instructions": "\n\n".join(i.strip() for i in instructions if i.strip()),
        }
    ).strip()


async def system_prompt(storage: Storage, agent: Agent, user_id: str) -> str:
    """The agent's system prompt for one user, as of now."""
    memory = await storage.memories.get(user_id, agent.name)
    customizations = await storage.customizations.list(user_id, agent.name, active_only=True)
    return fill(
        agent.system_prompt,
        memory.notes if memory else "",
        [c.content for c in customizations],
    )
