"""The ``supabase`` storage backend: PostgreSQL with row-level security per request.

It is the ``sql`` backend with one difference: every statement made for a
user — sessions, messages, customizations, memories, and the rows CRUD tools
read and write — runs in a transaction that first sets the request's JWT
claims (``request.jwt.claims`` with ``sub`` = the user id) and ``role
authenticated``, locally, as PostgREST does. PostgreSQL's row-level security
then enforces isolation by itself, even for a tool whose config forgot its
scope. Framework (admin) statements — agent and tool configuration, the
sweeper — run as the connecting role, which on Supabase is the service role
``postgres``.

It is built on the ``sql`` plugin's documented extension point (a
:class:`~chatwright.plugins.sql.user_transactions.UserTransactions` given to
:class:`~chatwright.plugins.sql.storage.SQLStorage`), so it needs that plugin:
with ``sql`` blocked, selecting it is an error that says so.

Set ``storage.backend = "supabase"`` and ``storage.url`` to the database
(through Supavisor with ``storage.pooler = "transaction"``, plus
``storage.direct_url`` for LISTEN/NOTIFY); see docs/deploy.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatwright import hookimpl

if TYPE_CHECKING:
    from chatwright import StorageBackendRegister
    from chatwright.settings import Settings
    from chatwright.stores import Storage


def build(settings: Settings) -> Storage:
    from chatwright.errors import PluginError
    from chatwright.registry import BUNDLED_DISTRIBUTION, LoadPolicy

    # This backend is the sql backend with other user transactions, so blocking sql
    # blocks it too. The factory is given only the settings, so it asks the same
    # environment the registry loaded the plugins by.
    if not LoadPolicy.from_environ().admits("sql", BUNDLED_DISTRIBUTION, bundled=True):
        raise PluginError(
            "storage.backend 'supabase' is built on the sql plugin, which "
            "CHATWRIGHT_DISABLE_PLUGINS blocks; unblock sql or choose another storage.backend"
        )
    from chatwright.plugins.supabase.storage import SupabaseStorage

    return SupabaseStorage.from_settings(settings)


@hookimpl
def register_storage_backends(register: StorageBackendRegister) -> None:
    register("supabase", build)
