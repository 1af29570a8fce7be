"""Every ``FLUXMAIL_*`` setting declared once: names, types, rules and docs.

``SettingsFields`` is the declaration only, a plain class that pydantic never builds:
``fluxmail.config.settings`` builds ``FluxMailSettings`` from its body on pydantic-settings'
``BaseSettings``, so a cold start builds one model instead of two. The known variable names
and the misspelling hints come from here too.
"""

# No ``from __future__ import annotations``: pydantic would compile every field's annotation
# string again for each class built on these fields, on every cold start.
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from fluxmail._lazy import lazy_module
from fluxmail.config.ports import PORT_MAX, PORT_MIN
from fluxmail.config.sources import ENV_PREFIX, SECRET_FIELDS, Trace, env_name
from fluxmail.config.urls import UrlParts

if TYPE_CHECKING:
    import difflib

    from pydantic import BaseModel as _Declaration  # what FluxMailSettings makes of it
else:  # the misspelling hints only: not every cold start
    difflib = lazy_module("difflib")
    _Declaration = object

__all__ = [
    "Documented", "SettingsFields", "field_docs", "field_names", "known_variables", "parse_bool",
    "unknown_lines",
]  # fmt: skip

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_bool(value: object) -> object:
    """true/1/yes/on and false/0/no/off, any case; anything else is left for pydantic to refuse."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return "invalid"  # pydantic's own parser would accept t/f/y/n; we do not


def _strict_int(value: object) -> object:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        return "invalid"
    if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
        return "invalid"
    return value


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _blank_or_int(value: object) -> object:
    return _strict_int(_blank_is_none(value)) if value is not None else None


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _lower_or_none(value: object) -> object:
    return _lower(_blank_is_none(value))


# The kinds of settings. Plain types, no per-field validators or Annotated markers: pydantic
# builds this model on every cold start, and those made that a third slower. Each kind reads
# a raw value (an environment or .env string, an argument) its own way, in ``_READS``.
Bool = bool
OptBool = bool | None
Port = Annotated[int, Field(ge=PORT_MIN, le=PORT_MAX)] | None
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
OptSeconds = Seconds | None
Delay = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Rate = Annotated[float | None, Field(gt=0, allow_inf_nan=False)]
Lease = Annotated[float, Field(ge=5, le=86400, allow_inf_nan=False)]
Poll = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
Text = str | None
Secret = SecretStr | None
OptPath = Path | None
Backend = Literal["smtp", "console", "file", "memory"]
AuthMode = Literal["auto", "password", "xoauth2", "oauthbearer"]
TransportKind = Literal["smtp", "api"]
OAuthProvider = Literal["microsoft", "google", "generic"] | None
MaxSends = Annotated[int, Field(ge=0)] | None
MaxRecipients = Annotated[int, Field(ge=1)] | None

# How each kind reads a raw value before pydantic checks its type; a field's kind is the very
# object its annotation names (compared with ``is``: ``host: str | None`` equals ``Text`` but
# reads as given). Kinds not listed (the floats, ``file_dir: Path``) read as given too.
_READS: tuple[tuple[object, Callable[[object], object]], ...] = (
    (Bool, parse_bool),
    (OptBool, parse_bool),
    (Port, _strict_int),
    (Count, _strict_int),
    (Text, _blank_is_none),
    (Secret, _blank_is_none),
    (OptPath, _blank_is_none),
    (Backend, _lower),
    (AuthMode, _lower),
    (TransportKind, _lower),
    (OAuthProvider, _lower_or_none),
    (MaxSends, _blank_or_int),
    (MaxRecipients, _blank_or_int),
)


class Documented:
    """A setting's default and its line in the configuration reference.

    Not a pydantic ``Field``: the model is built from the plain defaults (``settings_class``),
    and the docs are read only by the reference's generator. A ``Field`` per setting was made
    here and copied again by pydantic on every cold start (~9 M instructions for 64 settings).
    """

    __slots__ = ("default", "secret", "text", "upstream")

    def __init__(self, default: Any, text: str, *, upstream: bool, secret: bool) -> None:
        self.default = default
        self.text = text
        self.upstream = upstream  # a fluxmail 0.3.3 name
        self.secret = secret


def _doc(default: Any, text: str, *, upstream: bool = False, secret: bool = False) -> Any:
    return Documented(default, text, upstream=upstream, secret=secret)


class SettingsFields(_Declaration):
    """Every ``FLUXMAIL_*`` setting (``FluxMailSettings`` reads them from their sources)."""

    type: Backend = _doc(
        "smtp", "Backend: `smtp`, `console`, `file` or `memory` (`object_type=`).", upstream=True
    )
    # Not blank-is-None: an empty FLUXMAIL_HOST is the invalid_host error, not "no host".
    host: str | None = _doc(
        None,
        "SMTP relay: `host`, `relay:domain`, `host:port` or `[ipv6]:port`. Required for smtp "
        "unless FLUXMAIL_PROVIDER or FLUXMAIL_URL gives it.",
        upstream=True,
    )
    port: Port = _doc(
        None, "Port 1-65535; default from the provider or the TLS mode (587/465/25).", upstream=True
    )
    tls: OptBool = _doc(None, "STARTTLS (`use_tls=`).", upstream=True)
    ssl: OptBool = _doc(None, "Implicit TLS from the first byte (`use_ssl=`).", upstream=True)
    username: Text = _doc(None, "SMTP login.", upstream=True)
    password: Secret = _doc(None, "SMTP password or API key.", upstream=True, secret=True)
    auth: AuthMode = _doc(
        "auto",
        "SMTP login mechanism: `password` (PLAIN/LOGIN), `xoauth2` or `oauthbearer` (RFC 7628, "
        "OAuth 2.0 bearer token); `auto`: `xoauth2` when OAuth settings or `token_provider=` "
        "are given, else the provider's default, else `password`.",
    )
    timeout: Seconds = _doc(
        30.0, "Seconds; the default of the connect and command timeouts.", upstream=True
    )
    max_retries: Count = _doc(
        0, "Retries after the first attempt, for transient failures only.", upstream=True
    )
    retry_delay: Delay = _doc(
        1.0, "Seconds before the first retry (exponential backoff with jitter).", upstream=True
    )
    provider: Text = _doc(None, "Provider preset from the catalog (`fluxmail providers`).")
    region: Text = _doc(None, "Provider region, e.g. `eu-west-1` for SES.")
    sender: Text = _doc(None, "Default From; may carry a display name: `Shop <shop@example.com>`.")
    url: Secret = _doc(None, "Whole configuration as one URL (see below).", secret=True)
    ca_file: OptPath = _doc(None, "PEM bundle to trust instead of certifi's (a private CA).")
    tls_verify: Bool = _doc(True, "Verify certificates and host names; false logs a warning.")
    local_hostname: Text = _doc(None, "Name sent in EHLO; default: the machine's FQDN.")
    connect_timeout: OptSeconds = _doc(
        None, "Seconds to connect and finish TLS; default FLUXMAIL_TIMEOUT."
    )
    command_timeout: OptSeconds = _doc(
        None, "Seconds to wait for each SMTP reply; default FLUXMAIL_TIMEOUT."
    )
    data_timeout: Seconds = _doc(
        600.0, "Seconds to wait for the reply to the final `.` (RFC 5321 4.5.3.2)."
    )
    retry_deadline: OptSeconds = _doc(None, "Overall seconds for all attempts of one send.")
    providers_file: OptPath = _doc(None, "YAML file adding or overriding catalog entries.")
    allow_insecure_auth: Bool = _doc(
        False, "Allow credentials without TLS to a host that is not loopback."
    )
    dry_run: Bool = _doc(False, "Validate and build messages, send nothing.")
    audit: Bool = _doc(True, "Write an audit record for every message.")
    audit_dir: OptPath = _doc(
        None, "Audit folder; default `.fluxmail/` (a temp folder when read-only)."
    )
    audit_url: Secret = _doc(None, "`postgresql://...` shared audit store.", secret=True)
    audit_password: Secret = _doc(None, "Password of the audit database.", secret=True)
    file_dir: Path = _doc(Path("outbox"), "Folder for the `.eml` files of the `file` backend.")
    templates_dir: OptPath = _doc(
        None,
        "Folder of the message templates (`create(template=...)`, `fluxmail send --template`; "
        "docs/templates.md); needs fluxmail[templates].",
    )
    rate_limit: Rate = _doc(
        None, "Bulk messages per second; default: the provider's published limit."
    )
    retry_max_delay: Seconds = _doc(
        300.0, "Seconds; the cap of the backoff between retries (also the outbox's)."
    )
    outbox_lease: Lease = _doc(
        60.0,
        "Seconds an outbox worker holds a claimed message before another worker may take it "
        "back (renewed while the worker lives; docs/outbox.md).",
    )
    outbox_poll_interval: Poll = _doc(
        5.0,
        "Seconds between an idle outbox worker's looks for due messages (PostgreSQL also "
        "wakes it at once with LISTEN/NOTIFY).",
    )
    failover_cooldown: Seconds = _doc(
        30.0,
        "Seconds a `failover(...)` / `roundrobin(...)` member rests after a failure before one "
        "message probes it again (docs/delivery.md).",
    )
    strict: Bool = _doc(
        False,
        "An unknown `FLUXMAIL_*` variable (a misspelling) is the `unknown_setting` error "
        "instead of a logged warning.",
    )
    # HTTP API transports (docs/transports/index.md); checked by fluxmail.config.api.
    transport: TransportKind = _doc(
        "smtp",
        "How to reach FLUXMAIL_PROVIDER: `smtp` (its relay) or `api` (its HTTP API: sendgrid, "
        "postmark, resend, mailgun, ses, cloudflare, gmail). `<provider>+api://` URLs set it.",
    )
    api_key: Secret = _doc(
        None, "Key or token of the provider's HTTP API (FLUXMAIL_TRANSPORT=api).", secret=True
    )
    api_base_url: Text = _doc(
        None,
        "`https://host[:port]` replacing the API's own (EU/regional endpoints, gateways, "
        "proxies, tests); the documented paths follow. `http://` only to loopback.",
    )
    api_message_stream: Text = _doc(None, "Postmark message stream; default `outbound`.")
    api_domain: Text = _doc(None, "Mailgun sending domain (the host part of `mailgun+api://`).")
    api_account_id: Text = _doc(
        None, "Cloudflare account id (the host part of `cloudflare+api://`)."
    )
    api_user: Text = _doc(None, "Gmail API mailbox (`gmail+api://user@example.com`).")
    # OAuth 2.0 access tokens for SMTP (docs/oauth.md); checked by fluxmail.config.oauth.
    oauth_provider: OAuthProvider = _doc(
        None,
        "Where OAuth 2.0 tokens come from: `microsoft` (Entra ID), `google` or `generic` "
        "(any RFC 6749 token endpoint: FLUXMAIL_OAUTH_TOKEN_URL).",
    )
    oauth_client_id: Text = _doc(None, "OAuth client (application) id.")
    oauth_client_secret: Secret = _doc(None, "OAuth client secret.", secret=True)
    oauth_refresh_token: Secret = _doc(
        None,
        "OAuth refresh token (the refresh-token flow instead of client credentials).",
        secret=True,
    )
    oauth_tenant_id: Text = _doc(
        None, "Microsoft Entra tenant id (a GUID or a domain such as `contoso.onmicrosoft.com`)."
    )
    oauth_scope: Text = _doc(
        None,
        "Scope to ask for; default `https://outlook.office365.com/.default` (microsoft), "
        "`https://mail.google.com/` (google service account).",
    )
    oauth_token_url: Text = _doc(
        None,
        "Token endpoint; required for `generic`, overrides the default of `microsoft` and "
        "`google` (sovereign clouds, proxies, tests). `https://` (`http://` only to loopback).",
    )
    oauth_service_account_file: OptPath = _doc(
        None,
        "Google service-account key (JSON) with domain-wide delegation; needs fluxmail[oauth].",
    )
    oauth_subject: Text = _doc(
        None, "The mailbox a Google service account acts for (domain-wide delegation)."
    )
    # The MCP server for AI agents (`fluxmail mcp`, docs/agents.md); read when it starts.
    mcp_allow_send: Bool = _doc(
        False,
        "`fluxmail mcp` offers the `send_draft` and `send_email` tools (otherwise agents "
        "can only draft; a person sends with `fluxmail drafts send`).",
    )
    mcp_attachment_dir: OptPath = _doc(
        None,
        "The only folder `fluxmail mcp` attaches files from (none: no attachments).",
    )
    mcp_max_sends: MaxSends = _doc(
        None, "Sends one `fluxmail mcp` run may make (none: no cap; replays are free)."
    )
    mcp_max_recipients: MaxRecipients = _doc(
        None, "To + Cc + Bcc addresses per message from `fluxmail mcp` (none: no cap)."
    )
    mcp_allowed_domains: Text = _doc(
        None,
        "Comma-separated recipient domains `fluxmail mcp` may address, e.g. "
        "`example.com,example.org` (none: any).",
    )
    # DKIM signing (docs/dkim.md); keys loaded and checked by fluxmail.config.dkim.
    dkim_domain: Text = _doc(
        None, "DKIM signing domain (`d=`); with a selector and a key, every message is signed."
    )
    dkim_selector: Text = _doc(
        None, "DKIM selector (`s=`): the key is published at `<selector>._domainkey.<domain>`."
    )
    dkim_private_key: Secret = _doc(
        None,
        "DKIM private key: RSA (PEM, PKCS#1 or PKCS#8, >= 1024 bits) or Ed25519 (PKCS#8 PEM); "
        "needs fluxmail[dkim].",
        secret=True,
    )
    dkim_second_selector: Text = _doc(
        None, "Selector of a second signature (same domain), e.g. Ed25519 next to RSA."
    )
    dkim_second_private_key: Secret = _doc(
        None, "Private key of the second DKIM signature.", secret=True
    )
    dkim_allow_unaligned: Bool = _doc(
        False,
        "Sign even when the From domain is neither FLUXMAIL_DKIM_DOMAIN nor one of its "
        "subdomains (the signature then does not count for DMARC).",
    )

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _url: UrlParts | None = PrivateAttr(default=None)
    _unknown: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _read_raw(cls, data: Any) -> Any:
        """Each given value read by its field's kind (``_READS``); None stays None."""
        readers = _field_readers()
        if not isinstance(data, dict):
            return data
        return {k: v if v is None or k not in readers else readers[k](v) for k, v in data.items()}

    @property
    def origins(self) -> Mapping[str, str]:
        """field -> the source that gave it (``PRECEDENCE`` labels); absent fields: default."""
        return dict(self._origins)

    @property
    def url_parts(self) -> UrlParts | None:
        """The TLS mode and domain FLUXMAIL_URL implies (its fields are already applied)."""
        return self._url

    @property
    def unknown(self) -> tuple[str, ...]:
        """One line per FLUXMAIL_* name read from the environment or .env that is no setting."""
        return self._unknown

    def _keep(self, trace: Trace) -> None:
        self._origins = trace.origins()
        self._url = trace.url
        self._unknown = tuple(unknown_lines(trace.variables))


