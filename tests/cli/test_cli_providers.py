"""``fluxmail providers NAME``: one environment example, shared with docs/providers.md."""

from __future__ import annotations

import json
import re

import pytest

from fluxmail.config.providers import load_catalog
from fluxmail.docgen import providers_md
from tests.support.cli import cli

NAMES = sorted(load_catalog())


def _doc_example(title: str) -> list[str]:
    """The ```bash block of one provider's section of the generated page."""
    section = providers_md().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)\n```", section, re.DOTALL)
    assert match is not None, section
    return match.group(1).splitlines()


@pytest.mark.parametrize("name", NAMES)
def test_cli_and_docs_show_the_same_example(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI (text and --json) and docs/providers.md print the very same variables."""
    provider = load_catalog()[name]
    data = json.loads(cli(capsys, monkeypatch, "providers", name, "--json").out)["provider"]
    assert data["env_example"] == _doc_example(provider.title)
    text = cli(capsys, monkeypatch, "providers", name).out
    block = text.split("Environment (paste into .env or your service's settings):\n", 1)[1]
    assert [line.strip() for line in block.splitlines()] == data["env_example"]


@pytest.mark.parametrize("name", NAMES)
def test_example_lists_only_what_the_user_sets(name: str) -> None:
    """A username or region the preset fixes is not in the example."""
    from fluxmail.docgen import env_example

    provider = load_catalog()[name]
    keys = [line.split("=", 1)[0] for line in env_example(provider)]
    fixed_login = provider.username_kind == "literal" or provider.username_is_password
    assert ("FLUXMAIL_USERNAME" in keys) is not fixed_login, keys
    needs_region = provider.needs_region and not provider.default_region
    assert ("FLUXMAIL_REGION" in keys) is needs_region, keys
    assert "FLUXMAIL_PASSWORD_FILE" in keys and "FLUXMAIL_PASSWORD" not in keys


def test_sendgrid_example_sets_only_password_and_sender(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SendGrid's notes say: set only the password and a sender; the example agrees."""
    data = json.loads(cli(capsys, monkeypatch, "providers", "sendgrid", "--json").out)
    keys = [line.split("=", 1)[0] for line in data["provider"]["env_example"]]
    assert keys == ["FLUXMAIL_PROVIDER", "FLUXMAIL_PASSWORD_FILE", "FLUXMAIL_SENDER"]


def test_ses_regions_say_a_region_is_required(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SES has no default region: the details say it is required, not '-'."""
    text = cli(capsys, monkeypatch, "providers", "ses").out
    [row] = [line for line in text.splitlines() if line.startswith("regions:")]
    assert "required" in row and "FLUXMAIL_REGION" in row, row
    data = json.loads(cli(capsys, monkeypatch, "providers", "ses", "--json").out)["provider"]
    assert data["region_required"] is True
    zoho = json.loads(cli(capsys, monkeypatch, "providers", "zoho", "--json").out)["provider"]
    assert zoho["region_required"] is False
    assert "- **Regions**: required: set FLUXMAIL_REGION" in providers_md()


def test_cloudflare_shows_smtp_and_its_api(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloudflare Email Service: SMTP on 465 with the literal user api_token, and the API."""
    data = json.loads(cli(capsys, monkeypatch, "providers", "cloudflare", "--json").out)["provider"]
    assert (data["host"], data["port"], data["security"]) == (
        "smtp.mx.cloudflare.net",
        465,
        "implicit",
    )
    text = cli(capsys, monkeypatch, "providers", "cloudflare").out
    assert "http api:    https://api.cloudflare.com (FLUXMAIL_TRANSPORT=api)" in text
    assert "FLUXMAIL_API_ACCOUNT_ID" in text
    assert "## Cloudflare Email Service\n" in providers_md()
