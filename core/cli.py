"""The ``chatwright`` command-line runner.

The root group loads plugins (so they can add commands through
``register_commands``) but imports nothing heavy: settings, storage and models
are imported inside the commands that need them, which keeps ``chatwright
--help`` fast. Every :class:`~chatwright.errors.ChatwrightError` is printed as
one ``Error: …`` line with exit status 1; an unexpected exception is too,
unless ``CHATWRIGHT_DEBUG=1`` asks for the traceback.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from chatwright import __version__
from chatwright.errors import ChatwrightError, InvalidInputError, NotFoundError
from chatwright.registry import Plugins, env_flag

if TYPE_CHECKING:
    from chatwright.runtime import Runtime
    from chatwright.settings import Settings

T = TypeVar("T")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

CONFIG_TEMPLATE = """\
# chatwright configuration. Every key can also be set with an environment
# variable: [storage] url -> CHATWRIGHT_STORAGE__URL. See `chatwright config show`.

[storage]
backend = "sql"
# SQLite file in this directory; postgresql://user@host:5432/dbname for PostgreSQL.
url = "sqlite+aiosqlite:///chatwright.db"

[models]
# Model given to agents created without one. `offline` needs no key and no network.
default = "offline:assistant"
"""


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

    def runtime(self) -> Runtime:
        from chatwright.runtime import Runtime

        return Runtime(self.settings, self.plugins)

    def run(self, work: Callable[[Runtime], Awaitable[T]], *, upgrade: bool = False) -> T:
        """Start a runtime, run ``work`` with it, close it."""

        async def main() -> T:
            runtime = self.runtime()
            await runtime.start(upgrade=upgrade)
            try:
                return await work(runtime)
            finally:
                await runtime.close()

        return run_async(main())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # not at module level: `chatwright --help` never needs it

    return asyncio.run(coro)


class ChatwrightGroup(click.Group):
    """The root group: user-facing errors become one line and exit status 1."""

    plugins: Plugins | None = None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatwrightError as exc:
            raise click.ClickException(str(exc)) from None
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


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def echo_list(
    rows: Sequence[dict[str, Any]],
    *,
    as_json: bool,
    empty: str,
    headers: Sequence[str],
    cells: Callable[[dict[str, Any]], Sequence[Any]],
) -> None:
    """A list command's output: JSON, a message when empty, or a table."""
    if as_json:
        echo_json(list(rows))
    elif not rows:
        click.echo(empty)
    else:
        echo_table(headers, [cells(r) for r in rows])


def yes_no(value: object) -> str:
    return "yes" if value else "no"


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
    # A new context per invocation: nothing leaks from one run of the group to the next.
    ctx.obj = app = AppContext(plugins if plugins is not None else Plugins.load(), config)
    if database:
        app.overrides["storage"] = {"url": database}


# -- init -------------------------------------------------------------------


@cli.command()
@click.option(
    "--example", is_flag=True, help="Also create the example tables and the 'assistant' agent."
)
@pass_app
def init(app: AppContext, example: bool) -> None:
    """Create the settings file and the database schema (safe to run again)."""
    path = Path(app.config) if app.config else Path("chatwright.toml")
    if not path.exists():
        path.write_text(CONFIG_TEMPLATE, encoding="utf-8")
        click.echo(f"Wrote {path}")
        app.config = str(path)

    async def work(runtime: Runtime) -> None:
        storage = runtime.storage
        revision = await storage.current_revision()
        click.echo(f"Database {storage.description} is at revision {revision}")
        if not example:
            return
        from chatwright import example as seed_example

        created = await seed_example.seed(storage, runtime.settings.models.default)
        if created:
            click.echo("Created " + ", ".join(created))
        else:
            click.echo(
                f"The example (agent {seed_example.AGENT!r}) is already there; left as it is"
            )

    app.run(work, upgrade=True)


# -- plugins ----------------------------------------------------------------


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the bundled plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def plugins_command(app: AppContext, show_all: bool, as_json: bool) -> None:
    """List installed plugins, the hooks they implement and load errors."""
    infos = app.plugins.infos(include_bundled=show_all)
    if as_json:
        echo_json([i.as_dict() for i in infos])
        return
    if not infos:
        click.echo("No plugins installed (bundled ones are shown with --all).")
        return
    echo_table(
        ["name", "version", "bundled", "hooks / error"],
        [
            (i.name, i.version or "-", "yes" if i.bundled else "no", i.error or ", ".join(i.hooks))
            for i in infos
        ],
    )


