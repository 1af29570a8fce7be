"""``ApiTransport``: the send template every HTTP API transport shares (docs/transports/index.md).

A provider module maps a message to one request (:meth:`ApiTransport.request`) and a reply back
(:meth:`message_id`, :meth:`error_text`, :meth:`recipients`); the outcome rules live here, once:

- 2xx: ``queued`` (the provider accepted it; final delivery is unknown), every recipient
  ``sent`` unless the API reports otherwise, the provider's id as ``provider_message_id``;
- 401/403: ``AuthenticationFailed``, never retried (a wrong key stays wrong);
- 408, 429 and 5xx: retried with backoff within ``max_retries`` / ``retry_delay`` /
  ``retry_deadline``, waiting at least what ``Retry-After`` asks (RFC 9110 section 10.2.3);
- any other 4xx: ``failed`` with the API's own error text, never retried;
- no connection (refused, connect timeout): retried, nothing reached the provider;
- a timeout or a lost connection after the request was written: the provider may have taken
  it. Retried only when the API deduplicates by an idempotency key (the same key on every
  attempt); otherwise ``unknown`` and never resent behind the caller's back.

A provider with a batch endpoint (``batch_path``: Postmark, Resend) takes up to ``batch_limit``
messages in one request from a bulk run (:meth:`ApiTransport.send_batch`); the rules above
apply to the request, so a lost reply makes every message of it ``unknown``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx

from fluxmail.errors import AuthenticationFailed, ConfigurationError, DeliveryError, MessageError
from fluxmail.redaction import redact_words
from fluxmail.results import RecipientStatus
from fluxmail.transport.api.client import Clients, Exchange, exchange
from fluxmail.transport.api.http import ApiReply, ApiRequest
from fluxmail.transport.api.outcomes import Kind, Verdict, judge, judge_batch, reply_text
from fluxmail.transport.base import Lane, Transport
from fluxmail.transport.mail import Mail, TransportResult

if TYPE_CHECKING:
    from fluxmail.config.resolve import Config

__all__ = ["ApiLane", "ApiReply", "ApiRequest", "ApiTransport"]

MAX_BACKOFF = 300.0  # the longest wait between attempts, Retry-After included, without a deadline


class ApiTransport(Transport):
    """Delivery through a provider's HTTP API; subclasses implement the mapping."""

    name: ClassVar[str]
    default_base_url: ClassVar[str]
    # A header the API deduplicates requests by (Resend's Idempotency-Key): then a request
    # that may have reached the provider is retried with the same key.
    idempotency_header: ClassVar[str | None] = None
    requires_key: ClassVar[bool] = True  # FLUXMAIL_API_KEY (or the URL's key) is needed
    batch_path: ClassVar[str | None] = None  # the batch endpoint, taking a JSON array
    batch_limit: ClassVar[int] = 1  # messages per batch request
    batch_bytes: ClassVar[int] = 40_000_000  # wire bytes per batch request, under the API's cap

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        key = config.api_key.get_secret_value() if config.api_key is not None else ""
        if self.requires_key and not key:
            raise ConfigurationError(
                f"the {self.name} API needs a key: set FLUXMAIL_API_KEY (or FLUXMAIL_API_KEY_FILE),"
                f" or put it in the URL: {self.name}+api://KEY@default",
                code="credentials_incomplete",
            )
        self.secrets: tuple[str, ...] = (key,) if key else ()
        self._clients: Clients = Clients(
            config.https_context(), config.connect_timeout, config.command_timeout
        )

    @classmethod
    def from_config(cls, config: Config) -> ApiTransport:
        return cls(config)

    # -- what a provider implements ------------------------------------------------------------
    def base_url(self) -> str:
        """FLUXMAIL_API_BASE_URL / ``?endpoint=``, else the provider's own."""
        return (self.config.api_base_url or self.default_base_url).rstrip("/")

    @property
    def api_key(self) -> str:
        return self.config.api_key.get_secret_value() if self.config.api_key else ""

    @abstractmethod
    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        """The request for ``mail``; a MessageError for a field the API cannot carry."""

    @abstractmethod
    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        """The provider's id for the message, from a 2xx reply."""

    def error_text(self, reply: ApiReply) -> str:
        """The API's own words for a non-2xx reply (override for the provider's error body)."""
        return reply_text(reply.json(), reply.body)

    def recipients(self, mail: Mail, reply: ApiReply) -> Mapping[str, RecipientStatus] | None:
        """Per-recipient outcomes when the API reports them; None: every one accepted."""
        return None

    def classify(self, reply: ApiReply) -> Kind | None:
        """What a non-2xx reply means when its status alone misleads; None: the status rules."""
        return None

    def batchable(self, planned: ApiRequest) -> bool:
        """Whether this message's request may go in a batch (else it is sent alone)."""
        return True

    def split_batch(self, mails: Sequence[Mail], reply: ApiReply) -> list[ApiReply] | None:
        """Each message's own reply out of a 2xx batch reply; None when it gives no such list."""
        return None

    async def sign(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> dict[str, str]:
        """Headers to add just before sending (a signature, a fresh bearer token)."""
        return {}

    async def probe(self) -> str:
        """For ``fluxmail check``: a harmless authenticated call, described in one line."""
        raise ConfigurationError(
            f"the {self.name} API has no harmless call to check the key with; send a test "
            "message instead (fluxmail send --to you@example.com)",
            code="no_probe",
        )

    # -- the send template ---------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``<provider>+api://host[:port]``, no credentials: the results' ``transport``."""
        return f"{self.name}+api://{urlsplit(self.base_url()).netloc}"

    def idempotency_key(self, mail: Mail) -> str | None:
        """The message's Message-ID (without ``<>``): the same on every attempt and resend."""
        if self.idempotency_header is None:
            return None
        return mail.message.message_id.strip("<>")

    def scrub(self, text: str) -> str:
        """``text`` without any secret of this transport (an API may echo what it was sent)."""
        return redact_words(text, self.secrets)

    async def send(self, mail: Mail) -> TransportResult:
        started = time.monotonic()
        key = self.idempotency_key(mail)
        planned = self._keyed(self.request(mail, key), key)  # MessageError: nothing was sent
        [result] = await self._run([mail], planned, started, batched=False)
        return result

    async def send_batch(self, mails: Sequence[Mail]) -> list[TransportResult | MessageError]:
        """One result per message: batchable ones in batch requests, the others alone."""
        done: dict[int, TransportResult | MessageError] = {}
        batch: list[tuple[int, ApiRequest]] = []
        for n, mail in enumerate(mails):
            try:
                planned = self.request(mail, self.idempotency_key(mail))
            except MessageError as exc:
                done[n] = exc
                continue
            if self.batch_path is not None and self.batchable(planned):
                batch.append((n, planned))
        for chunk in self._chunks(mails, batch):
            got = await self._batch([mails[n] for n, _ in chunk], [p for _, p in chunk])
            done.update(zip((n for n, _ in chunk), got, strict=True))
        for n, mail in enumerate(mails):
            if n not in done:
                try:
                    done[n] = await self.send(mail)
                except MessageError as exc:
                    done[n] = exc
        return [done[n] for n in range(len(mails))]

    def _chunks(
        self, mails: Sequence[Mail], batch: list[tuple[int, ApiRequest]]
    ) -> list[list[tuple[int, ApiRequest]]]:
        """Requests of at most batch_limit messages and batch_bytes; a lone one goes alone."""
        chunks: list[list[tuple[int, ApiRequest]]] = [[]]
        size = 0
        for n, planned in batch:
            weight = len(mails[n].data)
            if chunks[-1] and (
                len(chunks[-1]) >= self.batch_limit or size + weight > self.batch_bytes
            ):
                chunks.append([])
                size = 0
            chunks[-1].append((n, planned))
            size += weight
        return [c for c in chunks if len(c) > 1]

    async def _batch(self, mails: list[Mail], plans: list[ApiRequest]) -> list[TransportResult]:
        started = time.monotonic()
        assert self.batch_path is not None
        key = None
        if self.idempotency_header is not None:  # the same batch, the same key on each attempt
            ids = "\n".join(m.message.message_id for m in mails).encode()
            key = "batch-" + hashlib.sha256(ids).hexdigest()
        headers = {k: v for k, v in plans[0].headers.items() if k != self.idempotency_header}
        planned = ApiRequest("POST", self.batch_path, headers, json=[p.json for p in plans])
        return await self._run(mails, self._keyed(planned, key), started, batched=True)

    def _keyed(self, planned: ApiRequest, key: str | None) -> ApiRequest:
        if key is None or self.idempotency_header is None:
            return planned
        return replace(planned, headers={**planned.headers, self.idempotency_header: key})

    async def _run(
        self, mails: list[Mail], planned: ApiRequest, started: float, *, batched: bool
    ) -> list[TransportResult]:
        client = self._clients.acquire()
        try:
            return await self._deliver(client, mails, planned, started, batched)
        finally:
            await self._clients.release(keep=self.held)

    async def _deliver(
        self, client: httpx.AsyncClient, mails: list[Mail], planned: ApiRequest, started: float,
        batched: bool,
    ) -> list[TransportResult]:  # fmt: skip
        rounds: list[list[Verdict]] = []  # per attempt, one verdict per message
        while True:
            t0, wall = time.monotonic(), time.time()
            try:
                built = await self._build(client, planned)
            except DeliveryError as exc:  # sign() failed (credentials, a token): nothing sent
                done = Exchange(error=exc)
            else:
                done = await exchange(client, built, self.endpoint)
            at = (done, wall, time.monotonic() - t0, len(rounds) + 1)
            verdicts = judge_batch(self, mails, *at) if batched else [judge(self, mails[0], *at)]
            rounds.append(verdicts)
            retry = all(v.retry for v in verdicts)
            wait = self._wait(verdicts[0], len(rounds), started) if retry else None
            if wait is None:
                elapsed = time.monotonic() - started
                return [
                    replace(v.result([r[n] for r in rounds], elapsed), transport=self.endpoint)
                    for n, v in enumerate(verdicts)
                ]
            await asyncio.sleep(wait)

    def _wait(self, verdict: Verdict, attempts: int, started: float) -> float | None:
        """Seconds before the next attempt; None when this verdict is the last word."""
        if not verdict.retry or attempts > self.config.max_retries:
            return None
        base = min(self.config.retry_delay * (2 ** (attempts - 1)), MAX_BACKOFF)
        wait = random.uniform(base / 2, base)  # exponential backoff with jitter
        if verdict.retry_after is not None:
            wait = max(wait, verdict.retry_after)
        deadline = self.config.retry_deadline
        if deadline is not None and time.monotonic() - started + wait > deadline:
            return None
        return None if wait > MAX_BACKOFF else wait

    async def _build(self, client: httpx.AsyncClient, planned: ApiRequest) -> httpx.Request:
        request = client.build_request(
            planned.method,
            self.base_url() + planned.path,
            headers=dict(planned.headers),
            content=planned.content,
            json=planned.json,
            data=_form(planned.data),
            files=list(planned.files) or None,
        )
        body = request.read()
        extra = await self.sign(request.method, str(request.url), dict(request.headers), body)
        request.headers.update(extra)
        return request

    async def call(self, planned: ApiRequest) -> ApiReply:
        """One request, no retries (``probe``); a DeliveryError when no reply came."""
        client = self._clients.acquire()
        try:
            done = await exchange(client, await self._build(client, planned), self.endpoint)
        finally:
            await self._clients.release(keep=self.held)
        if done.response is None:
            assert done.error is not None
            raise done.error
        response = done.response
        headers = {k.lower(): v for k, v in response.headers.items()}
        return ApiReply(response.status_code, headers, response.content)

    def refused_probe(self, reply: ApiReply) -> DeliveryError:
        """The error ``probe`` raises for a non-2xx reply (the API's own words, no secret)."""
        text = self.scrub(self.error_text(reply))[:500]
        said = f"{self.name} answered HTTP {reply.status}: {text}"
        if reply.status in (401, 403):
            return AuthenticationFailed(f"{said}. Check FLUXMAIL_API_KEY", http_status=reply.status)
        return DeliveryError(said, code="api_rejected", transient=False, http_status=reply.status)

    def lane(self) -> ApiLane:
        return ApiLane(self)

    async def aclose(self) -> None:
        await self._clients.aclose()


class ApiLane(Lane):
    """A bulk worker's lane: keeps this loop's client (and its pooled connections) open for
    the run; each message goes through the transport's send template."""

    def __init__(self, transport: ApiTransport) -> None:
        super().__init__(transport)
        self._api = transport
        self._holding = False
        self.batch_size = transport.batch_limit if transport.batch_path is not None else 1

    async def ready(self) -> None:
        if not self._holding:
            self._api._clients.acquire()
            self._holding = True

    async def send(self, mail: Mail, then: Mail | None = None) -> TransportResult:
        await self.ready()  # the pipeline calls ready() only when it marks records first
        return await self._api.send(mail)

    async def send_batch(self, mails: Sequence[Mail]) -> list[TransportResult | MessageError]:
        await self.ready()
        return await self._api.send_batch(mails)

    async def close(self) -> None:
        if self._holding:
            self._holding = False
            await self._api._clients.release(keep=self._api.held)


def _form(data: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> dict[str, Any] | None:
    """httpx takes repeated form fields (Mailgun's ``to``) as lists under one name."""
    if data is None or isinstance(data, Mapping):
        return dict(data) if data is not None else None
    grouped: dict[str, list[str]] = {}
    for name, value in data:
        grouped.setdefault(name, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}
