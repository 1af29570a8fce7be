"""One measured client, run in its own interpreter; prints one JSON line with its figures.

    python bench/_worker.py CLIENT --port P [--messages N] [--concurrency C] [--audit-dir D]
                                   [--audit-url URL] [--attach FILE] [--samples S]
                                   [--processes N]

CLIENT: smtplib | aiosmtplib | pipelining | fluxmail033 | fluxmail | idle | audit-latency.
Timing starts after imports and set-up, so it measures sending, not start-up (pipelining builds
every message's bytes during set-up: it is the reference for the wire work alone).
Also run by fluxmail 0.3.3's own virtualenv python, so only the client under test is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import BODY, SENDER, build_stdlib, create_kwargs, recipient, subject

if TYPE_CHECKING:
    import asyncio  # imported where used: a worker loads only the client under test

Figures = dict[str, Any]


class Unavailable(Exception):
    """The client under test cannot run here yet (reported, not a crash)."""


def cpu_seconds(children: bool = False) -> float:
    """This process's CPU time (user+sys); with children, also that of the reaped children."""
    if not children:
        return time.process_time()
    spent = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        spent += usage.ru_utime + usage.ru_stime
    return spent


def timed(send: Callable[[], Figures], children: bool = False) -> Figures:
    """Wall and CPU time of send(). children: the work is spread over child processes, whose
    CPU counts only once they are reaped (a pool joined before send() returns is)."""
    start_wall, start_cpu = time.perf_counter(), cpu_seconds(children)
    figures = send()
    figures["elapsed"] = time.perf_counter() - start_wall
    figures["cpu"] = cpu_seconds(children) - start_cpu
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


# --------------------------------------------------------------------------- reference client

Wire = tuple[bytes, bytes]  # (MAIL FROM/RCPT TO/DATA commands, dot-stuffed content + ".")


def wire_message(i: int) -> Wire:
    """build_stdlib(i) as it goes on the wire, built before timing starts."""
    msg = build_stdlib(i)
    content = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    # RFC 5321 4.5.2: every line that starts with "." gets one more.
    content = content.replace(b"\r\n.", b"\r\n..")
    if content.startswith(b"."):
        content = b"." + content
    envelope = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{recipient(i)}>\r\nDATA\r\n".encode()
    return envelope, content + b".\r\n"


async def read_code(reader: asyncio.StreamReader, lines: list[bytes] | None = None) -> int:
    """One reply's code; RFC 5321 4.2.1: "250-" lines go on, "250 " ends the reply."""
    while True:
        line = await reader.readline()
        if len(line) < 4 or not line.endswith(b"\n") or not line[:3].isdigit():
            raise ConnectionError(f"bad reply line {line!r}")
        if lines is not None:
            lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3])


def expect(code: int, wanted: int, what: str) -> None:
    if code != wanted:
        raise ConnectionError(f"{what}: reply {code}, expected {wanted}")


async def pipelined_session(port: int, jobs: Iterator[Wire], tally: Counter[str]) -> None:
    """One connection that takes messages from the shared jobs until there are none left.

    RFC 2920: DATA ends a group and the content may open the next one, so each message is one
    write (the previous content + ".", then this envelope) and one batch of four replies.
    """
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        expect(await read_code(reader), 220, "greeting")
        writer.write(b"EHLO bench.example.com\r\n")
        ehlo: list[bytes] = []
        expect(await read_code(reader, ehlo), 250, "EHLO")
        if not any(line[4:].upper().startswith(b"PIPELINING") for line in ehlo):
            raise ConnectionError("the server does not offer PIPELINING")
        head, pending = b"", ""  # what opens the next group, and which reply it will get
        for envelope, content in jobs:
            writer.write(head + envelope)  # replies are awaited per group: no drain needed
            await settle(reader, pending, tally)
            mail = await read_code(reader)
            rcpt = await read_code(reader)
            if await read_code(reader) == 354:
                refused = mail != 250 or rcpt != 250  # then a 354 is the server's mistake
                head, pending = content, "content-refused" if refused else "content"
            else:  # the transaction is open if MAIL was taken: RSET before the next one
                tally["failed"] += 1
                head, pending = b"RSET\r\n", "rset"
        writer.write(head + b"QUIT\r\n")
        await settle(reader, pending, tally)
        expect(await read_code(reader), 221, "QUIT")
    finally:
        writer.close()
        await writer.wait_closed()


