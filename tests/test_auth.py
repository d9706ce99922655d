"""JWT authentication, through the real app: HS256, RS256/ES256 from a JWKS URL or file.

Each test builds the app with :func:`create_app` and talks to it through
httpx's ASGI transport with the app's lifespan running (the runtime starts and
migrates a SQLite file). A JWKS URL is served by a small HTTP server on
127.0.0.1 that counts its fetches and whose key set a test can rotate; keys are
generated for the run (RSA 2048 and EC P-256).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import jwt
import pytest
import uvicorn
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from chatwright import testing
from chatwright.cli import build_cli
from chatwright.errors import SettingsError
from chatwright.plugins.server import auth
from chatwright.plugins.server.app import create_app
from chatwright.plugins.server.auth import check_bind

SECRET = "a-test-secret-that-is-32-bytes-!"
AUDIENCE = "authenticated"
ISSUER = "https://project.supabase.co/auth/v1"


@dataclass(frozen=True)
class Key:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        data: dict[str, Any] = codec.to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(self, sub: str = "alice", **claims: Any) -> str:
        payload = {"sub": sub, "aud": AUDIENCE, "exp": int(time.time()) + 86400, **claims}
        return jwt.encode(payload, self.private, self.algorithm, headers={"kid": self.kid})


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {
        "rsa-1": Key("rsa-1", "RS256", rsa.generate_private_key(65537, 2048)),
        "rsa-2": Key("rsa-2", "RS256", rsa.generate_private_key(65537, 2048)),
        "ec-1": Key("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        "ec-2": Key("ec-2", "ES256", ec.generate_private_key(ec.SECP256R1())),
    }


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


@dataclass
class JwksServer:
    url: str = ""
    document: dict[str, Any] = field(default_factory=dict)
    fetches: int = 0


@contextlib.contextmanager
def serving_jwks(document: dict[str, Any]) -> Iterator[JwksServer]:
    state = JwksServer(document=document)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state.fetches += 1
            body = json.dumps(state.document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/auth/v1/.well-known/jwks.json"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_chatwright_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's CHATWRIGHT_* settings must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("CHATWRIGHT_") and name != "CHATWRIGHT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


@contextlib.asynccontextmanager
async def app_client(tmp_path: Path, **server: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = testing.settings(
        storage={"url": f"sqlite+aiosqlite:///{tmp_path}/auth.db"},
        server={"auth": "jwt", **server},
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


async def sessions(client: httpx.AsyncClient, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await client.get("/api/sessions", headers=headers)


def refused(response: httpx.Response, status: int = 401) -> str:
    """The error message of a refused request; a 401 must carry a Bearer challenge."""
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="chatwright"')
    message: str = response.json()["error"]
    return message


def hs256(sub: str = "alice", secret: str = SECRET, **claims: Any) -> str:
    payload = {"sub": sub, "aud": AUDIENCE, "exp": int(time.time()) + 86400, **claims}
    return jwt.encode(payload, secret, "HS256")


# -- JWKS from a URL ------------------------------------------------------------


async def test_rs256_and_es256_tokens_are_verified_with_a_jwks_url(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    with serving_jwks(jwks(keys["rsa-1"], keys["ec-1"])) as served:
        async with app_client(tmp_path, jwt_jwks_url=served.url) as client:
            for kid in ("rsa-1", "ec-1"):
                response = await sessions(client, keys[kid].sign())
                assert response.status_code == 200, response.text
                assert response.json() == []
            # One fetch served both keys: the set is cached.
            assert served.fetches == 1

            # Signed by a key of the right kind that is not the published one.
            forged = Key("rsa-1", "RS256", keys["rsa-2"].private).sign()
            assert "Signature verification failed" in refused(await sessions(client, forged))
            # A token signed with HS256 is refused when only the JWKS is configured, so
            # that a public key can never serve as an HMAC secret.
            message = refused(await sessions(client, hs256()))
            assert (
                message
                == "invalid token: it is signed with 'HS256', the server accepts RS256, ES256"
            )
            unsigned = jwt.encode({"sub": "alice", "aud": AUDIENCE, "exp": 2**40}, None, "none")
            assert "'none'" in refused(await sessions(client, unsigned))
            no_kid = jwt.encode(
                {"sub": "alice", "aud": AUDIENCE, "exp": 2**40}, keys["ec-1"].private, "ES256"
            )
            assert "must name its key (kid)" in refused(await sessions(client, no_kid))


async def test_a_jwks_token_is_checked_off_the_event_loop(
    tmp_path: Path, keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding a token's key may fetch the JWKS: never on the thread that serves requests."""
    where: list[int] = []
    key = auth.JwksUrl.key

    def recorded(source: auth.JwksUrl, kid: str) -> Any:
        where.append(threading.get_ident())
        return key(source, kid)

    monkeypatch.setattr(auth.JwksUrl, "key", recorded)
    token = keys["rsa-1"].sign()
    with serving_jwks(jwks(keys["rsa-1"])) as served:
        async with app_client(tmp_path, jwt_jwks_url=served.url) as client:
            assert (await sessions(client, token)).status_code == 200
            # The route that takes its token from the body as well.
            closed = await client.post(
                f"/api/sessions/{uuid.uuid4()}/deactivate", json={"access_token": token}
            )
            assert closed.status_code == 404, closed.text
    assert len(where) == 2
    assert threading.get_ident() not in where


