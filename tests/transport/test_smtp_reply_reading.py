"""Reply parsing of the SMTP client protocol: whatever way the bytes are cut into reads, the
same replies come out, in order; a malformed or endless reply fails the connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from fluxmail.transport.smtp.protocol import BadReply, PipelinedProtocol, RawReply

STREAM = (
    b"250 2.1.0 Ok\r\n"
    b"250-first line\r\n250-  second line  \r\n250 last\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
    b"250\r\n"  # a bare code
    b"550 5.1.1 <\xc3\xa9@example.com> unknown\n"  # LF only, UTF-8 text
)
EXPECTED = [
    RawReply(250, "2.1.0 Ok"),
    RawReply(250, "first line\nsecond line\nlast"),
    RawReply(354, "End data with <CR><LF>.<CR><LF>"),
    RawReply(250, ""),
    RawReply(550, "5.1.1 <\u00e9@example.com> unknown"),
]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _feed(proto: PipelinedProtocol, *chunks: bytes) -> None:
    """As the event loop does for a BufferedProtocol: into its buffer, then buffer_updated."""
    for chunk in chunks:
        buffer = proto.get_buffer(len(chunk))
        buffer[: len(chunk)] = chunk
        proto.buffer_updated(len(chunk))


def _replies(proto: PipelinedProtocol) -> list[RawReply]:
    found = []
    while (reply := proto.next_reply()) is not None:
        found.append(reply)
    return found


def test_every_cut_of_the_stream_gives_the_same_replies(loop: asyncio.AbstractEventLoop) -> None:
    for cut in range(1, len(STREAM)):
        for second in (cut, min(cut + 7, len(STREAM))):  # two and three reads
            proto = PipelinedProtocol(loop)
            _feed(proto, STREAM[:cut], STREAM[cut:second], STREAM[second:])
            assert _replies(proto) == EXPECTED, (cut, second)
            assert not proto.lost


def test_one_byte_at_a_time(loop: asyncio.AbstractEventLoop) -> None:
    proto = PipelinedProtocol(loop)
    _feed(proto, *(STREAM[i : i + 1] for i in range(len(STREAM))))
    assert _replies(proto) == EXPECTED


@pytest.mark.parametrize("line", [b"25 short\r\n", b"abc text\r\n", b"250xtext\r\n"])
def test_a_malformed_line_fails_the_connection(
    loop: asyncio.AbstractEventLoop, line: bytes
) -> None:
    proto = PipelinedProtocol(loop)
    _feed(proto, b"250 ok\r\n" + line)
    assert proto.lost and _replies(proto) == [RawReply(250, "ok")]

    async def read() -> None:
        await proto.read_response(timeout=1)

    with pytest.raises(BadReply):
        loop.run_until_complete(read())


def test_an_endless_reply_fails_the_connection(loop: asyncio.AbstractEventLoop) -> None:
    """Continuation lines that never end, or one line that never ends: memory stays bounded."""
    for chunks in ([b"250-" + b"x" * 1000 + b"\r\n"] * 100, [b"x" * 10_000] * 10):
        proto = PipelinedProtocol(loop)
        _feed(proto, *chunks)
        assert proto.lost


def test_a_wait_times_out_and_a_late_reply_still_counts(loop: asyncio.AbstractEventLoop) -> None:
    proto = PipelinedProtocol(loop)

    async def scenario() -> RawReply:
        with pytest.raises(TimeoutError):
            await proto.read_response(timeout=0.05)
        loop.call_later(0.05, _feed, proto, b"250 late\r\n")
        return await proto.read_response(timeout=5)

    assert loop.run_until_complete(scenario()) == RawReply(250, "late")
