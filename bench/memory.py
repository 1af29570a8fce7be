"""Peak memory of bulk sends with a 100 KB attachment per message (issue 18).

    python bench/memory.py [--sizes 1000,5000] [--concurrency 8] [--quick]

Each case runs in a fresh interpreter against Postfix's smtp-sink; the figure is that process's
peak RSS (getrusage ru_maxrss). fluxmail send_many runs with audit off. Targets: 5,000 messages
<= 64 MB (MB = 10^6 bytes) and within 10% of the 1,000-message figure, i.e. memory stays flat.
aiosmtplib (8 connections, each message built as sent) is a reference that needs no fluxmail.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from _common import (
    DEPS_HINT,
    Check,
    ChildResult,
    child_note,
    find_tool,
    fmt,
    print_checks,
    print_table,
    run_child,
    run_with_sink,
    save_results,
    scratch_dir,
    worker_argv,
)

ATTACHMENT_BYTES = 100 * 1024
LIMIT_BYTES = 64 * 10**6  # issue 18 (issue 6 had 80 MB)
LIMIT_MB = LIMIT_BYTES // 10**6
MIB = 1024 * 1024


@dataclass
class Case:
    label: str
    client: str  # a _worker.py client
    messages: int
    rss_bytes: float = float("nan")
    rate: float = float("nan")
    note: str = ""


def cases(sizes: Sequence[int]) -> list[Case]:
    found = [Case("idle: fluxmail + aiosmtplib imported, mailer built", "idle", 0)]
    found += [Case(f"fluxmail send_many, {n:,} messages", "fluxmail", n) for n in sizes]
    found += [Case(f"reference: aiosmtplib, {n:,} messages", "aiosmtplib", n) for n in sizes]
    return found


def measure(case: Case, attachment: str, concurrency: int) -> None:
    def run(port: int) -> ChildResult:
        args = ["--port", port, "--messages", case.messages, "--concurrency", concurrency]
        return run_child(worker_argv(sys.executable, case.client, *args, "--attach", attachment))

    result, arrived = run_with_sink(run, case.messages)
    case.note = child_note(result) or str(result.data.get("note", ""))
    if not result.ok:
        return
    case.rss_bytes = float(result.data["maxrss_kib"]) * 1024  # Linux reports KiB
    if case.messages:
        case.rate = float(result.data["sent"]) / float(result.data["elapsed"])
        if arrived < case.messages:
            case.note = f"only {arrived} of {case.messages} arrived"


def memory_checks(found: list[Case], sizes: Sequence[int]) -> list[Check]:
    flux = {c.messages: c.rss_bytes for c in found if c.client == "fluxmail" and not c.note}
    small, large = min(sizes), max(sizes)
    if large not in flux or small not in flux:
        note = next((c.note for c in found if c.client == "fluxmail" and c.note), "")
        return [
            Check(f"peak RSS, {large:,} messages <= {LIMIT_MB} MB", note or "not measured", None),
            Check(f"peak RSS, {large:,} within 10% of {small:,}", note or "not measured", None),
        ]
    growth = flux[large] / flux[small] - 1
    return [
        Check(f"peak RSS, {large:,} messages <= {LIMIT_MB} MB", f"{flux[large] / 1e6:.1f} MB",
              flux[large] <= LIMIT_BYTES),
        Check(f"peak RSS, {large:,} within 10% of {small:,}",
              f"{flux[large] / 1e6:.1f} vs {flux[small] / 1e6:.1f} MB = {growth:+.1%}",
              growth <= 0.10),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> list[Check]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="message counts to compare")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 and 500 messages")
    args = parser.parse_args(argv)
    sizes = [100, 500] if args.quick else [int(n) for n in args.sizes.split(",")]
    if find_tool("smtp-sink") is None:
        print(f"memory: SKIPPED, smtp-sink not found: {DEPS_HINT}")
        return [Check("memory targets", "smtp-sink not installed", None)]
    found = cases(sizes)
    print(f"Memory: {len(found)} cases, 100 KB attachment each, concurrency {args.concurrency}")
    with scratch_dir("memory-") as folder:
        attachment = folder / "attachment.bin"
        attachment.write_bytes(os.urandom(ATTACHMENT_BYTES))  # incompressible, like a PDF
        for case in found:
            measure(case, str(attachment), args.concurrency)
    rows = [
        [c.label, fmt(c.rss_bytes / MIB, 1), fmt(c.rss_bytes / 1e6, 1), fmt(c.rate), c.note[:80]]
        for c in found
    ]
    print()
    print_table(["case (fresh interpreter)", "peak MiB", "peak MB (10^6 B)", "msg/s", "note"], rows)
    checks = memory_checks(found, sizes)
    print_checks("Issue 18 memory targets (MB = 10^6 bytes):", checks)
    save_results("memory", {
        "cases": [vars(c) for c in found], "checks": [str(check) for check in checks],
    })  # fmt: skip
    return checks


if __name__ == "__main__":
    main()
