"""An agent name that cannot be one, given to ``chats list --agent`` and ``usage --agent``.

``chats list --agent`` checked the name with the check of user ids, and told the
user to "give a plain user id" about an agent's name; ``usage --agent`` took a
control character or a name of 300 characters as it was. Both now say what an
agent name is, naming ``--agent``, and never speak of a user id.
"""

from __future__ import annotations

import pytest

from tests.harness import assert_error, ok, run

pytestmark = pytest.mark.usefixtures("example")

BAD_AGENTS = {
    "empty": ("", "--agent is empty; give an agent name"),
    "blank": ("  ", "--agent is empty; give an agent name"),
    "a control character": ("a\x01", "--agent holds a control character, which no agent name"),
    "an escape": ("a\x1b[2J", "--agent holds a control character, which no agent name"),
    "300 characters": ("a" * 300, "--agent is 300 characters long; an agent name has at most 200"),
}


@pytest.mark.parametrize("command", [["chats", "list"], ["usage"]], ids=" ".join)
@pytest.mark.parametrize("case", BAD_AGENTS)
def test_the_error_is_about_an_agent_name(command: list[str], case: str) -> None:
    agent, said = BAD_AGENTS[case]
    line = assert_error(run(*command, "--agent", agent), said)
    assert "user id" not in line


def test_a_name_of_200_characters_is_looked_for() -> None:
    longest = "a" * 200
    assert "No chats." in ok("chats", "list", "--agent", longest).stdout
    assert "No usage recorded" in ok("usage", "--agent", longest).stdout
    assert_error(run("chats", "list", "--agent", longest + "a"), "201 characters")
