"""Latency of one `mailer.create(...).send()`, audit on and off: p50 and p99 (issue 18), and what
the audit record adds (issue 4: < 2 ms at the median).

    python bench/audit_latency.py [--samples 1000] [--quick]

One fresh interpreter holds two mailers, audit off and audit on (a fresh folder), and alternates
single sends between them against Postfix's smtp-sink, so both see the same machine state. Each
send opens its own connection, as a service sending one notification does. With 1,000 samples
(a few seconds) the p99 lies among the 10 slowest sends of a mode, not on a single outlier.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

from _common import (
    DEPS_HINT,
    Check,
    ChildResult,
    child_note,
    find_tool,
    print_checks,
    print_table,
    run_child,
    run_with_sink,
    save_results,
    scratch_dir,
    worker_argv,
)

TARGET_MS = 2.0


def collect(samples: int) -> tuple[dict[str, list[float]], str]:
    """Seconds per send for "on" and "off", or a note saying why there are none."""
    with scratch_dir("audit-latency-") as folder:

        def run(port: int) -> ChildResult:
            args = ["--port", port, "--samples", samples, "--audit-dir", folder / "audit"]
            return run_child(worker_argv(sys.executable, "audit-latency", *args))

        result, arrived = run_with_sink(run, 2 * (samples + 10))
    if not result.ok:
        return {}, child_note(result)
    if arrived < 2 * (samples + 10):
        return {}, f"only {arrived} of {2 * (samples + 10)} messages arrived"
    found: dict[str, list[float]] = result.data["samples"]
    return found, ""


def percentile(values: Sequence[float], pct: int) -> float:
    """The pct-th percentile (1..99), interpolated between the two nearest samples."""
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def main(argv: Sequence[str] | None = None) -> list[Check]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="sends per mode, interleaved")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 samples")
    args = parser.parse_args(argv)
    samples = 50 if args.quick else args.samples
    name = f"audit adds < {TARGET_MS:.0f} ms to one send (p50)"
    if find_tool("smtp-sink") is None:
        print(f"audit latency: SKIPPED, smtp-sink not found: {DEPS_HINT}")
        return [Check(name, "smtp-sink not installed", None)]
    print(f"Audit latency: {samples} single sends per mode, alternating", flush=True)
    found, note = collect(samples)
    if note:
        checks = [Check(name, note, None)]
    else:
        ms = {mode: [s * 1000 for s in values] for mode, values in found.items()}
        rows = [
            [f"audit {mode}", str(len(v)), f"{percentile(v, 50):.2f}", f"{percentile(v, 90):.2f}",
             f"{percentile(v, 99):.2f}", f"{min(v):.2f}", f"{max(v):.2f}"]
            for mode, v in sorted(ms.items(), reverse=True)
        ]  # fmt: skip
        print()
        headers = ["one create().send()", "samples", "p50 ms", "p90 ms", "p99 ms", "min ms"]
        print_table([*headers, "max ms"], rows)
        added = percentile(ms["on"], 50) - percentile(ms["off"], 50)
        added_p99 = percentile(ms["on"], 99) - percentile(ms["off"], 99)
        detail = f"{added:+.2f} ms (target < {TARGET_MS} ms; at p99 {added_p99:+.2f} ms)"
        checks = [Check(name, detail, added < TARGET_MS)]
    print_checks("Issue 4 latency target (p50 and p99 of both modes above, issue 18):", checks)
    save_results("audit_latency", {
        "samples_s": found, "checks": [str(check) for check in checks],
    })  # fmt: skip
    return checks


if __name__ == "__main__":
    main()