# -- config -----------------------------------------------------------------


@cli.group()
def config() -> None:
    """Inspect settings."""


def _redacted(settings: Settings) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    def hide(value: str) -> str:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:
            return "<unparseable URL hidden>"

    # SecretStr values (a plugin's too) dump as "**********"; URLs may hold a password.
    data = settings.model_dump(mode="json")
    data["storage"]["url"] = hide(settings.storage.url)
    for name, values in data.items():
        for key, value in values.items():
            if name != "plugins" and isinstance(value, str) and "://" in value:
                values[key] = hide(value)
    secret_words = ("password", "secret", "token", "key")
    for section in data.get("plugins", {}).values():
        for key, value in section.items():
            if any(word in key.lower() for word in secret_words):
                section[key] = "**********"
            elif isinstance(value, str) and "://" in value:
                section[key] = hide(value)
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps("" if value is None else str(value))


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def config_show(app: AppContext, as_json: bool) -> None:
    """Print the effective settings, secrets redacted."""
    settings = app.settings
    data = _redacted(settings)
    if as_json:
        echo_json(data)
        return
    source = settings.config_file or "none (defaults and environment)"
    click.echo(f"# settings file: {source}")
    plugin_sections = data.pop("plugins", {})
    sections = [*data.items(), *((f"plugins.{n}", v) for n, v in plugin_sections.items())]
    for section, values in sections:
        click.echo(f"\n[{section}]")
        for key, value in values.items():
            if value is None:
                click.echo(f"# {key} is not set")
            else:
                click.echo(f"{key} = {_toml_value(value)}")


# -- db ---------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Migrate the database to the newest schema revision."""

    async def work(runtime: Runtime) -> None:
        revision = await runtime.storage.current_revision()
        click.echo(f"Database {runtime.storage.description} is at revision {revision} (newest)")

    app.run(work, upgrade=True)


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def db_current(app: AppContext, as_json: bool) -> None:
    """Show the schema revision of the database and the newest one."""
    from chatwright.runtime import Runtime

    async def work() -> dict[str, Any]:
        storage = Runtime(app.settings, app.plugins).build_storage()
        try:
            current = await storage.current_revision()
        finally:
            await storage.close()
        head = storage.head_revision()
        return {
            "database": storage.description,
            "current": current,
            "head": head,
            "up_to_date": current == head,
        }

    info = run_async(work())
    if as_json:
        echo_json(info)
        return
    state = "up to date" if info["up_to_date"] else "run `chatwright db upgrade`"
    click.echo(f"{info['database']}: revision {info['current']} (newest {info['head']}; {state})")


# -- agents -----------------------------------------------------------------


@cli.group()
def agents() -> None:
    """List, show, add and change agents."""


def _parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--setting {pair!r} is not KEY=VALUE (e.g. temperature=0.2)")
        try:
            result[key.strip()] = json.loads(raw)
        except ValueError:
            result[key.strip()] = raw
    return result


