"""The ``chatwright`` command-line runner: the root group and what every command shares.

The root group loads plugins, and every command comes from one through
``register_commands``: the built-in ones from the modules of
:mod:`chatwright.commands`, which the core registers itself. Nothing heavy is
imported here or there: settings, storage and models are imported inside the
commands that need them, which keeps ``chatwright --help`` fast.

Every :class:`~chatwright.errors.ChatwrightError` is printed as one ``Error: …``
line with exit status 1; an unexpected exception is too, unless
``CHATWRIGHT_DEBUG=1`` asks for the traceback. An error written for a server's
operator ("the server log has the details") is pointed at what the terminal
shows instead: the warnings chatwright logs are printed on standard error,
above the error, one line each (:class:`TerminalWarnings`; a failure's traceback
too under ``CHATWRIGHT_DEBUG=1``).

Commands that do not migrate refuse a SQLite database file that does not
exist rather than create an empty one (:data:`READ_ONLY_COMMANDS` lists those
that only read).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from chatwright import __version__
from chatwright.errors import ChatwrightError, StorageError, one_line
from chatwright.registry import Plugins, env_flag

if TYPE_CHECKING:
    from chatwright.runtime import Runtime
    from chatwright.settings import Settings

T = TypeVar("T")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

READ_ONLY_COMMANDS = frozenset(
    {
        "agents list",
        "agents show",
        "agents export",
        "tools list",
        "tools check",
        "sessions list",
        "chats list",
        "chats show",
        "pending list",
        "audit list",
        "usage",
        "budgets list",
        "budgets show",
        "users export",
    }
)
"""The built-in commands that only read the database (by their words after ``chatwright``)."""

SERVER_LOG = "the server log"
# Where the details of such an error are in a terminal: chatwright's warnings go to
# standard error (TerminalWarnings, or Python's last-resort handler under `serve`).
TERMINAL_LOG = "the warning printed above"


def for_terminal(message: str) -> str:
    """``message`` as the CLI shows it: pointing at the warnings printed on standard error
    where it points an operator at the server's log."""
    return message.replace(SERVER_LOG, TERMINAL_LOG)


def command_path(ctx: click.Context | None = None) -> str:
    """The words of the running command after ``chatwright`` (``agents list``)."""
    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.command.name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


