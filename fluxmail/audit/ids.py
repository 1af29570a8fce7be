"""Record ids: 26 characters, sortable by time (the ULID layout, Crockford base32).

48 bits of milliseconds then 80 random bits; ids made in the same millisecond increment the
random part, so they stay in order (https://github.com/ulid/spec, "Monotonicity").
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id", "new_ids"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 characters per 10 bits: an id is 13 table lookups (a per-character loop costs
# several times more, and ids are made once per message in bulk).
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_MS_SHIFTS = (40, 30, 20, 10, 0)  # 50 bits: 2 zero bits and the 48-bit clock (10 characters)
_HIGH_SHIFTS = (60, 50, 40, 30, 20, 10, 0)  # the random part above its last 10 bits
_RAND_MASK = (1 << 80) - 1
_lock = threading.Lock()
_last = [0, 0]  # last (milliseconds, randomness) handed out, for monotonic ids


def new_id(now: float | None = None) -> str:
    """One id for a record created at ``now`` (epoch seconds; default: the clock)."""
    return new_ids(1, now)[0]


def new_ids(count: int, now: float | None = None) -> list[str]:
    """``count`` ids in increasing order, as ``count`` calls of new_id() would give."""
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if ms <= _last[0]:
            # Same millisecond (or clock stepped back): increment so ids stay sortable.
            ms, rand = _last[0], _last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last[0], _last[1] = ms, rand + count - 1
    pairs = _PAIRS
    prefix = "".join([pairs[(ms >> shift) & 1023] for shift in _MS_SHIFTS])
    ids: list[str] = []
    high, head = -1, ""
    for value in range(rand, rand + count):
        value &= _RAND_MASK
        if value >> 10 != high:  # once per 1024 consecutive ids
            high = value >> 10
            head = prefix + "".join([pairs[(high >> shift) & 1023] for shift in _HIGH_SHIFTS])
        ids.append(head + pairs[value & 1023])
    return ids
