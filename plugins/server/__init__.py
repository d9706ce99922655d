"""The ``serve`` command: the HTTP API, streaming turns and the web chat page.

FastAPI and uvicorn are imported when the command runs, never for ``--help``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from chatwright import hookimpl

HTTP_PARSER = "h11"
"""uvicorn's HTTP/1.1 implementation, whichever others are installed: h11 answers 400 to a
request head still incomplete past 16 KB (uvicorn's ``h11_max_incomplete_event_size``),
where httptools reads headers of any size into memory."""

if TYPE_CHECKING:
    from chatwright import SettingsRegister
    from chatwright.cli import AppContext
    from chatwright.runtime import Runtime


@hookimpl
def register_settings(register: SettingsRegister) -> None:
    from chatwright.plugins.server.settings import ServerSettings

    register("server", ServerSettings)


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command()
    @click.option("--host", help="Address to bind (server.host; default 127.0.0.1).")
    # Bounded as the settings are, so that a bad value is named as the option given.
    @click.option("--port", type=click.IntRange(0, 65535), help="Port (server.port; default 8000).")
    @click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="Server processes (server.workers; default 1).",
    )
    @click.pass_obj
    def serve(app: AppContext, host: str | None, port: int | None, workers: int | None) -> None:
        """Serve the JSON API and the web chat page (migrates the database first)."""
        serve_app(app, host, port, workers)


async def _ready(runtime: Runtime) -> None:
    await runtime.storage.ping()


def serve_app(app: AppContext, host: str | None, port: int | None, workers: int | None) -> None:
    import json
    import os

    import uvicorn

    from chatwright.plugins.server import shutdown
    from chatwright.plugins.server.app import create_app
    from chatwright.plugins.server.auth import check_bind
    from chatwright.plugins.server.settings import ServerSettings

    server: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None
    }
    if server:
        app.overrides["server"] = {**app.overrides.get("server", {}), **server}
    settings = app.settings
    app.check_named_settings()
    config = settings.section(ServerSettings)
    check_bind(settings, config.host)
    _check_port(config.host, config.port)
    if config.workers > 1 and settings.storage.url.startswith("sqlite"):
        from chatwright.errors import SettingsError

        raise SettingsError(
            "server.workers > 1 needs PostgreSQL (storage.url = postgresql://…): SQLite "
            "has no cross-process turn locks or change notifications"
        )
    # The database reached and brought up to date here first, as each server process
    # does as it starts: a database away, or a migration refused, is then one line and
    # exit status 1, not the server's start-up traceback (which follows a service
    # manager restarting it while PostgreSQL restarts, into its log, again and again).
    app.run(_ready, upgrade=True)
    click.echo(
        f"chatwright {settings.storage.backend} storage, {config.auth} auth: "
        f"http://{config.host}:{config.port}/",
        err=True,
    )
    if config.workers > 1:
        import tempfile

        from chatwright.plugins.server.metrics import MULTIPROCESS_DIR

        # Each worker process builds its own app from the same settings.
        os.environ["CHATWRIGHT_SERVE_OVERRIDES"] = json.dumps(app.overrides)
        if app.config:
            os.environ["CHATWRIGHT_CONFIG"] = app.config
        # The workers' metrics are added up from files here; a fresh directory, so that
        # no earlier run's counts are added in.
        with tempfile.TemporaryDirectory(prefix="chatwright-metrics-") as metrics_dir:
            os.environ[MULTIPROCESS_DIR] = metrics_dir
            try:
                shutdown.run(
                    uvicorn.Config(
                        "chatwright.plugins.server.app:app_from_environment",
                        factory=True,
                        http=HTTP_PARSER,
                        host=config.host,
                        port=config.port,
                        workers=config.workers,
                        timeout_keep_alive=config.timeout_keep_alive,
                    ),
                    config.shutdown_timeout,
                )
            finally:
                del os.environ[MULTIPROCESS_DIR]
        return
    shutdown.run(
        uvicorn.Config(
            create_app(settings, app.plugins),
            http=HTTP_PARSER,
            host=config.host,
            port=config.port,
            timeout_keep_alive=config.timeout_keep_alive,
        ),
        config.shutdown_timeout,
    )


def _check_port(host: str, port: int) -> None:
    """One line for an address in use, before uvicorn starts and logs a failed start."""
    import socket

    from chatwright.errors import SettingsError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise SettingsError(f"server.host {host!r} does not resolve ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by the last run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise SettingsError(
                f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses the port "
                "or pick another with --port"
            ) from None
