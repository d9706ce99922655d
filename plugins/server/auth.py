"""Who is calling: the single local user, or the subject of a verified JWT.

``server.auth = "local"`` (the default) makes every request the user
``local``; `chatwright serve` refuses it on a non-loopback address. With
``"jwt"`` every request carries ``Authorization: Bearer <token>``, an HS256
token signed with ``server.jwt_secret`` whose audience is
``server.jwt_audience`` (Supabase issues exactly these); the user id is its
``sub``. Expired, malformed or wrongly signed tokens get 401; a Supabase
service-role token (claim ``role = service_role``) gets 403 on user endpoints,
since it would otherwise act for no user in particular. A token with the
claim ``chatwright_admin: true`` sees tool-load problems in the API.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from chatwright.errors import ChatwrightError
from chatwright.plugins.server.settings import ServerSettings
from chatwright.settings import Settings

LOCAL_USER = "local"


class AuthError(ChatwrightError):
    http_status = 401


class ForbiddenError(ChatwrightError):
    http_status = 403


@dataclass(frozen=True)
class Principal:
    user_id: str
    admin: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    """Refuse configurations that would expose the server without authentication."""
    server = settings.section(ServerSettings)
    if server.auth == "local" and not is_loopback(host):
        raise ChatwrightError(
            f"refusing to serve on {host} with server.auth = 'local' (anyone could act as "
            "the single local user); bind to 127.0.0.1, or set server.auth = 'jwt' and "
            "server.jwt_secret"
        )
    if server.auth == "jwt" and server.jwt_secret is None:
        raise ChatwrightError(
            "server.auth = 'jwt' needs server.jwt_secret (CHATWRIGHT_SERVER__JWT_SECRET)"
        )


def principal_from_token(settings: Settings, token: str | None) -> Principal:
    import jwt

    server = settings.section(ServerSettings)
    if server.auth == "local":
        return Principal(LOCAL_USER, admin=True)
    if not token:
        raise AuthError("missing bearer token: send Authorization: Bearer <JWT>")
    secret = server.jwt_secret
    if secret is None:
        raise AuthError("the server has no server.jwt_secret configured")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret.get_secret_value(),
            algorithms=["HS256"],
            audience=server.jwt_audience,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired; sign in again") from None
    except jwt.InvalidAudienceError:
        raise AuthError(f"the token's audience is not {server.jwt_audience!r}") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    if claims.get("role") == "service_role":
        raise ForbiddenError("service-role tokens are refused on user endpoints")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("the token has no subject (sub)")
    if len(subject) > 255 or "\x00" in subject:
        raise AuthError("the token's subject (sub) is not a usable user id")
    return Principal(subject, admin=claims.get("chatwright_admin") is True)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
