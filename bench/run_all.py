"""Run every benchmark in sequence and print one summary of the issue targets (`make bench`).

    python bench/run_all.py [--quick] [--strict] [--only cold_start,throughput,...]

Exit status 0 unless --strict is given and a target FAILs (SKIP never fails: a benchmark whose
subject does not exist yet says so). Raw figures are kept in bench/results/*.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import audit_latency
import cold_start
import dkim_cost
import fleet
import memory
import throughput
from _common import Check, print_checks

BENCHMARKS: dict[str, Callable[[Sequence[str]], list[Check]]] = {
    "cold_start": cold_start.main,
    "throughput": throughput.main,
    "audit_latency": audit_latency.main,
    "memory": memory.main,
    "fleet": fleet.main,
    "dkim_cost": dkim_cost.main,
}


def run_one(name: str, args: Sequence[str]) -> list[Check]:
    print(f"\n{'=' * 30} {name} {'=' * 30}", flush=True)
    started = time.monotonic()
    try:
        checks = BENCHMARKS[name](args)
    except Exception:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        checks = [Check(name, "the benchmark crashed (traceback above)", False)]
    print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of every benchmark")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHMARKS))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    passed_on = ["--quick"] if args.quick else []
    checks = [check for name in names for check in run_one(name, passed_on)]
    print_checks("SUMMARY of the issue targets (medians from this run):", checks)
    failed = sum(check.ok is False for check in checks)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
