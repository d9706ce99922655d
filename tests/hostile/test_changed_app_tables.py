"""An application table changed under a running server (``ALTER TABLE``, ``DROP TABLE``).

The record store reflects an application's table once and kept it for the
process's life, so a running server went on writing the table as it was: an
undo after the table was dropped answered 503 telling the operator to run
``chatwright db upgrade`` (which cannot help: the table is the application's),
and after a column was dropped, undos and approved writes failed with "the
database rejected a statement" for good, where a restarted server ran them.
Now a statement that finds its table or a column gone reflects the table again
and runs once more: the answer is a restarted server's.
"""

from __future__ import annotations

from tests.write_safety import bearer, calls, seed_writer, serving


async def test_an_undo_after_the_table_was_dropped_names_it(sql_url: str) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, calls(("add_task", {"title": "x"})), approval="auto")
        chat = await api.open_chat("alice")
        assert (await api.say_ok("alice", chat))["status"] == "done"
        await api.sql("DROP TABLE tasks")
        undo = await api.client.post(f"/api/chats/{chat}/undo", headers=bearer("alice"))
        assert undo.status_code == 404, undo.text
        assert "table 'tasks' does not exist" in undo.json()["error"]


async def test_an_undo_and_a_write_after_a_column_was_dropped_answer_as_after_a_restart(
    sql_url: str,
) -> None:
    async with serving(sql_url) as api:
        await seed_writer(api.runtime, [], approval="auto")
        task = await api.task("alice", "old")
        script = calls(("update_task", {"id": task, "title": "new"}), reply="Renamed.")
        await seed_writer(api.runtime, script, approval="auto")
        chat = await api.open_chat("alice")
        assert (await api.say_ok("alice", chat))["status"] == "done"
        await api.sql("ALTER TABLE tasks DROP COLUMN due_date")

        # The row's image no longer matches the row (a column of it is gone): refused,
        # naming the row, as a server started after the change refuses it.
        undo = await api.client.post(f"/api/chats/{chat}/undo", headers=bearer("alice"))
        assert undo.status_code == 409, undo.text
        assert f"row id={task} of 'tasks' was changed since" in undo.json()["error"]
        assert [title for title, _ in (await api.tasks("alice")).values()] == ["new"]

        # A tool's write on the changed table, in a turn: made, not refused.
        script = calls(("delete_task", {"id": task}), reply="Deleted.")
        await seed_writer(api.runtime, script, approval="auto")
        turn = await api.say_ok("alice", chat)
        assert turn["status"] == "done" and not turn["tool_calls"][0]["error"], turn
        assert await api.tasks("alice") == {}
