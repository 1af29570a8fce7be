"""The one HTTP client of the API transports: httpx, fluxmail's TLS policy, bounded waits.

One ``httpx.AsyncClient`` per event loop per transport (a client's connections belong to the
loop that opened them), closed by ``aclose()`` or when the last user of a loop lets go and the
mailer is not held. Every client verifies certificates with :func:`fluxmail.config.tls.
client_context` (the context SMTP uses), never follows a redirect (a 3xx could carry the API
key to another host), ignores the environment's proxies and ``.netrc`` (``trust_env=False``: no
credential fluxmail was not given), and waits at most ``connect_timeout`` for a connection and
``command_timeout`` for the API's reply.

:func:`exchange` sends one request and maps what went wrong to the one question the retry
rules need: did the request possibly reach the provider (``Exchange.maybe_sent``)?
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import weakref
from dataclasses import dataclass

import httpx

from fluxmail.errors import ConnectionFailed, DeliveryError, SendTimeout, TLSFailure

__all__ = ["Clients", "Exchange", "exchange"]


@dataclass
class _Entry:
    client: httpx.AsyncClient
    users: int = 0


class Clients:
    """The clients of one transport, one per event loop."""

    def __init__(self, context: ssl.SSLContext, connect: float, reply: float) -> None:
        self._context = context
        self._timeout = httpx.Timeout(connect=connect, read=reply, write=reply, pool=connect)
        self._lock = threading.Lock()
        self._entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Entry] = (
            weakref.WeakKeyDictionary()
        )

    def acquire(self) -> httpx.AsyncClient:
        """This loop's client (made on first use); pair with :meth:`release`."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.get(loop)
            if entry is None:
                entry = _Entry(self._client())
                self._entries[loop] = entry
            entry.users += 1
            return entry.client

    async def release(self, *, keep: bool) -> None:
        """One user is done; the client closes when nobody uses it and ``keep`` is False."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.get(loop)
            if entry is None:
                return
            entry.users -= 1
            if entry.users > 0 or keep:
                return
            self._entries.pop(loop, None)
        await entry.client.aclose()

    async def aclose(self) -> None:
        """Close this loop's client (``with mailer:`` ends, ``mailer.close()``)."""
        with self._lock:
            entry = self._entries.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.client.aclose()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=self._context,
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": _user_agent()},
        )


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"fluxmail/{version('fluxmail')}"
    except PackageNotFoundError:
        return "fluxmail"


@dataclass(frozen=True)
class Exchange:
    """One request's fate: the response, or the error and whether the API may have seen it."""

    response: httpx.Response | None = None
    error: DeliveryError | None = None
    maybe_sent: bool = False


async def exchange(client: httpx.AsyncClient, request: httpx.Request, where: str) -> Exchange:
    """Send ``request``; never raises for a network fault (the result says what happened)."""
    try:
        response = await client.send(request)
        await response.aread()
        return Exchange(response)
    except (httpx.ConnectTimeout, httpx.PoolTimeout):
        error: DeliveryError = SendTimeout(
            f"no connection to {where} within the connect timeout", stage="connect"
        )
        return Exchange(error=error)
    except httpx.ConnectError as exc:
        return Exchange(error=_connect_error(exc, where))
    except httpx.TimeoutException:
        # The body may have been read by the provider: the reply did not come in time.
        error = SendTimeout(
            f"{where} did not answer within the command timeout (FLUXMAIL_COMMAND_TIMEOUT); "
            "the request may have reached it",
            stage="end_of_data",
        )
        return Exchange(error=error, maybe_sent=True)
    except httpx.TransportError as exc:
        error = ConnectionFailed(
            f"the connection to {where} was lost before its reply ({type(exc).__name__}); "
            "the request may have reached it",
            code="connection_lost",
            stage="end_of_data",
        )
        return Exchange(error=error, maybe_sent=True)


def _connect_error(exc: httpx.ConnectError, where: str) -> DeliveryError:
    """TLS failures are permanent (a retry meets the same certificate); the rest transient."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return TLSFailure(
            f"the certificate of {where} is not trusted ({cause.verify_message}); trust a "
            "private CA with FLUXMAIL_CA_FILE",
            code="certificate_error",
            stage="tls",
        )
    if isinstance(cause, ssl.SSLError):
        return TLSFailure(
            f"TLS with {where} failed ({cause.reason or type(cause).__name__}); fluxmail "
            "requires TLS >= 1.2",
            code="tls_handshake_failed",
            stage="tls",
        )
    return ConnectionFailed(f"could not connect to {where}", stage="connect")
