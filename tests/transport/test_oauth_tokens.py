"""OAuth 2.0 token sources against a real token endpoint on 127.0.0.1 (HTTPS, the test CA)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from fluxmail.config.model import Config
from fluxmail.config.resolve import resolve_config
from fluxmail.errors import AuthenticationFailed, ConfigurationError
from fluxmail.transport.oauth.tokens import (
    CallableTokenSource,
    Token,
    TokenSource,
    token_source,
)
from tests.support.oauth_server import OAuthServer
from tests.support.servers import TestCA

Server = Callable[..., OAuthServer]
SECRET = "Cl1ent-S3cret/with+chars="
REFRESH = "1//rEfResh-T0ken.with/chars"
MAILBOX = "box@example.com"


class Clock:
    """Epoch seconds that a test moves by hand (the endpoint itself keeps real time)."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def config(ca: TestCA, **oauth: Any) -> Config:
    settings = {f"oauth_{k}": v for k, v in oauth.items()}
    return resolve_config(
        object_type="memory", username=MAILBOX, ca_file=str(ca.ca_path), timeout=5, **settings
    )


def source(ca: TestCA, clock: Clock | None = None, **oauth: str) -> TokenSource:
    made = token_source(config(ca, **oauth), **({"clock": clock} if clock else {}))
    assert made is not None
    return made


def microsoft(server: OAuthServer, ca: TestCA, clock: Clock | None = None) -> TokenSource:
    server.client("app-id", SECRET)
    return source(
        ca,
        clock,
        provider="microsoft",
        tenant_id="contoso.onmicrosoft.com",
        client_id="app-id",
        client_secret=SECRET,
        token_url=server.url,
    )


def get(src: TokenSource) -> Token:
    return asyncio.run(src.token())


# -- each provider, the request as documented ------------------------------------------------


def test_microsoft_client_credentials(oauth_server: Server, ca: TestCA) -> None:
    """Entra ID client credentials: the form of the v2.0 endpoint, the .default scope."""
    server = oauth_server()
    token = get(microsoft(server, ca))
    [seen] = server.requests
    assert seen.form == {
        "grant_type": "client_credentials",
        "scope": "https://outlook.office365.com/.default",
        "client_id": "app-id",
        "client_secret": SECRET,
    }
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.headers["accept"] == "application/json" and "authorization" not in seen.headers
    issued = server.valid(token.value)
    assert issued is not None and issued.grant == "client_credentials"
    assert token.expires_at is not None and abs(token.expires_at - issued.expires_at) < 5


def test_microsoft_default_endpoint_names_the_tenant(ca: TestCA) -> None:
    """Without FLUXMAIL_OAUTH_TOKEN_URL the tenant's v2.0 endpoint is used; nothing is sent."""
    tenant = "contoso.onmicrosoft.com"
    made = source(ca, provider="microsoft", tenant_id=tenant, client_id="a", client_secret="s")
    url = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert made.url == url  # type: ignore[attr-defined]


def test_google_refresh_token(oauth_server: Server, ca: TestCA) -> None:
    """Google's refresh-token flow: form fields, no scope (the grant keeps its own)."""
    server = oauth_server()
    server.client("cid.apps.googleusercontent.com", SECRET)
    server.refresh_token(REFRESH, "cid.apps.googleusercontent.com")
    made = source(
        ca,
        provider="google",
        client_id="cid.apps.googleusercontent.com",
        client_secret=SECRET,
        refresh_token=REFRESH,
        token_url=server.url,
    )
    assert server.valid(get(made).value) is not None
    assert server.requests[0].form == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "cid.apps.googleusercontent.com",
        "client_secret": SECRET,
    }
    default = source(ca, provider="google", client_id="c", client_secret="s", refresh_token="r")
    assert default.url == "https://oauth2.googleapis.com/token"  # type: ignore[attr-defined]