@dataclass
class AppContext:
    """What every command receives: plugins now, settings and runtime on demand."""

    plugins: Plugins
    config: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from chatwright.settings import load_settings

            self._settings = load_settings(self.config, self.overrides, self.plugins)
        return self._settings

    def check_named_settings(self) -> None:
        """Resolve every setting that names a plugin's registration (a typo is one error).

        The runtime resolves them when it starts; ``serve`` starts it inside the
        server's start-up, where a failure is a traceback, so it calls this first.
        """
        settings = self.settings
        get = self.plugins.get
        get("register_storage_backends", settings.storage.backend, setting="storage.backend")
        get("register_eviction_policies", settings.cache.policy, setting="cache.policy")
        if settings.sessions.store != "default":
            get("register_session_stores", settings.sessions.store, setting="sessions.store")

    def runtime(self) -> Runtime:
        from chatwright.runtime import Runtime

        return Runtime(self.settings, self.plugins)

    def missing_database(self) -> Path | None:
        """The file of a SQLite ``storage.url`` when it does not exist, else None.

        Opening it would create an empty database file; a command that only reads
        calls :meth:`require_database` first.
        """
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if self.settings.storage.backend != "sql":
            return None  # another backend may not read storage.url at all
        try:
            url = make_url(self.settings.storage.url)
        except (ArgumentError, ValueError):  # a port that is not a number: ValueError
            return None  # the storage backend says what is wrong with it
        if url.get_backend_name() != "sqlite":
            return None
        database = sqlite_file(url.database, dict(url.query))
        if database is None:
            return None  # in memory
        if "\x00" in database:
            return None  # not a file name: the storage says so when it opens it
        path = Path(database)
        return None if path.exists() else path

    def in_memory(self) -> bool:
        """Whether ``storage.url`` names an in-memory SQLite database."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if self.settings.storage.backend != "sql":
            return False
        try:
            url = make_url(self.settings.storage.url)
        except (ArgumentError, ValueError):
            return False
        if url.get_backend_name() != "sqlite":
            return False
        return sqlite_file(url.database, dict(url.query)) is None

    def require_database(self) -> None:
        """Refuse, without creating it, a SQLite database file that does not exist.

        :raises StorageError: naming the file and the commands that create it.
        """
        settings = self.settings
        # A backend that is not available is the first thing to say.
        self.plugins.get(
            "register_storage_backends", settings.storage.backend, setting="storage.backend"
        )
        if self.in_memory():
            raise StorageError(
                "storage.url names an in-memory SQLite database, which each command "
                "starts empty and forgets when it ends; point --database or storage.url "
                "at a file (sqlite:///chatwright.db) or a database server"
            )
        path = self.missing_database()
        if path is not None:
            raise StorageError(
                f"there is no database at {os.path.abspath(path)} (the SQLite file of "
                "storage.url does not exist); create it with `chatwright init` (or "
                "`chatwright db upgrade`, which writes no settings file), or point "
                "--database or storage.url at an existing database"
            )

    def run(self, work: Callable[[Runtime], Awaitable[T]], *, upgrade: bool = False) -> T:
        """Start a runtime, run ``work`` with it, close it.

        A command that does not migrate (``upgrade``) is refused on a SQLite file
        that does not exist (:meth:`require_database`) instead of creating it: it
        would refuse the empty database it made anyway.
        """
        if not upgrade:
            self.require_database()

        async def main() -> T:
            runtime = self.runtime()
            await runtime.start(upgrade=upgrade)
            try:
                return await work(runtime)
            finally:
                await runtime.close()

        return run_async(main())


def sqlite_file(database: str | None, query: dict[str, Any]) -> str | None:
    """The file a SQLite URL's database names, or None for an in-memory database.

    With ``uri=true``, a ``file:`` URI is read as SQLite reads it: its path, and
    ``mode=memory`` for a database in memory.
    """
    if not database or database == ":memory:":
        return None
    if not database.startswith("file:") or str(query.get("uri", "")).lower() not in (
        "true",
        "1",
    ):
        return database
    if str(query.get("mode", "")).lower() == "memory" or str(query.get("vfs", "")) == "memdb":
        return None
    path = database[len("file:") :].split("?", 1)[0].split("#", 1)[0]
    if path.startswith("//"):  # an authority (empty or localhost), then the path
        _, slash, rest = path[2:].partition("/")
        path = slash + rest
    return None if path in ("", ":memory:") else path


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # not at module level: `chatwright --help` never needs it

    return asyncio.run(coro)


class ChatwrightGroup(click.Group):
    """The root group: user-facing errors become one line and exit status 1."""

    plugins: Plugins | None = None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Perhaps a command of a plugin that is not loaded: say why, and offer only a
        # near spelling (click offers anything half alike: 'users' for 'serve').
        name = args[0] if args else ""
        why = self.plugins.not_loaded("commands") if self.plugins is not None else ""
        missing = bool(name) and not name.startswith("-") and self.get_command(ctx, name) is None
        if missing and why and not ctx.resilient_parsing:  # (not while completing)
            from difflib import get_close_matches

            near = get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.75)
            meant = f" Did you mean {near[0]!r}?" if near else ""
            ctx.fail(f"No such command {name!r}{why}.{meant}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatwrightError as exc:
            raise click.ClickException(for_terminal(str(exc))) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            # `chatwright tools list | head`: the reader left; stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise SystemExit(1) from None
        except Exception as exc:
            if env_flag("CHATWRIGHT_DEBUG"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} "
                "(run again with CHATWRIGHT_DEBUG=1 to see the traceback, and please report it)"
            ) from None


pass_app = click.make_pass_decorator(AppContext)


@click.group(cls=ChatwrightGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="chatwright")
@click.option(
    "--config",
    "config",
    metavar="PATH",
    envvar="CHATWRIGHT_CONFIG",
    help="Settings file (default: ./chatwright.toml when present).",
)
@click.option(
    "--database",
    metavar="URL",
    help="Database URL; overrides storage.url (e.g. postgresql://user@host/db).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None, database: str | None) -> None:
    """chatwright: LLM chat agents configured in a database.

    Start with `chatwright init --example`, then `chatwright agents list`.
    """
    group = ctx.command
    plugins = group.plugins if isinstance(group, ChatwrightGroup) else None
    if ctx.invoked_subcommand != "serve":  # a server's log keeps its tracebacks
        terminal_warnings()
    # A new context per invocation: nothing leaks from one run of the group to the next.
    ctx.obj = app = AppContext(plugins if plugins is not None else Plugins.load(), config)
    if database:
        app.overrides["storage"] = {"url": database}


class TerminalWarnings(logging.Handler):
    """chatwright's warnings as a command prints them on standard error: one line each,
    a failure's exception on it (``: RuntimeError: boom``) rather than its traceback,
    which ``CHATWRIGHT_DEBUG=1`` adds back. Written to the standard error of the moment
    (a test's runner replaces it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from chatwright.commands.output import printable

            text = printable(" ".join(record.getMessage().split()))
            error = record.exc_info[1] if record.exc_info else None
            if error is not None and env_flag("CHATWRIGHT_DEBUG"):
                text = logging.Formatter().format(record)
            elif error is not None:
                text += f": {printable(one_line(error))} (CHATWRIGHT_DEBUG=1 shows where)"
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def terminal_warnings() -> None:
    """Print chatwright's warnings as :class:`TerminalWarnings` does, unless logging is set
    up already (by an application that runs the commands, say); once per process."""
    logger = logging.getLogger("chatwright")
    if logger.handlers or logging.getLogger().handlers:
        return
    logger.addHandler(TerminalWarnings())


def build_cli(plugins: Plugins | None = None) -> click.Group:
    """The root group with every command added; ``plugins`` defaults to entry points.

    The built-in commands come first, from the built-in plugins ``plugins``
    always holds, so no installed plugin can take one of their names.
    """
    plugins = plugins if plugins is not None else Plugins.load()
    # A fresh group each time, so plugin commands never leak between builds.
    root = ChatwrightGroup(
        name="chatwright",
        params=list(cli.params),
        callback=cli.callback,
        help=cli.help,
        context_settings=CONTEXT_SETTINGS,
    )
    root.plugins = plugins
    plugins.add_commands(root)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    try:
        root = build_cli()
    except ChatwrightError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    root.main(args=list(argv) if argv is not None else None, prog_name="chatwright")
