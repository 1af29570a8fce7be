"""``failover(a b c)`` tries the members in order; ``roundrobin(a b c)`` starts each message (and
each bulk lane) at the next member and fails over from there. A member is any transport, nested
composites included; each has a circuit breaker (``breaker.py``), and ``rules.handoff`` decides
whether a message may move on."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fluxmail.config.resolve import Config
from fluxmail.errors import ConfigurationError, ConnectionFailed, FluxMailException, MessageError
from fluxmail.results import RecipientStatus
from fluxmail.transport.base import Lane, Transport
from fluxmail.transport.failover.breaker import Breaker
from fluxmail.transport.failover.rules import handoff, member_failed, merge
from fluxmail.transport.mail import Mail, TransportResult
from fluxmail.transport.registry import make_transport

__all__ = ["TRANSPORT", "FailoverTransport", "Member"]

Send = Callable[["Member", Mail], Awaitable[TransportResult]]


@dataclass
class Member:
    endpoint: str  # the member's URL without credentials
    transport: Transport
    breaker: Breaker


class FailoverTransport(Transport):
    """Both composites (the registry maps ``roundrobin`` to this module); ``kind`` decides."""

    name = "failover"

    def __init__(
        self, kind: str, members: Sequence[tuple[str, Transport]], *, cooldown: float = 30.0
    ) -> None:
        super().__init__()
        if not members:
            raise ConfigurationError(f"{kind}() needs at least one member", code="invalid_config")
        self.kind = kind
        self.members = [Member(e, t, Breaker(cooldown)) for e, t in members]
        self.endpoint = f"{kind}({' '.join(e for e, _ in members)})"
        self._turns = itertools.count()
        self._turn_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> FailoverTransport:
        members = [(m.endpoint, make_transport(m)) for m in config.members]
        return cls(config.backend, members, cooldown=config.failover_cooldown)

    def order(self) -> list[Member]:
        """The members in the order the next message (or lane) tries them."""
        if self.kind != "roundrobin":
            return list(self.members)
        with self._turn_lock:
            start = next(self._turns) % len(self.members)
        return self.members[start:] + self.members[:start]

    async def send(self, mail: Mail) -> TransportResult:
        return await route(self.order(), mail, self.endpoint, _send)

    def hold(self, delta: int) -> int:
        for member in self.members:  # `with mailer:` keeps every member's connections open
            member.transport.hold(delta)
        return super().hold(delta)

    def lane(self) -> FailoverLane:
        return FailoverLane(self, self.order())

    async def aclose(self) -> None:
        done = await asyncio.gather(
            *(m.transport.aclose() for m in self.members), return_exceptions=True
        )
        for outcome in done:  # every member closed first, then the first failure raised
            if isinstance(outcome, BaseException):
                raise outcome


async def _send(member: Member, mail: Mail) -> TransportResult:
    return await member.transport.send(mail)


async def route(
    members: Sequence[Member],
    mail: Mail,
    endpoint: str,
    send: Send,
    *,
    merged: TransportResult | None = None,
    granted: bool = False,
) -> TransportResult:
    """Try the members in order, skipping resting ones, while ``handoff`` allows it.
    ``merged``: what earlier members did with ``mail`` (its recipients are the rest);
    ``granted``: the first member's breaker already let this message through."""
    current = mail
    for n, member in enumerate(members):
        if not (granted and n == 0) and not member.breaker.allow():
            continue
        try:
            result = await send(member, current)
        except BaseException:
            member.breaker.abandon()
            raise
        member.breaker.record(member_failed(result))
        # A nested composite names its own member (the server that took it): keep that.
        result = dataclasses.replace(result, transport=result.transport or member.endpoint)
        merged = merge(merged, result)
        rest = handoff(result)
        if not rest:
            return merged
        envelope = dataclasses.replace(mail.envelope, recipients=rest)
        current = Mail(envelope, mail.data, mail.message)
    return merged if merged is not None else _resting(mail, members, endpoint)


