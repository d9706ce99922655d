"""The hook specifications: everything a plugin can provide or observe.

Hooks come in two groups.

*Collection hooks* (``register_*``) are called once, when the core first needs
the kind of thing they collect. Each receives a ``register`` callback instead of
returning values, so the core decides what happens when two plugins use the
same name (neither is used, and what uses it fails with a
:class:`~chatwright.errors.DuplicateRegistrationError` naming both; chatwright's
own plugins keep their names) and remembers which plugin supplied what.
Registering must be cheap: declare names and factories, and leave network
access, key checks and heavy imports to the factory, which runs at first use.
Each ``register`` callback is typed (:class:`ToolTypeRegister`, …) so that a
type checker checks what a plugin registers.

*Event hooks* are called for every plugin that implements them; their return
values are ignored, and an exception in one plugin is logged without stopping
the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from chatwright.approvals import WriteCall, WriteOutcome
    from chatwright.cache import EvictionPolicy
    from chatwright.commands.init import Example
    from chatwright.models import ModelFactory
    from chatwright.runtime import Runtime
    from chatwright.settings import Settings
    from chatwright.stores import ChatSession, SessionStore, Storage
    from chatwright.tools import ToolType

PROJECT_NAME = "chatwright"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- what collection hooks register ----------------------------------------
# Each ``register`` callback has a type of its own, so that mypy checks what a
# plugin registers against the protocol the core will use it through.


class StorageFactory(Protocol):
    """Builds a storage backend from the settings; called at first use."""

    def __call__(self, settings: Settings, /) -> Storage: ...


class SessionStoreFactory(Protocol):
    """Builds a session store from the settings; called when a runtime builds its storage."""

    def __call__(self, settings: Settings, /) -> SessionStore: ...


class EvictionPolicyFactory(Protocol):
    """Builds the executor cache's eviction policy from the settings; one per runtime."""

    def __call__(self, settings: Settings, /) -> EvictionPolicy: ...


class StorageBackendRegister(Protocol):
    """The ``register`` callback of :func:`register_storage_backends`."""

    def __call__(self, name: str, factory: StorageFactory, /) -> None: ...


class SessionStoreRegister(Protocol):
    """The ``register`` callback of :func:`register_session_stores`."""

    def __call__(self, name: str, factory: SessionStoreFactory, /) -> None: ...


class ToolTypeRegister(Protocol):
    """The ``register`` callback of :func:`register_tool_types`."""

    def __call__(self, type_name: str, tool_type: ToolType, /) -> None: ...


class EvictionPolicyRegister(Protocol):
    """The ``register`` callback of :func:`register_eviction_policies`."""

    def __call__(self, name: str, factory: EvictionPolicyFactory, /) -> None: ...


class ModelRegister(Protocol):
    """The ``register`` callback of :func:`register_models`."""

    def __call__(self, prefix: str, factory: ModelFactory, /) -> None: ...


class SettingsRegister(Protocol):
    """The ``register`` callback of :func:`register_settings`."""

    def __call__(self, section: str, model: type[BaseModel], /) -> None: ...


class ExampleRegister(Protocol):
    """The ``register`` callback of :func:`register_examples`."""

    def __call__(self, name: str, example: Example, /) -> None: ...


# -- collection hooks -------------------------------------------------------


@hookspec
def register_storage_backends(register: StorageBackendRegister) -> None:
    """Register storage backends by name.

    The setting ``storage.backend`` picks one of them.

    :param register: call ``register(name, factory)`` once per backend;
        ``factory(settings)`` returns an object implementing
        :class:`chatwright.stores.Storage`. It is called only when the backend
        is selected, so it is the place for imports of database drivers.
    """


@hookspec
def register_session_stores(register: SessionStoreRegister) -> None:
    """Register session stores: where chat sessions live, apart from the storage backend.

    The setting ``sessions.store`` picks one by name; ``"default"`` keeps
    sessions in the storage backend with everything else.

    :param register: call ``register(name, factory)``; ``factory(settings)``
        returns an object implementing :class:`chatwright.stores.SessionStore`
        (plus an optional ``async close()``). Check it with
        :class:`chatwright.testing.SessionStoreContract`.
    """


@hookspec
def register_tool_types(register: ToolTypeRegister) -> None:
    """Register tool types that ``agent_tools`` rows can name in their ``type``.

    :param register: call ``register(type_name, tool_type)``; ``tool_type``
        implements :class:`chatwright.tools.ToolType`: a pydantic
        ``config_model`` that validates a row's ``config`` and a ``build(...)``
        method that turns a validated row into a LangChain tool.
    """


