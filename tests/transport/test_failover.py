"""failover(...) and roundrobin(...) against two and three real SMTP servers with scripted
faults: a message moves on only when it cannot have been accepted, and never twice."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail, OutcomeUnknown, Refused
from fluxmail.errors import ConnectionFailed
from tests.support.mailing import SENDER
from tests.support.servers import Faults, SMTPTestServer, drop, reply


def url(server: SMTPTestServer, login: str = "") -> str:
    scheme = {"none": "smtp+plain", "starttls": "smtp", "implicit": "smtps"}[server.tls]
    return f"{scheme}://{login}{server.host}:{server.port}"


def where(server: SMTPTestServer) -> str:
    return url(server)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"smtp+plain://127.0.0.1:{port}"


def composite(kind: str, *members: str | FluxMail, **options: Any) -> FluxMail:
    settings: dict[str, Any] = {"sender": SENDER, "audit": "audit_dir" in options, "timeout": 5.0}
    settings.update(options)
    mailer: FluxMail = getattr(FluxMail, kind)(*members, **settings)
    return mailer


def message(mailer: FluxMail, *to: str) -> Any:
    return mailer.create("hello", list(to or ["rcpt@example.com"]), "body")


def total(*servers: SMTPTestServer) -> int:
    return sum(s.deliveries for s in servers)


def test_first_down_second_delivers_and_the_audit_says_so(
    smtp_server: Any, send: Any, tmp_path: Path
) -> None:
    second = smtp_server()
    mailer = composite("failover", closed_port(), url(second), audit_dir=tmp_path / "audit")
    result = send(message(mailer))
    assert result.status == "sent" and result.transport == where(second)
    assert second.deliveries == 1 and len(result.attempts) == 2
    assert mailer.audit.get(result.audit_id).transport == where(second)
    mailer.close()


def test_untrusted_certificate_on_the_first_fails_over(smtp_server: Any, send: Any) -> None:
    first = smtp_server(tls="starttls", cert="untrusted")
    second = smtp_server()
    mailer = composite("failover", url(first), url(second), ca_file=first.ca_path)
    result = send(message(mailer))
    assert result.transport == where(second) and second.deliveries == 1
    assert first.deliveries == 0 and "MAIL" not in first.commands
    mailer.close()


@pytest.mark.parametrize(
    "faults",
    [
        Faults(greeting=reply("421 4.3.2 Going down")),
        Faults(mail=reply("451 4.3.0 Try later")),
        Faults(mail=reply("421 4.4.2 Closing")),
        Faults(data=reply("451 4.3.0 Not now")),
        Faults(data=drop()),  # lost before the final "."
    ],
    ids=["421-greeting", "451-mail", "421-mail", "451-data", "drop-before-dot"],
)
def test_a_refusal_before_the_dot_fails_over(smtp_server: Any, send: Any, faults: Faults) -> None:
    first, second = smtp_server(faults=faults), smtp_server()
    mailer = composite("failover", url(first), url(second))
    result = send(message(mailer))
    assert result.status == "sent" and result.transport == where(second)
    assert first.deliveries == 0 and second.deliveries == 1
    mailer.close()


def test_454_at_login_fails_over(smtp_server: Any, send: Any) -> None:
    busy = Faults(auth=reply("454 4.7.0 Temporary authentication failure"))
    first = smtp_server(auth=("u", "p"), auth_require_tls=False, faults=busy)
    second = smtp_server()
    mailer = composite("failover", url(first, "u:p@"), url(second))
    assert send(message(mailer)).transport == where(second)
    assert second.deliveries == 1
    mailer.close()


def test_a_drop_after_the_dot_is_unknown_and_goes_nowhere_else(smtp_server: Any, send: Any) -> None:
    first = smtp_server(faults=Faults(end_of_data=drop()))
    second, third = smtp_server(), smtp_server()
    mailer = composite("failover", url(first), url(second), url(third))
    with pytest.raises(OutcomeUnknown) as caught:
        send(message(mailer))
    assert caught.value.result is not None and caught.value.result.status == "unknown"
    assert caught.value.result.transport == where(first)
    assert total(first, second, third) == 1 and second.connections == third.connections == 0
    mailer.close()


def test_a_recipient_refused_with_5xx_is_not_retried_elsewhere(smtp_server: Any, send: Any) -> None:
    bad = "bad@example.com"
    first = smtp_server(faults=Faults(rcpt_to={bad: reply("550 5.1.1 No such user")}))
    second = smtp_server()
    mailer = composite("failover", url(first), url(second))
    with pytest.raises(Refused):
        send(message(mailer, bad))
    result = send(message(mailer, bad, "good@example.com"))
    assert result.status == "partial" and result.refused == (bad,)
    assert first.deliveries == 1 and second.connections == 0
    mailer.close()


def test_once_a_recipient_is_accepted_the_message_stays(smtp_server: Any, send: Any) -> None:
    later = "later@example.com"
    first = smtp_server(faults=Faults(rcpt_to={later: reply("451 4.2.0 Mailbox busy")}))
    second = smtp_server()
    mailer = composite("failover", url(first), url(second))
    result = send(message(mailer, "now@example.com", later))
    assert result.status == "partial" and result.recipients[later].status == "deferred"
    assert total(first, second) == 1 and second.connections == 0
    mailer.close()


def test_a_failing_member_rests_then_one_message_probes_it(smtp_server: Any, send: Any) -> None:
    dead = smtp_server(faults=Faults(greeting=reply("421 4.3.2 Down")))
    alive = smtp_server()
    mailer = composite("failover", url(dead), url(alive), failover_cooldown=0.5)
    for _ in range(3):
        assert send(message(mailer)).transport == where(alive)
    assert dead.connections == 1  # not contacted again during the cool-down
    time.sleep(0.6)
    for _ in range(3):
        assert send(message(mailer)).transport == where(alive)
    assert dead.connections == 2 and alive.deliveries == 6  # one probe, then resting again
    mailer.close()


def test_every_member_resting_fails_fast_and_sends_nothing(smtp_server: Any, send: Any) -> None:
    dead = smtp_server(faults=Faults(greeting=reply("421 4.3.2 Down")))
    mailer = composite("failover", url(dead), failover_cooldown=60)
    with pytest.raises(ConnectionFailed):
        send(message(mailer))
    with pytest.raises(ConnectionFailed) as caught:
        send(message(mailer))
    assert caught.value.code == "members_resting" and dead.connections == 1
    mailer.close()


def test_roundrobin_spreads_messages_over_three_servers(smtp_server: Any, send: Any) -> None:
    servers = [smtp_server() for _ in range(3)]
    mailer = composite("roundrobin", *(url(s) for s in servers))
    seen = [send(message(mailer)).transport for _ in range(9)]
    assert [s.deliveries for s in servers] == [3, 3, 3]
    assert set(seen) == {where(s) for s in servers}
    mailer.close()


def test_roundrobin_fails_over_from_a_dead_member(smtp_server: Any, send: Any) -> None:
    alive = smtp_server()
    mailer = composite("roundrobin", closed_port(), url(alive))
    assert {send(message(mailer)).status for _ in range(4)} == {"sent"}
    assert alive.deliveries == 4
    mailer.close()


def _items(n: int) -> list[dict[str, Any]]:
    return [
        {"subject": f"n{i}", "recipients": [f"u{i}@example.com"], "body": "b"} for i in range(n)
    ]


def test_send_many_spreads_lanes_over_the_members(smtp_server: Any) -> None:
    a, b = smtp_server(), smtp_server()
    mailer = composite("roundrobin", url(a), url(b))
    outcomes = list(mailer.send_many(_items(20), concurrency=2, progress=False))
    assert all(o.status == "sent" for o in outcomes)
    assert a.deliveries > 0 and b.deliveries > 0 and total(a, b) == 20
    assert {o.result.transport for o in outcomes if o.result} == {where(a), where(b)}
    mailer.close()


def test_send_many_fails_over_inside_a_lane(smtp_server: Any) -> None:
    dead = smtp_server(faults=Faults(greeting=reply("421 4.3.2 Down")))
    alive = smtp_server()
    mailer = composite("failover", url(dead), url(alive), failover_cooldown=60)

    async def main() -> list[str]:
        run = mailer.send_many_async(_items(10), concurrency=2)
        return [o.status async for o in run]

    assert asyncio.run(main()) == ["sent"] * 10
    assert alive.deliveries == 10 and dead.connections <= 2  # each lane learned once at most
    mailer.close()


def test_nested_roundrobin_inside_failover(smtp_server: Any, send: Any) -> None:
    a, b, c = smtp_server(), smtp_server(), smtp_server()
    mailer = composite("failover", f"roundrobin({url(a)} {url(b)})", url(c))
    for _ in range(4):
        send(message(mailer))
    assert (a.deliveries, b.deliveries, c.deliveries) == (2, 2, 0)
    mailer.close()
    down = [smtp_server(faults=Faults(greeting=reply("421 4.3.2 Down"))) for _ in range(2)]
    mailer = composite("failover", f"roundrobin({url(down[0])} {url(down[1])})", url(c))
    assert send(message(mailer)).transport == where(c)
    mailer.close()


def test_a_mailer_can_be_a_member_and_memory_too(smtp_server: Any, send: Any) -> None:
    from fluxmail.testing import outbox

    outbox.clear()
    first = FluxMail(url=closed_port(), sender=SENDER, audit=False, timeout=5.0)
    mailer = composite("failover", first, "memory://")
    result = send(message(mailer))
    assert result.transport == "memory" and len(outbox) == 1
    mailer.close()
    first.close()


def test_with_mailer_holds_every_members_connection(smtp_server: Any) -> None:
    a, b = smtp_server(), smtp_server()
    mailer = composite("roundrobin", url(a), url(b))
    with mailer:
        for _ in range(6):
            message(mailer).send()
    assert a.connections == 1 and b.connections == 1 and total(a, b) == 6
    mailer.close()
