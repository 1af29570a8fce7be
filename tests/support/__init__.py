"""What the tests share: real servers (SMTP, PostgreSQL), mailers, the CLI runner, audit records."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
