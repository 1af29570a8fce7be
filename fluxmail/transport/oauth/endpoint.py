"""One POST to an OAuth 2.0 token endpoint (RFC 6749 section 3.2), and what its reply means.

A source subclasses :class:`EndpointTokenSource` and says what to post (``_request``); the POST,
the TLS policy (``fluxmail.config.tls.client_context``: certifi or FLUXMAIL_CA_FILE), the
timeouts and the mapping of replies to errors live here once:

    200 + access_token                    -> Token (expires_in -> expires_at)
    4xx {"error", "error_description"}    -> AuthenticationFailed oauth_token_failed (RFC 6749 5.2)
    5xx, no answer, timeout, not JSON     -> AuthenticationFailed oauth_endpoint_failed, transient

Error messages quote the endpoint's ``error`` and ``error_description`` with every secret of
the request cut out; never the client secret, the refresh token, the assertion or the token.
httpx is imported inside functions (cold start).
"""

from __future__ import annotations

import base64
import json
import re
from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from fluxmail.config.tls import client_context
from fluxmail.errors import AuthenticationFailed
from fluxmail.redaction import redact_words
from fluxmail.transport.oauth.cache import Token, TokenSource

if TYPE_CHECKING:
    import ssl

    import httpx

    from fluxmail.config.model import Config

__all__ = ["EndpointTokenSource", "Request", "basic_auth"]

# (form fields, extra headers, the secrets in them that no message may quote)
Request = tuple[dict[str, str], dict[str, str], tuple[str, ...]]
_TEXT_MAX = 300
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
# RFC 6749 5.2 says the endpoint answers 400 (401 for a failed client authentication).
_TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error", "slow_down"}


def basic_auth(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: each part form-urlencoded, then HTTP Basic (RFC 7617)."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class EndpointTokenSource(TokenSource):
    """A token source that POSTs a form to ``url`` for each new token."""

    def __init__(self, config: Config, url: str, **options: Any) -> None:
        super().__init__(**options)
        self.url = url
        parts = urlsplit(url)
        self.endpoint = f"{parts.hostname}{parts.path}"  # for messages: no query, no user part
        self._connect_timeout = config.connect_timeout
        self._read_timeout = config.command_timeout
        self._ca_file, self._verify = config.ca_file, config.tls_verify
        self._context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint!r})"

    @abstractmethod
    def _request(self) -> Request: ...

    def _accepted(self, reply: Mapping[str, Any]) -> None:
        """Hook for what else a successful reply carries (a rotated refresh token)."""

    async def _fetch(self) -> Token:
        form, headers, secrets = self._request()
        response = await self._post(form, headers)
        reply = _json(response)
        if response.status_code != 200 or not isinstance(reply.get("access_token"), str):
            raise _refused(self.endpoint, response.status_code, reply, secrets)
        token = _token(reply, self._clock())
        if token is None:
            raise _failed(self.endpoint, "answered 200 without a usable access_token")
        self._accepted(reply)
        return token

    async def _post(self, form: dict[str, str], headers: dict[str, str]) -> httpx.Response:
        import httpx

        if self._context is None:
            self._context = client_context(self._ca_file, verify=self._verify)
        timeout = httpx.Timeout(self._read_timeout, connect=self._connect_timeout)
        sent = {"Accept": "application/json", **headers}
        try:
            # trust_env=False: no proxy, netrc or certificate variables steer the request that
            # carries the client secret; fluxmail's TLS policy alone decides what is trusted.
            async with httpx.AsyncClient(
                verify=self._context, timeout=timeout, trust_env=False, follow_redirects=False
            ) as client:
                return await client.post(self.url, data=form, headers=sent)
        except httpx.TimeoutException:
            raise _failed(self.endpoint, "did not answer in time (FLUXMAIL_TIMEOUT)") from None
        except httpx.HTTPError as exc:
            why = _tls_hint(exc) or f"cannot be reached ({type(exc).__name__})"
            raise _failed(self.endpoint, why) from None


def _tls_hint(exc: Exception) -> str | None:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "has a certificate that is not trusted (FLUXMAIL_CA_FILE trusts a private CA)"
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _token(reply: Mapping[str, Any], now: float) -> Token | None:
    value, kind = reply.get("access_token"), reply.get("token_type", "Bearer")
    if not isinstance(value, str) or not value or not isinstance(kind, str):
        return None
    if kind.lower() != "bearer":  # RFC 7628 and XOAUTH2 carry bearer tokens only
        return None
    lifetime: object = reply.get("expires_in")
    if isinstance(lifetime, str) and lifetime.strip().isdigit():
        lifetime = int(lifetime)  # some endpoints send it as a string
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
        return Token(value)
    return Token(value, now + float(lifetime))


def _clean(value: object, secrets: tuple[str, ...]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = _UNPRINTABLE.sub(" ", redact_words(value, secrets)).strip()
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 3] + "..."


def _refused(
    endpoint: str, status: int, reply: Mapping[str, Any], secrets: tuple[str, ...]
) -> AuthenticationFailed:
    error = _clean(reply.get("error"), secrets)
    described = _clean(reply.get("error_description"), secrets)
    said = ": ".join(x for x in (error, described) if x)
    if error is None or status >= 500 or status == 200:
        why = f"answered HTTP {status}" + (f" ({said})" if said else "")
        return _failed(
            endpoint, why, oauth_error=error, oauth_error_description=described, http_status=status
        )
    return AuthenticationFailed(
        f"the OAuth token endpoint {endpoint} refused the request (HTTP {status}): {said}",
        code="oauth_token_failed",
        stage="auth",
        transient=error in _TRANSIENT_ERRORS,
        oauth_error=error,
        oauth_error_description=described,
        http_status=status,
    )


def _failed(endpoint: str, why: str, **details: Any) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"no access token: the OAuth token endpoint {endpoint} {why}",
        code="oauth_endpoint_failed",
        stage="auth",
        transient=True,
        **details,
    )
