"""A real HTTP(S) API server on 127.0.0.1, in a thread: records requests, serves scripted replies.

For the HTTP API transports (``fluxmail/transport/api/``). Use the ``http_api`` fixture from
``tests/conftest.py``; servers are stopped at teardown::

    def test_something(http_api):
        server = http_api()                              # HTTPS with the session's test CA
        server.script(Reply(429, headers={"Retry-After": "1"}), Reply(200, body={"id": "m-1"}))
        ...   # FLUXMAIL_API_BASE_URL=server.url, FLUXMAIL_CA_FILE=server.ca_path
        [first, second] = server.requests                # every request, in order
        assert first.method == "POST" and first.path == "/emails"
        assert first.headers["authorization"] == "Bearer re_key"    # names are lower-case
        assert first.json()["subject"] == "Hi"

``http_api(...)`` keywords (all optional):

- ``tls``: True (default: HTTPS, certificate ``cert`` from the test CA) or False (plain HTTP).
- ``cert``: ``"good"`` (default), ``"expired"``, ``"wrong_host"`` or ``"untrusted"`` (see TestCA).
- ``default``: the Reply for a request when no scripted reply is left (default: ``Reply(200)``
  with body ``{}``), or a function ``Seen -> Reply`` (an emulator of the API's behaviour).

``Reply(status=200, body=None, headers=None, delay=0.0, drop=False, times=1)``:

- ``body``: bytes, str, or anything else (sent as JSON with ``Content-Type: application/json``).
- ``headers``: extra reply headers, e.g. ``{"Retry-After": "2"}`` or ``{"X-Message-Id": "abc"}``.
- ``delay``: seconds to wait after reading the whole request before answering (a slow API; the
  client's command timeout fires if it is longer). The wait ends early when the server stops.
- ``drop``: read the whole request body, then close the connection without any reply (the
  request may have reached the provider: a client must treat the outcome as unknown).
- ``times``: how many requests this reply answers (None: every one, it is never used up).

``server.script(*replies)`` queues replies, used in order before ``default``. Attributes:
``url`` (``https://127.0.0.1:PORT``, no path), ``host``, ``port``, ``ca_path`` (PEM of the CA),
``requests`` (``Seen``: ``method``, ``path`` with the query, ``headers`` lower-case, ``body``
bytes; ``json()``, ``form()`` for multipart/form-data or urlencoded fields, ``files()`` for
multipart file parts), ``count`` and ``connections`` (TCP connections accepted: proves pooling).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.http_thread import ServerThread
from tests.support.servers import CertKind, TestCA

__all__ = ["HttpApiServer", "Part", "Reply", "Seen", "running"]

DELAY_LIMIT = 60.0  # a delayed reply never outlives this, even if nobody stops the server


@dataclass
class Reply:
    """What the server answers to one request (or ``times`` requests; None: every one)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] | None = None
    delay: float = 0.0
    drop: bool = False
    times: int | None = 1

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers or {})
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        headers.setdefault("Content-Type", "application/json")
        return json.dumps({} if self.body is None else self.body).encode(), headers


@dataclass(frozen=True)
class Part:
    """One file part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def route(self) -> str:
        """The path without the query string."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)

    def _parts(self) -> list[Part]:
        kind = self.headers.get("content-type", "")
        if not kind.startswith("multipart/"):
            return []
        head = f"Content-Type: {kind}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + self.body)
        parts = []
        for part in message.iter_parts():
            params = dict(part.get_params(header="content-disposition") or [])
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            parts.append(
                Part(params.get("name", ""), params.get("filename"), part.get_content_type(), data)
            )
        return parts

    def form(self) -> list[tuple[str, str]]:
        """Fields of a urlencoded or multipart form (not the files), in order, repeats kept."""
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return parse_qsl(self.body.decode(), keep_blank_values=True)
        return [(p.name, p.data.decode()) for p in self._parts() if p.filename is None]

    def files(self) -> list[Part]:
        """The file parts of a multipart body, in order."""
        return [p for p in self._parts() if p.filename is not None]


@dataclass
class _State:
    script: list[Reply] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0


class HttpApiServer:
    """``HttpApiServer(ca).start()``; ``url`` is its base URL, ``stop()`` ends it."""

    def __init__(
        self,
        ca: TestCA,
        *,
        tls: bool = True,
        cert: CertKind = "good",
        default: Reply | Callable[[Seen], Reply] | None = None,
    ) -> None:
        self.ca, self.tls, self.cert = ca, tls, cert
        self.default = default if default is not None else Reply(200, times=None)
        self.state = _State()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: ServerThread | None = None

    # -- set-up and what happened -------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.state.script.extend(replies)

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.state.requests)

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def connections(self) -> int:
        with self._lock:
            return self.state.connections

    @property
    def ca_path(self) -> Path:
        return self.ca.ca_path

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> HttpApiServer:
        context = self.ca.server_context(self.cert) if self.tls else None
        self._server = ServerThread(_handler(self), context)
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.stop()

    # -- answering ------------------------------------------------------------------------------
    def connected(self) -> None:
        with self._lock:
            self.state.connections += 1

    def answer(self, seen: Seen) -> Reply:
        with self._lock:
            self.state.requests.append(seen)
            if self.state.script:
                reply = self.state.script[0]
                if reply.times is not None:
                    reply.times -= 1
                    if reply.times <= 0:
                        self.state.script.pop(0)
                return reply
        return self.default(seen) if callable(self.default) else self.default


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _handler(server: HttpApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so a client's connection pool is exercised

        def setup(self) -> None:
            super().setup()
            server.connected()

        def _any(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen = Seen(self.command, self.path, headers, _read_body(self))
            reply = server.answer(seen)
            if reply.delay:
                server.stopping.wait(min(reply.delay, DELAY_LIMIT))
            if reply.drop or server.stopping.is_set():
                self.close_connection = True
                return
            body, extra = reply.encoded()
            self.send_response(reply.status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

    return Handler


@contextmanager
def running(ca: TestCA, **options: Any) -> Iterator[HttpApiServer]:
    server = HttpApiServer(ca, **options).start()
    try:
        yield server
    finally:
        server.stop()
