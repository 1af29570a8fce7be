"""Bulk through ``failover(...)`` whose first member has a batch endpoint (Postmark): the batch
goes out in batch requests, and only the messages that member did not take move on, each alone,
under the same rules as a single send."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fluxmail import FluxMail
from tests.support.api_batch import INACTIVE, bulk_items, postmark_api, run_bulk
from tests.support.api_mailing import KEY
from tests.support.http_api import HttpApiServer, Reply, Seen
from tests.support.servers import SMTPTestServer

Server = Callable[..., HttpApiServer]


def _postmark(server: HttpApiServer) -> str:
    return f"postmark+api://{KEY}@default?endpoint={server.url}"


def _mailer(*members: str, ca: Path, audit: Path | None = None, **options: Any) -> FluxMail:
    return FluxMail.failover(
        *members, ca_file=ca, sender="s@example.com", retry_delay=0.01,
        **({"audit_dir": audit} if audit else {"audit": False}), **options,
    )  # fmt: skip


def _paths(server: HttpApiServer) -> list[str]:
    return [seen.path for seen in server.requests]


def test_the_first_member_takes_the_run_in_batch_requests(http_api: Server, tmp_path: Path) -> None:
    first, second = http_api(default=postmark_api), http_api(default=postmark_api)
    mailer = _mailer(_postmark(first), _postmark(second), ca=first.ca_path, audit=tmp_path)
    outcomes = sorted(run_bulk(mailer, bulk_items(7), "sync"), key=lambda o: o.index)
    assert _paths(first) == ["/email/batch"] and second.requests == []
    assert [o.status for o in outcomes] == ["queued"] * 3 + ["failed"] + ["queued"] * 3
    # A recipient the provider refused stays refused: never offered to the next member.
    assert INACTIVE in (outcomes[3].result.recipients["u3@example.com"].text or "")
    assert {o.result.transport for o in outcomes} == {f"postmark+api://127.0.0.1:{first.port}"}
    assert {r.transport for r in mailer.audit.list()} == {f"postmark+api://127.0.0.1:{first.port}"}
    mailer.close()


def test_a_batch_the_member_refused_whole_fails_over_message_by_message(
    http_api: Server, tmp_path: Path
) -> None:
    """503 to the batch: nothing was accepted, so each message goes to the next member alone
    (a handed-off message is one message, whatever the member could batch)."""
    first = http_api(default=Reply(503, body={"ErrorCode": 100, "Message": "down"}, times=None))
    second = http_api(default=postmark_api)
    mailer = _mailer(_postmark(first), _postmark(second), ca=first.ca_path, audit=tmp_path)
    outcomes = sorted(run_bulk(mailer, bulk_items(5), "async"), key=lambda o: o.index)
    assert _paths(first) == ["/email/batch"]
    assert _paths(second) == ["/email"] * 5
    assert [o.status for o in outcomes] == ["queued"] * 5
    assert {o.result.transport for o in outcomes} == {f"postmark+api://127.0.0.1:{second.port}"}
    assert len(outcomes[0].result.attempts) == 2  # the first member's try, then the second's
    # The first member rests: the next batch goes to the second member's batch endpoint.
    more = run_bulk(mailer, bulk_items(4), "async")
    assert sorted(o.status for o in more) == ["failed"] + ["queued"] * 3  # u3 inactive there
    assert _paths(first) == ["/email/batch"] and _paths(second) == ["/email"] * 5 + ["/email/batch"]
    mailer.close()


def test_an_unknown_batch_outcome_never_fails_over(http_api: Server, tmp_path: Path) -> None:
    """A drop after the batch body: the provider may have every message; none goes elsewhere."""
    first = http_api(default=Reply(drop=True, times=None))
    second = http_api(default=postmark_api)
    mailer = _mailer(_postmark(first), _postmark(second), ca=first.ca_path, audit=tmp_path)
    outcomes = run_bulk(mailer, bulk_items(4), "sync")
    assert [o.status for o in outcomes] == ["unknown"] * 4
    assert first.count == 1 and second.requests == []
    assert {r.status for r in mailer.audit.list()} == {"unknown"}
    mailer.close()


def test_a_batch_fails_over_to_an_smtp_member(
    http_api: Server, smtp_server: Callable[..., SMTPTestServer]
) -> None:
    """A batch the API member could not take (500) is delivered by the SMTP member, message by
    message; recipients refused inside an accepted batch reply stay refused, never resent."""

    def some_down(seen: Seen) -> Reply:
        results = []
        for item in seen.json():
            if item["To"] in ("u1@example.com", "u4@example.com"):
                results.append({"ErrorCode": 406, "Message": INACTIVE})
            else:
                results.append({"To": item["To"], "MessageID": "pm", "ErrorCode": 0,
                                "Message": "OK"})  # fmt: skip
        return Reply(200, body=results)

    down = http_api(default=Reply(500, body={"ErrorCode": 0, "Message": "boom"}, times=None))
    smtp = smtp_server()
    mailer = _mailer(_postmark(down), f"smtp+plain://{smtp.host}:{smtp.port}", ca=down.ca_path)
    outcomes = sorted(run_bulk(mailer, bulk_items(6), "sync", concurrency=2), key=lambda o: o.index)
    assert [o.status for o in outcomes] == ["sent"] * 6
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [f"u{i}@example.com" for i in range(6)]
    assert set(_paths(down)) == {"/email/batch"}
    mailer.close()
    # Recipient refusals inside an accepted batch reply stay with the API member.
    api = http_api(default=some_down)
    smtp2 = smtp_server()
    mailer = _mailer(_postmark(api), f"smtp+plain://{smtp2.host}:{smtp2.port}", ca=api.ca_path)
    outcomes = sorted(run_bulk(mailer, bulk_items(6), "sync"), key=lambda o: o.index)
    assert [o.status for o in outcomes] == ["queued", "failed", "queued", "queued", "failed",
                                            "queued"]  # fmt: skip
    assert smtp2.messages == []
    mailer.close()


def test_roundrobin_lanes_batch_to_different_members(http_api: Server) -> None:
    """Two workers over roundrobin(a b): each lane starts at its own member and batches there
    (more messages than one batch request holds, so both workers get some)."""
    first, second = http_api(default=postmark_api), http_api(default=postmark_api)
    mailer = FluxMail.roundrobin(
        _postmark(first), _postmark(second), ca_file=first.ca_path, sender="s@example.com",
        audit=False,
    )  # fmt: skip
    items = [
        {**item, "recipients": [f"v{n}@example.com"]} for n, item in enumerate(bulk_items(1200))
    ]
    outcomes = run_bulk(mailer, items, "sync", concurrency=2)
    assert [o.status for o in outcomes] == ["queued"] * 1200
    assert set(_paths(first)) == {"/email/batch"} and set(_paths(second)) == {"/email/batch"}
    sizes = [len(seen.json()) for seen in (*first.requests, *second.requests)]
    assert sum(sizes) == 1200 and max(sizes) <= 500
    mailer.close()
