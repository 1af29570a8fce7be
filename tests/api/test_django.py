"""fluxmail.django.EmailBackend in a real Django project, through django.core.mail, against
real SMTP servers (STARTTLS with the test CA and AUTH, the dev server, refusing servers).

These tests call the mail API every Django version has (``get_connection()``,
``fail_silently=``, ``auth_user=``, ``connection=``): deprecated by Django 6.1 but still
supported, there through the ``MAILERS`` site (tests/support/django_site.py). The new API
(``using=``, ``mailers``, OPTIONS) is tested in test_django_mailers.py."""

from __future__ import annotations

import socket
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from fluxmail import ConfigurationError, ConnectionFailed, MessageError, Refused
from fluxmail.devserver import DevServer
from tests.support.django_site import (  # noqa: F401  (site_fixture)
    LEGACY_MAIL_API,
    SENDER,
    backend_settings,
    fluxmail_settings,
    site_fixture,
)
from tests.support.servers import Faults, reply

pytestmark = [pytest.mark.timeout(60), LEGACY_MAIL_API]


def test_send_mail_over_starttls_with_auth(site: Any, smtp_server: Any) -> None:
    """send_mail() goes out over STARTTLS (trusting the test CA) with AUTH, from the
    FLUXMAIL sender since DEFAULT_FROM_EMAIL was left at Django's placeholder."""
    from django.core import mail

    server = smtp_server(tls="starttls", auth=("user", "pw"))
    site(FLUXMAIL=fluxmail_settings(server, username="user", password="pw"))
    assert mail.send_mail("Hello", "Body text.", None, ["ada@example.com"]) == 1
    [received] = server.messages
    assert received.tls and received.login == "user"
    assert received.mail_from == "shop@example.com" and received.rcpt_tos == ["ada@example.com"]
    parsed = message_from_bytes(received.data)
    assert parsed["Subject"] == "Hello" and parsed["From"] == SENDER


