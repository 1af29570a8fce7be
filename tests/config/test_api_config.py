"""HTTP API transports in the configuration (fluxmail/config/api.py): the ``<provider>+api://``
URL forms, ``?endpoint=``, FLUXMAIL_TRANSPORT=api with FLUXMAIL_PROVIDER, FLUXMAIL_API_*, the
catalog's API entries, and every refusal before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail.config.providers import get_provider
from fluxmail.config.resolve import resolve_config
from fluxmail.errors import ConfigurationError

KEY = "re_Zq9distinctiveKey"


@pytest.mark.parametrize(
    ("url", "provider", "options"),
    [
        (f"sendgrid+api://{KEY}@default", "sendgrid", {}),
        (f"resend+api://{KEY}@default", "resend", {}),
        (f"postmark+api://{KEY}@default?message_stream=outbound", "postmark",
         {"message_stream": "outbound"}),
        (f"mailgun+api://{KEY}@example.com?region=eu", "mailgun",
         {"domain": "example.com", "region": "eu"}),
        (f"cloudflare+api://{KEY}@0123abcd", "cloudflare", {"account_id": "0123abcd"}),
        ("ses+api://default?region=eu-west-1", "ses", {"region": "eu-west-1"}),
        ("gmail+api://user@example.com", "gmail", {"user": "user@example.com"}),
    ],
)  # fmt: skip
def test_url_forms(url: str, provider: str, options: dict[str, str]) -> None:
    """Symfony's DSN shapes: the key as the user part, the host part per provider."""
    config = resolve_config(url=url, sender="app@example.com")
    assert config.backend == "api" and config.api_provider == provider
    assert dict(config.api_options) == options
    assert config.host is None and config.api_base_url is None
    assert config.endpoint == f"{provider}+api://default"
    if provider not in ("ses", "gmail"):
        assert config.api_key is not None and config.api_key.get_secret_value() == KEY
    assert config.sources["backend"] == "url"


def test_ses_keys_in_the_url_are_optional_and_split() -> None:
    """ses+api://ID:SECRET@default: the id as the username, the secret as the key."""
    config = resolve_config(url="ses+api://AKIDEXAMPLE:wJalr%2FSECRET@default?region=us-east-1")
    assert config.username == "AKIDEXAMPLE"
    assert config.api_key is not None and config.api_key.get_secret_value() == "wJalr/SECRET"
    assert resolve_config(url="ses+api://default?region=us-east-1").api_key is None


def test_endpoint_overrides_the_base_url() -> None:
    config = resolve_config(url=f"resend+api://{KEY}@default?endpoint=https://127.0.0.1:8443")
    assert config.api_base_url == "https://127.0.0.1:8443"
    assert config.endpoint == "resend+api://127.0.0.1:8443"
    assert config.sources["api_base_url"] == "url"


def test_transport_api_with_provider_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUXMAIL_TRANSPORT=api + FLUXMAIL_PROVIDER + FLUXMAIL_API_KEY + FLUXMAIL_API_BASE_URL."""
    monkeypatch.setenv("FLUXMAIL_TRANSPORT", "api")
    monkeypatch.setenv("FLUXMAIL_PROVIDER", "sendgrid")
    monkeypatch.setenv("FLUXMAIL_API_KEY", KEY)
    monkeypatch.setenv("FLUXMAIL_API_BASE_URL", "https://sendgrid-gateway.example.com:8443/")
    config = resolve_config()
    assert (config.backend, config.api_provider) == ("api", "sendgrid")
    assert config.api_base_url == "https://sendgrid-gateway.example.com:8443"
    assert config.provider is not None and config.provider.name == "sendgrid"
    assert config.host is None and config.username is None  # no SMTP preset (apikey) applies
    assert config.sources["api_base_url"] == "environment"
    assert config.sources["api_key"] == "environment"


def test_the_api_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FLUXMAIL_API_KEY_FILE: a secret, read like FLUXMAIL_PASSWORD_FILE."""
    secret = tmp_path / "key.txt"
    secret.write_text(KEY + "\n")
    monkeypatch.setenv("FLUXMAIL_API_KEY_FILE", str(secret))
    config = resolve_config(transport="api", provider="resend")
    assert config.api_key is not None and config.api_key.get_secret_value() == KEY
    assert config.sources["api_key"] == "secret file"


def test_catalog_aliases_and_options() -> None:
    """mailgun-eu's API entry sets region=eu; postmark-broadcasts the broadcast stream."""
    eu = resolve_config(transport="api", provider="mailgun-eu", api_key=KEY)
    assert eu.api_provider == "mailgun" and eu.api_options["region"] == "eu"
    broadcast = resolve_config(transport="api", provider="postmark-broadcasts", api_key=KEY)
    assert broadcast.api_options["message_stream"] == "broadcast"
    ses = resolve_config(transport="api", provider="amazon-ses", region="eu-west-1")
    assert ses.api_provider == "ses" and ses.api_options["region"] == "eu-west-1"


