"""Lazy module imports (fluxmail/_lazy.py): nothing runs until first use, and the first use is
safe from many threads at once (a mailer is shared across threads)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys, threading
from fluxmail import FluxMail
mailer = FluxMail(object_type="memory", sender="s@example.com")
assert "fluxmail.message.mime" not in sys.modules, "the MIME writer ran at construction"
assert "fluxmail.bulk" not in sys.modules, "the bulk pipeline ran at construction"
errors, start = [], threading.Barrier(16)
def send(i):
    start.wait()  # every thread makes the first create()/send() at the same moment
    try:
        mailer.create(f"s{i}", "a@example.com", "x").send()
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print("errors:", errors)
assert not errors
from fluxmail.testing import outbox
assert len(outbox) == 16, len(outbox)
"""


def test_deferred_until_used_and_safe_from_many_threads() -> None:
    ran = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
