"""Per-message cost of the SQLite audit store's claim_many + finish_many, by batch size.

    python bench/audit_store.py [--messages 1024] [--contended 128] [--batches 1,8,64]
                                [--rounds 5] [--keys] [--switch-interval S] [--quick]
    python bench/audit_store.py --bulk-cpu [--messages 1024] [--rounds 15] [--dir /dev/shm]
    python bench/audit_store.py --bulk-cpu --postgres [--messages 1024] [--rounds 5]

A micro-benchmark of the store alone (no SMTP), shaped like bulk sending with group commits: a
dedicated worker thread calls ``claim_many(batch)`` then ``finish_many(batch results)`` for ~2.2 KB
messages (text body, one recipient), as the bulk sender's audit thread does. Per message it reports:

- ``wall``: the worker's wall time, main thread idle (what one claim + finish costs alone; at batch
  size 1 this is the latency audit adds to a single send);
- ``user`` / ``sys``: the worker thread's CPU time (``RUSAGE_THREAD``). ``sys`` is the kernel's
  share (mkdir/open/write, run without the GIL); ``user`` bounds the GIL-held time from above (it
  also counts SQLite's own C code, which runs without the GIL);
- ``GIL-held``: the time the worker holds the GIL, the part that competes with the event loop.
  Estimated while the main thread runs a pure-Python counting loop: it loses the time the worker
  holds the GIL, plus the hand-overs, against its rate alone measured just before and after. This
  run uses a 0.1 ms switch interval (``--gil-interval``) so that the worker is not starved
  (below). Noisy on a busy machine (other processes slow the loop too): take several rounds;
- ``busy wall``: the worker's wall time per message while the main thread is busy, at the default
  switch interval. Each time the worker releases the GIL (a syscall, an SQLite step) a busy thread
  takes it, and the worker waits up to ``sys.getswitchinterval()`` (5 ms) to get it back: this is
  the audit thread's throughput when the event loop never idles.

``--bulk-cpu`` measures instead the CPU time (``time.process_time``: every thread, user and
system) of a bulk run's audit path, in the engine's order: ``claim_many(64, defer_snapshots=True,
run=lease.token)`` inside ``hold_snapshots()``, one ``lease.mark`` per message, ``finish_many``
of the batch; the minimum over rounds of each phase, in us per message (CPU time, not wall time:
on a shared machine it is the figure that other processes disturb least). ``--bulk-cpu
--postgres`` runs the same against the PostgreSQL store on a throwaway local server, in wall
time (the server's processes do much of the work): what a bulk run's loop waits for.

Figures are medians over rounds; every round uses a fresh audit folder under bench/results/ (or
``--dir``). On a shared VM the disk's latency swings by 10x between runs: compare ``user`` and
``GIL-held`` (run with ``--dir /dev/shm`` for those), and ``wall`` only within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _common import BODY, RESULTS_DIR, build_stdlib, print_table, save_results

from fluxmail.audit import AuditStore, OutboundRecord, open_store
from fluxmail.results import Attempt, RecipientStatus, SendResult, ServerReply

CHUNK = 2000  # counting-loop iterations between checks (tens of microseconds)


def make_records(count: int, *, keys: bool, tag: str) -> list[OutboundRecord]:
    """Outbound records as the mailer builds them for a bulk run (one To, text body, no files)."""
    records = []
    for i in range(count):
        msg = build_stdlib(i)
        records.append(
            OutboundRecord(
                message_id=str(msg["Message-ID"]),
                idempotency_key=f"{tag}-{i}" if keys else None,
                content_hash=f"{i:064x}",
                backend="smtp",
                provider=None,
                host="127.0.0.1",
                sender=str(msg["From"]),
                to=(str(msg["To"]),),
                cc=(),
                bcc=(),
                subject=str(msg["Subject"]),
                metadata={},
                eml=msg.as_bytes(),
                text=BODY,
                html=None,
                attachments=(),
            )
        )
    return records


def make_result(record: OutboundRecord) -> SendResult:
    """What the SMTP client reports for an accepted message: one recipient, one attempt."""
    address = record.to[0]
    return SendResult(
        status="sent",
        message_id=record.message_id,
        recipients={address: RecipientStatus(address, "sent", 250, "2.0.0", "2.0.0 Ok")},
        attempts=(Attempt(number=1, started_at=time.time(), elapsed=0.002),),
        final_reply=ServerReply(250, "2.0.0 Ok: queued as 4XYZ", "2.0.0"),
        elapsed=0.002,
    )


def run_batches(
    store: AuditStore, records: Sequence[OutboundRecord], results: Sequence[SendResult], batch: int
) -> None:
    """The audit thread's work: claim a batch (committed), then record its outcomes."""
    for start in range(0, len(records), batch):
        claims = store.claim_many(records[start : start + batch])
        outcomes = results[start : start + batch]
        store.finish_many([(c.audit_id, res) for c, res in zip(claims, outcomes, strict=True)])


