"""An index on chat_messages.user_id; then, on PostgreSQL only: Supabase-compatible
roles and auth functions, row-level security on user tables, and NOTIFY triggers
for config changes.

On Supabase the roles ``anon``, ``authenticated``, ``service_role`` and the
functions ``auth.uid()`` / ``auth.jwt()`` exist already and are left alone; on
a plain PostgreSQL they are created, so the same policies work on both. The
policies compare ``user_id`` with the ``sub`` claim of the request
(``auth.jwt() ->> 'sub'``: user ids are text here, while ``auth.uid()`` casts
to uuid). Table owners and superusers bypass them; the ``supabase`` backend
runs user statements as ``authenticated``. SQLite: nothing to do.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

USER_TABLES = ("chat_sessions", "chat_messages", "prompt_customizations", "agent_memories")
POLICY = "chatwright_own_rows"
OWN = "user_id = (SELECT auth.jwt() ->> 'sub')"


ROLES = (("anon", "NOLOGIN"), ("authenticated", "NOLOGIN"), ("service_role", "NOLOGIN BYPASSRLS"))
"""Supabase's Data API roles, created where they are missing (plain PostgreSQL)."""


def create_role(name: str, attributes: str) -> str:
    """A statement creating the role ``name`` when it is missing. Roles belong to the whole
    server, so two processes migrating two of its databases at once may both find it
    missing: the one that creates it second finds it there, and goes on."""
    return f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
                CREATE ROLE {name} {attributes};
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by another process
        END
        $$"""


def upgrade() -> None:
    op.create_index("ix_chat_messages_user_id", "chat_messages", ["user_id"])
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, attributes in ROLES:
        op.execute(create_role(name, attributes))
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS auth;
        DO $$
        BEGIN
            IF to_regprocedure('auth.jwt()') IS NULL THEN
                CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS
                $f$ SELECT coalesce(
                        nullif(current_setting('request.jwt.claim', true), ''),
                        nullif(current_setting('request.jwt.claims', true), '')
                    )::jsonb $f$;
            END IF;
            IF to_regprocedure('auth.uid()') IS NULL THEN
                CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
                $f$ SELECT nullif(auth.jwt() ->> 'sub', '')::uuid $f$;
            END IF;
        END
        $$;
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
        GRANT EXECUTE ON FUNCTION auth.jwt() TO anon, authenticated, service_role;
        DO $$
        BEGIN
            -- The connecting role must be able to act as authenticated.
            IF NOT pg_has_role(current_user, 'authenticated', 'MEMBER') THEN
                EXECUTE format('GRANT authenticated TO %I', current_user);
            END IF;
        EXCEPTION WHEN unique_violation THEN
            NULL;  -- granted meanwhile by another process migrating another database
        END
        $$;
        """
    )
    for table in USER_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} FOR ALL TO authenticated "
            f"USING ({OWN}) WITH CHECK ({OWN})"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO authenticated")
    op.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO authenticated")
    # Config changes reach every server process: NOTIFY with the agent's name.
    op.execute(
        """
        CREATE FUNCTION chatwright_notify_config() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            changed record := coalesce(NEW, OLD);
            agent text;
        BEGIN
            IF TG_TABLE_NAME = 'agents' THEN
                agent := changed.name;
            ELSIF TG_TABLE_NAME = 'agent_tools' THEN
                SELECT name INTO agent FROM agents WHERE id = changed.agent_id;
            ELSE
                agent := changed.agent_name;
            END IF;
            IF agent IS NOT NULL THEN
                PERFORM pg_notify('chatwright_config', agent);
            END IF;
            RETURN NULL;
        END
        $$;
        """
    )
    for table in ("agents", "agent_tools", "prompt_customizations", "agent_memories"):
        op.execute(
            f"CREATE TRIGGER chatwright_notify_config AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION chatwright_notify_config()"
        )


def downgrade() -> None:
    op.drop_index("ix_chat_messages_user_id", "chat_messages")
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("agents", "agent_tools", "prompt_customizations", "agent_memories"):
        op.execute(f"DROP TRIGGER IF EXISTS chatwright_notify_config ON {table}")
    op.execute("DROP FUNCTION IF EXISTS chatwright_notify_config()")
    for table in USER_TABLES:
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
