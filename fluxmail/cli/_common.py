"""What every command shares: the output, building a mailer, the password from stdin, errors."""

from __future__ import annotations

import contextlib
import getpass
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from fluxmail.cli._output import Output
from fluxmail.cli.exit_codes import EXIT_CODES, exit_code
from fluxmail.config.resolve import Config, resolve_config
from fluxmail.config.sources import SECRET_FIELDS
from fluxmail.errors import DeliveryError, FluxMailException
from fluxmail.mailer import FluxMail

_state: dict[str, Output] = {}

PROVIDER_HELP = "Provider preset from the catalog (overrides FLUXMAIL_PROVIDER)."
PASSWORD_STDIN_HELP = (
    "Read the password from standard input (one line); it is never taken as a flag value."
)
JSON_HELP = "Print one JSON object instead of the summary."

JsonFlag = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help=PASSWORD_STDIN_HELP)]
ProviderOption = Annotated[str | None, typer.Option("--provider", help=PROVIDER_HELP)]

# Plain words for the failures people meet first; keyed by error code.
EXPLAIN: dict[str, str] = {
    "certificate_error": (
        "The server's TLS certificate is not trusted by this machine. If the server uses a "
        "private or company CA, save that CA's certificate as a PEM file and set "
        "FLUXMAIL_CA_FILE=/path/to/ca.pem. Also check that FLUXMAIL_HOST is the name written "
        "in the certificate and that the certificate has not expired."
    ),
    "starttls_unavailable": (
        "The server does not offer STARTTLS on this port, and fluxmail never falls back to "
        "plaintext. Use the provider's TLS port (often 465 with FLUXMAIL_SSL=true, or 587), "
        "or, only for a local test relay without TLS, FLUXMAIL_TLS=false (in a URL: "
        "smtp+plain://host:port, since smtp:// means STARTTLS)."
    ),
    "tls_handshake_failed": (
        "The TLS handshake failed. If this port expects STARTTLS (587, 25) do not set "
        "FLUXMAIL_SSL=true; if it expects implicit TLS (465) set FLUXMAIL_SSL=true."
    ),
    "auth_failed": (
        "The server refused the username and password (535). Check FLUXMAIL_USERNAME and "
        "FLUXMAIL_PASSWORD (or FLUXMAIL_PASSWORD_FILE); many providers want a literal username "
        "such as 'apikey' and an API key as the password: see `fluxmail providers NAME`."
    ),
    "auth_required": (
        "The server accepts mail only after a login, and no credentials are configured. Set "
        "FLUXMAIL_USERNAME and FLUXMAIL_PASSWORD (or FLUXMAIL_PASSWORD_FILE), or pick the "
        "provider with FLUXMAIL_PROVIDER (see `fluxmail providers`)."
    ),
    "insecure_auth": (
        "Credentials are never sent over an unencrypted connection to a remote host. "
        "Turn on TLS (FLUXMAIL_TLS=true or FLUXMAIL_SSL=true)."
    ),
    "connection_failed": (
        "Nothing answered at that address. Check FLUXMAIL_HOST and FLUXMAIL_PORT, and that a "
        "firewall or the cloud provider does not block outbound SMTP ports (25 often is)."
    ),
    # A timeout's cause depends on how far the session got (keys "code@stage" win).
    "timeout@connect": (
        "Nothing answered in time at that address. Check the host and port; a port that "
        "silently drops traffic is usually blocked by a firewall (outbound port 25 often is). "
        "FLUXMAIL_CONNECT_TIMEOUT sets the wait."
    ),
    "timeout@tls": (
        "The server accepted the connection but did not finish the TLS handshake in time. If "
        "this port expects STARTTLS or plaintext (587, 25), do not set FLUXMAIL_SSL=true; "
        "FLUXMAIL_CONNECT_TIMEOUT sets the wait."
    ),
    "timeout@greeting": (
        "The server accepted the connection but sent no greeting. If this port expects "
        "implicit TLS (465), set FLUXMAIL_SSL=true; otherwise the server is slow or overloaded: "
        "raise FLUXMAIL_TIMEOUT or try again later."
    ),
    "timeout": (
        "The server answered at first and then stopped replying, so the network path is "
        "open: the server is slow or overloaded. Raise FLUXMAIL_TIMEOUT (or "
        "FLUXMAIL_COMMAND_TIMEOUT for each reply) or try again later."
    ),
    "sender_required": (
        "Set FLUXMAIL_SENDER (for example 'Shop <shop@example.com>') or pass --sender."
    ),
}