def count(stop: Callable[[], bool], until: float) -> int:
    """Pure-Python work that holds the GIL: chunks done before ``stop()`` or ``until``."""
    chunks = 0
    perf = time.perf_counter
    while True:
        for _ in range(CHUNK):
            pass
        chunks += 1
        if stop() or perf() >= until:
            return chunks


def thread_usage() -> tuple[float, float]:
    """The calling thread's (user, system) CPU seconds (Linux); (thread_time, 0) elsewhere."""
    if hasattr(resource, "RUSAGE_THREAD"):
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        return usage.ru_utime, usage.ru_stime
    return time.thread_time(), 0.0


def in_thread(work: Callable[[], None]) -> tuple[threading.Thread, dict[str, float]]:
    """Start ``work`` in a worker thread that records its own wall and CPU time."""
    out: dict[str, float] = {}

    def target() -> None:
        wall, usage = time.perf_counter(), thread_usage()
        work()
        out["wall"] = time.perf_counter() - wall
        after = thread_usage()
        out["user"], out["sys"] = after[0] - usage[0], after[1] - usage[1]

    thread = threading.Thread(target=target, name="audit-worker")
    thread.start()
    return thread, out


def solo(folder: Path, records: Sequence[OutboundRecord], batch: int) -> dict[str, float]:
    """Worker alone (the main thread waits in join(), not holding the GIL)."""
    store = open_store(directory=folder, explicit=True)
    results = [make_result(r) for r in records]
    thread, out = in_thread(lambda: run_batches(store, records, results, batch))
    thread.join()
    store.close()
    return {k: v / len(records) for k, v in out.items()}


def rate(seconds: float = 0.15) -> float:
    """Counting chunks per second with the GIL to itself."""
    started = time.perf_counter()
    return count(lambda: False, started + seconds) / (time.perf_counter() - started)


def contended(
    folder: Path, records: Sequence[OutboundRecord], batch: int, interval: float
) -> dict[str, float]:
    """Worker while the main thread counts; the counting lost is the worker's GIL-held time.

    The loop's rate alone is measured just before and just after (their mean), so a machine
    that slows down between runs shifts the baseline with it.
    """
    store = open_store(directory=folder, explicit=True)
    results = [make_result(r) for r in records]
    default = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        before = rate()
        thread, out = in_thread(lambda: run_batches(store, records, results, batch))
        started = time.perf_counter()
        chunks = count(lambda: not thread.is_alive(), float("inf"))
        elapsed = time.perf_counter() - started
        thread.join()
        alone = (before + rate()) / 2
    finally:
        sys.setswitchinterval(default)
        store.close()
    return {"lost": elapsed - chunks / alone, "wall": out["wall"]}


@contextlib.contextmanager
def scratch_dir(prefix: str, parent: Path) -> Iterator[Path]:
    """A fresh folder under ``parent``, removed afterwards."""
    parent.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def measure(args: argparse.Namespace, batches: list[int]) -> dict[int, dict[str, list[float]]]:
    """Rounds x batch sizes, interleaved; per-message seconds for each figure."""
    figures: dict[int, dict[str, list[float]]] = {b: {} for b in batches}
    with scratch_dir("audit-store-", args.dir) as scratch:
        for rnd in range(args.rounds + 1):  # round 0 warms up (imports, page cache)
            for batch in batches[rnd % len(batches) :] + batches[: rnd % len(batches)]:
                tag = f"r{rnd}b{batch}"
                base = scratch / tag
                found = solo(base / "solo", make_records(args.messages, keys=args.keys, tag=tag),
                             batch)  # fmt: skip
                records = make_records(args.messages, keys=args.keys, tag=tag)
                busy = contended(base / "gil", records, batch, args.gil_interval)
                found["gil"] = busy["lost"] / len(records)
                records = make_records(args.contended, keys=args.keys, tag=tag)
                busy = contended(base / "busy", records, batch, sys.getswitchinterval())
                found["busy_wall"] = busy["wall"] / len(records)
                if rnd:
                    for name, value in found.items():
                        figures[batch].setdefault(name, []).append(value)
    return figures


