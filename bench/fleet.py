"""The outbox fleet (issue 15): enqueue rate, then delivery by 1, 2 and 4 worker processes.

    python bench/fleet.py [--messages 20000] [--workers 1,2,4] [--rounds 1] [--quick]

A throwaway PostgreSQL server (tests/support/postgres.py: fsync off, so enqueue figures are an
upper bound of what a real disk allows) holds the outbox; smtp-sink takes the mail.

- Enqueue: ``mailer.enqueue_many`` in batches of 500, and ``create(...).enqueue()`` one by one.
- Delivery: the messages are enqueued, then k ``fluxmail worker --once`` processes drain them;
  the rate is messages over the wall time from starting the workers to the last one's exit.
  Every message must reach the sink exactly once (the sink's count against the ``sent`` rows).
  Rounds interleave the worker counts, so a slow moment of this shared machine hits them alike.
- Kill: two workers; one is killed with SIGKILL once a third of the messages arrived. The other
  drains what it can; after the lease runs out, one more ``--once`` worker takes the killed
  worker's rows back. The sink dumps every message (``-D``): no Message-ID may arrive twice,
  no row may stay ``pending`` or ``sending``, and ``unknown`` may not exceed the killed worker's
  in-flight window (its lanes, each with one message on the wire and one primed behind it).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    REPO_DIR,
    SENDER,
    Check,
    Sink,
    clean_env,
    create_kwargs,
    print_table,
    save_results,
)

sys.path.insert(0, str(REPO_DIR))  # tests.support.postgres: the tests' throwaway server

CONCURRENCY = 4  # lanes per worker process
LEASE = 5.0  # seconds: short, so the kill run does not wait long for the lease to run out
BATCH = 500
_MESSAGE_ID = re.compile(rb"^Message-ID: (\S+)", re.MULTILINE | re.IGNORECASE)


def fluxmail_command() -> str:
    return str(Path(sys.executable).with_name("fluxmail"))


def worker_env(port: int, url: str) -> dict[str, str]:
    return clean_env(
        FLUXMAIL_HOST="127.0.0.1",
        FLUXMAIL_PORT=str(port),
        FLUXMAIL_TLS="false",
        FLUXMAIL_SENDER=SENDER,
        FLUXMAIL_AUDIT_URL=url,
        FLUXMAIL_OUTBOX_LEASE=str(LEASE),
        FLUXMAIL_OUTBOX_POLL_INTERVAL="0.5",
    )


def start_workers(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """``count`` workers, each logging to its own temporary file: a worker logs a line per
    message, and a pipe nobody reads until the end fills up and stops it (which once made
    2 and 4 workers look no faster than one)."""
    argv = [fluxmail_command(), "worker", "--once", "--concurrency", str(CONCURRENCY)]
    procs = []
    for _ in range(count):
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in wait_all)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
    return procs


def wait_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 900) -> list[str]:
    """Wait for every worker; the last log line of each one that failed."""
    problems = []
    for proc in procs:
        proc.wait(timeout=timeout)
        log = proc.log  # type: ignore[attr-defined]
        if proc.returncode not in (0, -signal.SIGKILL):
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
            problems.append(f"exit {proc.returncode}: {(lines or ['(no output)'])[-1]}")
        log.close()
    return problems


class Fleet:
    """One PostgreSQL server for the whole benchmark, a fresh database per measurement."""

    def __init__(self) -> None:
        from tests.support.postgres import PgServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (Debian package postgresql)")
        self.server = PgServer(bindir)
        self.server.init()
        self.server.start()

    def database(self) -> str:
        return self.server.url(self.server.create_database())

    def close(self) -> None:
        self.server.remove()


def mailer(url: str, port: int = 25) -> Any:
    from fluxmail import FluxMail

    return FluxMail(host="127.0.0.1", port=port, use_tls=False, sender=SENDER, audit_url=url)


def enqueue(url: str, messages: int, *, single: bool = False, port: int = 25) -> float:
    """Messages per second written to the outbox (the mailer's first use opens the store)."""
    with mailer(url, port) as m:
        m.outbox.stats()  # connect and migrate before the clock starts
        started = time.perf_counter()
        if single:
            for i in range(messages):
                m.create(**create_kwargs(i)).enqueue()
        else:
            m.enqueue_many((create_kwargs(i) for i in range(messages)), batch_size=BATCH)
        return messages / (time.perf_counter() - started)


def statuses(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM fluxmail_audit_messages GROUP BY status"
        ).fetchall()
    return {status: count for status, count in rows}


def deliver(fleet: Fleet, workers: int, messages: int) -> dict[str, Any]:
    url = fleet.database()
    with Sink() as sink:
        enqueue(url, messages, port=sink.port)
        started, cpu, busy = time.perf_counter(), _children_cpu(), _machine_busy()
        problems = wait_all(start_workers(workers, worker_env(sink.port, url)))
        elapsed = time.perf_counter() - started
        worker_cpu, machine = _children_cpu() - cpu, _machine_busy(busy)
        arrived = sink.wait_messages(messages)
    found = statuses(url)
    return {
        "workers": workers,
        "rate": messages / elapsed,
        "worker_cpu_us": worker_cpu / messages * 1e6,
        "machine_busy": machine,
        "arrived": arrived,
        "sent_rows": found.get("sent", 0),
        "statuses": found,
        "problems": problems,
        "exact": arrived == messages == found.get("sent", 0) and not problems,
    }


def kill_run(fleet: Fleet, messages: int) -> dict[str, Any]:
    url = fleet.database()
    with tempfile.TemporaryDirectory(prefix="fleet-dump-") as folder:
        dump = Path(folder) / "dump"
        with Sink(dump=dump) as sink:
            enqueue(url, messages, port=sink.port)
            env = worker_env(sink.port, url)
            victim, survivor = start_workers(2, env)
            deadline = time.monotonic() + 600
            # smtp-sink counts a session's messages when it ends; the dump grows per message.
            third = messages // 3 * 2000
            while not _size(dump) >= third and time.monotonic() < deadline:
                time.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            problems = wait_all([victim, survivor])
            time.sleep(LEASE + 1)  # the killed worker's leases run out
            problems += wait_all(start_workers(1, env))
            found = statuses(url)
            sink.wait_messages(found.get("sent", 0))
        seen = collections.Counter(_MESSAGE_ID.findall(dump.read_bytes()))
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    window = CONCURRENCY * 2
    return {
        "statuses": found,
        "arrived_unique": len(seen),
        "duplicates": duplicates,
        "left": found.get("pending", 0) + found.get("sending", 0),
        "unknown": found.get("unknown", 0),
        "window": window,
        "problems": problems,
    }


def _children_cpu() -> float:
    """User + system seconds of the finished child processes (the workers) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy(since: tuple[int, int] | None = None) -> Any:
    """The machine's (busy, total) CPU ticks from /proc/stat; given an earlier reading, the
    busy fraction since: whether the workers had a core to spare."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    now = (sum(fields) - idle, sum(fields))
    if since is None:
        return now
    total = now[1] - since[1]
    return (now[0] - since[0]) / total if total else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def main(argv: Sequence[str] | None = None) -> list[Check]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=2_000, help="messages enqueued one by one")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.single, args.rounds = 2_000, 200, 1
    counts = [int(n) for n in args.workers.split(",")]
    try:
        fleet = Fleet()
    except Exception as exc:  # no PostgreSQL here: say so, fail nothing
        return [Check("fleet", f"skipped: {exc}", None)]
    try:
        return measure(fleet, args, counts)
    finally:
        fleet.close()