def explain(exc: FluxMailException) -> str | None:
    """The plain-words hint for ``exc``: for its code at its stage, else for its code."""
    stage = exc.stage if isinstance(exc, DeliveryError) else None
    return EXPLAIN.get(f"{exc.code}@{stage}") or EXPLAIN.get(exc.code)


def output() -> Output:
    """The Output of the running command (tests get a fresh one per run)."""
    out = _state.get("output")
    if out is None:
        out = _state["output"] = Output()
    return out


def set_output(out: Output) -> None:
    _state["output"] = out


def usage_error(message: str) -> typer.Exit:
    """A usage mistake: one line, exit code 2 (raise the returned exception)."""
    output().error(message)
    return typer.Exit(EXIT_CODES["usage"])


def read_password_stdin() -> str:
    """One line from stdin (a hidden prompt on a terminal); one trailing newline is dropped."""
    if sys.stdin is None:
        raise usage_error("--password-stdin: standard input is closed")
    if sys.stdin.isatty():
        value = getpass.getpass("SMTP password: ")
    else:
        value = sys.stdin.readline()
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if not value:
        raise usage_error("--password-stdin: standard input held no password")
    output().secrets.add(value)
    return value


def overrides(provider: str | None, password_stdin: bool, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for the mailer: flags win over the environment."""
    kwargs: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if provider:
        kwargs["provider"] = provider
    if password_stdin:
        kwargs["password"] = read_password_stdin()
    return kwargs


def _remember_secrets(config: Config) -> None:
    # The resolved secret fields, and the login they pair with in an AUTH PLAIN encoding.
    values = []
    for name in SECRET_FIELDS:  # passwords, URLs, OAuth client secrets and refresh tokens
        value = getattr(config, name, None)
        if value is not None and hasattr(value, "get_secret_value"):
            values.append(str(value.get_secret_value()))
    output().secrets.add(*values, username=config.username)
    for member in config.members:  # failover(...) / roundrobin(...): each has its own
        _remember_secrets(member)


def build_config(**kwargs: Any) -> Config:
    """The resolved configuration (environment, ``.env``, files, flags); nothing connects."""
    config = resolve_config(**kwargs)
    _remember_secrets(config)
    return config


def build_mailer(**kwargs: Any) -> FluxMail:
    """``FluxMail.from_env(**kwargs)``: exactly what a service using fluxmail would build."""
    mailer = FluxMail.from_env(**kwargs)
    _remember_secrets(mailer.config)
    return mailer


def report(exc: FluxMailException) -> int:
    """Print a library error as one line (plus a hint; the traceback with --debug)."""
    out = output()
    if out.debug:
        out.traceback(exc)
    out.error(f"{exc.message} [{exc.code}]")
    hint = explain(exc)
    if hint is not None and hint not in exc.message:
        out.hint(hint)
    return exit_code(exc)


def error_dict(exc: FluxMailException) -> dict[str, Any]:
    """``exc.to_dict()`` for JSON output, its text passed through the structural redactor."""
    return output().secrets.error(exc.to_dict())


@contextlib.contextmanager
def json_errors(enabled: bool) -> Iterator[None]:
    """With ``--json``, a library error is printed as one JSON object too (then exits)."""
    try:
        yield
    except FluxMailException as exc:
        if not enabled:
            raise
        output().json({"ok": False, "error": error_dict(exc)})
        raise typer.Exit(exit_code(exc)) from exc
