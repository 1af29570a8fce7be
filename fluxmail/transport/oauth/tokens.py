"""Access tokens for SASL XOAUTH2 / OAUTHBEARER: where they come from and how they are cached.

``TokenSource.token()`` (``cache``) returns a cached token until shortly before it expires;
concurrent callers share one refresh (single flight). ``invalidate(token)`` is called when a
server refused the token, so the next ``token()`` fetches a new one. :func:`token_source` picks
the source a configuration asks for: ``token_provider=``, else the ``FLUXMAIL_OAUTH_*``
settings (``endpoint`` posts to a token endpoint, ``google`` signs service-account grants).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fluxmail.config.oauth import check_oauth, oauth_flow, scope, token_url
from fluxmail.errors import AuthenticationFailed, FluxMailException
from fluxmail.transport.oauth.cache import REFRESH_MARGIN, UNKNOWN_LIFETIME, Token, TokenSource
from fluxmail.transport.oauth.google import ServiceAccountSource, load_key
from fluxmail.transport.oauth.grants import (
    ClientAuth,
    ClientCredentialsSource,
    RefreshTokenSource,
)

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = [
    "REFRESH_MARGIN",
    "UNKNOWN_LIFETIME",
    "CallableTokenSource",
    "Token",
    "TokenSource",
    "from_settings",
    "token_source",
]


class CallableTokenSource(TokenSource):
    """``FluxMail(token_provider=fn)``: ``fn`` is sync or async and returns a token ``str`` or a
    ``(token, expires_at)`` pair (epoch seconds)."""

    def __init__(self, provider: Callable[[], Any], **options: Any) -> None:
        super().__init__(**options)
        self._provider = provider

    def __repr__(self) -> str:
        return f"CallableTokenSource({getattr(self._provider, '__qualname__', 'provider')})"

    async def _fetch(self) -> Token:
        try:
            got = self._provider()
            if inspect.isawaitable(got):
                got = await got
        except FluxMailException:
            raise
        except Exception as exc:
            # Only the type: the provider's own message may quote what it read.
            raise AuthenticationFailed(
                f"token_provider raised {type(exc).__name__}; no access token for the login",
                code="token_provider_failed",
                stage="auth",
            ) from exc
        return _as_token(got)


def _as_token(got: object) -> Token:
    expires: object = None
    if isinstance(got, tuple) and len(got) == 2:
        got, expires = got
    number = isinstance(expires, (int, float)) and not isinstance(expires, bool)
    # A bearer token is printable ASCII without spaces (RFC 6750 section 2.1): anything else
    # would break the SASL message it goes into.
    printable = isinstance(got, str) and all(33 <= ord(ch) <= 126 for ch in got)
    if not printable or not got or (expires is not None and not number):
        raise AuthenticationFailed(
            "token_provider must return a non-empty str or a (str, expires_at) pair with "
            f"expires_at in epoch seconds; it returned a {type(got).__name__}",
            code="token_provider_invalid",
            stage="auth",
        )
    if number and not math.isfinite(float(expires)):  # type: ignore[arg-type]
        expires = None
    return Token(got, float(expires) if number else None)  # type: ignore[arg-type]


def token_source(config: Config, **options: Any) -> TokenSource | None:
    """The token source a configuration asks for, or None without OAuth.

    ``token_provider=`` wins over the ``FLUXMAIL_OAUTH_*`` settings. Building a source reads
    no network; a Google service-account key is loaded (and refused) here.
    """
    provider = getattr(config, "token_provider", None)
    if provider is not None:
        return CallableTokenSource(provider, **options)
    return from_settings(config, **options)


def from_settings(config: Config, **options: Any) -> TokenSource | None:
    """The source of the ``FLUXMAIL_OAUTH_*`` settings (None without FLUXMAIL_OAUTH_PROVIDER)."""
    flow = oauth_flow(config)
    if flow is None:
        return None
    check_oauth(config)  # resolve_config checked already; a hand-built Config is checked here
    if flow == "service_account":
        assert config.oauth_service_account_file is not None  # check_oauth: the flow needs it
        info = load_key(config.oauth_service_account_file)
        return ServiceAccountSource(config, info, **options)
    url = token_url(config)
    assert url is not None and config.oauth_client_id is not None  # check_oauth: both needed
    auth: ClientAuth = "basic" if config.oauth_provider == "generic" else "post"
    common: dict[str, Any] = {
        "client_id": config.oauth_client_id,
        "client_secret": config.oauth_client_secret,
        "scope": scope(config),
        "client_auth": auth,
        **options,
    }
    if flow == "refresh_token":
        assert config.oauth_refresh_token is not None
        return RefreshTokenSource(config, url, refresh_token=config.oauth_refresh_token, **common)
    return ClientCredentialsSource(config, url, **common)