@pytest.mark.parametrize("override", [False, True])
def test_google_service_account(
    oauth_server: Server, ca: TestCA, tmp_path: Path, override: bool
) -> None:
    """A signed JWT-bearer assertion for the mailbox, posted to the key's token_uri or the
    override."""
    server = oauth_server()
    key = tmp_path / "key.json"
    key.write_text(json.dumps(server.account("mailer@project.iam.gserviceaccount.com")))
    extra = {"token_url": server.url} if override else {}
    made = source(
        ca, None, provider="google", service_account_file=str(key), subject=MAILBOX, **extra
    )
    issued = server.valid(get(made).value)
    assert issued is not None and issued.subject == MAILBOX
    assert issued.scope == "https://mail.google.com/"
    [seen] = server.requests
    assert seen.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


def test_google_service_account_bad_key_and_missing_extra(
    ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that is no service-account key, and google-auth missing: ConfigurationError."""
    key = tmp_path / "key.json"
    key.write_text('{"type": "authorized_user", "client_secret": "not-shown"}')
    with pytest.raises(ConfigurationError) as caught:
        source(ca, provider="google", service_account_file=str(key), subject=MAILBOX)
    assert caught.value.code == "invalid_service_account" and "not-shown" not in str(caught.value)
    bad_key = {"type": "service_account", "client_email": "a@b", "private_key": "x"}
    key.write_text(json.dumps(bad_key))
    with pytest.raises(ConfigurationError) as caught:
        source(ca, provider="google", service_account_file=str(key), subject=MAILBOX)
    assert caught.value.code == "invalid_service_account"
    monkeypatch.setitem(sys.modules, "google.auth", None)  # as if fluxmail[oauth] were absent
    with pytest.raises(ConfigurationError) as caught:
        source(ca, provider="google", service_account_file=str(key), subject=MAILBOX)
    assert caught.value.code == "missing_extra" and "fluxmail[oauth]" in str(caught.value)


def test_generic_client_credentials_use_http_basic(oauth_server: Server, ca: TestCA) -> None:
    """generic: RFC 6749 2.3.1 HTTP Basic, each part form-urlencoded; no secret in the body."""
    server = oauth_server()
    server.client("svc:1", SECRET)
    made = source(
        ca, provider="generic", token_url=server.url, client_id="svc:1", client_secret=SECRET,
        scope="smtp",
    )  # fmt: skip
    assert server.valid(get(made).value) is not None
    [seen] = server.requests
    assert seen.form == {"grant_type": "client_credentials", "scope": "smtp"}
    user, _, password = base64.b64decode(seen.headers["authorization"][6:]).decode().partition(":")
    assert (unquote(user), unquote(password)) == ("svc:1", SECRET) and user == "svc%3A1"


def test_generic_refresh_public_client_and_rotation(oauth_server: Server, ca: TestCA) -> None:
    """A public client names itself; a rotated refresh token replaces the old one."""
    server = oauth_server()
    server.client("public-app", None)
    server.refresh_token(REFRESH, "public-app")
    server.rotate = True
    clock = Clock()
    made = source(
        ca, clock, provider="generic", token_url=server.url, client_id="public-app",
        refresh_token=REFRESH,
    )  # fmt: skip
    get(made)
    clock.now += 7200
    get(made)  # the old refresh token is gone on the server: this used the rotated one
    first, second = server.requests
    assert first.form == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "public-app",
    }
    assert second.form["refresh_token"] != REFRESH


# -- caching, single flight, invalidate ------------------------------------------------------


def test_cached_until_shortly_before_expiry(oauth_server: Server, ca: TestCA) -> None:
    """No second POST while the token is fresh; a new one once within 60 s of expiry."""
    server, clock = oauth_server(lifetime=3600), Clock()
    made = microsoft(server, ca, clock)
    first = get(made)
    clock.now += 3500
    assert get(made) is first and server.count == 1
    clock.now += 50  # 50 s before expiry: inside the margin
    assert get(made) != first and server.count == 2


def test_short_lived_tokens_refresh_halfway(oauth_server: Server, ca: TestCA) -> None:
    """A token shorter-lived than the margin is kept for half its life, not refetched each call."""
    server, clock = oauth_server(lifetime=30), Clock()
    made = microsoft(server, ca, clock)
    first = get(made)
    clock.now += 10
    assert get(made) is first
    clock.now += 10
    assert get(made) != first and server.count == 2


def test_single_flight_for_fifty_concurrent_callers(oauth_server: Server, ca: TestCA) -> None:
    """50 concurrent token() calls, the endpoint slow: exactly one POST, one shared token."""
    server = oauth_server()
    server.fail(status=200, delay=0.3)  # a stall, then the normal answer
    made = microsoft(server, ca)

    async def main() -> list[Token]:
        return await asyncio.gather(*(made.token() for _ in range(50)))

    tokens = asyncio.run(main())
    assert server.count == 1 and len({t.value for t in tokens}) == 1


def test_single_flight_across_threads_and_loops(oauth_server: Server, ca: TestCA) -> None:
    """Callers on different threads, each with its own event loop, still share one refresh."""
    server = oauth_server()
    server.fail(status=200, delay=0.3)
    made = microsoft(server, ca)
    values: list[str] = []

    def run() -> None:
        async def main() -> list[Token]:
            return await asyncio.gather(*(made.token() for _ in range(10)))

        values.extend(t.value for t in asyncio.run(main()))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert server.count == 1 and len(values) == 40 and len(set(values)) == 1


def test_a_cancelled_fetch_hands_over_to_a_waiter(oauth_server: Server, ca: TestCA) -> None:
    """The caller that fetches is cancelled: a waiting caller fetches instead, nobody hangs."""
    server = oauth_server()
    server.fail(status=200, delay=0.3)
    made = microsoft(server, ca)

    async def main() -> Token:
        leader = asyncio.ensure_future(made.token())
        await asyncio.sleep(0.05)
        waiter = asyncio.ensure_future(made.token())
        await asyncio.sleep(0.05)
        leader.cancel()
        return await asyncio.wait_for(waiter, 10)

    assert server.valid(asyncio.run(main()).value) is not None


def test_invalidate_fetches_a_new_token(oauth_server: Server, ca: TestCA) -> None:
    """invalidate(token) makes the next call POST; an old token does not drop a newer one."""
    server = oauth_server()
    made = microsoft(server, ca)
    first = get(made)
    made.invalidate(first)
    second = get(made)
    assert second != first and server.count == 2
    made.invalidate(first)  # stale: the cached one is already newer
    assert get(made) is second and server.count == 2


# -- failures --------------------------------------------------------------------------------


def _fails(src: TokenSource) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        get(src)
    return caught.value


def _no_secret(error: AuthenticationFailed, *secrets: str) -> None:
    shown = " ".join([str(error), repr(error), json.dumps(error.to_dict()), repr(error.details)])
    for secret in secrets:
        assert secret not in shown


def test_endpoint_refusal_carries_the_oauth_error(oauth_server: Server, ca: TestCA) -> None:
    """400/401 with error + error_description: oauth_token_failed quoting both, no secret."""
    server = oauth_server()
    server.fail(status=401, error="invalid_client", description="AADSTS7000215: Invalid secret.")
    error = _fails(microsoft(server, ca))
    assert error.code == "oauth_token_failed" and error.stage == "auth" and not error.transient
    assert "invalid_client: AADSTS7000215: Invalid secret." in str(error)
    assert error.details["oauth_error"] == "invalid_client"
    _no_secret(error, SECRET)


def test_wrong_refresh_token_is_invalid_grant(oauth_server: Server, ca: TestCA) -> None:
    """A refresh token the endpoint does not know: invalid_grant, the token never quoted."""
    server = oauth_server()
    server.client("c", SECRET)
    made = source(
        ca, provider="generic", token_url=server.url, client_id="c", client_secret=SECRET,
        refresh_token=REFRESH,
    )  # fmt: skip
    error = _fails(made)
    assert error.code == "oauth_token_failed" and "invalid_grant" in str(error)
    _no_secret(error, SECRET, REFRESH)


def test_endpoint_echoing_a_secret_is_redacted(oauth_server: Server, ca: TestCA) -> None:
    """An error_description that quotes the client secret has it cut out."""
    server = oauth_server()
    server.fail(status=400, error="invalid_request", description=f"bad secret {SECRET} given")
    error = _fails(microsoft(server, ca))
    assert "bad secret ******** given" in str(error)
    _no_secret(error, SECRET)


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ({"status": 500, "error": None}, "answered HTTP 500"),
        ({"status": 503, "error": "temporarily_unavailable"}, "temporarily_unavailable"),
        ({"status": 200, "delay": 2.0}, "did not answer in time"),
    ],
)
def test_endpoint_unavailable_is_transient(
    oauth_server: Server, ca: TestCA, fault: dict[str, Any], said: str
) -> None:
    """5xx or a stall: oauth_endpoint_failed, transient, and a next call tries again."""
    server = oauth_server()
    server.fail(**fault)
    made = microsoft(server, ca)
    made._read_timeout = 0.5  # type: ignore[attr-defined]  # FLUXMAIL_TIMEOUT, short here
    error = _fails(made)
    assert error.code == "oauth_endpoint_failed" and error.transient and said in str(error)
    _no_secret(error, SECRET)
    assert server.valid(get(made).value) is not None  # the fault is over


def test_untrusted_certificate(oauth_server: Server, tmp_path: Path) -> None:
    """The endpoint's certificate is checked with fluxmail's TLS policy (here: certifi)."""
    server = oauth_server()
    server.client("app-id", SECRET)
    made = token_source(
        resolve_config(
            object_type="memory", username=MAILBOX, oauth_provider="microsoft",
            oauth_tenant_id="t", oauth_client_id="app-id", oauth_client_secret=SECRET,
            oauth_token_url=server.url,
        )
    )  # fmt: skip
    assert made is not None
    error = _fails(made)
    assert error.code == "oauth_endpoint_failed" and "FLUXMAIL_CA_FILE" in str(error)
    assert server.count == 0


def test_logs_carry_no_secret(
    oauth_server: Server, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG through a success and a failure: no secret, no access token."""
    caplog.set_level(logging.DEBUG)
    server = oauth_server()
    made = microsoft(server, ca)
    token = get(made)
    server.fail(status=401, error="invalid_client", description="nope")
    made.invalidate(token)
    _fails(made)
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert SECRET not in text and token.value not in text


def test_reprs_hide_values(oauth_server: Server, ca: TestCA) -> None:
    """repr(Token) and repr(source) show neither the token nor the secret."""
    server = oauth_server()
    made = microsoft(server, ca)
    token = get(made)
    assert token.value not in repr(token) and SECRET not in repr(made)
    assert "Token(expires_at=" in repr(token)


# -- the callable provider -------------------------------------------------------------------


def test_callable_sync_and_async_providers() -> None:
    """A str (unknown expiry) or an async (str, expires_at) pair; cached and single-flight."""
    calls: list[int] = []

    def sync() -> str:
        calls.append(1)
        return "tok-a"

    async def pair() -> tuple[str, float]:
        calls.append(2)
        await asyncio.sleep(0.05)
        return "tok-b", 4_000_000_000.0

    assert get(CallableTokenSource(sync)) == Token("tok-a", None)
    both = CallableTokenSource(pair)

    async def main() -> list[Token]:
        return await asyncio.gather(*(both.token() for _ in range(20)))

    assert {t for t in asyncio.run(main())} == {Token("tok-b", 4_000_000_000.0)}
    assert calls == [1, 2]


@pytest.mark.parametrize(
    "returned", [None, "", 42, ("tok", "soon"), ("tok", True), b"tok", "a b", "tok\r\nQUIT"]
)
def test_callable_bad_return(returned: object) -> None:
    """Anything but a non-empty str or (str, number): token_provider_invalid."""
    error = _fails(CallableTokenSource(lambda: returned))
    assert error.code == "token_provider_invalid"


def test_callable_that_raises() -> None:
    """The provider's exception is chained, its text (maybe a secret) not quoted."""

    def broken() -> str:
        raise RuntimeError("vault said: password=hunter2")

    error = _fails(CallableTokenSource(broken))
    assert error.code == "token_provider_failed" and "hunter2" not in str(error)
    assert isinstance(error.__cause__, RuntimeError)
