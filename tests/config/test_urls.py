"""Host forms and the one-URL form, through resolve_config so the whole path is covered."""

from __future__ import annotations

import pytest

from fluxmail.config.resolve import EmailInstance, resolve_config
from fluxmail.config.urls import is_loopback, parse_host, parse_url
from fluxmail.errors import ConfigurationError

# host argument -> (host, port, domain)
HOST_FORMS: list[tuple[object, tuple[str, int, str]]] = [
    ("smtp.gmail.com", ("smtp.gmail.com", 587, "")),
    ("smtp.gmail.com:gmail.com", ("smtp.gmail.com", 587, "gmail.com")),
    (
        EmailInstance(relay="smtp.myrelay.net", domain="mycompany.com"),
        ("smtp.myrelay.net", 587, "mycompany.com"),
    ),
    (EmailInstance(relay="smtp.myrelay.net"), ("smtp.myrelay.net", 587, "")),
    ("mail.example.com:2525", ("mail.example.com", 2525, "")),
    ("[::1]:2525", ("::1", 2525, "")),
    ("[2001:db8::1]", ("2001:db8::1", 587, "")),
    ("SMTP.Example.COM", ("smtp.example.com", 587, "")),
    ("bücher.example", ("xn--bcher-kva.example", 587, "")),
]


@pytest.mark.parametrize(("host", "expected"), HOST_FORMS)
def test_host_forms(host: object, expected: tuple[str, int, str]) -> None:
    """Every documented host form resolves to host (IPv6 unbracketed), port and domain."""
    config = resolve_config(host=host, use_tls=True)
    assert (config.host, config.port, config.domain) == expected


def test_host_form_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUXMAIL_HOST accepts the same forms as host=."""
    monkeypatch.setenv("FLUXMAIL_HOST", "smtp.gmail.com:gmail.com")
    config = resolve_config()
    assert (config.host, config.domain) == ("smtp.gmail.com", "gmail.com")
    assert config.sources["domain"] == "environment"


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("", "invalid_host"),
        ("a b.com", "invalid_host"),
        ("host:", "invalid_host"),
        ("[::1", "invalid_host"),
        ("[nothex]:25", "invalid_host"),
        ("a:b:c", "invalid_host"),
        ("-bad.example", "invalid_host"),
        ("mail.example.com:0", "invalid_port"),
        ("mail.example.com:70000", "invalid_port"),
        ("[::1]:0", "invalid_port"),
    ],
)
def test_bad_host_forms(host: str, code: str) -> None:
    """A malformed host is a configuration error with a stable code."""
    with pytest.raises(ConfigurationError) as info:
        parse_host(host)
    assert info.value.code == code
    assert "FLUXMAIL_HOST" in str(info.value)


def test_host_port_and_port_variable_at_same_layer_must_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """host:port and FLUXMAIL_PORT with different values in one layer is an error."""
    monkeypatch.setenv("FLUXMAIL_HOST", "mail.example.com:2525")
    monkeypatch.setenv("FLUXMAIL_PORT", "587")
    with pytest.raises(ConfigurationError) as info:
        resolve_config()
    assert info.value.code == "invalid_port"


def test_argument_port_beats_host_port_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port argument wins over a port embedded in FLUXMAIL_HOST (higher layer)."""
    monkeypatch.setenv("FLUXMAIL_HOST", "mail.example.com:2525")
    assert resolve_config(port=587).port == 587


# url -> (host, port, security, username, password, extra expectations)
URL_FORMS = [
    ("smtp://user:pw@mail.example.com:587", ("mail.example.com", 587, "starttls", "user", "pw")),
    ("smtp://user:pw@mail.example.com", ("mail.example.com", 587, "starttls", "user", "pw")),
    ("smtps://user:pw@mail.example.com:465", ("mail.example.com", 465, "implicit", "user", "pw")),
    ("smtps://user:pw@mail.example.com", ("mail.example.com", 465, "implicit", "user", "pw")),
    ("smtp+plain://relay.internal:25", ("relay.internal", 25, "none", None, None)),
    ("smtp+plain://127.0.0.1:1025", ("127.0.0.1", 1025, "none", None, None)),
    (
        "smtp://me%40example.com:p%40ss%3Aw%2Fd@mail.example.com",
        ("mail.example.com", 587, "starttls", "me@example.com", "p@ss:w/d"),
    ),
    ("smtps://[::1]:4650", ("::1", 4650, "implicit", None, None)),
    ("SMTPS://MAIL.example.com", ("mail.example.com", 465, "implicit", None, None)),
    ("sendgrid://:SG.key@", ("smtp.sendgrid.net", 587, "starttls", "apikey", "SG.key")),
    (
        "ses://AKIAX:pw@eu-west-1",
        ("email-smtp.eu-west-1.amazonaws.com", 587, "starttls", "AKIAX", "pw"),
    ),
    (
        "gmail://me%40gmail.com:app@?timeout=10",
        ("smtp.gmail.com", 587, "starttls", "me@gmail.com", "app"),
    ),
    ("resend://:re_key@:587", ("smtp.resend.com", 587, "starttls", "resend", "re_key")),
]


