"""Ctrl-C during send_many: the run stops cleanly and no audit record is left 'sending'."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fluxmail.audit import open_store

CHILD = """
import sys
from fluxmail import FluxMail
host, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mailer = FluxMail(host=host, port=port, use_tls=False, sender="s@example.com", audit_dir=folder)
items = ({"subject": f"n{i}", "recipients": [f"u{i}@x.org"], "body": "x"} for i in range(400))
run = mailer.send_many(items, concurrency=2, rate_limit=40, progress=False)
seen = {}
for n, outcome in enumerate(run):
    seen[outcome.status] = seen.get(outcome.status, 0) + 1
    if n == 5:
        print("going", flush=True)
print("finished without an interrupt:", seen, flush=True)  # for the assertion's message
"""


@pytest.mark.slow
def test_ctrl_c_leaves_no_record_sending(smtp_server: Any, tmp_path: Path) -> None:
    """SIGINT mid-run: exit on KeyboardInterrupt; records are sent, failed or unknown, never
    'sending'; every 'sent' record was really delivered."""
    server = smtp_server()
    folder = tmp_path / "audit"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, server.host, str(server.port), str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    assert line == "going", child.communicate(timeout=10)[1]
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode != 0 and "KeyboardInterrupt" in err, (out, err)
    records = open_store(directory=folder, explicit=True).list(limit=1000)
    statuses = [r.status for r in records]
    assert "sending" not in statuses and statuses.count("sent") >= 6
    assert (
        statuses.count("sent")
        <= server.deliveries
        <= statuses.count("sent") + statuses.count("unknown")
    )
    assert len(records) < 400  # it stopped; unclaimed messages left no record