def agent_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--prompt", help="System prompt; may use {memory} and {custom_instructions}."),
        click.option(
            "--prompt-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Read the system prompt from a file.",
        ),
        click.option("--model", help="Model spec provider:name (e.g. openai:gpt-4o-mini)."),
        click.option(
            "--setting",
            "settings_",
            multiple=True,
            metavar="KEY=VALUE",
            help="Model setting (repeatable), e.g. temperature=0.2 or base_url=http://…; "
            "`set` merges them into the agent's settings, KEY=null removes one.",
        ),
        click.option("--history-window", type=int, help="Messages of history sent to the model."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _agent_fields(
    prompt: str | None,
    prompt_file: Path | None,
    model: str | None,
    settings_: Sequence[str],
    history_window: int | None,
) -> dict[str, Any]:
    if prompt is not None and prompt_file is not None:
        raise InvalidInputError("give --prompt or --prompt-file, not both")
    fields: dict[str, Any] = {}
    if prompt_file is not None:
        fields["system_prompt"] = prompt_file.read_text(encoding="utf-8")
    elif prompt is not None:
        fields["system_prompt"] = prompt
    if model is not None:
        fields["model"] = model
    if settings_:
        fields["model_settings"] = _parse_settings(settings_)
    if history_window is not None:
        fields["history_window"] = history_window
    return fields


@agents.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def agents_list(app: AppContext, as_json: bool) -> None:
    """List agents."""
    from chatwright.stores import as_dict

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        return [as_dict(a) for a in await runtime.storage.agents.list()]

    echo_list(
        app.run(work),
        as_json=as_json,
        empty="No agents yet; add one with `chatwright agents add NAME` "
        "or `chatwright init --example`.",
        headers=["name", "model", "history", "updated"],
        cells=lambda r: (r["name"], r["model"], r["history_window"], r["updated_at"][:19]),
    )


@agents.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def agents_show(app: AppContext, name: str, as_json: bool) -> None:
    """Show one agent and its tool rows."""
    from chatwright.stores import as_dict

    async def work(runtime: Runtime) -> dict[str, Any]:
        agent = await runtime.storage.agents.get(name)
        if agent is None:
            raise NotFoundError(f"no agent named {name!r}; see `chatwright agents list`")
        data = as_dict(agent)
        data["tools"] = [
            {
                k: v
                for k, v in as_dict(t).items()
                if k in {"id", "name", "type", "is_active", "position"}
            }
            for t in await runtime.storage.tools.list(name)
        ]
        return data

    data = app.run(work)
    if as_json:
        echo_json(data)
        return
    for key in ("name", "model", "history_window", "created_at", "updated_at"):
        click.echo(f"{key}: {data[key]}")
    click.echo(f"model_settings: {json.dumps(data['model_settings'])}")
    click.echo("system_prompt:")
    for line in data["system_prompt"].splitlines() or [""]:
        click.echo(f"  {line}")
    click.echo(f"tools: {len(data['tools'])}")
    for t in data["tools"]:
        state = "" if t["is_active"] else " (disabled)"
        click.echo(f"  #{t['id']} {t['name']} [{t['type']}]{state}")


@agents.command("add")
@click.argument("name")
@agent_options
@pass_app
def agents_add(
    app: AppContext,
    name: str,
    prompt: str | None,
    prompt_file: Path | None,
    model: str | None,
    settings_: Sequence[str],
    history_window: int | None,
) -> None:
    """Add an agent (model defaults to the models.default setting)."""
    from chatwright.agents import validate_agent

    fields = _agent_fields(prompt, prompt_file, model, settings_, history_window)
    fields.setdefault("model", app.settings.models.default)
    valid = validate_agent(name, fields)
    valid.pop("name")

    async def work(runtime: Runtime) -> None:
        agent = await runtime.storage.agents.create(name, **valid)
        click.echo(f"Added agent {agent.name!r} (model {agent.model})")

    app.run(work)


@agents.command("set")
@click.argument("name")
@agent_options
@pass_app
def agents_set(
    app: AppContext,
    name: str,
    prompt: str | None,
    prompt_file: Path | None,
    model: str | None,
    settings_: Sequence[str],
    history_window: int | None,
) -> None:
    """Change an agent's prompt, model, model settings or history window.

    --setting values are merged into the agent's model settings; KEY=null removes KEY.
    """
    from chatwright.agents import validate_agent

    fields = _agent_fields(prompt, prompt_file, model, settings_, history_window)
    if not fields:
        raise click.UsageError(
            "nothing to change; give --prompt, --prompt-file, --model, --setting "
            "or --history-window"
        )
    valid = validate_agent(name, fields, partial=True)

    async def work(runtime: Runtime) -> None:
        changes = dict(valid)
        if "model_settings" in changes:
            current = await runtime.storage.agents.get(name)
            if current is None:
                raise NotFoundError(f"no agent named {name!r}; see `chatwright agents list`")
            stored = current.model_settings
            merged = dict(stored) if isinstance(stored, dict) else {}
            for key, value in changes["model_settings"].items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            changes["model_settings"] = merged
        agent = await runtime.storage.agents.update(name, **changes)
        click.echo(f"Updated agent {agent.name!r}: {', '.join(sorted(valid))}")

    app.run(work)


# -- chat -------------------------------------------------------------------

LOCAL_USER = "local"


def _show(message: Any, *, err: bool = True) -> None:
    """One line per tool call or tool result, as they happen."""
    from langchain_core.messages import AIMessage, ToolMessage

    if isinstance(message, AIMessage):
        for call in message.tool_calls:
            args = json.dumps(call["args"], ensure_ascii=False)
            click.secho(f"  → {call['name']} {args}", fg="cyan", err=err)
    elif isinstance(message, ToolMessage):
        text = message.text
        shown = text if len(text) <= 200 else text[:197] + "..."
        colour = "red" if message.status == "error" else "green"
        click.secho(f"  ← {shown}", fg=colour, err=err)


async def _pick_agent(runtime: Runtime, name: str | None) -> str:
    if name is not None:
        if await runtime.storage.agents.get(name) is None:
            raise NotFoundError(f"no agent named {name!r}; see `chatwright agents list`")
        return name
    names = [a.name for a in await runtime.storage.agents.list()]
    if len(names) == 1:
        return names[0]
    if "assistant" in names:
        return "assistant"
    if not names:
        raise NotFoundError("there are no agents; create one with `chatwright init --example`")
    raise InvalidInputError(f"which agent? give one of: {', '.join(names)}")


def _replay(messages: Sequence[Any]) -> None:
    from chatwright.history import to_model_input

    for message in to_model_input(messages):
        if message.type == "human":
            click.secho(f"you> {message.text}", dim=True)
        elif message.type == "ai" and message.text:
            click.secho(message.text, dim=True)


@cli.command()
@click.argument("agent", required=False)
@click.option("--chat-id", type=click.UUID, help="Resume this chat (default: your latest one).")
@click.option("--new", "new_chat", is_flag=True, help="Start a new chat.")
@click.option("--user", default=LOCAL_USER, show_default=True, help="Chat as this user id.")
@click.option("-m", "--message", help="Send one message, print the reply and exit.")
@pass_app
def chat(
    app: AppContext,
    agent: str | None,
    chat_id: uuid.UUID | None,
    new_chat: bool,
    user: str,
    message: str | None,
) -> None:
    """Chat with an agent in the terminal; history is kept in the database.

    Tool calls are shown as they happen (on standard error). With -m the reply
    alone goes to standard output, for scripts.
    """
    if chat_id is not None and new_chat:
        raise click.UsageError("give --chat-id or --new, not both")

    async def work(runtime: Runtime) -> None:
        name = await _pick_agent(runtime, agent)
        storage = runtime.storage
        if chat_id is not None and await storage.sessions.chat_owner(chat_id) is None:
            # The API lets clients name new chats; here a typo must not start one silently.
            raise NotFoundError(
                f"no chat {chat_id}; leave out --chat-id to resume your latest chat, or use --new"
            )
        session = await storage.sessions.open(
            user, name, chat_id=uuid.uuid4() if new_chat else chat_id
        )

        async def show(m: Any) -> None:
            _show(m)

        try:
            if message is not None:
                turn = await runtime.chat(user, name, session.chat_id, message, on_message=show)
                click.echo(turn.response)
                return
            await _interactive(runtime, user, name, session.chat_id, show)
        finally:
            from chatwright.sessions import deactivate

            await deactivate(runtime, user, session.id)

    app.run(work)


async def _interactive(
    runtime: Runtime, user: str, agent: str, chat_id: uuid.UUID, show: Any
) -> None:
    import asyncio
    import contextlib

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    recent = await runtime.storage.messages.window(user, chat_id, 10)
    click.echo(f"Chat {chat_id} with {agent!r} as {user!r}. Ctrl-D or 'exit' to leave.")
    _replay(recent)
    while True:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        if line.strip() in {"exit", "quit", "/exit", "/quit"}:
            return
        if not line.strip():
            continue
        try:
            turn = await runtime.chat(user, agent, chat_id, line, on_message=show)
        except ChatwrightError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            continue
        click.echo(turn.response)


# -- sessions ---------------------------------------------------------------


@cli.group()
def sessions() -> None:
    """List chat sessions and deactivate idle ones."""


@sessions.command("list")
@click.option("--user", help="Only this user's sessions.")
@click.option("--active/--inactive", "active", default=None, help="Only active (or inactive) ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def sessions_list(app: AppContext, user: str | None, active: bool | None, as_json: bool) -> None:
    """List sessions, most recently used first."""
    from chatwright.stores import as_dict

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        return [as_dict(s) for s in await runtime.storage.sessions.list(user, active=active)]

    echo_list(
        app.run(work),
        as_json=as_json,
        empty="No sessions.",
        headers=["id", "chat", "user", "agent", "active", "last seen"],
        cells=lambda r: (
            r["id"],
            r["chat_id"],
            r["user_id"],
            r["agent_name"],
            yes_no(r["is_active"]),
            r["updated_at"][:19],
        ),
    )


@sessions.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def sessions_sweep(app: AppContext, as_json: bool) -> None:
    """Run one sweeper pass: deactivate sessions idle longer than sessions.idle_timeout."""
    from chatwright.sessions import sweep

    async def work(runtime: Runtime) -> dict[str, Any]:
        report = await sweep(runtime)
        return {
            "skipped": report.skipped,
            "deactivated": [str(s.id) for s in report.deactivated],
            "active_keys": report.active_keys,
            "evicted": [[*k, reason] for k, reason in report.evicted],
        }

    result = app.run(work)
    if as_json:
        echo_json(result)
        return
    if result["skipped"]:
        click.echo("Another process is sweeping right now; nothing done.")
        return
    timeout = app.settings.sessions.idle_timeout
    click.echo(
        f"Deactivated {len(result['deactivated'])} session(s) idle for over {timeout:g} s; "
        f"{result['active_keys']} (user, agent) pair(s) still have an active session"
    )
    for session_id in result["deactivated"]:
        click.echo(f"  {session_id}")


# -- install / uninstall ------------------------------------------------------


def _pip(arguments: Sequence[str]) -> None:
    import subprocess

    command = [sys.executable, "-m", "pip", *arguments]
    click.echo("$ " + " ".join(command), err=True)
    code = subprocess.call(command)
    if code:
        raise click.ClickException(f"pip failed (exit status {code}); see its output above")


@cli.command()
@click.argument("packages", nargs=-1)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade the packages if installed.")
@click.option(
    "-e",
    "--editable",
    "editable",
    multiple=True,
    metavar="PATH",
    help="Install a local project in editable mode.",
)
def install(packages: tuple[str, ...], upgrade: bool, editable: tuple[str, ...]) -> None:
    """Install plugins (or any package) into the environment chatwright runs in.

    PACKAGES are what pip takes: names from an index, paths, URLs.
    """
    if not packages and not editable:
        raise click.UsageError("name at least one package, path or -e PATH")
    arguments = ["install"]
    if upgrade:
        arguments.append("--upgrade")
    for path in editable:
        arguments += ["--editable", path]
    _pip([*arguments, *packages])


@cli.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages: tuple[str, ...], yes: bool) -> None:
    """Uninstall packages from the environment chatwright runs in."""
    protected = {"chatwright"} & {p.lower() for p in packages}
    if protected:
        raise click.UsageError("uninstalling chatwright itself would remove this command; use pip")
    _pip(["uninstall", *(["--yes"] if yes else []), *packages])


# -- tools ------------------------------------------------------------------


@cli.group()
def tools() -> None:
    """List, add, check and disable the tool rows of agents."""


def _tool_definition(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must hold one JSON object (a tool row)")
    unknown = sorted(
        set(data) - {"name", "type", "description", "config", "is_active", "position", "order"}
    )
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown field {', '.join(map(repr, unknown))}; a tool row has "
            "name, type, description, config, is_active and position"
        )
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise InvalidInputError(f'{source}: the tool needs a "name"')
    checks = {
        "type": (str, "a string"),
        "description": (str, "a string"),
        "is_active": (bool, "true or false"),
    }
    for key, (kind, words) in checks.items():
        if key in data and not isinstance(data[key], kind):
            raise InvalidInputError(f"{source}: {key} must be {words}, not {data[key]!r}")
    for key in ("position", "order"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int)):
            raise InvalidInputError(f"{source}: {key} must be an integer, not {data[key]!r}")
    return data


