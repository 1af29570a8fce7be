"""``fluxmail check``: connect and log in without sending; report TLS, EHLO and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import typer

from fluxmail.cli._common import (
    JsonFlag,
    PasswordStdin,
    ProviderOption,
    build_config,
    error_dict,
    explain,
    json_errors,
    output,
    overrides,
    report,
)
from fluxmail.cli.check_api import check_api, probe_api
from fluxmail.cli.config import print_warnings
from fluxmail.cli.exit_codes import exit_code
from fluxmail.errors import (
    AuthenticationFailed,
    ConfigurationError,
    DeliveryError,
    FluxMailException,
    TLSFailure,
)
from fluxmail.redaction import REDACTED
from fluxmail.transport.smtp.session import SMTPParams, SMTPSession, TLSInfo
from fluxmail.transport.smtp.transport import smtp_params

if TYPE_CHECKING:
    from fluxmail.config.resolve import Config

EPILOG = """Examples:

  fluxmail check

  FLUXMAIL_PROVIDER=sendgrid FLUXMAIL_PASSWORD_FILE=/run/secrets/sg fluxmail check

  FLUXMAIL_CA_FILE=company-ca.pem fluxmail check --json
"""


@dataclass
class Probe:
    """What one connection attempt learned, up to the step that failed."""

    extensions: dict[str, str] = field(default_factory=dict)
    tls: TLSInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)
    authenticated: bool = False
    error: FluxMailException | None = None
    token_expires_at: float | None = None  # the OAuth token of the login (never the token)


async def probe(params: SMTPParams) -> Probe:
    """Greeting, EHLO, STARTTLS, EHLO, AUTH; then QUIT. Never sends a message."""
    session = SMTPSession(params)
    found = Probe()
    try:
        await session.connect()
    except FluxMailException as exc:
        found.error = exc
    finally:
        found.extensions = dict(session.extensions)
        found.tls = session.tls_info
        found.timings = dict(session.timings)
        found.authenticated = session.authenticated
        found.token_expires_at = session.token_expires_at
        await session.close()
    return found


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds is not None else "-"


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(round(epoch), timezone.utc).isoformat()


def _tls_dict(tls: TLSInfo | None) -> dict[str, Any] | None:
    if tls is None:
        return None
    return {
        "version": tls.version,
        "cipher": tls.cipher,
        "subject": tls.peer_subject,
        "issuer": tls.peer_issuer,
        "expires": tls.not_after.isoformat() if tls.not_after else None,
    }


def _login_name(params: SMTPParams) -> str | None:
    # Some providers (Postmark) use the token as the username too: never print it.
    if params.username is not None and params.username == params.password:
        return REDACTED
    return params.username


def _plaintext_origin(config: Config) -> str:
    """Which setting made the session plaintext, as the user would write it."""
    source = config.sources.get("security", "default")
    origins = {
        "environment": "FLUXMAIL_TLS=false",
        ".env": "FLUXMAIL_TLS=false in .env",
        "argument": "use_tls=False",
        "url": "FLUXMAIL_URL smtp+plain://",
        "provider preset": "the provider preset",
    }
    # urls.resolve_security: with nothing set, a loopback host defaults to no TLS.
    return origins.get(source, f"default for the loopback host {config.host}; nothing set")


def _auth_unused(params: SMTPParams, found: Probe) -> str | None:
    """The server offers AUTH but no credentials are configured (its mail may need a login)."""
    offered = found.extensions.get("auth")
    if params.username is not None or offered is None:
        return None
    return (
        f"the server offers AUTH ({offered or 'no mechanism named'}) and no credentials are "
        "configured; if it requires a login, set FLUXMAIL_USERNAME and FLUXMAIL_PASSWORD "
        "(or FLUXMAIL_PROVIDER)"
    )


def as_dict(params: SMTPParams, found: Probe, config: Config) -> dict[str, Any]:
    return {
        "ok": found.error is None,
        "host": params.host,
        "port": params.port,
        "security": params.security,
        "security_source": config.sources.get("security", "default"),
        "username": _login_name(params),
        "tls": _tls_dict(found.tls),
        "extensions": found.extensions,
        "authenticated": found.authenticated,
        "auth": params.auth if params.username is not None else None,
        "token_ms": round(found.timings["token"] * 1000, 2) if "token" in found.timings else None,
        "token_expires": _when(found.token_expires_at),
        "auth_offered_without_credentials": _auth_unused(params, found) is not None,
        "timings_ms": {k: round(v * 1000, 2) for k, v in found.timings.items()},
        "error": error_dict(found.error) if found.error is not None else None,
    }


def _extensions(ext: dict[str, str]) -> str:
    return ", ".join(f"{k.upper()} {v}".strip() for k, v in ext.items()) or "-"


def _print(params: SMTPParams, found: Probe, config: Config) -> None:
    t = found.timings
    tls = _tls_dict(found.tls)
    unused = _auth_unused(params, found)
    if unused is not None:
        login = f"not configured, but {unused}"
    elif params.username is None:
        login = "skipped (no FLUXMAIL_USERNAME)"
    elif found.authenticated and params.auth != "password":
        # How long the token took and when it ends; never the token itself.
        took, auth = t.get("token", 0.0), t.get("auth", 0.0)
        expires = _when(found.token_expires_at) or "unknown"
        login = (
            f"ok as {_login_name(params)} with {params.auth.upper()} ({_ms(auth - took)}); "
            f"token fetched in {_ms(took)}, expires {expires}"
        )
    elif found.authenticated:
        login = f"ok as {_login_name(params)} ({_ms(t.get('auth'))})"
    else:
        failed = isinstance(found.error, AuthenticationFailed) or (
            isinstance(found.error, DeliveryError) and found.error.stage == "auth"
        )
        login = "failed" if failed else "not attempted"
    rows: list[tuple[str, object]] = [
        ("server", f"{params.host}:{params.port} ({params.security})"),
        ("connect", f"ok ({_ms(t['connect'])})" if "connect" in t else "failed"),
    ]
    if tls is not None:
        rows.append(("tls", f"{tls['version']} {tls['cipher']} ({_ms(t.get('tls'))})"))
        rows.append(("certificate", tls["subject"]))
        rows.append(("issuer", tls["issuer"]))
        rows.append(("expires", tls["expires"]))
    elif params.security == "none":
        rows.append(("tls", f"none (plaintext; {_plaintext_origin(config)})"))
    else:
        rows.append(("tls", "failed" if isinstance(found.error, TLSFailure) else "not reached"))
    if "ehlo" in t:
        rows.append(("ehlo", f"{_extensions(found.extensions)} ({_ms(t['ehlo'])})"))
    else:
        rows.append(("ehlo", "not reached"))
    rows.append(("login", login))
    output().fields(rows)


def check(
    provider: ProviderOption = None,
    password_stdin: PasswordStdin = False,
    json_output: JsonFlag = False,
) -> None:
    """Connect and log in without sending; explain what failed in plain words."""
    import asyncio

    with json_errors(json_output):
        config = build_config(**overrides(provider, password_stdin))
        print_warnings(config.warnings)  # misspelled FLUXMAIL_* names
        if config.members:
            _check_members(config, json_output)
            return
        if config.backend == "api":
            check_api(config, json_output)
            return
        if config.backend != "smtp":
            raise ConfigurationError(
                f"fluxmail check talks to an SMTP server, but FLUXMAIL_TYPE is "
                f"{config.backend!r}; set FLUXMAIL_TYPE=smtp",
                code="invalid_config",
            )
        params = smtp_params(config)
        found = asyncio.run(probe(params))
    if json_output:
        data = as_dict(params, found, config)
        if found.error is not None:
            data["explanation"] = explain(found.error)
        output().json(data)
    else:
        _print(params, found, config)
    if found.error is not None:
        raise typer.Exit(exit_code(found.error) if json_output else report(found.error))
    if not json_output:
        output().out.print(
            "[bold green]ok[/]: connected"
            + (" and logged in" if found.authenticated else "")
            + (" (not logged in: no credentials)" if _auth_unused(params, found) else "")
            + ", nothing was sent"
        )


def _leaves(config: Config) -> list[Config]:
    """Every transport behind failover(...) / roundrobin(...), nested ones included."""
    return [leaf for m in config.members for leaf in _leaves(m)] if config.members else [config]


def _check_members(config: Config, json_output: bool) -> None:
    """Probe each member in turn and report each; fail when any member fails (a dead
    backup is what a check is for)."""
    import asyncio

    reports: list[dict[str, Any]] = []
    failure: FluxMailException | None = None
    for member in _leaves(config):
        if member.backend == "api":
            data = probe_api(member)
            error = data.pop("_error", None)
            failure = failure or error
            reports.append(data)
            if not json_output:
                output().fields(
                    [("member", data["transport"]), ("probe", data["probe"] or "failed")]
                )
                if error is not None:
                    report(error)
            continue
        if member.backend != "smtp":
            reports.append({"ok": True, "transport": member.endpoint, "probed": False})
            if not json_output:
                output().fields([("member", member.endpoint), ("probe", "skipped (not SMTP)")])
            continue
        params = smtp_params(member)
        found = asyncio.run(probe(params))
        failure = failure or found.error
        data = {"transport": member.endpoint, "probed": True, **as_dict(params, found, member)}
        if found.error is not None:
            data["explanation"] = explain(found.error)
        reports.append(data)
        if not json_output:
            output().fields([("member", member.endpoint)])
            _print(params, found, member)
            if found.error is not None:
                report(found.error)
    if json_output:
        output().json({"ok": failure is None, "transport": config.endpoint, "members": reports})
    if failure is not None:
        raise typer.Exit(exit_code(failure))
    if not json_output:
        output().out.print("[bold green]ok[/]: every member answered, nothing was sent")


def register(app: typer.Typer) -> None:
    app.command("check", epilog=EPILOG)(check)
