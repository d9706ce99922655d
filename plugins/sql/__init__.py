"""The ``sql`` storage backend: SQLite (the default) and PostgreSQL on SQLAlchemy.

Registering costs nothing: SQLAlchemy, the drivers and Alembic are imported
only when the backend is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatwright import hookimpl

if TYPE_CHECKING:
    from chatwright import SettingsRegister, StorageBackendRegister
    from chatwright.settings import Settings
    from chatwright.stores import Storage


def build(settings: Settings) -> Storage:
    from chatwright.plugins.sql.storage import SQLStorage

    return SQLStorage.from_settings(settings)


@hookimpl
def register_storage_backends(register: StorageBackendRegister) -> None:
    register("sql", build)


@hookimpl
def register_settings(register: SettingsRegister) -> None:
    # Also the supabase backend's: it is the sql backend underneath.
    from chatwright.plugins.sql.settings import SQLStorageSettings

    register("storage", SQLStorageSettings)