@pytest.mark.parametrize("mode", ["local", "hs256"])
async def test_a_token_checked_in_memory_takes_no_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Local mode and HS256 need no I/O: a request does not wait on the thread pool for them."""
    hops: list[Any] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    local = {"auth": "local", "allowed_hosts": ["test"]}
    server = local if mode == "local" else {"jwt_secret": SECRET}
    async with app_client(tmp_path, **server) as client:
        response = await sessions(client, None if mode == "local" else hs256())
        assert response.status_code == 200, response.text
        assert response.json() == []
        closed = await client.post(
            f"/api/sessions/{uuid.uuid4()}/deactivate",
            headers={} if mode == "local" else {"Authorization": f"Bearer {hs256()}"},
        )
        assert closed.status_code == 404, closed.text
    assert hops == []


async def test_an_unknown_kid_refetches_the_jwks_once_per_cooldown(
    tmp_path: Path, keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "JWKS_COOLDOWN", 0.0)
    with serving_jwks(jwks(keys["rsa-1"])) as served:
        async with app_client(tmp_path, jwt_jwks_url=served.url) as client:
            assert (await sessions(client, keys["rsa-1"].sign())).status_code == 200
            assert served.fetches == 1
            # The issuer rotates to a new key: its first token makes the server refetch.
            served.document = jwks(keys["rsa-2"], keys["ec-2"])
            assert (await sessions(client, keys["rsa-2"].sign())).status_code == 200
            assert served.fetches == 2
            assert (await sessions(client, keys["ec-2"].sign())).status_code == 200
            assert served.fetches == 2
            # The old key is gone from the set: its tokens are refused now.
            message = refused(await sessions(client, keys["rsa-1"].sign()))
            assert message == "invalid token: its key 'rsa-1' is not in the server's key set"


async def test_made_up_kids_do_not_make_every_request_a_fetch(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    with serving_jwks(jwks(keys["ec-1"])) as served:
        async with app_client(tmp_path, jwt_jwks_url=served.url) as client:
            assert (await sessions(client, keys["ec-1"].sign())).status_code == 200
            for n in range(5):
                forged = Key(f"made-up-{n}", "ES256", keys["ec-2"].private).sign()
                assert "is not in the server's key set" in refused(await sessions(client, forged))
            # Within the cooldown after the first fetch, nothing more was fetched.
            assert served.fetches == 1


async def test_a_long_made_up_kid_is_not_echoed_whole(tmp_path: Path, keys: dict[str, Key]) -> None:
    with serving_jwks(jwks(keys["ec-1"])) as served:
        async with app_client(tmp_path, jwt_jwks_url=served.url) as client:
            forged = Key("k" * 5000, "ES256", keys["ec-2"].private).sign()
            response = await sessions(client, forged)
            assert response.status_code == 401
            message = response.json()["error"]
            assert message == (
                f"invalid token: its key {'k' * 80!r}… is not in the server's key set"
            )
            assert len(response.headers["www-authenticate"]) < 300


async def test_an_unreachable_jwks_is_a_503_not_a_500(tmp_path: Path, keys: dict[str, Key]) -> None:
    with serving_jwks({}) as served:
        url = served.url
    async with app_client(tmp_path, jwt_jwks_url=url) as client:
        message = refused(await sessions(client, keys["ec-1"].sign()), 503)
        assert message.startswith(f"cannot fetch the token keys from server.jwt_jwks_url {url}")


async def test_jwt_algorithms_narrows_what_is_accepted(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    with serving_jwks(jwks(keys["rsa-1"], keys["ec-1"])) as served:
        async with app_client(
            tmp_path, jwt_jwks_url=served.url, jwt_algorithms=["ES256"]
        ) as client:
            assert (await sessions(client, keys["ec-1"].sign())).status_code == 200
            message = refused(await sessions(client, keys["rsa-1"].sign()))
            assert message == "invalid token: it is signed with 'RS256', the server accepts ES256"


# -- JWKS from a file -------------------------------------------------------------


async def test_a_jwks_file_is_read_and_read_again_when_it_changes(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(keys["ec-1"])))
    async with app_client(tmp_path, jwt_jwks_file=str(path)) as client:
        assert (await sessions(client, keys["ec-1"].sign())).status_code == 200
        message = refused(await sessions(client, keys["rsa-2"].sign()))
        assert message == "invalid token: its key 'rsa-2' is not in the server's key set"
        # Rotated on disk: the new key is found without a restart.
        path.write_text(json.dumps(jwks(keys["ec-1"], keys["rsa-2"])))
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert (await sessions(client, keys["rsa-2"].sign())).status_code == 200


def test_a_missing_or_broken_jwks_file_is_refused_at_startup(tmp_path: Path) -> None:
    missing = testing.settings(server={"auth": "jwt", "jwt_jwks_file": str(tmp_path / "nope.json")})
    with pytest.raises(SettingsError, match=r"cannot read server\.jwt_jwks_file .*nope\.json"):
        check_bind(missing, "0.0.0.0")
    broken = tmp_path / "broken.json"
    broken.write_text('{"keys": "no"}')
    settings = testing.settings(server={"auth": "jwt", "jwt_jwks_file": str(broken)})
    with pytest.raises(SettingsError, match=r"server\.jwt_jwks_file .* is not a usable JWKS"):
        check_bind(settings, "0.0.0.0")


def test_a_jwks_url_must_be_https_beyond_loopback() -> None:
    plain = testing.settings(
        server={"auth": "jwt", "jwt_jwks_url": "http://auth.example.com/jwks.json"}
    )
    with pytest.raises(SettingsError, match=r"server\.jwt_jwks_url must be an https URL"):
        check_bind(plain, "0.0.0.0")
    check_bind(
        testing.settings(
            server={
                "auth": "jwt",
                "jwt_jwks_url": "https://p.supabase.co/auth/v1/.well-known/jwks.json",
            }
        ),
        "0.0.0.0",
    )


# -- claims -------------------------------------------------------------------------


async def test_issuer_and_audience_are_checked(tmp_path: Path, keys: dict[str, Key]) -> None:
    with serving_jwks(jwks(keys["ec-1"])) as served:
        async with app_client(tmp_path, jwt_jwks_url=served.url, jwt_issuer=ISSUER) as client:
            key = keys["ec-1"]
            assert (await sessions(client, key.sign(iss=ISSUER))).status_code == 200
            wrong = refused(
                await sessions(client, key.sign(iss="https://other.supabase.co/auth/v1"))
            )
            assert wrong == f"the token's issuer (iss) is not {ISSUER!r}"
            assert '"iss"' in refused(await sessions(client, key.sign()))
            message = refused(await sessions(client, key.sign(iss=ISSUER, aud="someone-else")))
            assert message == "the token's audience is not 'authenticated'"


@pytest.mark.parametrize("expiry", ["9999999999", [9999999999], {"at": 1}, True, None])
async def test_an_expiry_that_is_not_a_number_is_refused(tmp_path: Path, expiry: Any) -> None:
    async with app_client(tmp_path, jwt_secret=SECRET) as client:
        assert (await sessions(client, hs256())).status_code == 200
        message = refused(await sessions(client, hs256(exp=expiry)))
        assert "exp" in message


async def test_a_fractional_expiry_is_a_number(tmp_path: Path) -> None:
    async with app_client(tmp_path, jwt_secret=SECRET) as client:
        assert (await sessions(client, hs256(exp=time.time() + 60.5))).status_code == 200


async def test_every_401_carries_a_bearer_challenge(tmp_path: Path) -> None:
    async with app_client(tmp_path, jwt_secret=SECRET) as client:
        missing = await sessions(client, None)
        refused(missing)
        # No token sent: the challenge has no error code (RFC 6750, section 3.1).
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="chatwright"'
        expired = await sessions(client, hs256(exp=int(time.time()) - 60))
        assert refused(expired) == "the token has expired; sign in again"
        assert expired.headers["WWW-Authenticate"] == (
            'Bearer realm="chatwright", error="invalid_token", '
            'error_description="the token has expired; sign in again"'
        )
        garbage = await sessions(client, 'not"a\\token')
        refused(garbage)
        assert '"a' not in garbage.headers["WWW-Authenticate"].split("error_description=")[1][1:-1]
        # The sendBeacon path checks its token in the handler: the same challenge.
        beacon = await client.post(
            "/api/sessions/00000000-0000-0000-0000-000000000000/deactivate",
            json={"access_token": "garbage"},
        )
        assert 'error="invalid_token"' in beacon.headers["WWW-Authenticate"]
        refused(beacon)
        # Other errors carry none.
        headers = {"Authorization": f"Bearer {hs256()}"}
        not_found = await client.get("/api/agents/nope", headers=headers)
        assert not_found.status_code == 404
        assert "WWW-Authenticate" not in not_found.headers


# -- HS256 secrets ---------------------------------------------------------------------


def test_a_short_hs256_secret_is_refused_at_startup() -> None:
    short = testing.settings(server={"auth": "jwt", "jwt_secret": "s3cret"})
    with pytest.raises(SettingsError) as caught:
        check_bind(short, "127.0.0.1")
    assert str(caught.value).startswith(
        "server.jwt_secret is 6 bytes long; HS256 needs at least 32: set "
        "CHATWRIGHT_SERVER__JWT_SECRET to a longer random secret"
    )
    check_bind(testing.settings(server={"auth": "jwt", "jwt_secret": SECRET}), "0.0.0.0")
    # Not needed, not checked: local auth ignores it.
    check_bind(testing.settings(server={"jwt_secret": "s3cret"}), "127.0.0.1")


def test_serve_refuses_a_short_secret_without_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    monkeypatch.setenv("CHATWRIGHT_SERVER__AUTH", "jwt")
    monkeypatch.setenv("CHATWRIGHT_SERVER__JWT_SECRET", "too-short-a-secret")
    result = CliRunner().invoke(build_cli(), ["serve"], prog_name="chatwright")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: server.jwt_secret is 18 bytes long")
    assert "too-short-a-secret" not in result.output
    assert "Traceback" not in result.output
    assert started == []


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_a_short_secret_never_verifies_a_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An app built around the start-up check still refuses to trust a weak secret,
    # and does not tell the client how short it is.
    async with app_client(tmp_path, jwt_secret="s3cret") as client:
        message = refused(await sessions(client, hs256(secret="s3cret")), 503)
        assert message == (
            "the server cannot verify HS256 tokens: its JWT settings are invalid (the server "
            "log says why)"
        )
    assert "server.jwt_secret is 6 bytes long" in caplog.text


async def test_hs256_and_a_jwks_can_be_accepted_together(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(keys["rsa-1"])))
    async with app_client(tmp_path, jwt_secret=SECRET, jwt_jwks_file=str(path)) as client:
        assert (await sessions(client, hs256())).status_code == 200
        assert (await sessions(client, keys["rsa-1"].sign())).status_code == 200
        # A token signed with HMAC over the published public key is just a wrong signature.
        assert "Signature verification failed" in refused(
            await sessions(client, hs256(secret="x" * 40))
        )
