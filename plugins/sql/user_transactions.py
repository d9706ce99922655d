"""The ``sql`` backend's extension point for per-request row-level security.

Every statement the stores make is either *for a user* (their sessions,
messages, customizations, memories, and the rows CRUD tools read and write) or
a framework statement (agent and tool configuration, the sweeper, migrations).
A :class:`UserTransactions` object, passed to
:class:`~chatwright.plugins.sql.storage.SQLStorage`, decides what happens at the
start of each transaction given that user, and what a new application table
with a ``user_id`` column gets once created. The default does nothing: the
stores scope every statement by its ``user_id`` column. The ``supabase``
backend sets PostgreSQL's row-level-security claims instead, so the database
itself keeps users apart.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection


class UserTransactions:
    """How transactions made for a user start; subclass and override both methods.

    The default scopes by column and does nothing here.
    """

    async def enter(self, conn: AsyncConnection, user_id: str | None) -> None:
        """Run at the start of every transaction, before its first statement.

        :param conn: the transaction's connection; settings made with
            ``SET LOCAL`` or ``set_config(..., true)`` end with it, before the
            pool hands the connection to anyone else.
        :param user_id: the user the transaction runs for, or None for a
            framework (admin) statement.
        """

    async def leave(self, conn: AsyncConnection) -> None:
        """Undo :meth:`enter` within the transaction: what follows is a framework statement.

        For an operation whose last step is the framework's, in the same transaction
        (an erasure recording itself in the audit log, see :mod:`.userdata`).
        """

    async def secure_table(self, conn: AsyncConnection, table: str) -> None:
        """Run after a tool created (or found) an application table with a ``user_id`` column.

        :param conn: a write transaction (as the connecting role).
        :param table: the table's name, already checked against the tool's spec.
        """
