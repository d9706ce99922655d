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

A user's customizations are theirs to write, so the prompt shows at most
``turns.customization_chars`` characters of them: the highest priority first,
whole, until the next would pass the bound; that one is cut there, with a line
saying so, and the rest are left out.
"""

from __future__ import annotations

import string

from chatwright.settings import TurnsSettings
from chatwright.stores import Agent, Storage

NO_MEMORY = "(nothing yet)"
OLDER_LEFT_OUT = "(older notes left out)"
REST_LEFT_OUT = "(the rest of the customizations left out)"
DEFAULT_MEMORY_CHARS: int = TurnsSettings.model_fields["memory_chars"].default
DEFAULT_CUSTOMIZATION_CHARS: int = TurnsSettings.model_fields["customization_chars"].default


def highest_first(instructions: list[str], limit: int) -> str:
    """The instructions (highest priority first) joined by blank lines, at most ``limit``
    characters: whole ones while they fit, then the next cut, and a line saying the rest
    was left out."""
    texts = [i.strip() for i in instructions if i.strip()]
    joined = "\n\n".join(texts)
    if len(joined) <= limit:
        return joined
    room = max(limit - len(REST_LEFT_OUT) - 2, 0)
    return joined[:room].rstrip() + "\n\n" + REST_LEFT_OUT


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
    customization_chars: int = DEFAULT_CUSTOMIZATION_CHARS,
) -> str:
    """``template`` with its placeholders filled; see the module docstring.

    :param memory_chars: the most characters of ``memory`` shown (``turns.memory_chars``).
    :param customization_chars: the most characters of ``instructions`` shown
        (``turns.customization_chars``).
    """
    values = {
        "memory": newest(memory, memory_chars) or NO_MEMORY,
        "custom_instructions": highest_first(instructions, customization_chars),
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
    storage: Storage,
    agent: Agent,
    user_id: str,
    memory_chars: int = DEFAULT_MEMORY_CHARS,
    customization_chars: int = DEFAULT_CUSTOMIZATION_CHARS,
) -> str:
    """The agent's system prompt for one user, as of now."""
    memory = await storage.memories.get(user_id, agent.name)
    customizations = await storage.customizations.list(user_id, agent.name, active_only=True)
    return fill(
        agent.system_prompt,
        memory.notes if memory else "",
        [c.content for c in customizations],
        memory_chars,
        customization_chars,
    )