async def settle(reader: asyncio.StreamReader, pending: str, tally: Counter[str]) -> None:
    """Read the reply to what opened the group: the previous message's end, or RSET."""
    if not pending:
        return
    code = await read_code(reader)
    if pending == "rset":
        expect(code, 250, "RSET")
    else:
        tally["sent" if code == 250 and pending == "content" else "failed"] += 1


def run_pipelining(args: argparse.Namespace) -> Figures:
    """What Python asyncio does with prebuilt bytes: the floor for a Python client's CPU."""
    if args.attach:
        raise Unavailable("the pipelining reference sends the text messages only")
    import asyncio

    wire = [wire_message(i) for i in range(args.messages)]  # distinct recipients, as a bulk run

    async def main() -> Counter[str]:
        tally: Counter[str] = Counter()
        jobs = iter(wire)  # shared: each message is taken by exactly one connection
        sessions = (pipelined_session(args.port, jobs, tally) for _ in range(args.concurrency))
        await asyncio.gather(*sessions)
        return tally

    def send() -> Figures:
        tally = asyncio.run(main())
        return {"sent": tally["sent"], "statuses": dict(tally)}

    return timed(send)


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


def new_mailer(
    args: argparse.Namespace, audit_dir: str | None, audit_url: str | None = None
) -> Any:
    """The current fluxmail's mailer; Unavailable until the lead's mailer module exists."""
    try:
        fluxmail: Any = importlib.import_module("fluxmail")
        flux_mail = fluxmail.FluxMail
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"fluxmail.FluxMail not importable ({exc})") from exc
    audit: dict[str, Any] = {"audit_dir": audit_dir} if audit_dir else {"audit": False}
    if audit_url:
        audit = {"audit_url": audit_url}  # a PostgreSQL audit store
    return flux_mail(host="127.0.0.1", port=args.port, use_tls=False, sender=SENDER, **audit)


SEND_PATH = (
    "aiosmtplib.esmtp", "fluxmail.bulk", "fluxmail.engine.pipeline", "fluxmail.message.mime",
    "fluxmail.transport.smtp.transport", "fluxmail.transport.smtp.session",
)  # fmt: skip


def run_fluxmail(args: argparse.Namespace) -> Figures:
    mailer = new_mailer(args, args.audit_dir, args.audit_url)
    if not hasattr(mailer, "send_many"):
        raise Unavailable("FluxMail.send_many not written yet")
    attach = args.attach
    # Set-up, not sending: the modules a bulk run loads on first use (fluxmail keeps them out
    # of the cold start), as smtplib's client imports smtplib before its clock starts.
    # With audit on, the store's too (sqlite3 among them; docs/performance.md, Method). Opening
    # the store itself stays in the timed run: a run pays for it.
    store = "postgres" if args.audit_url else "sqlite" if args.audit_dir else None
    for module in SEND_PATH + ((f"fluxmail.audit.{store}",) if store else ()):
        with contextlib.suppress(ImportError):  # an older tree (--against) may lack one
            importlib.import_module(module)
    options: dict[str, Any] = {"concurrency": args.concurrency, "progress": False}
    if args.processes > 1:
        options["processes"] = args.processes

    def send() -> Figures:
        messages = (create_kwargs(i, attach) for i in range(args.messages))  # lazy, as a user would
        try:
            run = mailer.send_many(messages, **options)
        except Exception as exc:
            if "processes" in options and unknown_option(exc):
                raise Unavailable("send_many(processes=) not written yet") from exc
            raise
        statuses = Counter(str(result.status) for result in run)
        summary = run.summary
        return {
            "sent": statuses.get("sent", 0),
            "statuses": dict(statuses),
            "summary": {k: getattr(summary, k, None) for k in ("sent", "failed", "rate")},
        }

    return timed(send, children=args.processes > 1)


def unknown_option(exc: Exception) -> bool:
    """send_many refusing processes=: a TypeError, or fluxmail's invalid_option error."""
    named = "processes" in str(exc)
    return named and (isinstance(exc, TypeError) or getattr(exc, "code", "") == "invalid_option")


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
    "pipelining": run_pipelining,
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
    parser.add_argument("--audit-url", default=None, help="audit on, in this PostgreSQL database")
    parser.add_argument("--attach", default=None, help="attach this file to every message")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--processes", type=int, default=1, help="send_many(processes=N)")
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