def test_configuration_from_the_environment_and_the_dev_server(
    site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No FLUXMAIL setting: FLUXMAIL_* variables alone configure the backend; a chosen
    DEFAULT_FROM_EMAIL wins over FLUXMAIL_SENDER, as from_email wins in Django."""
    from django.core import mail

    with DevServer(port=0, folder=tmp_path / "dev") as dev:
        monkeypatch.setenv("FLUXMAIL_HOST", dev.host)
        monkeypatch.setenv("FLUXMAIL_PORT", str(dev.port))
        monkeypatch.setenv("FLUXMAIL_SENDER", "Env <env@example.com>")
        site(DEFAULT_FROM_EMAIL="Orders <orders@example.org>")
        assert mail.send_mail("Order", "Thanks.", None, ["ada@example.com"]) == 1
        [received] = dev.messages
    assert received.mail_from == "orders@example.org" and received.subject == "Order"


def test_the_django_setting_overrides_the_environment(
    site: Any, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core import mail

    server = smtp_server()
    monkeypatch.setenv("FLUXMAIL_HOST", "mail.example.invalid")
    monkeypatch.setenv("FLUXMAIL_SENDER", "Env <env@example.com>")
    site(FLUXMAIL={"host": server.host, "port": server.port, "sender": "Set <set@example.com>"})
    assert mail.send_mail("Hi", "x", None, ["ada@example.com"]) == 1
    assert server.messages[0].mail_from == "set@example.com"


def test_send_mass_mail_goes_through_send_many(site: Any, smtp_server: Any) -> None:
    """Several messages: one bulk run; each message gets its SendResult."""
    from django.core import mail

    server = smtp_server(tls="starttls")
    site(FLUXMAIL=fluxmail_settings(server))
    datatuples = [(f"Note {i}", f"Body {i}", None, [f"r{i}@example.com"]) for i in range(5)]
    assert mail.send_mass_mail(datatuples) == 5
    assert sorted(m.rcpt_tos[0] for m in server.messages) == [f"r{i}@example.com" for i in range(5)]
    messages = [mail.EmailMessage(f"S{i}", "x", None, [f"s{i}@example.com"]) for i in range(3)]
    assert mail.get_connection().send_messages(messages) == 3
    results = [m.fluxmail_result for m in messages]
    assert [r.status for r in results] == ["sent"] * 3
    assert [r.accepted for r in results] == [(f"s{i}@example.com",) for i in range(3)]


def test_get_connection_as_a_context_manager_reuses_one_connection(
    site: Any, smtp_server: Any
) -> None:
    from django.core import mail

    server = smtp_server(tls="starttls", auth=("user", "pw"))
    site(FLUXMAIL=fluxmail_settings(server, username="user", password="pw"))
    with mail.get_connection() as connection:
        for i in range(3):
            mail.EmailMessage(f"m{i}", "x", None, ["a@example.com"], connection=connection).send()
        mail.send_mail("m3", "x", None, ["a@example.com"], connection=connection)
    assert len(server.messages) == 4
    assert server.connections == 1 and server.commands.count("AUTH") == 1
    mail.send_mail("after", "x", None, ["a@example.com"])
    mail.send_mail("after", "x", None, ["a@example.com"])
    assert server.connections == 3  # without it: one connection per send_mail()


def test_send_mail_auth_user_and_password_are_the_login(site: Any, smtp_server: Any) -> None:
    """send_mail(auth_user=, auth_password=) become username/password; the password shows
    in no repr of the backend or its mailer."""
    from django.core import mail

    server = smtp_server(tls="starttls", auth=("user", "s3cret-pw"))
    site(FLUXMAIL=fluxmail_settings(server))
    sent = mail.send_mail(
        "Hi", "x", None, ["a@example.com"], auth_user="user", auth_password="s3cret-pw"
    )
    assert sent == 1 and server.messages[0].login == "user"
    backend = mail.get_connection(username="user", password="s3cret-pw")
    shown = repr(backend) + repr(vars(backend).get("_mailer")) + repr(backend.mailer)
    assert "s3cret-pw" not in shown


def test_the_mailer_is_built_once_per_settings(site: Any, smtp_server: Any) -> None:
    """Django builds a backend per send_mail(): they share one mailer, until settings change."""
    from django.core import mail

    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server))
    first, second = mail.get_connection(), mail.get_connection()
    assert first.mailer is second.mailer
    site(FLUXMAIL=fluxmail_settings(server, timeout=7))
    assert mail.get_connection().mailer is not first.mailer
    assert mail.get_connection().mailer.config.timeout == 7


def test_mail_admins_and_mail_managers(site: Any, smtp_server: Any) -> None:
    from django.core import mail

    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server), SERVER_EMAIL="Django <errors@example.com>")
    mail.mail_admins("Server error", "Traceback...", html_message="<pre>Traceback...</pre>")
    mail.mail_managers("Broken link", "/old-page")
    admins, managers = server.messages
    assert admins.mail_from == "errors@example.com"
    assert admins.rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert message_from_bytes(admins.data)["Subject"] == "[Django] Server error"
    assert managers.rcpt_tos == ["ops@example.com"]


def test_fail_silently_swallows_a_refusal(site: Any, smtp_server: Any) -> None:
    """A 5xx refusal: 0 sent with fail_silently=True, Refused without; the result is kept."""
    from django.core import mail

    server = smtp_server(faults=Faults(mail=reply("550 5.7.1 Sender blocked")))
    site(FLUXMAIL=fluxmail_settings(server))
    assert mail.send_mail("Hi", "x", None, ["ada@example.com"], fail_silently=True) == 0
    message = mail.EmailMessage("Hi", "x", None, ["ada@example.com"])
    assert message.send(fail_silently=True) == 0
    assert message.fluxmail_result.status == "failed"
    message = mail.EmailMessage("Hi", "x", None, ["ada@example.com"])  # its own connection
    with pytest.raises(Refused) as caught:
        message.send()
    assert caught.value.smtp_code == 550 and message.fluxmail_result.status == "failed"
    assert server.messages == []


def test_fail_silently_in_a_mass_mail(site: Any, smtp_server: Any) -> None:
    """One refused recipient among three: the others are sent; without fail_silently the
    refusal is raised once every message has its result."""
    from django.core import mail

    faults = Faults(rcpt_to={"gone@example.com": reply("550 5.1.1 No such user")})
    server = smtp_server(faults=faults)
    site(FLUXMAIL=fluxmail_settings(server))
    to = ["a@example.com", "gone@example.com", "b@example.com"]
    tuples = [("Hi", "x", None, [address]) for address in to]
    assert mail.send_mass_mail(tuples, fail_silently=True) == 2
    messages = [mail.EmailMessage("Hi", "x", None, [address]) for address in to]
    with pytest.raises(Refused):
        mail.get_connection().send_messages(messages)
    assert [m.fluxmail_result.status for m in messages] == ["sent", "failed", "sent"]
    assert len(server.messages) == 4


def test_fail_silently_swallows_a_server_that_is_down(site: Any) -> None:
    from django.core import mail

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site(FLUXMAIL={"host": "127.0.0.1", "port": port, "sender": SENDER, "max_retries": 0})
    assert mail.send_mail("Hi", "x", None, ["ada@example.com"], fail_silently=True) == 0
    with pytest.raises(ConnectionFailed):
        mail.send_mail("Hi", "x", None, ["ada@example.com"])


def test_fail_silently_never_hides_a_configuration_error(site: Any) -> None:
    from django.core import mail

    site(FLUXMAIL={"host": "127.0.0.1", "port": 70000})
    with pytest.raises(ConfigurationError) as caught:
        mail.send_mail("Hi", "x", "a@example.com", ["ada@example.com"], fail_silently=True)
    assert caught.value.code == "invalid_port"
    site(FLUXMAIL="smtp://127.0.0.1")
    with pytest.raises(ConfigurationError) as caught:
        mail.send_mail("Hi", "x", "a@example.com", ["ada@example.com"], fail_silently=True)
    assert caught.value.code == "invalid_config" and "FLUXMAIL" in caught.value.message


def test_fail_silently_never_hides_bad_input(site: Any, smtp_server: Any) -> None:
    """A bad address or a header injection raises, as Django's SMTP backend does; in a mass
    mail nothing at all is sent, since every message is built before the first send."""
    from django.core import mail

    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server))
    with pytest.raises(MessageError) as caught:
        mail.send_mail("Hi\r\nBcc: eve@example.com", "x", None, ["a@example.com"], True)
    assert caught.value.code == "header_injection"
    tuples = [("Hi", "x", None, ["a@example.com"]), ("Hi", "x", None, ["not an address"])]
    with pytest.raises(MessageError) as caught:
        mail.send_mass_mail(tuples, fail_silently=True)
    assert caught.value.code == "invalid_address"
    assert server.messages == [] and server.connections == 0


@pytest.mark.parametrize("audit", [True, False], ids=["audit-on", "audit-off"])
def test_under_django_test_with_and_without_the_audit(
    site: Any, smtp_server: Any, tmp_path: Path, audit: bool
) -> None:
    """Django's test environment swaps in locmem; a test that sets the backend back to
    fluxmail (MAILERS, or EMAIL_BACKEND before 6.1) sends for real, and the audit records each
    message (or nothing, when off)."""
    from django.core import mail
    from django.test import override_settings
    from django.test.utils import setup_test_environment, teardown_test_environment

    from fluxmail.django import mailer_for

    server = smtp_server(tls="starttls")
    extra = {"audit_dir": str(tmp_path / "audit")} if audit else {}
    site(FLUXMAIL=fluxmail_settings(server, **extra))
    setup_test_environment()
    try:
        mail.send_mail("Caught", "x", None, ["ada@example.com"])
        assert [m.subject for m in mail.outbox] == ["Caught"] and server.messages == []
        with override_settings(**backend_settings()):
            message = mail.EmailMessage("Sent", "x", None, ["ada@example.com"])
            assert message.send() == 1
        assert len(mail.outbox) == 1 and len(server.messages) == 1
    finally:
        teardown_test_environment()
    result = message.fluxmail_result
    assert result.status == "sent" and result.accepted == ("ada@example.com",)
    if audit:
        record = mailer_for().audit.get(result.audit_id)
        assert record.status == "sent" and record.subject == "Sent"
        assert record.message_id == result.message_id
    else:
        assert result.audit_id is None and not (tmp_path / "audit").exists()
