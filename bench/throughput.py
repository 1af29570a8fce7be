"""Bulk throughput against Postfix's smtp-sink: messages per second, interleaved, medians.

    python bench/throughput.py [--messages 5000] [--rounds 3] [--quick] [--clients a,b]
                               [--against DIR]

Every client sends the same ~2.2 KB text messages (one recipient each) in its own interpreter,
to a fresh smtp-sink whose counters confirm that every message arrived. Issue 18's targets are
checked at the end (issue 6's 0.3.3 comparison as context). Clients (the --clients names):
smtplib (baseline), aiosmtplib, pipelining (a minimal RFC 2920 asyncio client with prebuilt
bytes: the reference for CPU per message), fluxmail033, smtp-source (the C ceiling), fluxmail,
fluxmail-processes (send_many(processes=2)).
``--against DIR`` adds the send_many rows again for the fluxmail source tree in DIR (a checkout
of an earlier commit, `git worktree add DIR <commit>`), interleaved in the same rounds: a change
is compared with what it replaced on the same baselines, not across noisy runs.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from _common import (
    DEPS_HINT,
    SENDER,
    Check,
    ChildResult,
    build_stdlib,
    child_note,
    clean_env,
    ensure_fluxmail033,
    find_tool,
    fmt,
    median,
    print_checks,
    print_table,
    rounds_order,
    run_child,
    run_with_sink,
    save_results,
    scratch_dir,
    worker_argv,
)

BASELINE = "smtplib, 1 connection (baseline)"
CEILING = "smtp-source -s 16 (C ceiling)"
OLD_BULK = "fluxmail 0.3.3 BulkSender.send_batch"
REFERENCE = "minimal pipelining asyncio client, prebuilt bytes (reference)"
CONCURRENCIES = (1, 4, 8)
PROCESSES = 2  # this machine's cores
Runner = Callable[[int, int], ChildResult]  # (port, messages) -> figures


def flux_key(concurrency: int, audit: bool, tree: str = "", processes: int = 1) -> str:
    suffix = f", processes={processes}" if processes > 1 else ""
    suffix += f" [{tree}]" if tree else ""
    return f"fluxmail send_many c={concurrency}, audit {'on' if audit else 'off'}{suffix}"


@dataclass
class Row:
    """One client: its runner and every round's figures."""

    key: str
    group: str  # the --clients name
    run: Runner
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    missing: int = 0  # messages the sink never counted, over all rounds
    note: str = ""  # why the row was not measured


def worker_runner(python: str, client: str, *extra: object, tree: str = "") -> Runner:
    env = clean_env(isolated=python != sys.executable)  # 0.3.3's venv: no PYTHONPATH
    if tree:  # another fluxmail source tree, imported ahead of the installed one
        env["PYTHONPATH"] = tree

    def run(port: int, messages: int) -> ChildResult:
        argv = worker_argv(python, client, "--port", port, "--messages", messages, *extra)
        return run_child(argv, env=env)

    return run


def fluxmail_runner(concurrency: int, audit: bool, tree: str = "", processes: int = 1) -> Runner:
    def run(port: int, messages: int) -> ChildResult:
        args: list[object] = ["--concurrency", concurrency, "--processes", processes]
        if not audit:
            return worker_runner(sys.executable, "fluxmail", *args, tree=tree)(port, messages)
        with scratch_dir("audit-") as folder:  # a fresh audit store per run
            return worker_runner(
                sys.executable, "fluxmail", *args, "--audit-dir", folder, tree=tree
            )(port, messages)

    return run


def smtp_source_runner(sessions: int) -> Runner:
    """Postfix's C client, one connection per session reused (-d), distinct recipients (-N)."""
    size = len(bytes(build_stdlib(0)))  # the whole stdlib message becomes its payload

    def run(port: int, messages: int) -> ChildResult:
        binary = find_tool("smtp-source")
        if binary is None:
            return ChildResult({}, unavailable=f"smtp-source not found: {DEPS_HINT}")
        argv = [binary, "-d", "-N", "-s", str(sessions), "-m", str(messages), "-l", str(size)]
        argv += ["-f", SENDER, "-t", "user@example.com", f"127.0.0.1:{port}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            return ChildResult(
                {}, error=f"smtp-source exit {proc.returncode}: {proc.stderr[-200:]}"
            )
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return ChildResult({"sent": messages, "elapsed": elapsed, "cpu": cpu})

    return run


