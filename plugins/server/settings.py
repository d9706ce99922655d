"""The ``[server]`` settings of ``chatwright serve``, registered by the server plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address `chatwright serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `chatwright serve` listens on.")
    workers: int = Field(1, ge=1, description="Server processes (PostgreSQL only beyond 1).")
    auth: Literal["local", "jwt"] = Field(
        "local",
        description="local: one user 'local', loopback binds only; jwt: HS256 bearer tokens.",
    )
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret of the JWTs (jwt auth).")
    jwt_audience: str = Field("authenticated", description="Required `aud` claim of the JWTs.")
    max_message_chars: int = Field(
        16_000, ge=1, description="Longest chat message accepted, in characters (413 beyond)."
    )