def test_the_catalog_records_each_api_next_to_smtp() -> None:
    for name, base in [("sendgrid", "https://api.sendgrid.com"),
                       ("postmark", "https://api.postmarkapp.com"),
                       ("resend", "https://api.resend.com"),
                       ("mailgun", "https://api.mailgun.net"),
                       ("mailgun-eu", "https://api.eu.mailgun.net")]:  # fmt: skip
        provider = get_provider(name)
        assert provider.api is not None and provider.api.base_url == base
        assert provider.api.docs_url.startswith("https://") and provider.host


def test_describe_and_repr_never_show_the_key() -> None:
    config = resolve_config(url=f"resend+api://{KEY}@default")
    assert KEY not in repr(config) and KEY not in str(config.describe())
    assert config.describe()["api_key"]["value"] == "********"


@pytest.mark.parametrize(
    ("settings", "code"),
    [
        ({"url": "http+api://x@default"}, "unknown_provider"),
        ({"transport": "api"}, "invalid_config"),
        ({"transport": "api", "provider": "zoho"}, "api_not_offered"),
        ({"transport": "api", "provider": "resend", "object_type": "memory"}, "invalid_config"),
        ({"url": f"resend+api://{KEY}@default?endpoint=http://api.example.com"}, "insecure_auth"),
        ({"url": f"resend+api://{KEY}@default?endpoint=https://h.example.com/v1"}, "invalid_url"),
        ({"url": f"resend+api://{KEY}@default?endpoint=ftp://h.example.com"}, "invalid_url"),
        ({"url": f"resend+api://{KEY}@api.resend.com"}, "invalid_url"),
        ({"url": f"resend+api://{KEY}@default:443"}, "invalid_url"),
        ({"url": f"resend+api://{KEY}:{KEY}@default"}, "invalid_url"),
        ({"url": f"resend+api://{KEY}@default?bogus=1"}, "invalid_url"),
        ({"url": f"resend+api://{KEY}@default/emails"}, "invalid_url"),
        ({"url": "gmail+api://user:pw@example.com"}, "invalid_url"),
        ({"transport": "api", "provider": "resend", "api_base_url": "http://10.0.0.1"},
         "insecure_auth"),
    ],
)  # fmt: skip
def test_refusals_before_any_request(settings: dict[str, object], code: str) -> None:
    """Each bad setting is a ConfigurationError with a stable code; the key is never echoed."""
    with pytest.raises(ConfigurationError) as info:
        resolve_config(**settings)
    assert info.value.code == code, info.value.message
    assert KEY not in info.value.message


def test_plain_http_to_loopback_is_accepted() -> None:
    config = resolve_config(url=f"resend+api://{KEY}@default?endpoint=http://127.0.0.1:8025")
    assert config.api_base_url == "http://127.0.0.1:8025"


def test_a_missing_key_is_refused_when_the_transport_is_built() -> None:
    """No key for a provider that needs one: credentials_incomplete, before any request."""
    from fluxmail import FluxMail

    with pytest.raises(ConfigurationError) as info:
        FluxMail(transport="api", provider="sendgrid", sender="a@example.com", audit=False)
    assert info.value.code == "credentials_incomplete" and "FLUXMAIL_API_KEY" in info.value.message


def test_failover_members_may_be_api_urls(tmp_path: Path) -> None:
    url = f"failover(resend+api://{KEY}@default?endpoint=https://127.0.0.1:9 smtp://relay.example.com)"
    config = resolve_config(url=url)
    assert [m.backend for m in config.members] == ["api", "smtp"]
    assert config.members[0].api_provider == "resend"
    assert config.endpoint == ("failover(resend+api://127.0.0.1:9 smtp://relay.example.com:587)")
    assert KEY not in repr(config)


def test_fluxmail_providers_shows_the_api(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fluxmail providers NAME` (text and JSON) shows the API next to the SMTP settings."""
    import json

    from tests.support.cli import cli

    ran = cli(capsys, monkeypatch, "providers", "postmark-broadcasts", "--json")
    assert json.loads(ran.out)["provider"]["api"] == {
        "transport": "postmark",
        "base_url": "https://api.postmarkapp.com",
        "docs_url": "https://postmarkapp.com/developer/api/email-api",
        "options": {"message_stream": "broadcast"},
    }
    text = cli(capsys, monkeypatch, "providers", "sendgrid").out
    assert "https://api.sendgrid.com (FLUXMAIL_TRANSPORT=api)" in text


def test_switching_to_the_api_is_one_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """SendGrid's SMTP password is its API key: FLUXMAIL_TRANSPORT=api is all it takes."""
    monkeypatch.setenv("FLUXMAIL_PROVIDER", "sendgrid")
    monkeypatch.setenv("FLUXMAIL_PASSWORD", KEY)
    assert resolve_config().backend == "smtp"
    monkeypatch.setenv("FLUXMAIL_TRANSPORT", "api")
    config = resolve_config()
    assert config.backend == "api" and config.api_key is not None
    assert config.api_key.get_secret_value() == KEY
    assert config.sources["api_key"] == "environment"
    # Mailgun's SMTP password is not its API key: no such fallback there.
    mailgun = resolve_config(provider="mailgun", api_domain="example.com")
    assert mailgun.api_key is None
