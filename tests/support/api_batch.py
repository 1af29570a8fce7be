"""Bulk over batch endpoints: messages to send, a run on either face, Postmark's documented
batch reply (shared by the batch and the failover-batch tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.http_api import Reply, Seen

__all__ = ["INACTIVE", "bulk_items", "postmark_api", "resend_api", "run_bulk"]

INACTIVE = "You tried to send to recipient(s) that have been marked as inactive."


def bulk_items(n: int) -> list[dict[str, Any]]:
    return [
        {"subject": f"n{i}", "recipients": [f"u{i}@example.com"], "body": f"hello {i}",
         "message_id": f"<m{i}@shop.example.com>"}
        for i in range(n)
    ]  # fmt: skip


def postmark_api(seen: Seen) -> Reply:
    """Postmark's batch reply: an array, one result per message; u3 is an inactive recipient."""
    if seen.path != "/email/batch":
        return Reply(200, body={"ErrorCode": 0, "Message": "OK", "MessageID": "pm-alone"})
    results = []
    for item in seen.json():
        n = item["Subject"][1:]
        if item["To"] == "u3@example.com":
            results.append({"ErrorCode": 406, "Message": INACTIVE})
        else:
            results.append({"To": item["To"], "SubmittedAt": "2026-12-02T01:00:00Z",
                            "MessageID": f"pm-{n}", "ErrorCode": 0, "Message": "OK"})  # fmt: skip
    return Reply(200, body=results)


def resend_api(seen: Seen) -> Reply:
    """Resend: ``{"data": [{"id"}...]}`` from /emails/batch, ``{"id"}`` from /emails."""
    if seen.path == "/emails/batch":
        return Reply(200, body={"data": [{"id": f"re-{e['subject'][1:]}"} for e in seen.json()]})
    return Reply(200, body={"id": f"re-{seen.json()['subject'][1:]}"})


def run_bulk(mailer: Any, items: Any, face: str, **options: Any) -> list[Any]:
    options = {"concurrency": 1, "progress": False, **options}
    if face == "sync":
        return list(mailer.send_many(items, **options))

    async def main() -> list[Any]:
        return [o async for o in mailer.send_many_async(items, **options)]

    return asyncio.run(main())
