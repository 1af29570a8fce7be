"""send_many / BulkSender against real servers: every outcome accounted for, nothing twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxmail import BulkSender, ConfigurationError, MessageError, Refused
from tests.support.mailing import mailer_for
from tests.support.servers import Faults, drop, reply, stall


def _messages(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"subject": f"n{i}", "recipients": [f"u{i}@example.com"], "body": f"body {i}"}


def test_send_many_delivers_each_message_once(smtp_server: Any) -> None:
    """60 messages over 4 connections: 60 outcomes, 60 deliveries, a summary at the end."""
    server = smtp_server()
    run = mailer_for(server).send_many(_messages(60), concurrency=4, progress=False)
    outcomes = list(run)
    assert sorted(o.index for o in outcomes) == list(range(60))
    assert all(o.ok and o.status == "sent" for o in outcomes)
    assert run.summary.sent == 60 and run.summary.total == 60 and run.summary.rate > 0
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"u{i}@example.com" for i in range(60)
    )
    assert server.connections <= 4


def test_send_many_uses_pipelining_when_offered(smtp_server: Any) -> None:
    """With PIPELINING, MAIL/RCPT/DATA travel together (RFC 2920); without it they do not."""
    piped, plain = smtp_server(pipelining=True), smtp_server(pipelining=False)
    for server in (piped, plain):
        mailer_for(server).send_many(_messages(5), concurrency=1, progress=False).wait()
        assert server.deliveries == 5
    assert all(piped.pipelined) and not any(plain.pipelined)


def test_send_many_async_streams_outcomes(smtp_server: Any) -> None:
    """The async face takes an async iterable and yields outcomes as they complete."""
    server = smtp_server()
    mailer = mailer_for(server)

    async def source() -> AsyncIterator[dict[str, Any]]:
        for item in _messages(20):
            yield item

    async def main() -> list[str]:
        return [o.status async for o in mailer.send_many_async(source(), concurrency=3)]

    assert asyncio.run(main()) == ["sent"] * 20 and server.deliveries == 20


def test_awaiting_send_many_async_returns_the_summary(smtp_server: Any) -> None:
    """`await mailer.send_many_async(...)` runs to the end and gives the summary."""
    server = smtp_server()
    summary = asyncio.run(_await_all(mailer_for(server), 10))
    assert summary.sent == 10 and server.deliveries == 10


async def _await_all(mailer: Any, n: int) -> Any:
    return await mailer.send_many_async(_messages(n), concurrency=2)


def test_bad_messages_and_refusals_do_not_stop_the_run(smtp_server: Any) -> None:
    """An invalid message and a refused recipient are reported; the rest go out."""
    server = smtp_server(faults=Faults(rcpt_to={"u3@example.com": reply("550 5.1.1 Unknown")}))
    items = list(_messages(6))
    items[1] = {"subject": "bad\r\nBcc: x@evil.com", "recipients": ["u1@example.com"], "body": "x"}
    run = mailer_for(server).send_many(items, concurrency=2, progress=False)
    by_index = {o.index: o for o in run}
    assert isinstance(by_index[1].error, MessageError) and by_index[1].result is None
    assert isinstance(by_index[3].error, Refused)
    assert run.summary.sent == 4 and run.summary.failed == 2 and server.deliveries == 4


def test_drop_in_the_middle_of_a_pipelined_batch(smtp_server: Any) -> None:
    """A connection lost at DATA mid-run: that message is retried, nothing lost or duplicated."""
    server = smtp_server(faults=Faults(data=drop(times=2)))
    run = mailer_for(server, max_retries=3).send_many(_messages(30), concurrency=3, progress=False)
    assert [o.status for o in run].count("sent") == 30
    assert server.deliveries == 30
    assert len({m.rcpt_tos[0] for m in server.messages}) == 30


def test_loss_after_dot_in_bulk_is_unknown_not_resent(smtp_server: Any, tmp_path: Path) -> None:
    """A drop after "." in bulk: that one message is 'unknown' in the audit, sent once at most."""
    server = smtp_server(faults=Faults(end_of_data=drop(times=1)))
    mailer = mailer_for(server, max_retries=3, audit_dir=tmp_path / "audit")
    run = mailer.send_many(_messages(10), concurrency=1, progress=False)
    statuses = sorted(o.status for o in run)
    assert statuses == ["sent"] * 9 + ["unknown"]
    assert len(server.received) == 10
    assert sorted(r.status for r in mailer.audit.list()) == ["sent"] * 9 + ["unknown"]


def test_every_bulk_message_gets_an_audit_record(smtp_server: Any, tmp_path: Path) -> None:
    """Audit on: one record per message, each 'sent', linked from its outcome."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    outcomes = list(mailer.send_many(_messages(25), concurrency=4, progress=False))
    ids = {o.result.audit_id for o in outcomes if o.result is not None}
    assert len(ids) == 25 and {r.status for r in mailer.audit.list(limit=100)} == {"sent"}


