"""The provider catalog: content, lookup, suggestions, schema validation, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail.config.providers import Provider, catalog_path, get_provider, load_catalog
from fluxmail.errors import ConfigurationError

REQUIRED = [
    "gmail",
    "google-workspace-relay",
    "outlook",
    "office365",
    "yahoo",
    "icloud",
    "zoho",
    "fastmail",
    "sendgrid",
    "mailgun",
    "mailgun-eu",
    "ses",
    "postmark",
    "brevo",
    "mailjet",
    "mailersend",
    "mailtrap",
    "mailtrap-sandbox",
    "smtp2go",
    "sparkpost",
    "sparkpost-eu",
    "resend",
    "elasticemail",
    "sendpulse",
    "maileroo",
    "mandrill",
    "proton-bridge",
    "scaleway",
    "atmosphere",
]


def test_catalog_has_every_listed_provider() -> None:
    """At least 25 providers, including every one from the reference list."""
    catalog = load_catalog()
    assert len(catalog) >= 25
    assert set(REQUIRED) <= set(catalog)


@pytest.mark.parametrize("name", REQUIRED)
def test_entries_are_consistent(name: str) -> None:
    """Each entry: default port offered in its mode, https docs, literal usernames set."""
    provider = get_provider(name)
    assert provider.offers(provider.security, provider.port)
    assert provider.docs_url.startswith("https://")
    assert (provider.username_kind == "literal") == bool(provider.username_literal)
    assert provider.sender_required == (provider.username_kind != "address")


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("SendGrid", "sendgrid"),
        ("sendinblue", "brevo"),
        ("AMAZON_SES", "ses"),
        ("o365", "office365"),
        ("Mailchimp Transactional", "mandrill"),
        ("hotmail", "outlook"),
        ("protonmail", "proton-bridge"),
    ],
)
def test_lookup_by_alias_any_case(alias: str, name: str) -> None:
    """Names and aliases match case-insensitively, with _ and spaces read as -."""
    assert get_provider(alias).name == name


@pytest.mark.parametrize(
    ("name", "literal"),
    [
        ("sendgrid", "apikey"),
        ("mailtrap", "api"),
        ("resend", "resend"),
        ("sparkpost", "SMTP_Injection"),
    ],
)
def test_literal_usernames(name: str, literal: str) -> None:
    """Literal logins come from the preset."""
    assert get_provider(name).username_literal == literal


@pytest.mark.parametrize(
    ("name", "mode", "port", "offered"),
    [
        ("postmark", "implicit", 465, False),
        ("atmosphere", "implicit", 465, False),
        ("outlook", "implicit", 465, False),
        ("ses", "implicit", 2465, True),
        ("smtp2go", "starttls", 8025, True),
        ("gmail", "none", 25, False),
    ],
)
def test_ports_offered(name: str, mode: str, port: int, offered: bool) -> None:
    """Ports per mode follow the providers' documentation."""
    assert get_provider(name).offers(mode, port) is offered


def test_region_template() -> None:
    """SES needs a region; Zoho defaults to .com; a bad region is refused."""
    ses = get_provider("ses")
    assert ses.host_for("eu-west-1") == "email-smtp.eu-west-1.amazonaws.com"
    with pytest.raises(ConfigurationError) as info:
        ses.host_for(None)
    assert info.value.code == "region_required"
    zoho = get_provider("zoho")
    assert zoho.host_for(None) == "smtp.zoho.com" and zoho.host_for("EU") == "smtp.zoho.eu"
    with pytest.raises(ConfigurationError) as bad:
        ses.host_for("evil.com/x")
    assert bad.value.code == "invalid_region"


def test_unknown_provider_suggests_close_names() -> None:
    """An unknown name is unknown_provider and suggests the closest names."""
    with pytest.raises(ConfigurationError) as info:
        get_provider("sendgird")
    assert info.value.code == "unknown_provider"
    assert "did you mean sendgrid" in str(info.value)


def test_override_file_adds_and_overrides(tmp_path: Path) -> None:
    """FLUXMAIL_PROVIDERS_FILE adds entries and overrides fields of existing ones."""
    extra = tmp_path / "providers.yaml"
    extra.write_text(
        "providers:\n"
        "  sendgrid:\n    port: 2525\n"
        "  acme:\n    title: Acme relay\n    aliases: [acme-mail]\n    host: smtp.acme.test\n"
        "    port: 587\n    security: starttls\n    ports: {starttls: [587]}\n"
        "    username_kind: address\n    docs_url: https://acme.test/smtp\n"
    )
    catalog = load_catalog(extra)
    assert catalog["sendgrid"].port == 2525 and catalog["sendgrid"].username_literal == "apikey"
    assert get_provider("acme-mail", extra).host == "smtp.acme.test"
    assert load_catalog()["sendgrid"].port == 587  # the shipped catalog is untouched


BROKEN = [
    ("providers: []\n", "providers"),
    ("providers:\n  x: 3\n", "'x'"),
    ("providers:\n  gmail:\n    port: 2525\n", "'port'"),
    ("providers:\n  gmail:\n    security: tls\n", "'security'"),
    ("providers:\n  gmail:\n    colour: red\n", "'colour'"),
    ("providers:\n  gmail:\n    port: '587'\n", "'port'"),
    ("providers:\n  gmail:\n    ports: {starttls: [0]}\n", "'ports'"),
    ("providers:\n  gmail:\n    ports: {tls: [587]}\n", "'ports'"),
    ("providers:\n  gmail:\n    username_kind: literal\n", "'username_literal'"),
    ("providers:\n  gmail:\n    docs_url: http://x\n", "'docs_url'"),
    ("providers:\n  gmail:\n    rate_limit_per_second: -1\n", "'rate_limit_per_second'"),
    ("providers:\n  new:\n    host: h\n", "'port'"),
    ("providers:\n  gmail:\n    aliases: [sendgrid]\n", "'aliases'"),
    ("providers: {gmail: [\n", "YAML"),
]


@pytest.mark.parametrize(("text", "named"), BROKEN)
def test_broken_override_is_rejected(tmp_path: Path, text: str, named: str) -> None:
    """An override that breaks the schema names the entry and the field."""
    extra = tmp_path / "broken.yaml"
    extra.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_catalog(extra)
    assert info.value.code == "invalid_providers_file"
    assert named in str(info.value)


def test_catalog_is_cached_and_frozen() -> None:
    """The catalog is loaded once and cannot be modified."""
    first = load_catalog()
    assert load_catalog() is first
    with pytest.raises(TypeError):
        first["x"] = first["gmail"]  # type: ignore[index]
    assert isinstance(first["gmail"], Provider)


def test_catalog_path_points_at_shipped_file() -> None:
    """The loader finds providers.yaml next to the package or at the repository root."""
    assert catalog_path().is_file()
