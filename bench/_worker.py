"""One measured client, run in its own interpreter; prints one JSON line with its figures.

    python bench/_worker.py CLIENT --port P [--messages N] [--concurrency C] [--audit-dir D]
                                   [--attach FILE] [--samples S]

CLIENT: smtplib | aiosmtplib | fluxmail033 | fluxmail | idle | audit-latency.
Timing starts after imports and set-up, so it measures sending, not start-up.
Also run by fluxmail 0.3.3's own virtualenv python, so only the client under test is imported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import BODY, SENDER, build_stdlib, create_kwargs, recipient, subject

Figures = dict[str, Any]


class Unavailable(Exception):
    """The client under test cannot run here yet (reported, not a crash)."""


def timed(send: Callable[[], Figures]) -> Figures:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    figures = send()
    figures["elapsed"] = time.perf_counter() - start_wall
    figures["cpu"] = time.process_time() - start_cpu
    return figures


def read_attachment(args: argparse.Namespace) -> bytes | None:
    return Path(args.attach).read_bytes() if args.attach else None


def run_smtplib(args: argparse.Namespace) -> Figures:
    import smtplib

    def send() -> Figures:
        with smtplib.SMTP("127.0.0.1", args.port) as smtp:
            for i in range(args.messages):
                smtp.send_message(build_stdlib(i, read_attachment(args)))
        return {"sent": args.messages}

    return timed(send)


def run_aiosmtplib(args: argparse.Namespace) -> Figures:
    import asyncio

    import aiosmtplib

    async def connection(numbers: Iterator[int]) -> int:
        sent = 0
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=args.port, start_tls=False) as smtp:
            for i in numbers:  # shared iterator: each number is taken by exactly one connection
                await smtp.send_message(build_stdlib(i, read_attachment(args)))
                sent += 1
        return sent

    async def main() -> int:
        numbers = iter(range(args.messages))
        counts = await asyncio.gather(*(connection(numbers) for _ in range(args.concurrency)))
        return sum(counts)

    return timed(lambda: {"sent": asyncio.run(main())})


def run_fluxmail033(args: argparse.Namespace) -> Figures:
    fluxmail: Any = importlib.import_module("fluxmail")
    version = getattr(fluxmail, "__version__", "?")
    if version != "0.3.3":
        raise Unavailable(f"expected fluxmail 0.3.3 in this interpreter, found {version}")
    mailer = fluxmail.FluxMail("smtp", host="127.0.0.1", port=args.port)
    batch = [{**create_kwargs(i), "sender": SENDER} for i in range(args.messages)]

    def send() -> Figures:
        report = fluxmail.BulkSender(mailer).send_batch(batch, progress=False)
        return {"sent": report["sent"], "statuses": {"failed": report["failed"]}}

    return timed(send)


def new_mailer(args: argparse.Namespace, audit_dir: str | None) -> Any:
    """The current fluxmail's mailer; Unavailable until the lead's mailer module exists."""
    try:
        fluxmail: Any = importlib.import_module("fluxmail")
        flux_mail = fluxmail.FluxMail
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"fluxmail.FluxMail not importable ({exc})") from exc
    audit: dict[str, Any] = {"audit_dir": audit_dir} if audit_dir else {"audit": False}
    return flux_mail(host="127.0.0.1", port=args.port, use_tls=False, sender=SENDER, **audit)


def run_fluxmail(args: argparse.Namespace) -> Figures:
    mailer = new_mailer(args, args.audit_dir)
    if not hasattr(mailer, "send_many"):
        raise Unavailable("FluxMail.send_many not written yet")
    attach = args.attach

    def send() -> Figures:
        messages = (create_kwargs(i, attach) for i in range(args.messages))  # lazy, as a user would
        run = mailer.send_many(messages, concurrency=args.concurrency, progress=False)
        statuses = Counter(str(result.status) for result in run)
        summary = run.summary
        return {
            "sent": statuses.get("sent", 0),
            "statuses": dict(statuses),
            "summary": {k: getattr(summary, k, None) for k in ("sent", "failed", "rate")},
        }

    return timed(send)


def run_idle(args: argparse.Namespace) -> Figures:
    """The floor for memory: an interpreter with fluxmail and its transport imported."""
    importlib.import_module("aiosmtplib")
    try:
        new_mailer(args, None)
    except Unavailable as exc:
        return {"sent": 0, "note": str(exc)}
    return {"sent": 0}


def run_audit_latency(args: argparse.Namespace) -> Figures:
    """One create().send() at a time, alternating audit on / off; a connection per send."""
    mailers = {"off": new_mailer(args, None), "on": new_mailer(args, args.audit_dir)}
    samples: dict[str, list[float]] = {"off": [], "on": []}
    for n in range(args.samples + 10):  # the first 10 pairs warm caches and are dropped
        order = ("off", "on") if n % 2 else ("on", "off")
        for mode in order:
            draft = mailers[mode].create(subject=subject(n), recipients=[recipient(n)], body=BODY)
            start = time.perf_counter()
            result = draft.send()
            took = time.perf_counter() - start
            if str(result.status) != "sent":
                raise RuntimeError(f"audit {mode}: status {result.status}")
            if n >= 10:
                samples[mode].append(took)
    return {"sent": 2 * (args.samples + 10), "samples": samples}


CLIENTS: dict[str, Callable[[argparse.Namespace], Figures]] = {
    "smtplib": run_smtplib,
    "aiosmtplib": run_aiosmtplib,
    "fluxmail033": run_fluxmail033,
    "fluxmail": run_fluxmail,
    "idle": run_idle,
    "audit-latency": run_audit_latency,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--audit-dir", default=None, help="audit on, in this folder")
    parser.add_argument("--attach", default=None, help="attach this file to every message")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    try:
        figures = CLIENTS[args.client](args)
    except Unavailable as exc:
        figures = {"unavailable": str(exc)}
    # ru_maxrss is in KiB on Linux: the peak of this whole process.
    figures["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
