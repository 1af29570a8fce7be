"""create(...).send() against real servers: outcomes, retries, faults, through both faces."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fluxmail import (
    AuthenticationFailed,
    DeliveryError,
    OutcomeUnknown,
    Refused,
    TLSFailure,
)
from fluxmail.cli.exit_codes import exit_code
from tests.support.mailing import SENDER, Send, mailer_for
from tests.support.servers import Faults, drop, reply, stall


def test_send_reports_every_recipient_and_sends_the_exact_bytes(
    smtp_server: Any, send: Send
) -> None:
    """STARTTLS + AUTH: each recipient is 'sent' and the server receives exactly as_bytes()."""
    server = smtp_server(tls="starttls", auth=("user", "pw"))
    mailer = mailer_for(server, username="user", password="pw")
    draft = mailer.create("Hi", ["a@example.com", "B <b@example.com>"], "hello", cc="c@example.com")
    result = send(draft)
    assert result.status == "sent"
    assert set(result.recipients) == {"a@example.com", "b@example.com", "c@example.com"}
    assert all(r.status == "sent" and r.code == 250 for r in result.recipients.values())
    assert result.final_reply is not None and result.final_reply.code == 250
    [msg] = server.messages
    assert msg.data.rstrip(b"\r\n") == draft.as_bytes().rstrip(b"\r\n")
    assert msg.tls and msg.login == "user" and msg.mail_from == SENDER


def test_implicit_tls_delivers(smtp_server: Any, send: Send) -> None:
    """Implicit TLS (use_ssl) verifies the certificate and delivers."""
    server = smtp_server(tls="implicit", auth=("user", "pw"))
    result = send(
        mailer_for(server, username="user", password="pw").create("Hi", "a@example.com", "x")
    )
    assert result.status == "sent" and server.messages[0].tls


def test_bcc_is_delivered_but_never_in_the_bytes(smtp_server: Any, send: Send) -> None:
    """A Bcc recipient is in the envelope only; duplicates across To/Cc/Bcc go once."""
    server = smtp_server()
    draft = mailer_for(server).create(
        "Hi",
        ["a@example.com"],
        "x",
        cc=["A@example.com"],
        bcc=["hidden@example.com", "a@example.com"],
    )
    result = send(draft)
    assert sorted(server.messages[0].rcpt_tos) == ["a@example.com", "hidden@example.com"]
    assert b"hidden" not in server.messages[0].data and b"Bcc" not in draft.as_bytes()
    assert result.recipients["hidden@example.com"].status == "sent"


def test_partial_refusal_returns_partial(smtp_server: Any, send: Send) -> None:
    """A 550 for one recipient: the others get the message and send() does not raise."""
    server = smtp_server(
        faults=Faults(rcpt_to={"gone@example.com": reply("550 5.1.1 No such user")})
    )
    result = send(mailer_for(server).create("Hi", ["a@example.com", "gone@example.com"], "x"))
    assert result.status == "partial"
    gone = result.recipients["gone@example.com"]
    assert (gone.status, gone.code, gone.enhanced_status) == ("rejected", 550, "5.1.1")
    assert server.messages[0].rcpt_tos == ["a@example.com"]


def test_every_recipient_refused_raises_with_the_result(smtp_server: Any, send: Send) -> None:
    """All RCPTs refused: a Refused error that carries the result; nothing delivered."""
    server = smtp_server(faults=Faults(rcpt=reply("550 5.1.1 No such user")))
    with pytest.raises(Refused) as info:
        send(
            mailer_for(server, max_retries=2).create("Hi", ["a@example.com", "b@example.com"], "x")
        )
    assert info.value.code == "all_recipients_refused"
    assert info.value.result is not None and info.value.result.status == "failed"
    assert server.deliveries == 0 and server.commands.count("MAIL") == 1


def test_transient_failure_is_retried_with_backoff(smtp_server: Any, send: Send) -> None:
    """451 at MAIL twice, max_retries=2: delivered on the third attempt, exactly once."""
    server = smtp_server(faults=Faults(mail=reply("451 4.3.0 Try later", times=2)))
    result = send(mailer_for(server, max_retries=2).create("Hi", "a@example.com", "x"))
    assert result.status == "sent" and len(result.attempts) == 3
    assert [a.smtp_code for a in result.attempts] == [451, 451, None]
    assert server.deliveries == 1


def test_retries_run_out_with_send_failed_carrying_attempts(smtp_server: Any, send: Send) -> None:
    """A transient failure that persists: a DeliveryError carrying every attempt."""
    server = smtp_server(faults=Faults(mail=reply("451 4.3.0 Try later")))
    with pytest.raises(DeliveryError) as info:
        send(mailer_for(server, max_retries=2).create("Hi", "a@example.com", "x"))
    assert info.value.transient and len(info.value.attempts) == 3
    assert info.value.result is not None
    assert info.value.result.recipients["a@example.com"].status == "deferred"


def test_permanent_failure_is_never_retried(smtp_server: Any, send: Send) -> None:
    """550 at MAIL: one attempt only, whatever max_retries says."""
    server = smtp_server(faults=Faults(mail=reply("550 5.7.1 Sender not verified")))
    with pytest.raises(Refused) as info:
        send(mailer_for(server, max_retries=3).create("Hi", "a@example.com", "x"))
    assert info.value.code == "sender_refused" and len(info.value.attempts) == 1
    assert server.commands.count("MAIL") == 1


def test_only_deferred_recipients_are_retried(smtp_server: Any, send: Send) -> None:
    """450 for one recipient once: the retry carries only that recipient."""
    faults = Faults(rcpt_to={"b@example.com": reply("450 4.2.1 Mailbox busy", times=1)})
    server = smtp_server(faults=faults)
    result = send(
        mailer_for(server, max_retries=1).create("Hi", ["a@example.com", "b@example.com"], "x")
    )
    assert result.status == "sent"
    assert [m.rcpt_tos for m in server.messages] == [["a@example.com"], ["b@example.com"]]


def test_deferred_after_retries_is_partial(smtp_server: Any, send: Send) -> None:
    """A recipient still 4xx after every retry is 'deferred'; the rest were sent."""
    server = smtp_server(faults=Faults(rcpt_to={"b@example.com": reply("450 4.2.1 Busy")}))
    result = send(
        mailer_for(server, max_retries=1).create("Hi", ["a@example.com", "b@example.com"], "x")
    )
    assert result.status == "partial"
    assert result.recipients["b@example.com"].status == "deferred"
    assert server.deliveries == 1


def test_too_many_recipients_moves_the_rest_to_new_transactions(
    smtp_server: Any, send: Send
) -> None:
    """452 after 2 recipients (RFC 5321 4.5.3.1.10): 5 recipients go in 3 transactions."""
    server = smtp_server(faults=Faults(max_recipients=2))
    rcpts = [f"r{i}@example.com" for i in range(5)]
    result = send(mailer_for(server, max_retries=0).create("Hi", rcpts, "x"))
    assert result.status == "sent"
    assert [len(m.rcpt_tos) for m in server.messages] == [2, 2, 1]


@pytest.mark.parametrize("fault", [drop(), stall()], ids=["drop", "stall"])
def test_loss_after_final_dot_is_unknown_and_never_resent(
    smtp_server: Any, send: Send, fault: Any
) -> None:
    """Connection lost or reply never comes after ".": OutcomeUnknown, one delivery, no retry."""
    server = smtp_server(faults=Faults(end_of_data=fault))
    mailer = mailer_for(server, max_retries=3, data_timeout=0.5)
    with pytest.raises(OutcomeUnknown) as info:
        send(mailer.create("Hi", ["a@example.com", "b@example.com"], "x"))
    result = info.value.result
    assert result is not None and result.status == "unknown"
    assert {r.status for r in result.recipients.values()} == {"unknown"}
    assert len(result.attempts) == 1 and len(server.received) == 1


def test_loss_before_final_dot_is_retried(smtp_server: Any, send: Send) -> None:
    """Dropped at the DATA command: nothing was accepted, so a retry is safe; one delivery."""
    server = smtp_server(faults=Faults(data=drop(times=1)))
    result = send(mailer_for(server, max_retries=1).create("Hi", "a@example.com", "x"))
    assert result.status == "sent" and len(result.attempts) == 2 and server.deliveries == 1


def test_bad_credentials_fail_once_without_retry(smtp_server: Any, send: Send) -> None:
    """535: AuthenticationFailed at once; the server sees one AUTH (no lock-out hammering)."""
    server = smtp_server(tls="starttls", auth=("user", "pw"))
    with pytest.raises(AuthenticationFailed) as info:
        send(
            mailer_for(server, username="user", password="wrong", max_retries=3).create(
                "Hi", "a@example.com", "x"
            )
        )
    assert info.value.code == "auth_failed" and server.commands.count("AUTH") == 1
    assert "wrong" not in str(info.value)


def test_missing_starttls_fails_before_auth(smtp_server: Any, send: Send) -> None:
    """A server that hides STARTTLS never receives credentials: no plaintext fallback."""
    server = smtp_server(tls="starttls", advertise_starttls=False, auth=("user", "pw"))
    with pytest.raises(TLSFailure) as info:
        send(mailer_for(server, username="user", password="pw").create("Hi", "a@example.com", "x"))
    assert info.value.code == "starttls_unavailable"
    assert "AUTH" not in server.commands and "MAIL" not in server.commands


@pytest.mark.parametrize("cert", ["untrusted", "expired", "wrong_host"])
def test_bad_certificates_are_refused(smtp_server: Any, send: Send, cert: str) -> None:
    """Untrusted, expired or wrong-host certificates stop the send before any command."""
    server = smtp_server(tls="starttls", cert=cert)
    with pytest.raises(TLSFailure) as info:
        send(mailer_for(server, max_retries=2).create("Hi", "a@example.com", "x"))
    assert info.value.code == "certificate_error" and len(info.value.attempts) == 1
    assert "MAIL" not in server.commands


def test_idna_domains_go_out_as_punycode(smtp_server: Any, send: Send) -> None:
    """A server without SMTPUTF8 gets IDNA in the envelope; the result keys keep the given form."""
    server = smtp_server(smtputf8=False)
    result = send(mailer_for(server).create("Hi", "José <jose@exämple.com>", "x"))
    assert server.messages[0].rcpt_tos == ["jose@xn--exmple-cua.com"]
    assert result.recipients["jose@exämple.com"].status == "sent"


def test_non_ascii_local_part_needs_smtputf8(smtp_server: Any, send: Send) -> None:
    """A non-ASCII local part to a server without SMTPUTF8 is a clear error; nothing sent.

    It depends on the server, so it is a DeliveryError (exit 5) carrying the result, not retried.
    """
    server = smtp_server(smtputf8=False)
    with pytest.raises(DeliveryError) as info:
        send(mailer_for(server, max_retries=2).create("Hi", "josé@example.com", "x"))
    assert info.value.code == "smtputf8_required" and server.deliveries == 0
    assert exit_code(info.value) == 5 and not info.value.transient
    assert info.value.result is not None and info.value.result.status == "failed"
    assert len(info.value.attempts) == 1 and server.connections == 1
    assert "MAIL" not in server.commands


def test_dry_run_makes_no_network_traffic(smtp_server: Any, send: Send) -> None:
    """dry_run=True validates and builds only: status dry_run, no connection at all."""
    server = smtp_server()
    result = send(mailer_for(server).create("Hi", "a@example.com", "x"), dry_run=True)
    assert result.status == "dry_run" and server.connections == 0


def test_a_deliberate_resend_keeps_its_message_id(smtp_server: Any, send: Send) -> None:
    """create(message_id=...) reuses the original Message-ID, so receivers can drop a duplicate."""
    server = smtp_server()
    mailer = mailer_for(server)
    first = mailer.create("Hi", "a@example.com", "x")
    again = mailer.create("Hi", "a@example.com", "x", message_id=first.message_id)
    send(again)
    assert again.message_id == first.message_id
    assert f"Message-ID: {first.message_id}".encode() in server.messages[0].data


def test_verification_off_is_explicit_and_warns_every_build(
    smtp_server: Any, send: Send, caplog: pytest.LogCaptureFixture
) -> None:
    """tls_verify=False reaches an untrusted server, and each mailer built logs a warning."""
    server = smtp_server(tls="starttls", cert="untrusted")
    with caplog.at_level(logging.WARNING, logger="fluxmail"):
        mailer_for(server, tls_verify=False)
        mailer = mailer_for(server, tls_verify=False)
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 2
    assert send(mailer.create("Hi", "a@example.com", "x")).status == "sent"


def test_overall_deadline_stops_retries(smtp_server: Any, send: Send) -> None:
    """retry_deadline bounds the whole send: no new attempt would end after it."""
    server = smtp_server(faults=Faults(mail=reply("451 4.3.0 Try later")))
    mailer = mailer_for(server, max_retries=10, retry_delay=0.2, retry_deadline=0.5)
    with pytest.raises(DeliveryError) as info:
        send(mailer.create("Hi", "a@example.com", "x"))
    assert 1 <= len(info.value.attempts) < 5 and server.deliveries == 0


@pytest.mark.parametrize("stage", ["greeting", "mail"])
def test_a_stall_before_the_dot_times_out_and_is_retried(
    smtp_server: Any, send: Send, stage: str
) -> None:
    """A server silent at the greeting or at MAIL: a timeout (transient), then a clean retry."""
    server = smtp_server(faults=Faults(**{stage: stall(times=1)}))
    mailer = mailer_for(server, max_retries=1, connect_timeout=0.5, command_timeout=0.5)
    result = send(mailer.create("Hi", "a@example.com", "x"))
    assert result.status == "sent" and server.deliveries == 1
    assert result.attempts[0].error_code == "timeout" and result.attempts[1].error is None