@hookspec
def register_eviction_policies(register: EvictionPolicyRegister) -> None:
    """Register executor-cache eviction policies by name.

    The setting ``cache.policy`` picks one of them.

    :param register: call ``register(name, factory)``; ``factory(settings)``
        returns the :class:`chatwright.cache.EvictionPolicy` the executor
        cache consults and tells of insertions, hits and removals.
    """


@hookspec
def register_models(register: ModelRegister) -> None:
    """Register chat-model providers by the prefix of a model spec.

    A spec is ``prefix:name`` (``openai:gpt-4o-mini``, ``offline:assistant``).

    :param register: call ``register(prefix, factory)``;
        ``factory(name, model_settings)`` returns a LangChain chat model
        (:class:`chatwright.models.ModelFactory`). A
        missing package or API key is reported by the factory, at first use.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``chatwright`` command-line runner.

    :param cli: the root :class:`click.Group`; add commands or groups to it
        with ``@cli.command()`` or ``cli.add_command(...)``. Keep imports inside
        the command functions so that ``chatwright --help`` stays fast.
    """


@hookspec
def register_examples(register: ExampleRegister) -> None:
    """Register examples that ``chatwright init --example`` can install.

    The bundled ``example`` plugin registers ``assistant``, the one ``init
    --example`` installs.

    :param register: call ``register(name, example)``; ``example`` is a
        :class:`chatwright.commands.init.Example`: a ``summary`` for messages,
        the ``model`` its agent gets when models.default is not set, and
        ``async install(runtime)``, which creates what is missing of it and
        returns what it created. Import the example's data inside the hook.
    """


@hookspec
def register_settings(register: SettingsRegister) -> None:
    """Contribute typed settings: a pydantic model per section.

    When ``section`` is a core section (``storage``, ``models``, ``tools``,
    ``cache``, ``sessions``) the model's fields are added to it: same TOML table,
    same environment variables (``storage.pool_size`` is
    ``CHATWRIGHT_STORAGE__POOL_SIZE``). Any other name is a new top-level
    section (``[server]``). Plugin settings are validated with the rest when
    settings are loaded; a key defined twice is an error naming both plugins.
    Read them with ``settings.section(YourModel)``, typed as ``YourModel``.

    :param register: call ``register(section, model)``; ``model`` is a pydantic
        model class whose fields all have defaults. Import it inside the hook
        function, so that ``chatwright --help`` does not import pydantic.
    """


# -- event hooks ------------------------------------------------------------


@hookspec
def startup(runtime: Runtime) -> None:
    """Called when a runtime has opened its storage and is ready for work.

    This happens in the server before it accepts requests, and in every CLI
    command that opens the database.

    :param runtime: the :class:`chatwright.runtime.Runtime` that started.
    """


@hookspec
def shutdown(runtime: Runtime) -> None:
    """Called when a runtime is about to close its storage.

    :param runtime: the :class:`chatwright.runtime.Runtime` that is stopping.
    """


@hookspec
def session_deactivated(session: ChatSession, reason: str) -> None:
    """Called after a chat session was deactivated.

    :param session: the session as it was stored after deactivation.
    :param reason: ``"client"`` when the client closed it, ``"idle"`` when
        the sweeper found it idle longer than ``sessions.idle_timeout``.
    """


@hookspec
def executor_evicted(key: str, reason: str) -> None:
    """Called after a built agent was dropped from the executor cache.

    :param key: the name of the agent whose build was dropped (one build serves
        every user of an agent; the key used to be ``(user_id, agent_name)``).
    :param reason: why it was dropped: ``"capacity"`` (beyond ``cache.max_entries``),
        ``"idle-session"`` (no user of the agent has an active session left),
        ``"ttl"`` (unused for longer than ``cache.ttl``), ``"config-changed"``
        (the agent or one of its tool rows changed), or another policy's own
        word (``"s3fifo"``).
    """


@hookspec
def before_write(call: WriteCall) -> str | None:
    """Called before a tool that writes runs (after any approval); may veto it.

    Return a reason (a short sentence for the user and the model) to refuse the
    call: the tool does not run, the model gets ``refused: <reason>`` as the
    tool's result, and the audit log records the call as ``vetoed``. Return
    None to let it run. Every implementation is called; the first reason wins.
    A plugin that raises vetoes too (a policy that cannot decide must not let
    the write through), with its error as the reason.

    :param call: the user, agent, chat, turn, tool row and arguments, and the
        approval it runs under (``auto`` or ``approved`` with who decided).
    """


@hookspec
def after_write(call: WriteCall, outcome: WriteOutcome) -> None:
    """Called after a tool that writes ran, was vetoed, or failed.

    :param call: as for ``before_write``.
    :param outcome: ``ok``, the tool's reply as the model reads it, and
        ``vetoed`` when a ``before_write`` refused it.
    """