def test_rate_limit_spaces_messages(smtp_server: Any) -> None:
    """rate_limit=50/s over 11 messages takes at least ~0.2 s (10 gaps), however many workers."""
    server = smtp_server()
    run = mailer_for(server).send_many(_messages(11), concurrency=4, rate_limit=50, progress=False)
    summary = run.wait()
    assert summary.sent == 11 and summary.elapsed >= 0.19


def test_max_messages_per_connection_reconnects(smtp_server: Any) -> None:
    """max_messages_per_connection=3 over 9 messages on one worker: 3 connections."""
    server = smtp_server()
    mailer_for(server).send_many(
        _messages(9), concurrency=1, max_messages_per_connection=3, progress=False
    ).wait()
    assert server.connections == 3 and server.deliveries == 9


def test_drafts_are_accepted_as_input(smtp_server: Any) -> None:
    """send_many takes drafts from create() as well as keyword dicts."""
    server = smtp_server()
    mailer = mailer_for(server)
    drafts = [mailer.create("d", f"d{i}@example.com", "x") for i in range(3)]
    assert mailer.send_many(drafts, progress=False).wait().sent == 3


def test_bulk_sender_send_batch_is_upstream_compatible(smtp_server: Any) -> None:
    """BulkSender.send_batch returns 0.3.3's dict and calls on_success / on_error by index."""
    server = smtp_server(faults=Faults(rcpt_to={"u2@example.com": reply("550 5.1.1 Unknown")}))
    ok: list[int] = []
    bad: list[int] = []
    report = BulkSender(mailer_for(server)).send_batch(
        list(_messages(5)),
        on_success=lambda i, r: ok.append(i),
        on_error=lambda i, e: bad.append(i),
        progress=False,
    )
    assert (report["sent"], report["failed"], report["total"]) == (4, 1, 5)
    assert sorted(ok) == [0, 1, 3, 4] and bad == [2] and report["errors"][0][0] == 2


def test_bulk_sender_send_batch_async_with_max_per_second(smtp_server: Any) -> None:
    """send_batch_async(max_per_second=) works and rejects a negative rate before sending."""
    server = smtp_server()
    sender = BulkSender(mailer_for(server))
    report = asyncio.run(sender.send_batch_async(list(_messages(4)), max_per_second=100))
    assert report["sent"] == 4 and server.deliveries == 4
    with pytest.raises(ConfigurationError):
        asyncio.run(sender.send_batch_async(list(_messages(1)), max_per_second=-1))


def test_bad_options_are_rejected_before_sending(smtp_server: Any) -> None:
    """concurrency 0 or a rate of 0: a ConfigurationError, no connection."""
    server = smtp_server()
    mailer = mailer_for(server)
    with pytest.raises(ConfigurationError):
        mailer.send_many(_messages(1), concurrency=0)
    with pytest.raises(ConfigurationError):
        mailer.send_many(_messages(1), rate_limit=0)
    assert server.connections == 0


def test_rate_limit_per_connection(smtp_server: Any) -> None:
    """rate_limit_per_connection=40/s, 2 connections, 10 messages: 4 gaps each (>= 0.09 s)."""
    server = smtp_server()
    run = mailer_for(server).send_many(
        _messages(10), concurrency=2, rate_limit_per_connection=40, progress=False
    )
    summary = run.wait()
    assert summary.sent == 10 and summary.elapsed >= 0.09
    with pytest.raises(ConfigurationError):
        mailer_for(server).send_many(_messages(1), rate_limit_per_connection=-1)


