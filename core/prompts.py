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

Literal braces in a prompt are doubled, as in :meth:`str.format`. A
placeholder takes no conversion or format spec (``{memory!r}``,
``{memory:>20}``): setting such a prompt is refused, and one stored before
(or by hand) is filled as the bare placeholder. Anything else in braces that
is not a placeholder (a row written by hand) stays in the prompt as it is.

Notes only grow when a memory tool appends to them, so the prompt shows at
most ``turns.memory_chars`` characters of them: the newest lines (facts are
added at the end), after a line saying that older ones were left out. The
stored notes are never cut; a tool that reads them gets them whole.
"""

from __future__ import annotations

import string

from chatwright.settings import TurnsSettings
from chatwright.stores import Agent, Storage

NO_MEMORY = "(nothing yet)"
OLDER_LEFT_OUT = "(older notes left out)"
DEFAULT_MEMORY_CHARS: int = TurnsSettings.model_fields["memory_chars"].default


def newest(notes: str, limit: int) -> str:
    """At most ``limit`` characters of ``notes``: the newest lines, after a note that
    older ones were left out. A newest line longer than all that is shown by its end."""
    notes = notes.strip()
    if len(notes) <= limit:
        return notes
    room = limit - len(OLDER_LEFT_OUT) - 1
    kept: list[str] = []
    size = 0
    for line in reversed(notes.splitlines()):
        cost = len(line) + (1 if kept else 0)
        if size + cost > room:
            break
        kept.append(line)
        size += cost
    shown = "\n".join(reversed(kept)) if kept else notes[-max(room, 0) :]
    return f"{OLDER_LEFT_OUT}\n{shown}"


def fill(
    template: str,
    memory: str,
    instructions: list[str],
    memory_chars: int = DEFAULT_MEMORY_CHARS,
) -> str:
    """``template`` with its placeholders filled; see the module docstring.

    :param memory_chars: the most characters of ``memory`` shown (``turns.memory_chars``).
    """
    values = {
        "memory": newest(memory, memory_chars) or NO_MEMORY,
        "custom_instructions": "\n\n".join(i.strip() for i in instructions if i.strip()),
    }
    try:
        pieces = list(_PARSER.parse(template))
    except ValueError:  # unbalanced braces, stored by hand: the text as it is
        return template.strip()
    out: list[str] = []
    for literal, field, spec, conversion in pieces:
        out.append(literal)
        if field is None:
            continue
        value = values.get(field)
        if value is None:
            # Not a placeholder: kept as written.
            tail = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            value = "{" + field + tail + "}"
        out.append(value)
    return "".join(out).strip()


_PARSER = string.Formatter()


async def system_prompt(
    storage: Storage, agent: Agent, user_id: str, memory_chars: int = DEFAULT_MEMORY_CHARS
) -> str:
    """The agent's system prompt for one user, as of now."""
    memory = await storage.memories.get(user_id, agent.name)
    customizations = await storage.customizations.list(user_id, agent.name, active_only=True)
    return fill(
        agent.system_prompt,
        memory.notes if memory else "",
        [c.content for c in customizations],
        memory_chars,
    )
