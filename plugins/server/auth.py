"""Who is calling: the single local user, or the subject of a verified JWT.

``server.auth = "local"`` (the default) makes every request the user
``local``; `chatwright serve` refuses it on a non-loopback address. With
``"jwt"`` every request carries ``Authorization: Bearer <token>``, signed
either with HS256 and ``server.jwt_secret`` (at least 32 bytes), or with
RS256/ES256 by a key of the JWKS at ``server.jwt_jwks_url`` or in
``server.jwt_jwks_file`` (Supabase's asymmetric signing keys are published
that way); ``server.jwt_algorithms`` narrows which are accepted. The token
must name ``server.jwt_audience`` as its audience and, when it is set,
``server.jwt_issuer`` as its issuer, and must have a numeric ``exp``; the user
id is its ``sub``. Missing, expired, malformed or wrongly signed tokens get
401 with a ``WWW-Authenticate: Bearer`` challenge; a Supabase service-role
token (claim ``role = service_role``) gets 403 on user endpoints, since it
would otherwise act for no user in particular. A token with the claim
``chatwright_admin: true``, or whose claim ``server.admin_claim`` (a dotted
path, by default ``app_metadata.role``) holds ``server.admin_value`` (by default
``chatwright_admin``) is an admin: it sees tool-load problems in the API and
may call the admin routes.

A JWKS is fetched on first use and kept for :data:`JWKS_LIFESPAN` seconds; a
token whose ``kid`` is not in it makes it fetched again (a key rotation), at
most once per :data:`JWKS_COOLDOWN` seconds so that made-up key ids cannot
turn every request into a fetch. A JWKS file is read once and read again
when a token names an unknown ``kid`` and the file has changed.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from chatwright.errors import ChatwrightError, SettingsError, not_utf8
from chatwright.plugins.server.settings import ServerSettings
from chatwright.settings import Settings, env_var

if TYPE_CHECKING:
    from jwt import PyJWK

log = logging.getLogger(__name__)

LOCAL_USER = "local"
REALM = "chatwright"
ASYMMETRIC = ("RS256", "ES256")
# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash.
MIN_SECRET_BYTES = 32
JWKS_LIFESPAN = 300.0
JWKS_COOLDOWN = 30.0
JWKS_TIMEOUT = 10.0
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


KID_SHOWN = 80
"""Characters of a token's unknown ``kid`` an error shows (the token is the client's)."""


def shown_kid(kid: str) -> str:
    """An unknown ``kid`` as an error names it: quoted, cut at :data:`KID_SHOWN`."""
    return repr(kid) if len(kid) <= KID_SHOWN else repr(kid[:KID_SHOWN]) + "…"


class AuthError(ChatwrightError):
    """401: the request does not prove who sends it."""

    http_status = 401

    def __init__(self, message: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value (RFC 6750): no error code when no token was sent."""
        value = f'Bearer realm="{REALM}"'
        if self.error:
            # A quoted-string: printable ASCII without quotes or backslashes.
            text = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "'" for c in str(self))
            value += f', error="{self.error}", error_description="{text}"'
        return value


class ForbiddenError(ChatwrightError):
    http_status = 403


class KeysUnavailableError(ChatwrightError):
    """503: the server cannot get the keys it needs to check tokens."""

    http_status = 503


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
    if settings.section(ServerSettings).auth == "local" and not is_loopback(host):
        raise ChatwrightError(
            f"refusing to serve on {host} with server.auth = 'local' (anyone could act as "
            "the single local user); bind to 127.0.0.1, or set server.auth = 'jwt' and "
            "server.jwt_secret or server.jwt_jwks_url"
        )
    check_auth(settings.section(ServerSettings))


