"""The runtime: settings, plugins and storage of one process, started together.

A :class:`Runtime` is what the CLI commands and the server hold. Starting it
builds the storage backend named by ``storage.backend`` (through the plugin
that registered it), checks or upgrades the schema, and fires the ``startup``
hook; closing it fires ``shutdown`` and closes the storage.
"""

from __future__ import annotations

from types import TracebackType

from chatwright.errors import StorageError
from chatwright.registry import Plugins
from chatwright.settings import Settings, load_settings
from chatwright.stores import Storage


class Runtime:
    def __init__(self, settings: Settings | None = None, plugins: Plugins | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.plugins = plugins if plugins is not None else Plugins.load()
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise RuntimeError("the runtime is not started; use `async with runtime:`")
        return self._storage

    def build_storage(self) -> Storage:
        """The storage backend chosen by ``storage.backend``, not yet connected."""
        name = self.settings.storage.backend
        registration = self.plugins.get(
            "register_storage_backends", name, setting="storage.backend"
        )
        storage: Storage = registration.value(self.settings)
        return storage

    async def start(self, *, upgrade: bool = False) -> Runtime:
        """Open the storage; ``upgrade`` migrates the schema, otherwise it must be current."""
        storage = self.build_storage()
        try:
            if upgrade:
                await storage.upgrade()
            else:
                current = await storage.current_revision()
                head = storage.head_revision()
                if current != head:
                    state = f"at revision {current}" if current else "not initialised"
                    raise StorageError(
                        f"the database {storage.description} is {state} but this version of "
                        f"chatwright needs revision {head}; run `chatwright db upgrade` "
                        "(or `chatwright init` for a new database)"
                    )
        except BaseException:
            await storage.close()
            raise
        self._storage = storage
        try:
            self.plugins.notify("startup", runtime=self)
        except BaseException:
            self._storage = None
            await storage.close()
            raise
        return self

    async def close(self) -> None:
        if self._storage is None:
            return
        try:
            self.plugins.notify("shutdown", runtime=self)
        finally:
            storage, self._storage = self._storage, None
            await storage.close()

    async def __aenter__(self) -> Runtime:
        if self._storage is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
