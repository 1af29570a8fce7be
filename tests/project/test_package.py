"""The public surface: `__all__` is complete and `import fluxmail` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fluxmail

# idna and css_inline too: imported only when an international domain or inline_css=True needs them.
HEAVY = [
    "aiosmtplib",
    "rich",
    "yaml",
    "sqlite3",
    "typer",
    "psycopg",
    "aiosmtpd",
    "idna",
    "css_inline",
]


def test_all_names_resolve_and_are_complete() -> None:
    """Every name in __all__ imports, and every public exception class is listed."""
    for name in fluxmail.__all__:
        assert getattr(fluxmail, name) is not None
    errors = [n for n in dir(fluxmail.errors) if isinstance(getattr(fluxmail.errors, n), type)]
    exported = {n for n in errors if issubclass(getattr(fluxmail.errors, n), Exception)}
    assert exported <= set(fluxmail.__all__)


def _loaded(code: str, **env: str) -> list[str]:
    probe = f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"FLUXMAIL_TYPE": "memory", "PATH": "/usr/bin:/bin", **env},
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_fluxmail_is_light() -> None:
    """`import fluxmail` loads neither the SMTP stack, asyncio, rich, yaml nor sqlite3."""
    loaded = set(_loaded("import fluxmail"))
    assert not loaded & {*HEAVY, "asyncio"}


@pytest.mark.slow
def test_from_env_loads_nothing_it_does_not_use() -> None:
    """A Lambda cold start (`FluxMail.from_env()`) pays for no SMTP, CLI, YAML or DB module."""
    loaded = set(_loaded("from fluxmail import FluxMail; FluxMail.from_env()"))
    assert not loaded & set(HEAVY)


@pytest.mark.slow
def test_building_an_smtp_mailer_loads_no_part_of_sending() -> None:
    """The SMTP session, pools, retry loop, token sources and the transport's result classes
    load with the first send: a cold start that only builds the mailer pays for none of them."""
    loaded = set(
        _loaded(
            "from fluxmail import FluxMail; FluxMail.from_env()",
            FLUXMAIL_TYPE="smtp",
            FLUXMAIL_HOST="smtp.example.com",
            FLUXMAIL_SENDER="a@example.com",
        )
    )
    assert "fluxmail.transport.smtp.transport" in loaded  # the mailer was built on SMTP
    sending = {
        "fluxmail.transport.mail",
        "fluxmail.transport.smtp.session",
        "fluxmail.transport.smtp.pool",
        "fluxmail.transport.smtp.retry",
        "fluxmail.transport.oauth.tokens",
    }
    assert not loaded & sending


def test_the_transport_values_still_import_from_the_contract_module() -> None:
    """A custom transport written against fluxmail.transport.base keeps importing Mail and
    TransportResult from there (they moved to fluxmail.transport.mail)."""
    from fluxmail.transport import base, mail

    assert base.Mail is mail.Mail
    assert base.TransportResult is mail.TransportResult
    assert base.Envelope is mail.Envelope
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        base.Nothing  # noqa: B018
