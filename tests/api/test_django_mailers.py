"""fluxmail.django.EmailBackend configured as Django 6.1 configures a backend: a ``MAILERS``
entry whose ``OPTIONS`` become the backend's keyword arguments, with ``alias=`` (the entry's
name) added by Django; sent through the new API (``mailers``, ``using=``) against real servers.

Warnings are errors (pyproject) and, unlike test_django.py, nothing here lets Django's
deprecation warnings through: these tests also prove that neither the backend nor the new API
calls a deprecated Django API. The first tests build the backend with the keyword arguments
Django 6.1 passes, so they run on every Django; those that need ``django.core.mail.mailers``
and the ``MAILERS`` setting skip before Django 6.1 (so on Django 5.2, as in CI on Python 3.11).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

import fluxmail.django
from fluxmail import ConfigurationError, ConnectionFailed
from fluxmail.testing import outbox
from tests.support.django_site import (  # noqa: F401  (site_fixture)
    BACKEND,
    SENDER,
    fluxmail_settings,
    has_mailers,
    site_fixture,
)
from tests.support.servers import Faults, reply

pytestmark = pytest.mark.timeout(60)
needs_mailers = pytest.mark.skipif(not has_mailers(), reason="Django before 6.1: no MAILERS")


def _down_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _message(subject: str = "Hi", to: str = "ada@example.com") -> Any:
    from django.core import mail

    return mail.EmailMessage(subject, "Body.", None, [to])


# -- the backend built as Django 6.1 builds it: backend_class(alias=alias, **OPTIONS) ----------


def test_options_are_fluxmail_arguments_over_the_fluxmail_setting(
    site: Any, smtp_server: Any
) -> None:
    """OPTIONS (STARTTLS, AUTH, a sender) win over the FLUXMAIL setting, which still fills in
    what they leave out; the password shows in no repr of the backend or its mailer."""
    server = smtp_server(tls="starttls", auth=("user", "s3cret-pw"))
    site(FLUXMAIL={"sender": "Base <base@example.com>", "timeout": 9})
    options = fluxmail_settings(server, username="user", password="s3cret-pw")
    backend = fluxmail.django.EmailBackend(alias="default", **options)
    assert backend.fail_silently is False
    assert backend.send_messages([_message()]) == 1
    [received] = server.messages
    assert received.tls and received.login == "user" and received.mail_from == "shop@example.com"
    assert backend.mailer.config.timeout == 9  # from FLUXMAIL, which OPTIONS left out
    assert "s3cret-pw" not in repr(backend) + repr(backend.mailer)


def test_every_fluxmail_argument_is_an_option(site: Any) -> None:
    """FluxMail's own parameters (object_type, logger, log_level) and its settings, upstream
    names included, are all taken; None means unset."""
    outbox.clear()
    backend = fluxmail.django.EmailBackend(
        alias="default", object_type="memory", sender=SENDER, logger=logging.getLogger("t"),
        log_level="WARNING", use_ssl=None, username=None,
    )  # fmt: skip
    try:
        assert backend.send_messages([_message("Memory")]) == 1
        (sent,) = outbox.find(to="ada@example.com")
        assert sent.parsed()["Subject"] == "Memory"
    finally:
        outbox.clear()


def test_fail_silently_option_swallows_delivery_errors_only(site: Any, smtp_server: Any) -> None:
    """With fail_silently=True in OPTIONS a refusal is 0 sent (with its failed result); a bad
    value is still a ConfigurationError."""
    server = smtp_server(faults=Faults(mail=reply("550 5.7.1 Sender blocked")))
    quiet = fluxmail.django.EmailBackend(
        alias="quiet", fail_silently=True, **fluxmail_settings(server)
    )
    message = _message()
    assert quiet.fail_silently is True and quiet.send_messages([message]) == 0
    assert message.fluxmail_result.status == "failed" and server.messages == []
    broken = fluxmail.django.EmailBackend(alias="quiet", fail_silently=True, port=70000)
    with pytest.raises(ConfigurationError) as caught:
        broken.send_messages([_message()])
    assert caught.value.code == "invalid_port"


@pytest.mark.parametrize(
    ("alias", "options", "expected"),
    [
        (
            "default",
            {"hots": "mail.example.com", "pasword": "s3cret-pw"},
            "unknown option in MAILERS['default']['OPTIONS']: 'hots' (did you mean 'host'?), "
            "'pasword' (did you mean 'password'?). fluxmail.django.EmailBackend takes",
        ),
        ("notify", {"xyzzy": 1}, "unknown option in MAILERS['notify']['OPTIONS']: 'xyzzy'. "),
        (
            None,
            {"hots": "s3cret-pw"},
            "unknown option in the keyword arguments of fluxmail.django.EmailBackend "
            "(get_connection(...)): 'hots' (did you mean 'host'?).",
        ),
        (
            "quiet",
            {"fail_silently": "false", "password": "s3cret-pw"},
            "fail_silently in MAILERS['quiet']['OPTIONS'] must be True or False, not 'false'",
        ),
        (
            None,
            {"fail_silently": "no"},
            "fail_silently in the keyword arguments of fluxmail.django.EmailBackend "
            "(get_connection(...)) must be True or False, not 'no'",
        ),
    ],
    ids=["misspelled", "no-close-match", "without-mailers", "fail-silently-str", "str-no-alias"],
)
def test_an_unknown_or_invalid_option_is_refused_when_the_backend_is_built(
    site: Any, alias: str | None, options: dict[str, Any], expected: str
) -> None:
    """A ConfigurationError (invalid_config) naming the MAILERS entry (or the call) and the
    closest known name, never a value (here a password)."""
    kwargs = options if alias is None else {"alias": alias, **options}
    with pytest.raises(ConfigurationError) as caught:
        fluxmail.django.EmailBackend(**kwargs)
    error = caught.value
    assert error.code == "invalid_config" and isinstance(error, ValueError)
    assert expected in error.message, error.message
    assert "s3cret-pw" not in str(error) + repr(error) + repr(error.to_dict())


# -- through Django 6.1's MAILERS setting and mail.mailers -------------------------------------


@needs_mailers
def test_mailers_entries_send_through_using(site: Any, smtp_server: Any) -> None:
    """Two entries: send_mail() goes through "default"; using="auth" (send_mail, send(),
    mailers["auth"] as a context manager on one connection) through the other, whose OPTIONS
    hold the login; the password shows in no repr."""
    from django.core import mail

    plain = smtp_server()
    secured = smtp_server(tls="starttls", auth=("user", "s3cret-pw"))
    auth_options = fluxmail_settings(secured, username="user", password="s3cret-pw")
    site(
        MAILERS={
            "default": {"BACKEND": BACKEND, "OPTIONS": fluxmail_settings(plain)},
            "auth": {"BACKEND": BACKEND, "OPTIONS": auth_options},
        }
    )
    assert mail.send_mail("Default", "x", None, ["ada@example.com"]) == 1
    assert mail.send_mail("Auth", "x", None, ["ada@example.com"], using="auth") == 1
    assert _message("Auth 2").send(using="auth") == 1
    with mail.mailers["auth"] as connection:
        assert connection.alias == "auth"
        for i in range(3):
            assert connection.send_messages([_message(f"Held {i}")]) == 1
    assert [m.login for m in plain.messages] == [None]
    assert [m.login for m in secured.messages] == ["user"] * 5
    assert secured.connections == 3  # two sends, then one held connection for three
    backend = mail.mailers["auth"]
    assert "s3cret-pw" not in repr(backend) + repr(backend.mailer)
    assert mail.mailers.default.mailer is not backend.mailer


@needs_mailers
def test_mailers_fail_silently_entry(site: Any) -> None:
    """An entry with "fail_silently": True (Django 6.1's replacement for the argument)
    swallows an outage, for mail_admins(using=...) too; the default entry raises it."""
    from django.core import mail

    down = {"host": "127.0.0.1", "port": _down_port(), "sender": SENDER, "max_retries": 0}
    site(
        MAILERS={
            "default": {"BACKEND": BACKEND, "OPTIONS": down},
            "quiet": {"BACKEND": BACKEND, "OPTIONS": {**down, "fail_silently": True}},
        },
        SERVER_EMAIL="Django <errors@example.com>",
    )
    assert mail.send_mail("Hi", "x", None, ["ada@example.com"], using="quiet") == 0
    mail.mail_admins("Server error", "Traceback...", using="quiet")
    with pytest.raises(ConnectionFailed):
        mail.send_mail("Hi", "x", None, ["ada@example.com"])


@needs_mailers
def test_mailers_unknown_option_fails_the_lookup(site: Any, smtp_server: Any) -> None:
    """A misspelled option: mailers["bad"] and every send through it raise, before any
    traffic; the other entries work."""
    from django.core import mail

    server = smtp_server()
    options = {**fluxmail_settings(server), "hots": server.host}
    site(
        MAILERS={
            "default": {"BACKEND": BACKEND, "OPTIONS": fluxmail_settings(server)},
            "bad": {"BACKEND": BACKEND, "OPTIONS": options},
        }
    )
    with pytest.raises(ConfigurationError) as caught:
        mail.mailers["bad"]  # the lookup builds the backend
    assert "MAILERS['bad']['OPTIONS']: 'hots' (did you mean 'host'?)" in caught.value.message
    with pytest.raises(ConfigurationError):
        mail.send_mail("Hi", "x", None, ["ada@example.com"], using="bad")
    assert server.connections == 0
    assert mail.send_mail("Hi", "x", None, ["ada@example.com"]) == 1


@needs_mailers
def test_deprecated_get_connection_arguments_join_the_options(site: Any, smtp_server: Any) -> None:
    """Under MAILERS, get_connection(username=, password=) adds to the default entry's
    OPTIONS (Django warns, about the caller); an unknown one is named as an argument."""
    from django.core import mail

    server = smtp_server(tls="starttls", auth=("user", "pw"))
    site(MAILERS={"default": {"BACKEND": BACKEND, "OPTIONS": fluxmail_settings(server)}})
    with pytest.deprecated_call():
        backend = mail.get_connection(username="user", password="pw")
    assert backend.send_messages([_message()]) == 1 and server.messages[0].login == "user"
    with pytest.deprecated_call(), pytest.raises(ConfigurationError) as caught:
        mail.get_connection(hots="x")
    assert "(get_connection(...)): 'hots' (did you mean 'host'?)" in caught.value.message


@needs_mailers
def test_mailers_under_the_django_test_environment(
    site: Any, smtp_server: Any, tmp_path: Path
) -> None:
    """Django's test environment swaps locmem in for every entry; a test that sets a
    fluxmail entry back sends for real, with the audit its OPTIONS ask for."""
    from django.core import mail
    from django.test import override_settings
    from django.test.utils import setup_test_environment, teardown_test_environment

    server = smtp_server(tls="starttls")
    site(MAILERS={"default": {"BACKEND": BACKEND}, "other": {"BACKEND": BACKEND}})
    options = fluxmail_settings(server, audit_dir=str(tmp_path / "audit"))
    setup_test_environment()
    try:
        mail.send_mail("Caught", "x", None, ["ada@example.com"], using="other")
        assert [m.sent_using for m in mail.outbox] == ["other"] and server.messages == []
        with override_settings(MAILERS={"default": {"BACKEND": BACKEND, "OPTIONS": options}}):
            message = _message("Sent")
            assert message.send() == 1
            record = mail.mailers.default.mailer.audit.get(message.fluxmail_result.audit_id)
        assert len(mail.outbox) == 1 and len(server.messages) == 1
    finally:
        teardown_test_environment()
    assert record.status == "sent" and record.subject == "Sent"
