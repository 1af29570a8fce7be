"""``Config``: the resolved, validated configuration a mailer runs on (frozen data).

:func:`fluxmail.config.resolve.resolve_config` builds it; every field keeps the name of the
source it came from (``Config.sources``, shown by ``describe()`` and ``fluxmail config``).
"""

# No ``from __future__ import annotations``: dataclass reads string annotations with a
# regex per field (ClassVar, InitVar, KW_ONLY), ~65 fields on every cold start.
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from fluxmail._frozen import Frozen
from fluxmail.config.tls import Security, client_context
from fluxmail.errors import MessageError
from fluxmail.message.addresses import parse_address
from fluxmail.redaction import REDACTED

if TYPE_CHECKING:
    import ssl

    from fluxmail.config.providers import Provider

__all__ = ["NOT_SETTINGS", "Config", "is_address"]

# Config fields that are bookkeeping, not settings: describe() leaves them out.
NOT_SETTINGS = ("sources", "_ssl_cache", "warnings")


def is_address(value: str | None) -> bool:
    """A bare address the strict parser accepts (not ``apikey``, not a token, no display name).

    The same rule as every From of a message (fluxmail.message.addresses), so a login that
    passes here never fails as the sender later.
    """
    if not value:
        return False
    try:
        parsed = parse_address(value, field="username")
    except MessageError:
        return False
    return not parsed.name and parsed.addr == value


