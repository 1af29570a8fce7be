"""The Celery adapter (fluxmail.celery) against a real Redis broker and a real Celery worker.

The worker runs in a thread of the test process (``celery.contrib.testing.worker``) with a
``threads`` pool of 4, so duplicate tasks really race; it delivers to the aiosmtpd server of
the ``smtp_server`` fixture from an outbox on SQLite (a folder in tmp_path) or PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fluxmail import ConfigurationError, FluxMail
from tests.support.mailing import mailer_for
from tests.support.redis import redis_server_fixture, redis_url_fixture  # noqa: F401
from tests.support.servers import Faults, SMTPTestServer, reply

celery = pytest.importorskip("celery", reason="the celery extra is not installed")
redis = pytest.importorskip("redis", reason="redis-py (a dev dependency) is not installed")

from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]  # noqa: E402

from fluxmail.celery import CeleryTasks, dispatch, register  # noqa: E402

# Celery's Redis result backend still calls setex, which redis-py 8 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")

WAIT = 60.0  # seconds any one result may take: a bound, not a speed claim
SECRET = "Qx7-celery-distinctive-Pw!"


@pytest.fixture
def app(redis_url: str) -> Any:
    """A Celery app on the test Redis: broker in db 0, results (with task args) in db 1."""
    app = celery.Celery("fluxmail-tests", set_as_current=False)
    app.conf.update(
        broker_url=f"{redis_url}/0",
        result_backend=f"{redis_url}/1",
        result_extended=True,  # the backend stores each task's args: the secret scan reads them
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    yield app
    # The result backend of this thread subscribed to each task's result (a Redis pub/sub
    # connection of its own); app.close() leaves both open, and the socket, collected later
    # in a cycle, warned during whichever test ran then.
    backend = app.backend
    backend.result_consumer.stop()
    backend.client.connection_pool.disconnect()
    app.close()


@contextmanager
def running(app: Any) -> Iterator[None]:
    """A real Celery worker consuming from the broker until the block ends."""
    with start_worker(
        app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=30
    ):
        yield


def _enqueue(mailer: FluxMail, count: int, **options: Any) -> list[str]:
    drafts = [mailer.create(f"n{n}", f"r{n}@example.com", "hello") for n in range(count)]
    return [d.enqueue(**options) for d in drafts]


def _statuses(mailer: FluxMail, ids: list[str]) -> list[str]:
    return [mailer.audit.get(i).status for i in ids]


def _sqlite_mailer(server: SMTPTestServer, tmp_path: Path, **options: Any) -> FluxMail:
    return mailer_for(server, audit_dir=tmp_path / "audit", **options)


def _wait_for_state(result: Any, state: str) -> None:
    deadline = time.monotonic() + WAIT
    while result.state != state:
        assert time.monotonic() < deadline, f"task never reached {state}: {result.state}"
        time.sleep(0.02)


def test_ten_dispatched_rows_are_delivered_exactly_once(
    app: Any, smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """10 enqueued rows, one task each: 10 messages at the server, 10 records sent."""
    server = smtp_server()
    mailer = _sqlite_mailer(server, tmp_path)
    tasks = register(app, lambda: mailer)
    assert isinstance(tasks, CeleryTasks) and tasks.deliver.name == "fluxmail.deliver"
    ids = _enqueue(mailer, 10)
    with running(app):
        results = dispatch(tasks.deliver, ids)
        assert [r.get(timeout=WAIT) for r in results] == ["sent"] * 10
    assert server.deliveries == 10
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"r{n}@example.com" for n in range(10)
    )
    assert _statuses(mailer, ids) == ["sent"] * 10


def test_a_duplicate_task_sends_once(
    app: Any, smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """The same id dispatched three times, run by 4 threads at once: one message."""
    server = smtp_server()
    mailer = _sqlite_mailer(server, tmp_path)
    tasks = register(app, mailer)  # a FluxMail itself works too
    [audit_id] = _enqueue(mailer, 1)
    with running(app):
        results = dispatch(tasks.deliver, [audit_id] * 3)
        outcomes = [r.get(timeout=WAIT) for r in results]
        # Let a task that found the row leased ("sending") see it settle.
        assert dispatch(tasks.deliver, audit_id)[0].get(timeout=WAIT) == "sent"
    assert "sent" in outcomes and set(outcomes) <= {"sent", "sending"}
    assert server.deliveries == 1
    assert _statuses(mailer, [audit_id]) == ["sent"]


def test_a_transient_failure_is_delivered_by_the_tasks_retry(
    app: Any, smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """A 451 reschedules the row (pending again); the task looks again and sends it once."""
    server = smtp_server(faults=Faults(mail=reply("451 4.3.0 Try later", times=1)))
    mailer = _sqlite_mailer(server, tmp_path, max_retries=0)
    tasks = register(app, lambda: mailer)
    [audit_id] = _enqueue(mailer, 1)
    with running(app):
        [result] = dispatch(tasks.deliver, audit_id)
        assert result.get(timeout=WAIT) == "sent"
    assert server.deliveries == 1
    assert server.commands.count("MAIL") == 2  # the 451, then the retry's delivery
    assert _statuses(mailer, [audit_id]) == ["sent"]


def test_a_future_send_at_is_not_sent_before_it_is_due(
    app: Any, smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """A task for a row due in an hour looks a few times, then leaves it pending (no
    traffic); dispatch(send_at=) holds the task until a soon row is due, then sends it."""
    server = smtp_server()
    mailer = _sqlite_mailer(server, tmp_path)
    tasks = register(app, lambda: mailer, max_retries=3)
    [later] = _enqueue(mailer, 1, send_at=timedelta(hours=1))
    soon_at = time.time() + 1.5
    [soon] = _enqueue(mailer, 1, send_at=soon_at)
    with running(app):
        [waiting] = dispatch(tasks.deliver, later)
        assert waiting.get(timeout=WAIT) == "pending"
        assert server.deliveries == 0 and server.connections == 0
        [held] = dispatch(tasks.deliver, soon, send_at=soon_at)
        assert held.get(timeout=WAIT) == "sent"
    assert server.deliveries == 1 and server.messages[0].rcpt_tos == ["r0@example.com"]
    assert _statuses(mailer, [later, soon]) == ["pending", "sent"]
    sent_at = mailer.audit.get(soon).sent_at
    assert sent_at is not None and sent_at.timestamp() >= soon_at


def test_the_sweep_drains_rows_no_task_was_dispatched_for(
    app: Any, smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """Rows whose task was lost: the sweep task (celery beat's safety net) delivers them."""
    server = smtp_server()
    mailer = _sqlite_mailer(server, tmp_path)
    tasks = register(app, lambda: mailer)
    ids = _enqueue(mailer, 5)
    with running(app):
        report = tasks.sweep.delay().get(timeout=WAIT)
    assert isinstance(report, dict)
    assert server.deliveries == 5
    assert _statuses(mailer, ids) == ["sent"] * 5


@pytest.mark.postgres
def test_a_task_before_commit_delivers_once_after_it(
    app: Any, smtp_server: Callable[..., SMTPTestServer], pg_database: str
) -> None:
    """Dispatched inside the caller's open transaction: the task cannot see the row and
    looks again; once the transaction commits, the message goes out once."""
    import psycopg

    server = smtp_server()
    mailer = mailer_for(server, audit=True, audit_url=pg_database, retry_delay=0.2)
    tasks = register(app, lambda: mailer)
    _enqueue(mailer, 0)  # nothing, but the store is opened (its schema created) first
    with psycopg.connect(pg_database, connect_timeout=10) as conn:
        audit_id = mailer.create("order", "c@example.com", "thanks").enqueue(connection=conn)
        with running(app):
            [result] = dispatch(tasks.deliver, audit_id)
            _wait_for_state(result, "RETRY")  # it ran and found no committed row
            assert server.deliveries == 0
            conn.commit()
            assert result.get(timeout=WAIT) == "sent"
    assert server.deliveries == 1
    assert _statuses(mailer, [audit_id]) == ["sent"]


# -- no secret in the broker or the result backend --------------------------------------


def _redis_dump(redis_url: str) -> tuple[bytes, list[dict[str, Any]]]:
    """Every value in every database, raw, plus the decoded bodies of task messages."""
    raw: list[bytes] = []
    for db in range(16):
        client = redis.Redis.from_url(f"{redis_url}/{db}", socket_timeout=10)
        for key in client.scan_iter(count=1000):
            raw.append(key)
            kind = client.type(key)
            if kind == b"string":
                raw.append(client.get(key) or b"")
            elif kind == b"list":
                raw.extend(client.lrange(key, 0, -1))
            elif kind == b"hash":
                raw.extend(v for pair in client.hgetall(key).items() for v in pair)
            elif kind == b"set":
                raw.extend(client.smembers(key))
            elif kind == b"zset":
                raw.extend(client.zrange(key, 0, -1))
        client.close()
    bodies = [_task_body(value) for value in raw]
    decoded = [b for b in bodies if b is not None]
    blob = b"\n".join(raw) + b"\n" + json.dumps(decoded).encode()
    return blob, decoded


def _task_body(value: bytes) -> dict[str, Any] | None:
    """A kombu message's body (base64 JSON: [args, kwargs, embed]), if value is one."""
    try:
        message = json.loads(value)
    except ValueError:
        return None
    if not isinstance(message, dict) or "body" not in message:
        return None
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _ = json.loads(body)
    return {"task": message.get("headers", {}).get("task"), "args": args, "kwargs": kwargs}


def _secret_forms(*secrets: str) -> list[bytes]:
    forms = []
    for secret in secrets:
        forms.append(secret.encode())
        forms.append(base64.b64encode(b"\0user\0" + secret.encode()))  # AUTH PLAIN
        forms.append(base64.b64encode(secret.encode()))  # AUTH LOGIN
    return forms


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_no_secret_in_task_arguments_or_results(
    app: Any,
    smtp_server: Callable[..., SMTPTestServer],
    tmp_path: Path,
    redis_url: str,
    request: pytest.FixtureRequest,
    store: str,
) -> None:
    """Queued messages carry one audit id each; neither they nor the stored results hold
    the SMTP password or the audit database's password (raw Redis keys, every database)."""
    server = smtp_server(tls="starttls", auth=("user", SECRET))
    secrets = [SECRET]
    options: dict[str, Any] = {"username": "user", "password": SECRET}
    if store == "postgres":
        options.update(audit=True, audit_url=request.getfixturevalue("pg_database"))
        secrets.append(request.getfixturevalue("pg_server").password)
    else:
        options["audit_dir"] = tmp_path / "audit"
    mailer = mailer_for(server, **options)
    tasks = register(app, lambda: mailer)
    ids = _enqueue(mailer, 3)
    results = dispatch(tasks.deliver, ids)  # no worker yet: the messages wait in the broker
    blob, queued = _redis_dump(redis_url)
    assert sorted(q["args"] for q in queued) == sorted([i] for i in ids)
    assert all(q["kwargs"] == {} and q["task"] == "fluxmail.deliver" for q in queued)
    with running(app):
        assert [r.get(timeout=WAIT) for r in results] == ["sent"] * 3
        tasks.sweep.delay().get(timeout=WAIT)
    stored, _ = _redis_dump(redis_url)
    assert b'"result": "sent"' in stored and ids[0].encode() in stored  # the scan sees results
    assert server.deliveries == 3 and all(m.login == "user" for m in server.messages)
    for form in _secret_forms(*secrets):
        assert form not in blob and form not in stored


# -- inputs, and the extra ---------------------------------------------------------------


def test_bad_inputs_are_refused_before_any_traffic(app: Any) -> None:
    """A mailer that is neither a FluxMail nor a factory, a bad bound, an id that is not a
    string: ConfigurationError invalid_option, nothing queued."""
    url: Any = "smtp://localhost"
    factory: Any = lambda: None  # noqa: E731  (never called: nothing runs a task here)
    with pytest.raises(ConfigurationError) as info:
        register(app, url)
    assert info.value.code == "invalid_option"
    with pytest.raises(ConfigurationError) as info:
        register(app, factory, max_retries=-1)
    assert info.value.code == "invalid_option"
    tasks = register(app, factory)
    ids: Any = ["ok", 42]
    with pytest.raises(ConfigurationError) as info:
        dispatch(tasks.deliver, ids)
    assert info.value.code == "invalid_option"
    assert dispatch(tasks.deliver, []) == []


def test_celery_is_an_extra_never_imported_by_fluxmail() -> None:
    """`import fluxmail` and `import fluxmail.celery` load no Celery; without Celery,
    register() names the extra to install (code missing_extra)."""
    script = (
        "import sys, fluxmail, fluxmail.celery\n"
        "assert 'celery' not in sys.modules, 'celery imported'\n"
        "sys.modules['celery'] = None\n"
        "try:\n"
        "    fluxmail.celery.register(object(), lambda: None)\n"
        "except fluxmail.ConfigurationError as exc:\n"
        "    print(exc.code, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.startswith("missing_extra ") and "pip install 'fluxmail[celery]'" in out
