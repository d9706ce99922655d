"""A PgBouncer of the test run's own, in transaction mode, in front of the test server.

``CHATWRIGHT_TEST_PGBOUNCER`` (read once, at import) says whether chatwright reaches
the PostgreSQL test server through one:

``0`` or unset
    directly, as a deployment without a pooler does;
``1`` (or ``transaction``)
    through PgBouncer with ``storage.pooler = "transaction"`` and no
    ``storage.direct_url``: config changes reach other processes by the per-turn
    version check only, as nothing can LISTEN through a transaction pooler;
``direct_url``
    the same, with ``storage.direct_url`` set to the real server, so that
    LISTEN/NOTIFY works as well.

The run starts its own ``pgbouncer`` (not a system service) on a free loopback
port, with a configuration written to a temporary directory: ``pool_mode =
transaction``, every database forwarded to the test server, ``auth_type =
trust`` (the test server trusts loopback connections; roles a test creates are
looked up through ``auth_user``), and an admin console for ``SHOW POOLS``. It is
stopped at the end of the run. Creating and dropping databases and roles, and
the checks a test makes as the superuser, stay direct.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

ENV = "CHATWRIGHT_TEST_PGBOUNCER"
MODES: dict[str, str | None] = {
    "": None,
    "0": None,
    "1": "transaction",
    "transaction": "transaction",
    "direct_url": "direct_url",
}


def mode_from(value: str) -> str | None:
    """The mode ``CHATWRIGHT_TEST_PGBOUNCER=value`` asks for (None: no pooler)."""
    key = value.strip().lower()
    if key not in MODES:
        choices = ", ".join(repr(k) for k, mode in MODES.items() if mode)
        raise ValueError(f"{ENV}={value!r} is not one of {choices} (or 0 / unset for none)")
    return MODES[key]


try:
    MODE = mode_from(os.environ.get(ENV, ""))
    MODE_ERROR: str | None = None
except ValueError as _error:
    # The conftest refuses to run with it (a usage error rather than an import traceback).
    MODE, MODE_ERROR = None, str(_error)

# What PgBouncer does, on top of its defaults: short waits, so that an outage a test
# makes is reported, and over, within the test's patience, and enough room for the concurrent
# transactions of the busiest test (the server itself is shared, so not too much).
SETTINGS = {
    "pool_mode": "transaction",
    "default_pool_size": "20",
    "max_client_conn": "1000",
    # After a failed server login PgBouncer refuses clients for this long; a test that
    # restores a database it cut expects the very next request to get through.
    "server_login_retry": "0",
    "query_wait_timeout": "20",
    "server_connect_timeout": "5",
    "application_name_add_host": "0",
}


_running: list[PgBouncer] = []


def running() -> PgBouncer | None:
    """The run's PgBouncer, once started (see ``tests/conftest.py``); None without one."""
    return _running[0] if _running else None


def started(bouncer: PgBouncer) -> None:
    """Make ``bouncer`` the run's (the conftest calls this once it is up)."""
    _running[:] = [bouncer]


def stopped() -> None:
    _running.clear()


def binary() -> str | None:
    """The ``pgbouncer`` program (Debian installs it to /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


class PgBouncer:
    """One ``pgbouncer`` process in transaction mode in front of ``server``.

    :param server: any URL of the test server (its host, port and user are used:
        the user is the admin console's).
    """

    def __init__(self, server: str) -> None:
        self.server = make_url(server)
        self.port = 0
        self.directory: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- the process -------------------------------------------------------------------

    def start(self) -> None:
        program = binary()
        if program is None:
            raise RuntimeError(
                f"{ENV} asks for PgBouncer, but no pgbouncer program is installed "
                "(apt-get install pgbouncer), or unset it to test without one"
            )
        self.directory = Path(tempfile.mkdtemp(prefix="chatwright-pgbouncer-"))
        self.port = _free_port()
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(self._config(), encoding="utf-8")
        user = str(self.server.username or "postgres")
        (self.directory / "users.txt").write_text(f'"{user}" ""\n', encoding="utf-8")
        command = [program, str(ini)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: run it as the server's system user.
            account = _unprivileged_account()
            shutil.chown(self.directory, account.pw_uid, account.pw_gid)
            for path in self.directory.iterdir():
                shutil.chown(path, account.pw_uid, account.pw_gid)
            command[1:1] = ["-u", account.pw_name]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    def _config(self) -> str:
        assert self.directory is not None
        host = self.server.host or "127.0.0.1"
        port = self.server.port or 5432
        user = self.server.username or "postgres"
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.directory / "users.txt"),
            "auth_user": user,
            "admin_users": user,
            "logfile": str(self.log_path),
            **SETTINGS,
        }
        lines = ["[databases]", f"* = host={host} port={port}", "", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "pgbouncer.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout: float = 10.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self.proc.returncode} on start:\n{self.log()}"
                )
            with contextlib.suppress(Exception):
                self.show("VERSION")
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not answer within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- using it ----------------------------------------------------------------------

    def pooled(self, url: str | URL) -> URL:
        """``url`` (of the test server) with PgBouncer's address instead."""
        return make_url(url).set(host="127.0.0.1", port=self.port)

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console (``POOLS``, ``SERVERS``, ``CLIENTS``...)."""
        import psycopg

        console = self.server.set(
            drivername="postgresql", host="127.0.0.1", port=self.port, database="pgbouncer"
        )
        # The console speaks the simple query protocol only: a client-side cursor.
        with psycopg.connect(
            console.render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=3,
            cursor_factory=psycopg.ClientCursor,
        ) as conn:
            cursor = conn.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unprivileged_account() -> pwd.struct_passwd:
    for name in ("postgres", "pgbouncer", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("pgbouncer cannot run as root and no postgres or nobody account exists")
