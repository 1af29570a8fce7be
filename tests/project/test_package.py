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


def _loaded(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"FLUXMAIL_TYPE": "memory", "PATH": "/usr/bin:/bin"},
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