@tools.command("list")
@click.option("--agent", help="Only this agent's tools.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def tools_list(app: AppContext, agent: str | None, as_json: bool) -> None:
    """List tool rows (all agents, or one)."""
    from chatwright.stores import as_dict

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        names = {a.id: a.name for a in await runtime.storage.agents.list()}
        if agent is not None and agent not in names.values():
            raise NotFoundError(f"no agent named {agent!r}; see `chatwright agents list`")
        return [
            {"agent": names.get(t.agent_id), **as_dict(t)}
            for t in await runtime.storage.tools.list(agent)
        ]

    echo_list(
        app.run(work),
        as_json=as_json,
        empty="No tools; add one with `chatwright tools add --agent NAME --file tool.json`.",
        headers=["id", "agent", "name", "type", "active", "position"],
        cells=lambda r: (
            r["id"],
            r["agent"],
            r["name"],
            r["type"],
            yes_no(r["is_active"]),
            r["position"],
        ),
    )


@tools.command("add")
@click.option("--agent", required=True, help="The agent the tool belongs to.")
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    default="-",
    show_default="standard input",
    help="JSON of the row: {name, type, description, config}.",
)
@pass_app
def tools_add(app: AppContext, agent: str, file: Any) -> None:
    """Validate a tool row against its type and the database, then insert it."""
    from datetime import UTC, datetime

    from chatwright.stores import ToolRow
    from chatwright.tools import ToolContext, build_row

    source = "standard input" if file.name == "<stdin>" else file.name
    data = _tool_definition(file.read(), source)
    position = data.get("position", data.get("order"))

    async def work(runtime: Runtime) -> None:
        storage = runtime.storage
        found = await storage.agents.get(agent)
        if found is None:
            raise NotFoundError(f"no agent named {agent!r}; see `chatwright agents list`")
        now = datetime.now(UTC)
        candidate = ToolRow(
            id=0,
            agent_id=found.id,
            name=data["name"],
            type=str(data.get("type", "crud")),
            description=str(data.get("description") or ""),
            config=data.get("config", {}),
            is_active=bool(data.get("is_active", True)),
            position=int(position) if isinstance(position, int) else 0,
            created_at=now,
            updated_at=now,
        )
        context = ToolContext(agent, storage, runtime.settings)
        report = await build_row(candidate, agent, runtime.plugins, context)
        if not report.ok:
            problems = "; ".join(p.brief() for p in report.problems)
            raise InvalidInputError(f"tool {candidate.name!r} not added: {problems}")
        row = await storage.tools.add(
            agent,
            candidate.name,
            type=candidate.type,
            config=candidate.config,
            description=candidate.description,
            is_active=candidate.is_active,
            position=position if isinstance(position, int) else None,
        )
        click.echo(f"Added tool {row.name!r} (row {row.id}) to agent {agent!r}")

    app.run(work)