def _resting(mail: Mail, members: Sequence[Member], endpoint: str) -> TransportResult:
    """Every member rests after a failure: fail fast, nothing was sent (a circuit breaker)."""
    cooldown = max(m.breaker.cooldown for m in members)
    error = ConnectionFailed(
        f"every member of {endpoint} failed recently and rests (FLUXMAIL_FAILOVER_COOLDOWN="
        f"{cooldown:g} s); nothing was sent, try again later",
        code="members_resting",
        stage="connect",
    )
    recipients = {
        a: RecipientStatus(a, "deferred", text=error.message) for a in mail.envelope.recipients
    }
    return TransportResult("failed", recipients, error=error, transport=endpoint)


class FailoverLane(Lane):
    """A bulk worker's path: the members' own lanes (opened on first use), the first member of
    its order preferred, failing over inside the lane. Round-robin lanes start at different
    members, so a run spreads its connections."""

    def __init__(self, transport: FailoverTransport, members: list[Member]) -> None:
        super().__init__(transport)
        self._endpoint = transport.endpoint
        self._members = members
        self._lanes: dict[int, Lane] = {}
        first = self._lane(members[0])
        self.primes, self.batch_size = first.primes, first.batch_size

    def _lane(self, member: Member) -> Lane:
        key = id(member)
        if key not in self._lanes:
            self._lanes[key] = member.transport.lane()
        return self._lanes[key]

    async def ready(self) -> None:
        """Warm the first member that is not resting and connects; raise the last failure."""
        failure: FluxMailException | None = None
        for member in self._members:
            if not member.breaker.allow():
                continue
            try:
                await self._lane(member).ready()
            except FluxMailException as exc:
                member.breaker.record(True)
                failure = exc
                continue
            except BaseException:
                member.breaker.abandon()
                raise
            member.breaker.record(False)  # a probe that connected and logged in closes it
            return
        if failure is not None:
            raise failure

    async def send(self, mail: Mail, then: Mail | None = None) -> TransportResult:
        via = functools.partial(self._via, then=then) if then is not None else self._via
        return await route(self._members, mail, self._endpoint, via)

    async def _via(self, member: Member, mail: Mail, then: Mail | None = None) -> TransportResult:
        return await self._lane(member).send(mail, then)

    async def send_batch(self, mails: Sequence[Mail]) -> list[TransportResult | MessageError]:
        """The batch goes to the first member that is not resting, in its batch requests; a
        message that member did not take (``handoff``) fails over alone to the members after
        it, as ``send`` would. A member without batches takes the messages one by one."""
        at = next((n for n, m in enumerate(self._members) if m.breaker.allow()), None)
        if at is None:
            return [_resting(mail, self._members, self._endpoint) for mail in mails]
        member = self._members[at]
        lane = self._lane(member)
        if lane.batch_size <= 1:
            return [
                await self._alone(self._members[at:], mail, granted=n == 0)
                for n, mail in enumerate(mails)
            ]
        try:
            got = await lane.send_batch(mails)
        except BaseException:
            member.breaker.abandon()
            raise
        done: list[TransportResult | MessageError] = []
        for mail, each in zip(mails, got, strict=True):
            if isinstance(each, MessageError):
                done.append(each)
                continue
            member.breaker.record(member_failed(each))
            each = dataclasses.replace(each, transport=each.transport or member.endpoint)
            rest = handoff(each)
            if rest:
                moved = Mail(dataclasses.replace(mail.envelope, recipients=rest), mail.data,
                             mail.message)  # fmt: skip
                done.append(await self._alone(self._members[at + 1 :], moved, merged=each))
            else:
                done.append(each)
        return done

    async def _alone(
        self,
        members: Sequence[Member],
        mail: Mail,
        *,
        merged: TransportResult | None = None,
        granted: bool = False,
    ) -> TransportResult | MessageError:
        """One message of a batch through ``members``; a MessageError is that message's alone."""
        try:
            return await route(
                members, mail, self._endpoint, self._via, merged=merged, granted=granted
            )
        except MessageError as exc:
            return exc

    async def close(self) -> None:
        lanes, self._lanes = list(self._lanes.values()), {}
        done = await asyncio.gather(*(lane.close() for lane in lanes), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome


TRANSPORT = FailoverTransport