def check_auth(server: ServerSettings) -> None:
    """Refuse JWT settings that cannot verify tokens, or would verify them weakly.

    Run at start-up, so that the mistake is reported before the first request;
    a JWKS file is read now, a JWKS URL is fetched at the first token.
    """
    if server.auth != "jwt":
        return
    if server.jwt_secret is None and not (server.jwt_jwks_url or server.jwt_jwks_file):
        raise SettingsError(
            f"server.auth = 'jwt' needs server.jwt_secret ({env_var('server.jwt_secret')}) "
            f"for HS256 tokens, or server.jwt_jwks_url ({env_var('server.jwt_jwks_url')}) or "
            f"server.jwt_jwks_file for RS256/ES256 tokens"
        )
    if server.jwt_jwks_url and server.jwt_jwks_file:
        raise SettingsError(
            "server.jwt_jwks_url and server.jwt_jwks_file are both set; keep one of them"
        )
    _hs256_secret(server)
    if server.jwt_jwks_url:
        parts = urlsplit(server.jwt_jwks_url)
        # Keys fetched over plain http could be swapped on the way.
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback(parts.hostname or "")
        ):
            raise SettingsError(
                f"server.jwt_jwks_url must be an https URL (got {server.jwt_jwks_url!r}); plain "
                "http is accepted for loopback addresses only"
            )
    for algorithm in accepted_algorithms(server):
        if algorithm == "HS256" and server.jwt_secret is None:
            raise SettingsError(
                "server.jwt_algorithms has HS256 but server.jwt_secret is not set; set it or "
                "remove HS256"
            )
        if algorithm in ASYMMETRIC and not (server.jwt_jwks_url or server.jwt_jwks_file):
            raise SettingsError(
                f"server.jwt_algorithms has {algorithm} but no JWKS is configured; set "
                "server.jwt_jwks_url or server.jwt_jwks_file, or remove it"
            )
    source = key_source(server)
    if isinstance(source, JwksFile):
        source.load(SettingsError)


def accepted_algorithms(server: ServerSettings) -> list[str]:
    """``server.jwt_algorithms``, or by default what the configured keys can verify."""
    if server.jwt_algorithms is not None:
        return list(server.jwt_algorithms)
    found = ["HS256"] if server.jwt_secret is not None else []
    if server.jwt_jwks_url or server.jwt_jwks_file:
        found.extend(ASYMMETRIC)
    return found


def _hs256_secret(server: ServerSettings) -> bytes | None:
    """The HS256 key; SettingsError when it is too short to be one."""
    if server.jwt_secret is None:
        return None
    secret = server.jwt_secret.get_secret_value().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"server.jwt_secret is {len(secret)} bytes long; HS256 needs at least "
            f"{MIN_SECRET_BYTES}: set {env_var('server.jwt_secret')} to a longer random secret "
            "(such as the output of `openssl rand -base64 32`)"
        )
    return secret


# -- JWKS ---------------------------------------------------------------------


class KeySource(Protocol):
    def key(self, kid: str) -> PyJWK:
        """The key ``kid``; AuthError when there is none, KeysUnavailableError on failure."""
        ...


class JwksUrl:
    """A JWKS fetched from a URL by PyJWT's client, which caches it and refetches it."""

    def __init__(self, url: str) -> None:
        from jwt import PyJWKClient

        self.url = url
        self.client = PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=JWKS_LIFESPAN,
            timeout=JWKS_TIMEOUT,
            cooldown_duration=JWKS_COOLDOWN,
        )

    def key(self, kid: str) -> PyJWK:
        from jwt import PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError

        try:
            return self.client.get_signing_key(kid)
        except PyJWKClientConnectionError as exc:
            raise KeysUnavailableError(
                f"cannot fetch the token keys from server.jwt_jwks_url {self.url} ({exc}); "
                "try again later"
            ) from None
        except PyJWKSetError as exc:
            raise KeysUnavailableError(
                f"the JWKS at server.jwt_jwks_url {self.url} is not usable ({exc})"
            ) from None
        except PyJWKClientError:
            raise AuthError(
                f"invalid token: its key {shown_kid(kid)} is not in the server's key set"
            ) from None


class JwksFile:
    """A JWKS read from a file, read again when it changed and a token names a new key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, PyJWK] = {}

    def load(self, error: type[ChatwrightError] = KeysUnavailableError) -> None:
        from jwt import PyJWKSet, PyJWTError

        where = f"server.jwt_jwks_file {self.path}"
        try:
            stat = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise error(f"cannot read {where}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise error(not_utf8(where, exc)) from None
        try:
            keys = PyJWKSet.from_json(text).keys
        except (PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise error(f"{where} is not a usable JWKS ({exc})") from None
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._stamp = (stat.st_mtime_ns, stat.st_size)

    def _changed(self) -> bool:
        try:
            stat = self.path.stat()
        except OSError:
            return True
        return (stat.st_mtime_ns, stat.st_size) != self._stamp

    def key(self, kid: str) -> PyJWK:
        with self._lock:
            if self._stamp is None or (kid not in self._keys and self._changed()):
                self.load()
            found = self._keys.get(kid)
        if found is None:
            raise AuthError(
                f"invalid token: its key {shown_kid(kid)} is not in the server's key set"
            )
        return found


_sources: dict[tuple[str, str], KeySource] = {}
_sources_lock = threading.Lock()


def key_source(server: ServerSettings) -> KeySource | None:
    """The process's one key source for the configured JWKS, so that its cache is shared."""
    if server.jwt_jwks_url:
        name = ("url", server.jwt_jwks_url)
    elif server.jwt_jwks_file:
        name = ("file", str(server.jwt_jwks_file))
    else:
        return None
    with _sources_lock:
        if name not in _sources:
            _sources[name] = JwksUrl(name[1]) if name[0] == "url" else JwksFile(Path(name[1]))
        return _sources[name]