def bulk_cpu(
    store: AuditStore, records: Sequence[OutboundRecord], clock: Callable[[], float]
) -> dict[str, float]:
    """Seconds per message of each phase of a bulk run's audit path (see the docstring)."""
    results = [make_result(r) for r in records]
    lease = store.begin_run()
    spent = {"claim_many": 0.0, "mark": 0.0, "finish_many": 0.0}
    with store.hold_snapshots():
        for start in range(0, len(records), 64):
            began = clock()
            claims = store.claim_many(
                records[start : start + 64], defer_snapshots=True, run=lease.token
            )
            claimed = clock()
            for claim in claims:
                lease.mark([claim.audit_id])
            marked = clock()
            outcomes = results[start : start + 64]
            store.finish_many([(c.audit_id, r) for c, r in zip(claims, outcomes, strict=True)])
            spent["claim_many"] += claimed - began
            spent["mark"] += marked - claimed
            spent["finish_many"] += clock() - marked
    lease.close(resolved=True)
    store.close()
    return {k: v / len(records) for k, v in spent.items()}


@contextlib.contextmanager
def bulk_stores(args: argparse.Namespace) -> Iterator[Callable[[int], AuditStore]]:
    """A fresh store per round: a folder under --dir, or a database of a throwaway PostgreSQL
    server (tests/support/postgres.py: fsync off, as in bench/fleet.py)."""
    if not args.postgres:
        with scratch_dir("audit-bulk-", args.dir) as scratch:
            yield lambda rnd: open_store(directory=scratch / f"r{rnd}", explicit=True)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.postgres import PgServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (Debian package postgresql)")
    server = PgServer(bindir)
    server.init()
    server.start()
    try:
        yield lambda rnd: open_store(url=server.url(server.create_database()))
    finally:
        server.remove()


def run_bulk_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """--bulk-cpu: the minimum over rounds of each phase, us per message."""
    found: dict[str, list[float]] = {}
    # PostgreSQL's share of the work is in the server's processes: wall time, not ours.
    clock = time.perf_counter if args.postgres else time.process_time
    with bulk_stores(args) as new_store:
        for rnd in range(args.rounds + 1):  # round 0 warms up
            records = make_records(args.messages, keys=args.keys, tag=f"b{rnd}")
            figures = bulk_cpu(new_store(rnd), records, clock)
            for name, value in figures.items():
                if rnd:
                    found.setdefault(name, []).append(value * 1e6)
    us = {name: min(values) for name, values in found.items()}
    us["total"] = sum(us.values())
    what = "wall, PostgreSQL" if args.postgres else "CPU"
    print_table(["phase", f"us per message ({what})"], [[k, f"{v:.1f}"] for k, v in us.items()])
    payload = {"args": vars(args), "bulk_us_per_message": us}
    save_results("audit_store_bulk_postgres" if args.postgres else "audit_store_bulk_cpu", payload)
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1024, help="messages per solo run")
    parser.add_argument("--contended", type=int, default=64, help="messages per busy-wall run")
    parser.add_argument(
        "--gil-interval", type=float, default=1e-4, help="switch interval of the GIL-held run"
    )
    parser.add_argument("--batches", default="1,8,64", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", action="store_true", help="every message has an idempotency key")
    parser.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval")
    parser.add_argument(
        "--dir",
        type=Path,
        default=RESULTS_DIR,
        help="where the audit folders go (default bench/results/, the repository's disk; "
        "/dev/shm takes the disk's noise out of the CPU and GIL figures)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, fewer messages")
    parser.add_argument(
        "--bulk-cpu", action="store_true", help="CPU per message of the bulk audit path only"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="with --bulk-cpu: the PostgreSQL store instead (wall time per message)",
    )
    args = parser.parse_args(argv)
    if args.bulk_cpu:
        return run_bulk_cpu(args)
    if args.quick:
        args.rounds, args.messages, args.contended = 2, 256, 32
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"Audit store (SQLite): {args.messages} messages per run ({args.contended} for busy "
        f"wall), {args.rounds} rounds, keys={'yes' if args.keys else 'no'}, switch interval "
        f"{sys.getswitchinterval() * 1000:g} ms ({args.gil_interval * 1000:g} ms for GIL-held)",
        flush=True,
    )
    figures = measure(args, batches)
    us = {b: {k: statistics.median(v) * 1e6 for k, v in f.items()} for b, f in figures.items()}
    names = ("wall", "user", "sys", "gil", "busy_wall")
    rows = [[str(b), *(f"{f[n]:.0f}" for n in names)] for b, f in us.items()]
    print()
    print_table(["batch", "wall", "user", "sys", "GIL-held", "busy wall"], rows)
    print("(us per message; claim_many + finish_many in a worker thread)")
    waits = {b: round(f["busy_wall"] / (sys.getswitchinterval() * 1e6), 1) for b, f in us.items()}
    print(f"busy wall / switch interval (GIL waits per message): {waits}")
    payload = {"args": vars(args), "us_per_message": us}
    save_results("audit_store", payload)
    return payload


if __name__ == "__main__":
    main()