@pytest.mark.parametrize(("url", "expected"), URL_FORMS)
def test_url_forms(url: str, expected: tuple[object, ...]) -> None:
    """Every URL form sets host, port, TLS mode and percent-decoded credentials."""
    config = resolve_config(url=url, sender="app@example.com")
    password = config.password.get_secret_value() if config.password else None
    assert (config.host, config.port, config.security, config.username, password) == expected
    assert config.sources["host"] in ("url", "provider preset")


def test_url_query_parameters() -> None:
    """Query parameters set other settings by field name, including domain."""
    config = resolve_config(
        url="smtp://u:p@mail.example.com?timeout=12&sender=a%40b.com&domain=b.com"
        "&local_hostname=app.b.com&tls_verify=false&max_retries=2"
    )
    assert (config.timeout, config.sender, config.domain) == (12.0, "a@b.com", "b.com")
    assert (config.local_hostname, config.tls_verify, config.max_retries) == ("app.b.com", False, 2)
    assert config.sources["timeout"] == "url" and config.sources["domain"] == "url"


def test_url_from_environment_and_explicit_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUXMAIL_URL is read from the environment; explicit variables override its parts."""
    monkeypatch.setenv("FLUXMAIL_URL", "smtps://user:pw@mail.example.com")
    monkeypatch.setenv("FLUXMAIL_PORT", "2465")
    monkeypatch.setenv("FLUXMAIL_USERNAME", "other")
    config = resolve_config()
    assert (config.port, config.username, config.security) == (2465, "other", "implicit")
    assert config.sources["port"] == "environment" and config.sources["password"] == "url"


def test_explicit_tls_overrides_url_scheme() -> None:
    """use_tls=True wins over the implicit TLS an smtps:// URL implies."""
    config = resolve_config(url="smtps://u:p@mail.example.com", use_tls=True)
    assert (config.security, config.port) == ("starttls", 587)


@pytest.mark.parametrize(
    "url",
    [
        "mail.example.com",
        "smtp://user:secretpw@",
        "smtp://:pw@",
        "smtp://mail.example.com:99999",
        "smtp://mail.example.com:abc",
        "smtp://mail.example.com/path",
        "smtp://u:p#w@mail.example.com",
        "smtp://mail.example.com?password=x",
        "smtp://mail.example.com?nonsense=1",
        "smtp://mail.example.com?timeout=1&timeout=2",
        "smtp://[::1",
        "smtp://mail.example.com?novalue",
        "sendgird://:key@",
        "ses://u:p@eu-west-1?region=us-east-1",
        "gmail://u:p@?provider=ses",
    ],
)
def test_malformed_urls(url: str) -> None:
    """A malformed URL is invalid_url, and the message never echoes the URL."""
    with pytest.raises(ConfigurationError) as info:
        resolve_config(url=url)
    assert info.value.code == "invalid_url"
    assert url not in str(info.value)
    assert "FLUXMAIL_URL" in str(info.value)


def test_parse_url_region_and_provider() -> None:
    """A provider URL's host part is the region."""
    parts = parse_url("ses://u:p@us-east-2")
    assert parts.values["provider"] == "ses" and parts.values["region"] == "us-east-2"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("app.localhost", True),
        ("10.0.0.1", False),
        ("smtp.example.com", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, expected: bool) -> None:
    """Loopback detection used by the TLS default and the insecure-auth rule."""
    assert is_loopback(host) is expected