# -- tokens -------------------------------------------------------------------


def _verification_key(server: ServerSettings, header: dict[str, Any]) -> tuple[str, Any]:
    """The token's algorithm and the key to check it with, chosen by the server's settings."""
    algorithm = header.get("alg")
    accepted = accepted_algorithms(server)
    if algorithm not in accepted:
        raise AuthError(
            f"invalid token: it is signed with {algorithm!r}, the server accepts "
            f"{', '.join(accepted)}"
        )
    if algorithm == "HS256":
        try:
            return algorithm, _hs256_secret(server)
        except SettingsError as exc:
            # `serve` refuses this at start-up; an app built without that check still
            # trusts no token to a weak secret, and tells the client nothing about it.
            log.error("refusing HS256 tokens: %s", exc)
            raise KeysUnavailableError(
                "the server cannot verify HS256 tokens: its JWT settings are invalid "
                "(the server log says why)"
            ) from None
    source = key_source(server)
    kid = header.get("kid")
    if source is None or not isinstance(kid, str) or not kid:
        raise AuthError(f"invalid token: a {algorithm} token must name its key (kid)")
    return algorithm, source.key(kid)


def verification_may_block(server: ServerSettings) -> bool:
    """Whether checking a token may wait on I/O: fetching a JWKS, or reading its file.

    Local mode and HS256 tokens are checked in memory.
    """
    return server.auth == "jwt" and bool(server.jwt_jwks_url or server.jwt_jwks_file)


def principal_from_token(settings: Settings, token: str | None) -> Principal:
    import jwt

    server = settings.section(ServerSettings)
    if server.auth == "local":
        return Principal(LOCAL_USER, admin=True)
    if not token:
        raise AuthError("missing bearer token: send Authorization: Bearer <JWT>", error=None)
    if not isinstance(token, str) or not token.isascii():
        # A JWT is ASCII (base64url and dots); anything else is not one, whatever its form.
        raise AuthError("invalid token: a JWT is ASCII text (base64url parts and dots)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    algorithm, key = _verification_key(server, header)
    required = ["exp", "sub", *(["iss"] if server.jwt_issuer else [])]
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=server.jwt_audience,
            issuer=server.jwt_issuer,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired; sign in again") from None
    except jwt.InvalidAudienceError:
        raise AuthError(f"the token's audience is not {server.jwt_audience!r}") from None
    except jwt.InvalidIssuerError:
        raise AuthError(f"the token's issuer (iss) is not {server.jwt_issuer!r}") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    expiry = claims["exp"]
    # PyJWT reads exp with int(), which also takes "9999999999" and other non-numbers.
    if isinstance(expiry, bool) or not isinstance(expiry, int | float):
        raise AuthError("invalid token: its expiry (exp) is not a number")
    if claims.get("role") == "service_role":
        raise ForbiddenError("service-role tokens are refused on user endpoints")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("the token has no subject (sub)")
    # A user id must fit the user_id columns and be storable text: no NUL, and no
    # lone surrogate (JSON's "\ud800" escape decodes to one; UTF-8 cannot hold it).
    if len(subject) > 255 or "\x00" in subject or LONE_SURROGATE.search(subject):
        raise AuthError("the token's subject (sub) is not a usable user id")
    from chatwright.userdata import ERASED_USER

    if subject == ERASED_USER:
        # The audit log's erasure records are kept under it: no token may own them.
        raise AuthError(f"the token's subject (sub) {ERASED_USER!r} is reserved")
    return Principal(subject, admin=is_admin(server, claims))


def is_admin(server: ServerSettings, claims: dict[str, Any]) -> bool:
    """Whether verified ``claims`` make an admin: see the module's docstring."""
    if claims.get("chatwright_admin") is True:
        return True
    if not server.admin_claim:
        return False
    value: Any = claims
    for step in server.admin_claim.split("."):
        if not isinstance(value, dict):
            return False
        value = value.get(step)
    if isinstance(value, list):
        return server.admin_value in value
    return isinstance(value, str) and value == server.admin_value


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
