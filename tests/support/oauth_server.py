"""A real OAuth 2.0 token endpoint on 127.0.0.1 (HTTPS with the test CA), in a thread.

It implements what fluxmail's token sources post (RFC 6749):

- ``client_credentials`` (4.4) and ``refresh_token`` (6), the client authenticated by form
  fields (``client_secret_post``) or HTTP Basic (2.3.1); a public client (no secret) for refresh;
- the JWT-bearer grant (RFC 7523) of Google service accounts: the assertion's RS256 signature is
  verified with the registered key, and its claims ``iss`` / ``sub`` / ``scope`` / ``aud`` /
  ``exp`` checked as Google does.

Tokens are short-lived (``lifetime``) and remembered (:meth:`OAuthServer.valid`), so a test SMTP
server can check the bearer token it is shown. Faults on demand (:meth:`fail`: a 4xx with
``error`` / ``error_description``, a 500, a stall), and every request is recorded
(:attr:`OAuthServer.requests`).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.http_thread import ServerThread
from tests.support.servers import TestCA

__all__ = ["Fault", "Issued", "OAuthServer", "Seen", "service_account_key"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True)
class Seen:
    """One request as the endpoint received it."""

    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass(frozen=True)
class Issued:
    """A token the endpoint handed out: for whom and until when."""

    grant: str
    client_id: str | None
    subject: str | None
    scope: str | None
    expires_at: float


@dataclass
class Fault:
    """What the endpoint answers instead, ``times`` times (None: always)."""

    status: int = 400
    error: str | None = "invalid_client"
    description: str | None = None
    delay: float = 0.0
    times: int | None = 1


@dataclass
class _State:
    clients: dict[str, str | None] = field(default_factory=dict)  # id -> secret (None: public)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> client id
    accounts: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)  # email -> key
    issued: dict[str, Issued] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


def service_account_key(email: str, token_uri: str) -> tuple[dict[str, Any], rsa.RSAPublicKey]:
    """A service-account key file's JSON (a fresh RSA key) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "fluxmail-test",
        "private_key_id": secrets.token_hex(8),
        "private_key": pem,
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return info, key.public_key()


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OAuthServer:
    """``OAuthServer(ca).start()``; ``url`` is its token endpoint, ``stop()`` ends it."""

    def __init__(self, ca: TestCA, *, lifetime: float = 3600, path: str = "/token") -> None:
        self.ca, self.lifetime, self.path = ca, lifetime, path
        self.scope = "https://mail.google.com/"  # what a service-account assertion must ask
        self.rotate = False  # answer refresh grants with a new refresh token
        self.state = _State()
        self._lock = threading.Lock()
        self._server: ServerThread | None = None

    # -- set-up -----------------------------------------------------------------------------
    def client(self, client_id: str, secret: str | None) -> None:
        self.state.clients[client_id] = secret

    def refresh_token(self, token: str, client_id: str) -> None:
        self.state.refresh_tokens[token] = client_id

    def account(self, email: str) -> dict[str, Any]:
        """Register a service account; returns its key file's JSON (token_uri = this URL)."""
        info, public = service_account_key(email, self.url)
        self.state.accounts[email] = public
        return info

    def fail(self, **fault: Any) -> Fault:
        made = Fault(**fault)
        with self._lock:
            self.state.faults.append(made)
        return made

    # -- what happened ----------------------------------------------------------------------
    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.state.requests)

    @property
    def count(self) -> int:
        return len(self.requests)

    def valid(self, token: str, now: float | None = None) -> Issued | None:
        """The token's grant if this endpoint issued it and it has not expired."""
        with self._lock:
            issued = self.state.issued.get(token)
        if issued is None or issued.expires_at <= (time.time() if now is None else now):
            return None
        return issued

    @property
    def tokens(self) -> list[str]:
        with self._lock:
            return list(self.state.issued)

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"https://127.0.0.1:{self._server.port}{self.path}"

    def start(self) -> OAuthServer:
        self._server = ServerThread(_handler(self), self.ca.server_context())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    # -- the endpoint -----------------------------------------------------------------------
    def _fault(self) -> Fault | None:
        with self._lock:
            if not self.state.faults:
                return None
            fault = self.state.faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.state.faults.pop(0)
            return fault

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.state.requests.append(seen)
        fault = self._fault()
        if fault is not None:
            time.sleep(fault.delay)
            if fault.status == 200:  # a stall only: then the normal answer
                fault = None
        if fault is not None:
            body = {"error": fault.error, "error_description": fault.description}
            return fault.status, {k: v for k, v in body.items() if v is not None}
        if seen.path != self.path:
            return 404, {"error": "not_found"}
        try:
            return 200, self._grant(seen)
        except _Refusal as refusal:
            return refusal.status, {"error": refusal.error, "error_description": refusal.text}

    def _grant(self, seen: Seen) -> dict[str, Any]:
        grant = seen.form.get("grant_type")
        if grant == "client_credentials":
            client = self._client(seen, public_ok=False)
            return self._issue(grant, client, None, seen.form.get("scope"))
        if grant == "refresh_token":
            client = self._client(seen, public_ok=True)
            if self.state.refresh_tokens.get(seen.form.get("refresh_token", "")) != client:
                raise _Refusal(400, "invalid_grant", "The refresh token is invalid or expired.")
            reply = self._issue(grant, client, None, seen.form.get("scope"))
            if self.rotate:
                new = secrets.token_urlsafe(24)
                self.state.refresh_tokens.pop(seen.form["refresh_token"])
                self.state.refresh_tokens[new] = client
                reply["refresh_token"] = new
            return reply
        if grant == JWT_BEARER:
            claims = self._assertion(seen.form.get("assertion", ""))
            return self._issue(grant, None, claims["sub"], claims["scope"])
        raise _Refusal(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _client(self, seen: Seen, *, public_ok: bool) -> str:
        """RFC 6749 2.3.1: Basic, or client_id / client_secret in the form; never both."""
        header = seen.headers.get("authorization", "")
        in_form = "client_secret" in seen.form
        given: str | None
        if header.startswith("Basic "):
            if in_form:
                raise _Refusal(400, "invalid_request", "more than one client authentication")
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            client_id, given = unquote(user), unquote(secret)
        else:
            client_id, given = seen.form.get("client_id", ""), seen.form.get("client_secret", "")
            given = given if in_form else None
        if client_id not in self.state.clients:
            raise _Refusal(401, "invalid_client", f"Client {client_id!r} is unknown.")
        expected = self.state.clients[client_id]
        if expected is None and public_ok and given is None:
            return client_id
        if expected is None or given != expected:
            raise _Refusal(401, "invalid_client", "Client authentication failed.")
        return client_id

    def _assertion(self, assertion: str) -> dict[str, Any]:
        """RFC 7523 section 3: signature, issuer, audience, expiry (and Google's scope/sub)."""
        try:
            head, body, signature = assertion.split(".")
            header, claims = json.loads(_b64url(head)), json.loads(_b64url(body))
        except ValueError:
            raise _Refusal(400, "invalid_grant", "Malformed assertion.") from None
        key = self.state.accounts.get(claims.get("iss", ""))
        if header.get("alg") != "RS256" or key is None:
            raise _Refusal(400, "invalid_grant", "Unknown issuer or algorithm.")
        try:
            signed = f"{head}.{body}".encode()
            key.verify(_b64url(signature), signed, padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            raise _Refusal(400, "invalid_grant", "Invalid JWT Signature.") from None
        now = time.time()
        problems = [
            claims.get("aud") != self.url and "aud",
            not claims.get("sub") and "sub",
            claims.get("scope") != self.scope and "scope",
            not (now < claims.get("exp", 0) <= claims.get("iat", 0) + 3600) and "exp",
        ]
        bad = [p for p in problems if p]
        if bad:
            raise _Refusal(400, "invalid_grant", f"Invalid JWT claims: {', '.join(bad)}.")
        return dict(claims)

    def _issue(
        self, grant: str, client: str | None, subject: str | None, scope: str | None
    ) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(24)
        issued = Issued(grant, client, subject, scope, time.time() + self.lifetime)
        with self._lock:
            self.state.issued[token] = issued
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}


class _Refusal(Exception):
    def __init__(self, status: int, error: str, text: str) -> None:
        super().__init__(text)
        self.status, self.error, self.text = status, error, text


def _handler(server: OAuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen = Seen(self.path, headers, dict(parse_qsl(raw, keep_blank_values=True)))
            status, body = server.answer(seen)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

    return Handler


@contextmanager
def running(ca: TestCA, **options: Any) -> Iterator[OAuthServer]:
    server = OAuthServer(ca, **options).start()
    try:
        yield server
    finally:
        server.stop()
