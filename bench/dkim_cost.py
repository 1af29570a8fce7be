"""DKIM signing in bulk: the added cost per message of RSA-2048, Ed25519 and both (docs/dkim.md).

    python bench/dkim_cost.py [--messages 2000] [--rounds 3] [--quick]

The same ~2.2 KB text messages as the throughput benchmark go through ``send_many`` to the
``memory`` backend (audit off), so the figures are the CPU of building, signing and handing
over each message, with no network. The rows are interleaved per round; medians are reported,
and the cost of signing is each row's time per message minus the unsigned row's. The last
row signs with RSA-2048 in two builder processes (``send_many(processes=2)``): where building
dominates, that is what spreading it across cores buys.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from _common import BODY, SENDER, Check, fmt, median, print_table, recipient, save_results, subject

VARIANTS = ("unsigned", "rsa-2048", "ed25519", "rsa-2048 + ed25519")
PROCESSES = 2  # the RSA rows again, signed in builder processes: send_many(processes=2)
ROWS = (*VARIANTS, f"rsa-2048, processes={PROCESSES}")


def _keys() -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    pem, pkcs8, plain = ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "rsa": rsa_key.private_bytes(pem, pkcs8, plain).decode(),
        "ed": ed_key.private_bytes(pem, pkcs8, plain).decode(),
    }


def _settings(variant: str, keys: dict[str, str]) -> dict[str, Any]:
    base: dict[str, Any] = {"object_type": "memory", "sender": SENDER, "audit": False}
    if variant == "unsigned":
        return base
    first = keys["ed"] if variant == "ed25519" else keys["rsa"]
    base |= {"dkim_domain": "example.com", "dkim_selector": "s1", "dkim_private_key": first}
    if "+" in variant:
        base |= {"dkim_second_selector": "s2", "dkim_second_private_key": keys["ed"]}
    return base


def _run(row: str, keys: dict[str, str], messages: int) -> float:
    """Seconds per message for one bulk run of ``messages``."""
    from fluxmail import FluxMail

    variant, _, processes = row.partition(", processes=")
    mailer = FluxMail(**_settings(variant, keys))
    items = (
        {"subject": subject(i), "recipients": recipient(i), "body": BODY} for i in range(messages)
    )
    start = time.perf_counter()
    summary = mailer.send_many(items, concurrency=1, processes=int(processes or 1)).wait()
    elapsed = time.perf_counter() - start
    mailer.close()
    if summary.sent != messages:
        raise RuntimeError(f"{row}: {summary.sent} of {messages} sent")
    return elapsed / messages


def main(argv: Sequence[str] | None = None) -> list[Check]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 messages, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rounds = 200, 1
    try:
        import dkim  # noqa: F401  (the extra)

        keys = _keys()
    except ImportError as exc:
        print(f"dkim_cost: SKIPPED ({exc}; pip install 'fluxmail[dkim]' cryptography)")
        return [Check("DKIM signing cost", "fluxmail[dkim] not installed", None)]
    timings: dict[str, list[float]] = {v: [] for v in ROWS}
    for variant in ROWS:  # warm-up: imports and first-use caches out of the figures
        _run(variant, keys, 20)
    for _ in range(args.rounds):
        for variant in ROWS:
            timings[variant].append(_run(variant, keys, args.messages))
    base = median(timings["unsigned"])
    rows = []
    for variant in ROWS:
        per = median(timings[variant])
        rows.append([variant, fmt(1 / per), fmt(per * 1e6), fmt((per - base) * 1e6)])
    print(f"DKIM in bulk: {args.messages:,} messages x {args.rounds} rounds (memory backend)")
    print_table(["signing", "msg/s", "us/msg", "signing us/msg"], rows)
    save_results("dkim_cost", {"messages": args.messages, "rounds": args.rounds,
                               "seconds_per_message": timings})  # fmt: skip
    cost = {v: fmt((median(timings[v]) - base) * 1e6) for v in ROWS[1:]}
    detail = f"RSA-2048 {cost['rsa-2048']} us, Ed25519 {cost['ed25519']} us per message"
    spread = median(timings["rsa-2048"]) / median(timings[ROWS[-1]])
    detail += f"; RSA-2048 with processes={PROCESSES}: {spread:.2f}x the rate of one process"
    return [Check("DKIM signing cost in bulk (measured, no target)", detail, True)]


if __name__ == "__main__":
    main()