# init=False, eq=False, Frozen instead of frozen=True: the __init__, __eq__, __hash__,
# __setattr__ and __delattr__ that dataclass generates for ~65 fields are compiled from source
# when the class is made, which was the largest part of what fluxmail added to a cold start.
# Configs are never compared; ``__init__`` below does the generated one's work (keywords only,
# as every caller and dataclasses.replace pass them).
@dataclass(repr=False, init=False, eq=False)
class Config(Frozen):
    """Everything a mailer needs, validated; secrets are ``SecretStr`` and never shown."""

    backend: str
    host: str | None
    port: int | None
    domain: str
    security: Security
    username: str | None
    password: SecretStr | None
    ssl_context_override: "ssl.SSLContext | None"
    tls_verify: bool
    ca_file: Path | None
    local_hostname: str | None
    connect_timeout: float
    command_timeout: float
    data_timeout: float
    timeout: float
    max_retries: int
    retry_delay: float
    retry_deadline: float | None
    sender: str | None
    provider: "Provider | None"
    region: str | None
    allow_insecure_auth: bool
    dry_run: bool
    audit: bool
    audit_dir: Path | None
    audit_url: SecretStr | None
    audit_password: SecretStr | None
    file_dir: Path
    rate_limit: float | None
    # The SMTP login mechanism, resolved ("auto" never stays): password, xoauth2, oauthbearer.
    auth: str = "password"
    # FluxMail(token_provider=...): a callable (sync or async) returning an OAuth access token.
    token_provider: Callable[[], Any] | None = None
    # FluxMail(origin="mcp"): stored on every record this mailer writes (who wrote it).
    origin: str | None = None
    # FLUXMAIL_OAUTH_*: where the access tokens come from (fluxmail.config.oauth checks them).
    oauth_provider: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_refresh_token: SecretStr | None = None
    oauth_tenant_id: str | None = None
    oauth_scope: str | None = None
    oauth_token_url: str | None = None
    oauth_service_account_file: Path | None = None
    oauth_subject: str | None = None
    # FLUXMAIL_TRANSPORT=api (config/api.py): the module fluxmail/transport/api/<api_provider>.py,
    # its key, the base URL override (scheme://host:port) and options (region, message_stream...).
    api_provider: str | None = None
    api_key: SecretStr | None = None
    api_base_url: str | None = None
    api_options: Mapping[str, str] = field(default_factory=dict)
    # failover(...) / roundrobin(...): each member resolved on its own (config/composite.py).
    members: "tuple[Config, ...]" = ()
    failover_cooldown: float = 30.0
    retry_max_delay: float = 300.0
    outbox_lease: float = 60.0
    outbox_poll_interval: float = 5.0
    # fluxmail mcp (docs/agents.md): what an agent may do through the MCP server.
    mcp_allow_send: bool = False
    mcp_attachment_dir: Path | None = None
    mcp_max_sends: int | None = None
    mcp_max_recipients: int | None = None
    mcp_allowed_domains: str | None = None
    # create(template=...) (docs/templates.md): read when a template is first rendered.
    templates_dir: Path | None = None
    # FLUXMAIL_DKIM_* (docs/dkim.md): fluxmail.config.dkim loads and checks the keys.
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: SecretStr | None = None
    dkim_second_selector: str | None = None
    dkim_second_private_key: SecretStr | None = None
    dkim_allow_unaligned: bool = False
    sources: Mapping[str, str] = field(default_factory=dict)
    _ssl_cache: "dict[str, ssl.SSLContext]" = field(default_factory=dict)
    # Unknown FLUXMAIL_* names found while resolving (misspellings); the mailer logs them.
    warnings: tuple[str, ...] = ()

    def __init__(self, **values: Any) -> None:
        for f in dataclasses.fields(self):
            if f.name in values:
                value = values.pop(f.name)
            elif f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                raise TypeError(f"Config() missing the keyword argument {f.name!r}")
            object.__setattr__(self, f.name, value)
        if values:
            raise TypeError(f"Config() got unexpected keyword arguments {sorted(values)}")

    def ssl_context(self) -> "ssl.SSLContext | None":
        """The TLS context (None without TLS): override > ca_file > certifi; built once."""
        if self.security == "none":
            return None
        if self.ssl_context_override is not None:
            return self.ssl_context_override
        return self._built_context()

    def https_context(self) -> "ssl.SSLContext":
        """The TLS context of the HTTP API transports: override > ca_file > certifi, always."""
        if self.ssl_context_override is not None:
            return self.ssl_context_override
        return self._built_context()

    def _built_context(self) -> "ssl.SSLContext":
        """The context of the TLS policy (ca_file or certifi), built once."""
        cached = self._ssl_cache.get("ctx")
        if cached is None:
            context = client_context(self.ca_file, verify=self.tls_verify)
            cached = self._ssl_cache.setdefault("ctx", context)
        return cached

    @property
    def endpoint(self) -> str:
        """Where mail goes, without credentials: ``smtps://b.example:465``, ``memory``, or
        ``failover(smtp://a.example:587 smtps://b.example:465)``."""
        if self.members:
            return f"{self.backend}({' '.join(m.endpoint for m in self.members)})"
        if self.backend == "api":
            where = urlsplit(self.api_base_url).netloc if self.api_base_url else "default"
            return f"{self.api_provider}+api://{where}"
        if self.backend != "smtp" or self.host is None:
            return self.backend
        scheme = {"starttls": "smtp", "implicit": "smtps"}.get(self.security, "smtp+plain")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def describe(self) -> dict[str, dict[str, object]]:
        """Every field with its value (secrets redacted) and where it came from."""
        result: dict[str, dict[str, object]] = {}
        for f in dataclasses.fields(self):
            if f.name in NOT_SETTINGS:
                continue
            value = self._shown(f.name, getattr(self, f.name))
            result[f.name] = {"value": value, "source": self.sources.get(f.name, "default")}
        return result

    def _shown(self, name: str, value: object) -> object:
        if isinstance(value, SecretStr):
            return REDACTED
        if name == "username" and value is not None and self.password is not None:
            # Postmark-style logins reuse the token as the username: never print it.
            return REDACTED if value == self.password.get_secret_value() else value
        if name == "ssl_context_override":
            return None if value is None else "<ssl.SSLContext given as argument>"
        if name == "token_provider":  # its repr may show a bound object's state: never print it
            return None if value is None else "<callable given as argument>"
        if name == "members":
            return [m.endpoint for m in value] if isinstance(value, tuple) else value
        if name == "provider":
            return None if value is None else getattr(value, "name", str(value))
        if name == "api_options" and isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, Path):
            return str(value)
        return value

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v['value']!r}" for k, v in self.describe().items())
        return f"Config({shown})"

    __str__ = __repr__

    def default_sender(self) -> str | None:
        """FLUXMAIL_SENDER, else the username when it is an address and the provider says the
        login is an address. A literal (``apikey``) or token username never becomes a sender."""
        if self.sender:
            return self.sender
        if self.provider is not None and (
            self.provider.username_kind != "address" or self.provider.sender_required
        ):
            return None
        return self.username if is_address(self.username) else None