def measure(fleet: Fleet, args: argparse.Namespace, counts: list[int]) -> list[Check]:
    batch_rate = enqueue(fleet.database(), args.messages)
    single_rate = enqueue(fleet.database(), args.single, single=True)
    print_table(
        ["enqueue", "msg/s"],
        [[f"enqueue_many, batches of {BATCH}", f"{batch_rate:,.0f}"],
         ["create(...).enqueue(), one by one", f"{single_rate:,.0f}"]],
    )  # fmt: skip
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in counts}
    for _ in range(args.rounds):
        for k in counts:
            runs[k].append(deliver(fleet, k, args.messages))
    rates = {k: sorted(r["rate"] for r in runs[k])[len(runs[k]) // 2] for k in counts}
    base = rates[counts[0]]
    print()
    print_table(
        ["workers", "msg/s (median)", f"x {counts[0]} worker", "worker CPU us/msg",
         "machine busy", "exactly once"],
        [[str(k), f"{rates[k]:,.0f}", f"{rates[k] / base:.2f}",
          f"{runs[k][0]['worker_cpu_us']:,.0f}", _percent(runs[k][0]["machine_busy"]),
          "yes" if all(r["exact"] for r in runs[k]) else "NO"] for k in counts],
    )  # fmt: skip
    print("(worker CPU: all worker processes' user + system time per message; machine busy:")
    print(" every core, PostgreSQL and smtp-sink included; near 100 %, more workers cannot help)")
    killed = kill_run(fleet, args.messages)
    print(f"\nkill run: {killed}")
    save_results("fleet", {"enqueue": [batch_rate, single_rate], "runs": runs, "kill": killed})
    return checks(batch_rate, rates, runs, killed, counts)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f} %"


def checks(
    batch_rate: float,
    rates: dict[int, float],
    runs: dict[int, list[dict[str, Any]]],
    killed: dict[str, Any],
    counts: list[int],
) -> list[Check]:
    found = [Check("enqueue in batches >= 2,000 msg/s", f"{batch_rate:,.0f}", batch_rate >= 2000)]
    if 1 in rates and 2 in rates:
        ratio = rates[2] / rates[1]
        found.append(Check("2 workers >= 1.4 x 1 worker", f"{ratio:.2f} x", ratio >= 1.4))
    exact = all(r["exact"] for k in counts for r in runs[k])
    found.append(Check("every message delivered exactly once", "all runs", exact))
    ok = (
        killed["duplicates"] == 0
        and killed["left"] == 0
        and killed["unknown"] <= killed["window"]
        and not killed["problems"]
    )
    detail = (
        f"{killed['duplicates']} duplicates, {killed['left']} left pending/sending, "
        f"{killed['unknown']} unknown (window {killed['window']})"
    )
    found.append(Check("SIGKILL mid-run", detail, ok))
    return found


if __name__ == "__main__":
    for check in main():
        print(check)
    os._exit(0)  # smtp-sink / PostgreSQL children are stopped above; skip slow atexit work