@functools.cache
def field_names() -> tuple[str, ...]:
    """The settings' names, in declaration order (what ``FluxMailSettings.model_fields`` holds)."""
    return tuple(name for name in SettingsFields.__annotations__ if not name.startswith("_"))


def field_docs() -> dict[str, Documented]:
    """Each setting's default and docs, in declaration order."""
    return {name: getattr(SettingsFields, name) for name in field_names()}


@functools.cache
def _field_readers() -> dict[str, Callable[[object], object]]:
    """field -> its kind's reader, for the fields whose kind has one."""
    found: dict[str, Callable[[object], object]] = {}
    for name, annotation in SettingsFields.__annotations__.items():
        read = next((read for kind, read in _READS if annotation is kind), None)
        if read is not None:
            found[name] = read
    return found


# Read outside the model: the .env switch, and the benchmarks' scratch folder (bench/,
# docs/performance.md), so FLUXMAIL_STRICT=true never trips on the project's own tools.
_OTHER_VARIABLES = ("FLUXMAIL_ENV_FILE", "FLUXMAIL_BENCH_DIR")


def known_variables() -> frozenset[str]:
    """Every FLUXMAIL_* name fluxmail reads: the settings, the secrets' ``_FILE`` forms, ..."""
    names = {env_name(name) for name in field_names()}
    names |= {f"{env_name(name)}_FILE" for name in SECRET_FIELDS}
    return frozenset(names | set(_OTHER_VARIABLES))


def unknown_lines(variables: Mapping[str, list[str]]) -> list[str]:
    """One hint per name read from a source that is no fluxmail setting."""
    known = known_variables()
    return [
        _unknown(n, place) for place, names in variables.items() for n in names if n not in known
    ]


def _unknown(name: str, place: str) -> str:
    stems = {known[len(ENV_PREFIX) :]: known for known in known_variables()}
    stem = name[len(ENV_PREFIX) :]
    close = difflib.get_close_matches(stem, stems, n=1, cutoff=0.6)
    base = name.removesuffix("_FILE")
    near = close and difflib.SequenceMatcher(None, stem, close[0]).ratio() >= 0.85
    if base != name and base in stems.values() and not near:
        hint = f"{base} has no _FILE form (only the secrets do); set {base} itself"
    elif close:
        hint = f"did you mean {stems[close[0]]}?"
    else:
        hint = "`fluxmail config` and docs/configuration.md list the known settings"
    return f"{name}{place} is not a fluxmail setting; {hint}"