def build_rows(wanted: set[str] | None, against: str = "") -> list[Row]:
    python033, why = ensure_fluxmail033() if wanted is None or "fluxmail033" in wanted else ("", "")
    rows = [
        Row(BASELINE, "smtplib", worker_runner(sys.executable, "smtplib")),
        Row("aiosmtplib, 8 connections", "aiosmtplib",
            worker_runner(sys.executable, "aiosmtplib", "--concurrency", 8)),
        Row(REFERENCE, "pipelining",
            worker_runner(sys.executable, "pipelining", "--concurrency", 8)),
        Row(OLD_BULK, "fluxmail033", worker_runner(python033 or "-", "fluxmail033"), note=why),
        Row(CEILING, "smtp-source", smtp_source_runner(16)),
        Row("smtp-source -s 1", "smtp-source", smtp_source_runner(1)),
    ]  # fmt: skip
    for tree in ("", against) if against else ("",):
        for audit in (False, True):
            rows += [
                Row(flux_key(c, audit, tree), "fluxmail", fluxmail_runner(c, audit, tree))
                for c in CONCURRENCIES
            ]
    rows += [  # spread over the cores; not-available until send_many takes processes=
        Row(flux_key(8, audit, processes=PROCESSES), "fluxmail-processes",
            fluxmail_runner(8, audit, processes=PROCESSES))
        for audit in (False, True)
    ]  # fmt: skip
    return [row for row in rows if wanted is None or row.group in wanted]


def measure(row: Row, messages: int) -> str:
    """One run of one client against a fresh sink; returns a note when it could not run."""
    result, arrived = run_with_sink(lambda port: row.run(port, messages), messages)
    if not result.ok:
        return child_note(result)
    sent, elapsed = int(result.data["sent"]), float(result.data["elapsed"])
    row.rates.append(sent / elapsed)
    row.cpu_us.append(float(result.data["cpu"]) / max(sent, 1) * 1e6)
    row.missing += messages - min(arrived, messages)
    return ""


def run_rounds(rows: list[Row], messages: int, rounds: int) -> None:
    for row in rows:  # warm-up (pyc files, page cache) that also finds clients that cannot run
        if not row.note:
            row.note = measure(row, min(messages, 200))
            row.rates.clear()
            row.cpu_us.clear()
            row.missing = 0
    by_key = {row.key: row for row in rows if not row.note}
    width = max(map(len, by_key), default=0)
    for number in range(rounds):
        for key in rounds_order(list(by_key), number):
            row = by_key[key]
            note = measure(row, messages)
            row.note = row.note or note
            shown = note or f"{row.rates[-1]:>9,.0f} msg/s"
            print(f"  round {number + 1}/{rounds}  {key:<{width}} {shown}", flush=True)


def print_rows(rows: list[Row], messages: int) -> None:
    by_key = {row.key: row for row in rows}
    base = median(by_key[BASELINE].rates) if BASELINE in by_key else float("nan")
    ceiling = median(by_key[CEILING].rates) if CEILING in by_key else float("nan")
    table = []
    for row in rows:
        rate = median(row.rates)
        rounds = " / ".join(f"{r:,.0f}" for r in row.rates)
        arrived = "all" if not row.missing else f"{row.missing} MISSING"
        table.append([
            row.key, fmt(rate), fmt(rate / base, 2), fmt(rate / ceiling, 3),
            fmt(median(row.cpu_us)), arrived if row.rates else "-", (row.note[:90] or rounds),
        ])  # fmt: skip
    headers = ["client", "msg/s", "x smtplib", "fraction of smtp-source -s 16", "CPU us/msg",
               "arrived"]  # fmt: skip
    print(f"\nThroughput, {messages:,} messages of ~2.2 KB, medians of interleaved rounds; "
          "CPU is the client's user+sys per message, its child processes included:\n")  # fmt: skip
    print_table([*headers, "rounds (msg/s) / note"], table)


def measured(*values: float | None) -> bool:
    return all(value is not None and value == value for value in values)  # not None, not NaN


def ratio_check(name: str, num: float | None, den: float | None, target: float, how: str) -> Check:
    if num is None or den is None or not measured(num, den):
        return Check(name, f"not measured ({how})", None)
    ratio = num / den
    detail = f"{num:,.0f} / {den:,.0f} msg/s = {ratio:.2f}x (target >= {target}x; {how})"
    return Check(name, detail, ratio >= target)


def cpu_check(flux_us: float | None, reference_us: float | None, how: str) -> Check:
    name = "send_many CPU us/msg <= 2x the pipelining reference"
    if flux_us is None or reference_us is None or not measured(flux_us, reference_us):
        return Check(name, f"not measured ({how})", None)
    ratio = flux_us / reference_us
    detail = f"{flux_us:,.0f} / {reference_us:,.0f} us/msg = {ratio:.2f}x (target <= 2x; {how})"
    return Check(name, detail, ratio <= 2.0)


