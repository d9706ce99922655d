"""The ``[server]`` settings of ``chatwright serve``, registered by the server plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from chatwright.settings import HOUR

# Claims a user may write themselves (Supabase: auth.updateUser({data})); a role read there
# would let anyone make themselves an admin.
USER_EDITABLE_CLAIMS = frozenset({"user_metadata"})


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address `chatwright serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `chatwright serve` listens on.")
    workers: int = Field(1, ge=1, description="Server processes (PostgreSQL only beyond 1).")
    auth: Literal["local", "jwt"] = Field(
        "local",
        description="local: one user 'local', loopback binds only; jwt: bearer JWTs (HS256 "
        "with jwt_secret, RS256/ES256 with a JWKS).",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret of the JWTs (jwt auth), at least 32 bytes."
    )
    jwt_audience: str = Field("authenticated", description="Required `aud` claim of the JWTs.")
    jwt_issuer: str | None = Field(None, description="Required `iss` claim of the JWTs, when set.")
    jwt_jwks_url: str | None = Field(
        None,
        description="https URL of the JWKS whose public keys sign RS256/ES256 JWTs (Supabase: "
        "https://<project>.supabase.co/auth/v1/.well-known/jwks.json).",
    )
    jwt_jwks_file: Path | None = Field(
        None, description="A JWKS file with the public keys of RS256/ES256 JWTs."
    )
    jwt_algorithms: list[Literal["HS256", "RS256", "ES256"]] | None = Field(
        None,
        min_length=1,
        description="Accepted JWT algorithms (default: HS256 with jwt_secret, RS256 and ES256 "
        "with a JWKS).",
    )
    admin_claim: str = Field(
        "app_metadata.role",
        max_length=200,
        description="JWT claim (a dotted path into the claims) that makes its user an admin "
        "of agents and tools over HTTP when it holds admin_value (or a list holding it); "
        "empty: no claim does. Supabase keeps app roles in app_metadata, which users "
        "cannot change; a path into user_metadata, which they can, is refused. The claim "
        "chatwright_admin: true also makes an admin.",
    )
    admin_value: str = Field(
        "chatwright_admin",
        min_length=1,
        description="The value of admin_claim that makes an admin.",
    )
    allowed_hosts: list[str] = Field(
        [],
        description="Host header names served in local mode besides localhost, 127.0.0.1 and "
        "[::1] (403 for others, against DNS rebinding).",
    )
    timeout_keep_alive: int = Field(
        75,
        gt=0,
        le=3600,
        description="Seconds an idle HTTP connection is kept open for the client's next "
        "request. Longer than the clients' and proxies' own idle timeouts (httpx: 5 s, "
        "load balancers: often 60 s), so that the server is never the one closing a "
        "connection as a client reuses it.",
    )
    stream_keepalive: float = Field(
        15.0,
        gt=0,
        le=HOUR,
        description="Seconds between `: keep-alive` comments of a streamed turn that sends "
        "nothing, so that proxies keep the connection.",
    )
    shutdown_timeout: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds a stopping server (SIGTERM, SIGINT) waits for the turns in "
        "flight; then they are stopped as at their time limit (message kept, chat freed, "
        "504) and the process exits. A second signal exits at once.",
    )
    gc_threshold: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="Allocations between two passes of Python's garbage collector over its "
        "youngest objects while the server runs (Python's default: 700); 0 leaves the "
        "collector as it is. Fewer young passes move fewer short-lived objects of a turn "
        "into the older generations, whose passes walk every live object: at 700, "
        "collecting took about a seventh of a busy server's CPU.",
    )
    max_message_chars: int = Field(
        16_000, ge=1, description="Longest chat message accepted, in characters (413 beyond)."
    )
    max_export_rows: int = Field(
        100_000,
        ge=1,
        description="Most rows in all that GET /api/me/export answers with (413 beyond); "
        "`chatwright users export` has no bound.",
    )

    @field_validator("admin_claim")
    @classmethod
    def _not_user_editable(cls, claim: str) -> str:
        if claim.split(".", 1)[0] in USER_EDITABLE_CLAIMS:
            raise ValueError(
                f"admin_claim {claim!r} lies in user_metadata, which every user can change "
                "for themselves; keep admin roles in app_metadata (e.g. app_metadata.role)"
            )
        return claim