def test_pipelined_runs_prime_the_next_message(smtp_server: Any) -> None:
    """With PIPELINING one connection carries 20 messages, each delivered once, in order."""
    server = smtp_server(pipelining=True)
    mailer_for(server).send_many(_messages(20), concurrency=1, progress=False).wait()
    assert server.connections == 1
    assert [m.rcpt_tos[0] for m in server.messages] == [f"u{i}@example.com" for i in range(20)]


def test_refusal_at_end_of_data_with_a_primed_next_message(smtp_server: Any) -> None:
    """A 554 to one message's final "." does not disturb the next message already primed."""
    server = smtp_server(faults=Faults(end_of_data=reply("554 5.7.1 Rejected", times=1)))
    run = mailer_for(server).send_many(_messages(6), concurrency=1, progress=False)
    statuses = [o.status for o in sorted(run, key=lambda o: o.index)]
    assert statuses == ["failed"] + ["sent"] * 5 and server.deliveries == 5


def test_retry_while_the_next_message_is_primed(smtp_server: Any) -> None:
    """A deferred recipient retried while the next message is primed: the primed commands are
    dropped unsent, the retry and the next message each go out once."""
    server = smtp_server(
        faults=Faults(rcpt_to={"late@example.com": reply("450 4.2.1 Busy", times=1)})
    )
    items = list(_messages(4))
    items[0] = {"subject": "n0", "recipients": ["u0@example.com", "late@example.com"], "body": "b"}
    run = mailer_for(server, max_retries=1).send_many(items, concurrency=1, progress=False)
    assert sorted(o.status for o in run) == ["sent"] * 4
    delivered = sorted(r for m in server.messages for r in m.rcpt_tos)
    assert delivered == sorted(["late@example.com"] + [f"u{i}@example.com" for i in range(4)])


@pytest.mark.parametrize(
    "bad",
    [1, "subject", ["a", "b"], {"subject": "s", "recipients": ["x@example.com"]},
     {"subject": "s", "recipients": ["x@example.com"], "body": "b", "subjekt": "typo"},
     {1: "not a name"}],
    ids=["int", "str", "list", "missing-body", "unknown-key", "non-str-key"],
)  # fmt: skip
def test_a_bad_item_is_its_own_message_error(smtp_server: Any, bad: Any) -> None:
    """A send_many item that is not create() arguments fails alone (MessageError); the rest go."""
    server = smtp_server()
    items = [*_messages(2), bad, *_messages(1)]
    outcomes = sorted(mailer_for(server).send_many(items, progress=False), key=lambda o: o.index)
    assert [o.ok for o in outcomes] == [True, True, False, True]
    assert isinstance(outcomes[2].error, MessageError)
    assert outcomes[2].error.code == "invalid_message" and server.deliveries == 3


@pytest.mark.parametrize("face", ["iterate", "wait"])
def test_an_error_raised_by_the_source_reaches_the_caller(smtp_server: Any, face: str) -> None:
    """The caller's own generator failing ends the run with that error, never a silent short
    run (the sync faces, several runs in a row on one mailer)."""
    server = smtp_server()

    def source() -> Iterator[dict[str, Any]]:
        yield from _messages(3)
        raise LookupError("the database cursor broke")

    mailer = mailer_for(server)
    for _ in range(5):
        run = mailer.send_many(source(), concurrency=2, progress=False)
        with pytest.raises(LookupError, match="cursor broke"):
            list(run) if face == "iterate" else run.wait()


def test_a_stall_after_many_quick_replies_times_out_on_time(smtp_server: Any) -> None:
    """One connection's deadline follows each wait (a watchdog per connection, not a timer per
    reply): after a run of quick replies, a stalled RCPT still times out after the command
    timeout, that message alone fails, and the rest of the run goes on."""
    server = smtp_server(faults=Faults(rcpt_to={"u12@example.com": stall()}))
    mailer = mailer_for(server, command_timeout=0.5, max_retries=0)
    started = time.monotonic()
    outcomes = {o.index: o for o in mailer.send_many(_messages(20), concurrency=2)}
    assert time.monotonic() - started < 10  # bounded by the timeout, not the stall
    assert outcomes[12].status == "failed" and getattr(outcomes[12].error, "code", "") == "timeout"
    assert all(o.status == "sent" for i, o in outcomes.items() if i != 12)
    assert server.deliveries == 19