def target_checks(rows: list[Row]) -> list[Check]:
    """Issue 18: audit off >= 10x smtplib; audit on >= 0.85x off at the same concurrency;
    CPU per message <= 2x the minimal pipelining client's. Issue 6's >= 5x 0.3.3's BulkSender
    stays as context."""
    medians = {row.key: median(row.rates) for row in rows if row.rates}
    cpu = {row.key: median(row.cpu_us) for row in rows if row.cpu_us}
    off = {c: medians[flux_key(c, False)] for c in CONCURRENCIES if flux_key(c, False) in medians}
    best = max(off, key=lambda c: off[c]) if off else 0
    notes = [row.note for row in rows if row.group == "fluxmail" and row.note]
    how = f"best concurrency, c={best}" if off else (notes or ["send_many not run"])[0]
    on_best = medians.get(flux_key(best, True))
    checks = [
        ratio_check("send_many audit off >= 10x smtplib", off.get(best), medians.get(BASELINE),
                    10.0, how),
        ratio_check("send_many audit on >= 0.85x audit off", on_best, off.get(best), 0.85,
                    f"same concurrency, c={best}" if off else how),
        cpu_check(cpu.get(flux_key(best, False)), cpu.get(REFERENCE), f"audit off, {how}"),
        ratio_check("(issue 6) send_many audit off >= 5x fluxmail 0.3.3 BulkSender",
                    off.get(best), medians.get(OLD_BULK), 5.0, how),
    ]  # fmt: skip
    for c in CONCURRENCIES:  # context, not targets: the on/off cost at each concurrency
        if c != best and c in off and flux_key(c, True) in medians:
            ratio = medians[flux_key(c, True)] / off[c]
            print(f"  (audit on / off at c={c}: {ratio:.2f}x)")
    for audit in (False, True):  # context: what a second process adds on this machine
        one, spread = flux_key(8, audit), flux_key(8, audit, processes=PROCESSES)
        if one in medians and spread in medians:
            side = "on" if audit else "off"
            print(f"  (audit {side}, c=8: processes={PROCESSES} / 1 = "
                  f"{medians[spread] / medians[one]:.2f}x msg/s)")  # fmt: skip
    return checks


def against_checks(rows: list[Row], tree: str) -> list[Check]:
    """This tree's send_many against the same rows of ``tree``, in the same rounds."""
    medians = {row.key: median(row.rates) for row in rows if row.rates}
    checks = []
    for audit in (False, True):
        pairs = [(medians.get(flux_key(c, audit)), medians.get(flux_key(c, audit, tree)), c)
                 for c in CONCURRENCIES]  # fmt: skip
        measured = [(now, then, c) for now, then, c in pairs if now and then]
        if not measured:
            continue
        now, then, c = max(measured, key=lambda m: m[0])
        for n, t, cc in measured:
            print(f"  (audit {'on' if audit else 'off'}, c={cc}: {n / t:.2f}x {tree})")
        side = "on" if audit else "off"
        checks.append(ratio_check(f"send_many audit {side}: not slower than {tree}", now, then,
                                  0.95, f"best concurrency of this tree, c={c}"))  # fmt: skip
    return checks


def main(argv: Sequence[str] | None = None) -> list[Check]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 messages, 1 round")
    parser.add_argument("--clients", help="comma-separated subset: smtplib,aiosmtplib,pipelining,"
                        "fluxmail033,smtp-source,fluxmail,fluxmail-processes")  # fmt: skip
    parser.add_argument("--against", default="", help="another fluxmail source tree to compare")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rounds = 500, 1
    if find_tool("smtp-sink") is None:
        print(f"throughput: SKIPPED, smtp-sink not found: {DEPS_HINT}")
        return [Check("throughput targets", "smtp-sink not installed", None)]
    rows = build_rows(set(args.clients.split(",")) if args.clients else None, args.against)
    print(f"Throughput: {args.messages:,} messages x {args.rounds} interleaved rounds", flush=True)
    run_rounds(rows, args.messages, args.rounds)
    print_rows(rows, args.messages)
    checks = target_checks(rows)
    if args.against:
        checks += against_checks(rows, args.against)
    print_checks("Issue 18 throughput targets:", checks)
    save_results("throughput", {
        "messages": args.messages, "rounds": args.rounds,
        "rows": {row.key: {"rates": row.rates, "cpu_us": row.cpu_us, "missing": row.missing,
                           "note": row.note} for row in rows},
        "checks": [str(check) for check in checks],
    })  # fmt: skip
    return checks


if __name__ == "__main__":
    main()
