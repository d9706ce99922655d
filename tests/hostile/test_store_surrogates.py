"""A lone surrogate given to the stores themselves, past the validation of the CLI
and the API (as a plugin or an application embedding chatwright may): an error
that names what is wrong, never a UnicodeEncodeError, and nothing stored."""

from __future__ import annotations

import uuid

import pytest

from chatwright.errors import InvalidInputError, StorageError
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


async def test_a_lone_surrogate_in_a_json_value_is_refused_the_same_way(
    runtimes: MakeRuntime,
) -> None:
    runtime = await runtimes()
    agents = runtime.storage.agents
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        await agents.create(
            "lone", model="offline:x", system_prompt="hi", model_settings={"x": LONE}
        )
    assert await agents.get("lone") is None


@pytest.mark.postgresql
async def test_a_database_not_in_utf8_is_named_as_the_cause_not_a_surrogate() -> None:
    """A character the database's encoding lacks is not a lone surrogate: the error says
    the database needs UTF-8, and the surrogate check still names surrogates."""
    from sqlalchemy.engine import make_url

    from tests.harness import ADMIN_URL, admin_connect, storage_for

    name = f"chatwright_test_latin_{uuid.uuid4().hex[:8]}"
    admin = admin_connect()
    admin.execute(
        f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0"
    )
    try:
        url = make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
        storage = storage_for(url.render_as_string(hide_password=False))
        await storage.upgrade()
        try:
            await storage.agents.create("latin", model="offline:x", system_prompt="café")
            with pytest.raises(StorageError, match=r"encoding.*needs a database in UTF-8"):
                await storage.agents.create("euro", model="offline:x", system_prompt="5 €")
            with pytest.raises(InvalidInputError, match="lone surrogate"):
                await storage.agents.create("lone", model="offline:x", system_prompt=LONE)
            assert [a.name for a in await storage.agents.list()] == ["latin"]
        finally:
            await storage.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