@tools.command("check")
@click.option("--agent", help="Only this agent's tools.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def tools_check(app: AppContext, agent: str | None, as_json: bool) -> None:
    """Validate every tool row against its type and the live schema (exit 1 if any is bad)."""
    from chatwright.tools import check_tools

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        if agent is not None and await runtime.storage.agents.get(agent) is None:
            raise NotFoundError(f"no agent named {agent!r}; see `chatwright agents list`")
        reports = await check_tools(runtime.storage, runtime.settings, runtime.plugins, agent)
        return [r.as_dict() | {"active": r.row.is_active} for r in reports]

    reports = app.run(work)
    if as_json:
        echo_json([{k: v for k, v in r.items() if k != "active"} for r in reports])
    elif not reports:
        click.echo("No tool rows to check.")
    for r in [] if as_json else reports:
        state = "ok  " if r["ok"] else "BAD "
        off = "" if r["active"] else " (disabled)"
        click.echo(f"{state} #{r['id']} {r['agent']}/{r['name']} [{r['type']}]{off}")
        for problem in r["problems"]:
            click.echo(f"       {problem}")
    bad = [r for r in reports if not r["ok"]]
    if bad:
        if not as_json:
            click.echo(f"{len(bad)} of {len(reports)} tool rows have problems", err=True)
        raise SystemExit(1)


def _set_active(app: AppContext, tool_id: int, active: bool) -> None:
    async def work(runtime: Runtime) -> None:
        row = await runtime.storage.tools.set_active(tool_id, active)
        click.echo(f"Tool {row.name!r} (row {row.id}) is now {'enabled' if active else 'disabled'}")

    app.run(work)


@tools.command("disable")
@click.argument("tool_id", type=int, metavar="ID")
@pass_app
def tools_disable(app: AppContext, tool_id: int) -> None:
    """Stop loading a tool row (sets is_active = false; nothing is deleted)."""
    _set_active(app, tool_id, False)


@tools.command("enable")
@click.argument("tool_id", type=int, metavar="ID")
@pass_app
def tools_enable(app: AppContext, tool_id: int) -> None:
    """Load a disabled tool row again."""
    _set_active(app, tool_id, True)


def build_cli(plugins: Plugins | None = None) -> click.Group:
    """The root group with plugin commands added; ``plugins`` defaults to entry points."""
    plugins = plugins if plugins is not None else Plugins.load()
    # A fresh group each time, so plugin commands never leak between builds.
    root = ChatwrightGroup(
        name="chatwright",
        commands=dict(cli.commands),
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
