"""Google service accounts with domain-wide delegation: the JWT-bearer grant (RFC 7523).

google-auth (``fluxmail[oauth]``) does the real work: it loads the key and signs the assertion
(RS256, ``google.auth.crypt`` and ``google.auth.jwt``). fluxmail POSTs the assertion itself
with httpx (``endpoint``) rather than calling ``service_account.Credentials.refresh()``: that
path needs google-auth's own blocking HTTP transport (``requests``), which would bypass
fluxmail's TLS policy, timeouts and ``FLUXMAIL_OAUTH_TOKEN_URL``. The claims are Google's
(https://developers.google.com/identity/protocols/oauth2/service-account#authorizingrequests):
``iss`` the service account, ``sub`` the mailbox, ``scope``, ``aud`` the key's ``token_uri``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fluxmail.config.oauth import GOOGLE_SCOPE, GOOGLE_TOKEN_URL, scope
from fluxmail.config.secrets import read_secret_file
from fluxmail.errors import ConfigurationError
from fluxmail.transport.oauth.endpoint import EndpointTokenSource, Request

if TYPE_CHECKING:
    from pathlib import Path

    from fluxmail.config.model import Config

__all__ = ["ASSERTION_LIFETIME", "JWT_BEARER", "ServiceAccountSource", "load_key"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # Google's maximum for an assertion
_VAR = "FLUXMAIL_OAUTH_SERVICE_ACCOUNT_FILE"
INSTALL_HINT = (
    "a Google service account (FLUXMAIL_OAUTH_SERVICE_ACCOUNT_FILE) needs google-auth: install "
    "fluxmail[oauth] (python -m pip install 'fluxmail[oauth]')"
)


def load_key(path: Path) -> dict[str, Any]:
    """The key file's JSON; refused unless it is a service-account key (content never quoted)."""
    try:
        info = json.loads(read_secret_file(_VAR, str(path)))
    except ValueError as exc:
        if isinstance(exc, ConfigurationError):
            raise
        info = None
    fields = ("client_email", "private_key")
    if not isinstance(info, dict) or info.get("type") != "service_account":
        problem = 'is not a service-account key (JSON with "type": "service_account")'
    elif not all(isinstance(info.get(f), str) and info[f] for f in fields):
        problem = "has no client_email or private_key"
    else:
        return info
    raise ConfigurationError(
        f"{_VAR}={str(path)!r} {problem}; download a JSON key of the service account "
        "(IAM & Admin > Service accounts > Keys)",
        code="invalid_service_account",
    )


class ServiceAccountSource(EndpointTokenSource):
    """Tokens for ``subject`` from a service-account key, signed by google-auth."""

    def __init__(self, config: Config, info: dict[str, Any], **options: Any) -> None:
        try:
            from google.auth import crypt
        except ImportError:
            raise ConfigurationError(INSTALL_HINT, code="missing_extra") from None
        self._audience = str(info.get("token_uri") or GOOGLE_TOKEN_URL)
        # FLUXMAIL_OAUTH_TOKEN_URL changes where the assertion goes, not whom it is for.
        super().__init__(config, config.oauth_token_url or self._audience, **options)
        try:
            self._signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"{_VAR}: the private_key of the service-account key cannot be loaded; download "
                "a new JSON key",
                code="invalid_service_account",
            ) from None
        self._issuer = str(info["client_email"])
        self._subject, self._scope = str(config.oauth_subject), scope(config) or GOOGLE_SCOPE

    def _request(self) -> Request:
        from google.auth import jwt

        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "sub": self._subject,
            "scope": self._scope,
            "aud": self._audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        signed: bytes = jwt.encode(self._signer, claims)  # type: ignore[no-untyped-call]
        assertion = signed.decode("ascii")
        return {"grant_type": JWT_BEARER, "assertion": assertion}, {}, (assertion,)
