"""``fluxmail providers [NAME]``: the catalog as a table, or one entry with an env example."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fluxmail.cli._common import JsonFlag, json_errors, output
from fluxmail.cli._redact import dotenv_values_of
from fluxmail.config.providers import Provider, get_provider, load_catalog
from fluxmail.docgen import env_example, region_summary

EPILOG = """Examples:

  fluxmail providers

  fluxmail providers sendgrid

  fluxmail providers ses --json
"""


def _extra_file() -> Path | None:
    # The override file the mailer would read: the environment first, then .env.
    value = os.environ.get("FLUXMAIL_PROVIDERS_FILE") or dotenv_values_of(os.environ).get(
        "FLUXMAIL_PROVIDERS_FILE"
    )
    return Path(value) if value else None


def _login_row(p: Provider) -> str:
    if p.username_kind == "literal":
        # Shown so it can be recognised, but not in the example: the preset sets it.
        return f"set by the preset (FLUXMAIL_USERNAME={p.username_literal}); leave it unset"
    return f"{_username(p)}: {p.username_hint}".rstrip(": ")


def _username(p: Provider) -> str:
    if p.username_kind == "literal":
        return f"literal {p.username_literal!r}"
    return p.username_kind


def _ports(p: Provider) -> str:
    return "; ".join(f"{mode} {', '.join(map(str, ports))}" for mode, ports in p.ports.items())


def as_dict(p: Provider) -> dict[str, Any]:
    return {
        "name": p.name,
        "title": p.title,
        "aliases": list(p.aliases),
        "host": p.host,
        "port": p.port,
        "security": p.security,
        "ports": {k: list(v) for k, v in p.ports.items()},
        "username_kind": p.username_kind,
        "username_literal": p.username_literal,
        "username_hint": p.username_hint,
        "password_hint": p.password_hint,
        "sender_required": p.sender_required,
        "sender_rule": p.sender_rule,
        "rate_limit_per_second": p.rate_limit_per_second,
        "daily_limit": p.daily_limit,
        "regions": list(p.regions),
        "default_region": p.default_region,
        "region_required": p.needs_region and not p.default_region,
        "docs_url": p.docs_url,
        "api": _api(p),
        "notes": p.notes,
        "env_example": env_example(p),
    }


def _api(p: Provider) -> dict[str, Any] | None:
    """The provider's HTTP API (FLUXMAIL_TRANSPORT=api), or None."""
    if p.api is None:
        return None
    return {
        "transport": p.api.transport,
        "base_url": p.api.base_url,
        "docs_url": p.api.docs_url,
        "options": dict(p.api.options),
    }


def _table(catalog: list[Provider]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("name", "host", "port", "security", "username", "sender", "rate/s"):
        table.add_column(column)
    for p in catalog:
        rate = f"{p.rate_limit_per_second:g}" if p.rate_limit_per_second else "-"
        sender = "required" if p.sender_required else "login"
        cells = (p.name, p.host, str(p.port), p.security, _username(p), sender, rate)
        table.add_row(*(Text(c) for c in cells))
    output().out.print(table)
    output().print(f"{len(catalog)} providers; details: fluxmail providers NAME")


def _details(p: Provider) -> None:
    out = output()
    out.fields(
        [
            ("provider", f"{p.name} ({p.title})"),
            ("aliases", ", ".join(p.aliases)),
            ("host", p.host),
            ("port", f"{p.port} ({p.security})"),
            ("ports", _ports(p)),
            ("username", _login_row(p)),
            ("password", p.password_hint),
            (
                "sender",
                ("required" if p.sender_required else "the login")
                + (f": {p.sender_rule}" if p.sender_rule else ""),
            ),
            ("rate limit", f"{p.rate_limit_per_second:g}/s" if p.rate_limit_per_second else None),
            ("daily limit", p.daily_limit),
            ("regions", region_summary(p)),
            ("docs", p.docs_url),
            ("http api", f"{p.api.base_url} (FLUXMAIL_TRANSPORT=api)" if p.api else None),
            ("notes", p.notes),
        ]
    )
    out.print()
    out.print("Environment (paste into .env or your service's settings):")
    for line in env_example(p):
        out.print(f"  {line}")


def providers(
    name: Annotated[str | None, typer.Argument(help="A provider name or alias.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """List the provider catalog, or show one provider with a ready environment example."""
    with json_errors(json_output):
        if name is not None:
            provider = get_provider(name, _extra_file())
            if json_output:
                output().json({"ok": True, "provider": as_dict(provider)})
            else:
                _details(provider)
            return
        catalog = sorted(load_catalog(_extra_file()).values(), key=lambda p: p.name)
    if json_output:
        output().json({"ok": True, "providers": [as_dict(p) for p in catalog]})
    else:
        _table(catalog)


def register(app: typer.Typer) -> None:
    app.command("providers", epilog=EPILOG)(providers)
