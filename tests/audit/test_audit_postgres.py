"""The PostgreSQL store's own promises: lazy connections, secrets, restarts, the missing extra."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from fluxmail.audit import open_store
from fluxmail.audit.postgres import LATEST_VERSION
from fluxmail.errors import AuditError
from tests.support.audit import EML, make_record, sent_result
from tests.support.postgres import PgServer, start_server

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server of this test's own, free to be stopped and restarted."""
    server = start_server()
    yield server
    server.remove()


def test_no_connection_before_first_use() -> None:
    """Opening a store connects to nothing: a closed port fails only at the first claim."""
    store = open_store(url="postgresql://app:s3cret-pw@127.0.0.1:1/audit")
    with pytest.raises(AuditError) as info:
        store.claim(make_record())
    assert info.value.code == "audit_unavailable"
    assert "s3cret-pw" not in str(info.value)
    assert "127.0.0.1" in str(info.value)
    store.close()


def test_password_never_in_location_repr_or_errors(pg_server: PgServer, pg_database: str) -> None:
    """The password (URL or argument) stays out of location, repr and error messages."""
    store = open_store(url=pg_database)
    assert pg_server.password not in store.location
    assert pg_server.password not in repr(store)
    assert store.location == pg_database.replace(f":{pg_server.password}", "")
    bad = open_store(url=pg_server.url(with_password=False), password="Wr0ng-distinctive-pw")
    with pytest.raises(AuditError) as info:
        bad.claim(make_record())
    assert info.value.code == "audit_unavailable"
    assert "Wr0ng-distinctive-pw" not in str(info.value) + repr(info.value)
    assert "Wr0ng-distinctive-pw" not in repr(bad) + bad.location
    store.close()


def test_password_argument_is_used(pg_server: PgServer, pg_database: str) -> None:
    """A URL without password plus password= connects (FLUXMAIL_AUDIT_PASSWORD's path)."""
    url = pg_database.replace(f":{pg_server.password}", "")
    store = open_store(url=url, password=pg_server.password)
    audit_id = store.claim(make_record()).audit_id
    store.finish(audit_id, sent_result())
    assert store.get(audit_id).status == "sent"
    store.close()


def test_snapshot_and_attachments_live_in_the_database(pg_database: str) -> None:
    """The exact eml bytes, bodies and attachment copies are stored in PostgreSQL."""
    import psycopg

    store = open_store(url=pg_database)
    audit_id = store.claim(make_record()).audit_id
    assert store.get_eml(audit_id) == EML
    assert store.get(audit_id).folder is None
    store.close()
    with psycopg.connect(pg_database) as conn:
        text, html = conn.execute(
            "SELECT body_text, body_html FROM fluxmail_audit_messages WHERE id=%s", (audit_id,)
        ).fetchone()
        [(content,)] = conn.execute(
            "SELECT content FROM fluxmail_audit_attachments WHERE audit_id=%s", (audit_id,)
        ).fetchall()
        version = conn.execute("SELECT max(version) FROM fluxmail_audit_schema").fetchone()[0]
    assert (text, html, bytes(content)) == ("Hello Bob", "<p>Hello Bob</p>", b"%PDF-1.4 fake")
    assert version == LATEST_VERSION


def test_a_newer_schema_is_refused(pg_database: str) -> None:
    """A database migrated by a newer fluxmail is refused with audit_incompatible."""
    import psycopg

    first = open_store(url=pg_database)
    first.list()
    first.close()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO fluxmail_audit_schema (version) VALUES (%s)", (LATEST_VERSION + 1,)
        )
    second = open_store(url=pg_database)
    with pytest.raises(AuditError) as info:
        second.list()
    assert info.value.code == "audit_incompatible"
    second.close()


@pytest.mark.slow
def test_server_restart_fails_cleanly_then_recovers(own_server: PgServer) -> None:
    """While the server is down claims raise audit_unavailable; once back, they work again."""
    url = own_server.url(own_server.create_database())
    store = open_store(url=url)
    first = store.claim(make_record("r-1"))
    own_server.stop()
    with pytest.raises(AuditError) as info:
        store.claim(make_record("r-2"))
    assert info.value.code == "audit_unavailable"
    with pytest.raises(AuditError):
        store.finish(first.audit_id, sent_result())
    own_server.start()
    second = store.claim(make_record("r-2"))
    assert second.replay is None
    store.finish(second.audit_id, sent_result())
    assert store.get(second.audit_id).status == "sent"
    assert store.get(first.audit_id).status == "sending"  # its outcome was never recorded
    store.close()


def test_server_closing_the_connection_is_survived(pg_server: PgServer, pg_database: str) -> None:
    """A connection the server terminated (idle timeout, failover) is replaced transparently
    on the next call after the failing one."""
    import psycopg

    store = open_store(url=pg_database)
    store.claim(make_record("x-1"))
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name='fluxmail-audit'"
        )
    try:
        store.claim(make_record("x-2"))
    except AuditError as exc:
        assert exc.code == "audit_unavailable"
    assert store.claim(make_record("x-3")).replay is None
    assert {r.idempotency_key for r in store.list()} >= {"x-1", "x-3"}
    store.close()


def test_missing_psycopg_names_the_extra() -> None:
    """Without psycopg, asking for a PostgreSQL store says: pip install fluxmail[postgres]."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import fluxmail.audit as a\n"
        "try:\n"
        "    a.open_store(url='postgresql://u@127.0.0.1:1/db')\n"
        "except Exception as exc:\n"
        "    print(exc.code, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.startswith("missing_extra ")
    assert "pip install fluxmail[postgres]" in out.stdout
