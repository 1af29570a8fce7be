"""The two plain grants: client credentials (RFC 6749 4.4) and refresh token (RFC 6749 6).

No SDK: each is one form POST (``endpoint``). How the client authenticates differs: Microsoft
Entra ID and Google document the credentials as form fields (``client_secret_post``); for the
generic provider fluxmail uses HTTP Basic, the one method RFC 6749 2.3.1 says every
authorization server MUST support.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from fluxmail.transport.oauth.endpoint import EndpointTokenSource, Request, basic_auth

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = ["ClientAuth", "ClientCredentialsSource", "RefreshTokenSource"]

ClientAuth = Literal["post", "basic"]


class _ClientSource(EndpointTokenSource):
    def __init__(
        self,
        config: Config,
        url: str,
        *,
        client_id: str,
        client_secret: SecretStr | None,
        scope: str | None,
        client_auth: ClientAuth,
        **options: Any,
    ) -> None:
        super().__init__(config, url, **options)
        self._client_id, self._secret = client_id, client_secret
        self._scope, self._client_auth = scope, client_auth

    def _client(self, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """The form with the client's credentials, and the headers that carry them."""
        if self._secret is None:  # a public client names itself only (RFC 6749 3.2.1)
            return {**form, "client_id": self._client_id}, {}
        secret = self._secret.get_secret_value()
        if self._client_auth == "basic":
            return form, {"Authorization": basic_auth(self._client_id, secret)}
        return {**form, "client_id": self._client_id, "client_secret": secret}, {}

    def _secrets(self) -> tuple[str, ...]:
        return (self._secret.get_secret_value(),) if self._secret is not None else ()


class ClientCredentialsSource(_ClientSource):
    """``grant_type=client_credentials``: the service's own identity (Microsoft app-only)."""

    def _request(self) -> Request:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        body, headers = self._client(form)
        return body, headers, self._secrets()


class RefreshTokenSource(_ClientSource):
    """``grant_type=refresh_token``: a user's consent, kept as a long-lived refresh token.

    An endpoint may rotate the refresh token (RFC 6749 6: "MAY issue a new refresh token");
    the new one replaces the old in memory, for the life of this process.
    """

    def __init__(self, config: Config, url: str, *, refresh_token: SecretStr, **kw: Any) -> None:
        super().__init__(config, url, **kw)
        self._refresh = refresh_token

    def _request(self) -> Request:
        refresh = self._refresh.get_secret_value()
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        if self._scope:
            form["scope"] = self._scope
        body, headers = self._client(form)
        return body, headers, (*self._secrets(), refresh)

    def _accepted(self, reply: Mapping[str, Any]) -> None:
        rotated = reply.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            self._refresh = SecretStr(rotated)
