"""Closing chatwright's tables to the roles of Supabase's Data API (PostgreSQL only).

A Supabase project grants every new table and sequence in ``public`` to
``anon`` and ``authenticated`` through ``ALTER DEFAULT PRIVILEGES``, and its
Data API serves them over HTTP to anyone holding the public anon key. Those
grants happen when a table is created, whoever creates it, so every migration
that creates a table calls :func:`close_table` on it right away (as the
``supabase`` backend does for the application tables it creates). On another
database than PostgreSQL it does nothing.

After :func:`close_table` a table has row-level security on, and neither
``PUBLIC``, ``anon`` nor ``authenticated`` holds any privilege on it or on the
sequences it owns. A table of per-user rows (``own_rows=True``, the rows carry
a ``user_id``) then gives ``authenticated`` back exactly what the ``supabase``
backend's user transactions need: ``SELECT, INSERT, UPDATE, DELETE`` on the
table, ``USAGE`` (``nextval``) on its sequences, and the policy
``chatwright_own_rows`` that limits all of it to the rows whose ``user_id`` is
the request's ``sub`` claim. ``anon`` gets nothing anywhere. Table owners,
superusers and ``BYPASSRLS`` roles (chatwright's connecting role,
``service_role``) are not affected.
"""

from __future__ import annotations

import sqlalchemy as sa

API_ROLES = ("anon", "authenticated")
OWN_ROWS_POLICY = "chatwright_own_rows"
OWN_ROWS = "user_id = (SELECT auth.jwt() ->> 'sub')"
OWN_UUID_ROWS = "user_id::text = (SELECT auth.jwt() ->> 'sub')"

# The sequences a table owns: serial columns ('a'uto) and identity columns ('i'nternal).
OWNED_SEQUENCES = """
SELECT s.oid::regclass::text
FROM pg_class s
JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND d.refobjid = to_regclass(:table)
ORDER BY 1
"""


def close_table(conn: sa.Connection, table: str, *, own_rows: bool = False) -> None:
    """Close ``table`` and its sequences to ``anon``/``authenticated``; see the module."""
    if conn.dialect.name != "postgresql":
        return
    quote = conn.dialect.identifier_preparer.quote
    name = quote(table)
    existing = set(
        conn.scalars(
            sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:roles)"),
            {"roles": list(API_ROLES)},
        )
    )
    grantees = ", ".join(["PUBLIC", *(quote(r) for r in API_ROLES if r in existing)])
    sequences = list(conn.scalars(sa.text(OWNED_SEQUENCES), {"table": name}))
    conn.execute(sa.text(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"))
    conn.execute(sa.text(f"REVOKE ALL ON TABLE {name} FROM {grantees}"))
    for sequence in sequences:
        conn.execute(sa.text(f"REVOKE ALL ON SEQUENCE {sequence} FROM {grantees}"))
    if not own_rows:
        return
    has_policy = conn.scalar(
        sa.text(
            "SELECT 1 FROM pg_policies WHERE schemaname = current_schema() "
            "AND tablename = :table AND policyname = :policy"
        ),
        {"table": table, "policy": OWN_ROWS_POLICY},
    )
    if not has_policy:
        # An application table may key its rows by a uuid user_id (Supabase's auth.users.id),
        # which PostgreSQL will not compare with the sub claim's text unless cast.
        kind = conn.scalar(
            sa.text(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = :table AND column_name = 'user_id'"
            ),
            {"table": table},
        )
        rule = OWN_UUID_ROWS if kind == "uuid" else OWN_ROWS
        conn.execute(
            sa.text(
                f"CREATE POLICY {OWN_ROWS_POLICY} ON {name} FOR ALL TO authenticated "
                f"USING ({rule}) WITH CHECK ({rule})"
            )
        )
    conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {name} TO authenticated"))
    for sequence in sequences:
        conn.execute(sa.text(f"GRANT USAGE ON SEQUENCE {sequence} TO authenticated"))


def close_function(conn: sa.Connection, signature: str) -> None:
    """PostgreSQL: revoke ``EXECUTE`` on the function ``signature`` (``name()``) from
    ``PUBLIC`` and the Data API roles. For a function only ever run as a trigger,
    which needs no such privilege (Supabase grants new functions to those roles,
    as it does tables)."""
    if conn.dialect.name != "postgresql":
        return
    roles = conn.scalars(
        sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:roles)"),
        {"roles": list(API_ROLES)},
    )
    grantees = ", ".join(["PUBLIC", *(f'"{role}"' for role in sorted(roles))])
    conn.execute(sa.text(f"REVOKE EXECUTE ON FUNCTION {signature} FROM {grantees}"))
