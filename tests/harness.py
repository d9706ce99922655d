"""The PostgreSQL server the tests run against, and a Supabase-like setup on it.

Shared by ``tests/conftest.py`` (a fresh database per run), ``tests/test_supabase.py``
and the hostile suite (``tests/hostile/``): the admin connection to the server at
``CHATWRIGHT_TEST_DATABASE_URL`` (skip without a server, fail with ``CI=true``), URLs
of the databases and LOGIN roles a test creates on it, and the SQL with which a new
Supabase project starts (its Data API roles and their default privileges).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "CHATWRIGHT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it (no driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def admin_connect() -> psycopg.Connection[Any]:
    """An autocommit connection to the server as its admin; skip (or fail on CI) without one."""
    try:
        return psycopg.connect(libpq(ADMIN_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = " ".join(f"no PostgreSQL server answers at {make_url(ADMIN_URL)!r}: {exc}".split())
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(f"{reason} (set CHATWRIGHT_TEST_DATABASE_URL to run PostgreSQL tests)")


@dataclass(frozen=True)
class Cluster:
    """A database a test module created, and the LOGIN roles it created (roles are cluster-wide)."""

    name: str
    app_role: str
    """LOGIN, no superuser, no BYPASSRLS, owns nothing; a member of ``authenticated``."""
    svc_role: str
    """LOGIN, no superuser, BYPASSRLS, owns nothing; a member of ``authenticated``."""

    def url(self, user: str | None = None, database: str | None = None) -> str:
        url = make_url(ADMIN_URL).set(
            drivername="postgresql+psycopg", database=database or self.name
        )
        if user is not None:
            url = url.set(username=user, password=None)
        return url.render_as_string(hide_password=False)


# The Data API roles of a Supabase project (the migration creates them when missing).
SUPABASE_ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
END
$$"""

# What a new Supabase project does before chatwright arrives: every table, sequence
# and function later created in public is granted to the Data API's roles.
SUPABASE_DEFAULT_PRIVILEGES = """
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""
