"""A lone surrogate given to the stores themselves, past the validation of the CLI
and the API (as a plugin or an application embedding chatwright may): an error
that names what is wrong, never a UnicodeEncodeError, and nothing stored."""

from __future__ import annotations

import pytest

from chatwright.errors import InvalidInputError
from tests.conftest import MakeRuntime

LONE = "hi \ud800"


async def test_a_store_refuses_a_lone_surrogate_saying_so(runtimes: MakeRuntime) -> None:
    runtime = await runtimes()
    agents = runtime.storage.agents
    with pytest.raises(InvalidInputError, match=r"lone surrogate.*remove it"):
        await agents.create("lone", model="offline:x", system_prompt=LONE)
    assert await agents.get("lone") is None

    made = await agents.create("plain", model="offline:x", system_prompt="hello")
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        await agents.update("plain", system_prompt=LONE)
    kept = await agents.get("plain")
    assert kept is not None and kept.system_prompt == "hello" and kept.id == made.id
