"""Property tests: whatever is passed to a public entry point, only a FluxMailException escapes.

Arbitrary values (None, numbers, NaN, bools, bytes, huge strings, strings with CR/LF/NUL or lone
surrogates, nested containers, foreign objects) are thrown at every argument of
``mailer.create()``, of ``FluxMail(...)`` / ``FluxMail.from_url()`` and of the ``send_many()``
options. Each call must either succeed or raise a FluxMailException subclass (MessageError for
the message, ConfigurationError for settings and options), never TypeError, ValueError,
AttributeError or pydantic's ValidationError. Sends go to the memory backend (no network); a
few examples against a real server show that nothing is sent for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxmail import (
    AuditError,
    BulkSender,
    ConfigurationError,
    FluxMail,
    FluxMailException,
    MessageError,
)
from fluxmail.config.resolve import EmailInstance
from fluxmail.config.settings import FluxMailSettings
from fluxmail.message.addresses import Address
from fluxmail.message.model import Attachment
from fluxmail.testing import outbox
from tests.support.mailing import mailer_for
from tests.support.servers import SMTPTestServer

# Deterministic in CI (no example database, a fixed seed) and a few seconds per test.
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class _Opaque:
    """An object of a type fluxmail knows nothing about."""

    def __repr__(self) -> str:
        return "<opaque>"


_TRICKY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\r\n",
        "\x00",
        "a\r\nBcc: eve@example.com",
        "X-A: b",
        "ann@example.com",
        "Ann <ann@example.com>",
        "https://example.com/u",
        "<id@example.com>",
        "high",
        "memory",
        "smtp",
        "true",
        "-1",
        "nan",
        "1e999",
        "127.0.0.1",
        "[::1]:2525",
        "\ud800",
        "é" * 80,
        "x" * 20_000,  # longer than any header line, file name or path (kept under
        # hypothesis's 30 kB limit for printing a failing example)
    ]
)
_FOREIGN = st.sampled_from(
    [
        object(),
        _Opaque(),
        Path("."),
        Path("/nonexistent/x"),
        datetime(2024, 1, 2, tzinfo=timezone.utc),
        complex(1, 2),
        Decimal("NaN"),
        Decimal("1.5"),
        Address("ann@example.com"),
        Attachment("a.txt", b"x", "text/plain"),
        EmailInstance("127.0.0.1"),
        ValueError("boom"),
        len,
        range(3),
        bytearray(b"x"),
        frozenset({"a"}),
        ...,
    ]
)
_HASHABLE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    _TRICKY_TEXT,
    st.binary(max_size=8),
)
_SCALAR = st.one_of(
    _HASHABLE,
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1, 0, 1, 2**63, True, False]),
    st.text(),
    st.binary(),
    _FOREIGN,
)
ANY = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_HASHABLE, inner, max_size=3),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
        st.frozensets(_HASHABLE, max_size=3),
    ),
    max_leaves=8,
)


def _accepts_or_raises(call: Callable[[], object], expected: type[FluxMailException]) -> object:
    """Run ``call``; a FluxMailException of the expected family is fine, anything else fails."""
    try:
        return call()
    except expected:
        return None
    except FluxMailException as exc:  # pragma: no cover - reported with its type
        pytest.fail(f"expected {expected.__name__}, got {exc!r}")


# -- mailer.create() -------------------------------------------------------------------------

CREATE_BASE: dict[str, Any] = {
    "subject": "Hello",
    "recipients": ["ann@example.com"],
    "body": "<p>Hi Ann</p>",
    "sender": "Shop <shop@example.com>",
}
CREATE_ARGS = [name for name in inspect.signature(FluxMail.create).parameters if name != "self"]


@pytest.fixture(scope="module")
def memory_mailer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxMail]:
    """The memory backend with a SQLite audit store: what create() accepts must be storable."""
    audit_dir = tmp_path_factory.mktemp("audit")
    mailer = FluxMail(
        object_type="memory", sender="shop@example.com", audit=True, audit_dir=str(audit_dir)
    )
    yield mailer
    mailer.close()


def _create_and_send(mailer: FluxMail, kwargs: dict[str, Any]) -> None:
    """create(); when it succeeds, render, audit and send through the memory backend too."""
    try:
        draft = mailer.create(**kwargs)
    except MessageError:
        return
    draft.as_bytes()
    try:
        result = draft.send()
    except AuditError as exc:
        # The same drawn key with other drawn content: the store's documented answer.
        assert exc.code == "idempotency_conflict"
        return
    assert result.status == "sent"


def test_create_arguments_are_all_covered() -> None:
    """The property tests below reach every parameter of create(), upstream names included."""
    assert {"subject", "recipients", "body", "sender", "html_body", "plain_body"} <= set(
        CREATE_ARGS
    )
    assert len(CREATE_ARGS) == 22  # + template, context


@pytest.mark.parametrize("name", CREATE_ARGS)
@SETTINGS
@given(value=ANY)
def test_create_refuses_any_bad_argument_with_message_error(
    memory_mailer: FluxMail, name: str, value: object
) -> None:
    """Any value for any create() argument builds a message or raises MessageError."""
    outbox.clear()
    _create_and_send(memory_mailer, {**CREATE_BASE, name: value})


@SETTINGS
@given(data=st.data())
def test_create_with_several_bad_arguments(memory_mailer: FluxMail, data: st.DataObject) -> None:
    """Several arguments replaced at once (e.g. html_body with inline_images) behave the same."""
    names = data.draw(st.lists(st.sampled_from(CREATE_ARGS), min_size=2, max_size=5, unique=True))
    kwargs = {**CREATE_BASE, "html_body": True}
    for name in names:
        kwargs[name] = data.draw(ANY, label=name)
    outbox.clear()
    _create_and_send(memory_mailer, kwargs)


def test_send_refuses_a_dry_run_that_is_not_a_bool(memory_mailer: FluxMail) -> None:
    """send(dry_run="false") would have been a dry run (truthy): it is refused instead."""
    draft = memory_mailer.create(**CREATE_BASE)
    outbox.clear()
    with pytest.raises(ConfigurationError) as caught:
        draft.send(dry_run="false")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_option" and "dry_run" in str(caught.value)
    assert len(outbox) == 0


# -- FluxMail(...) ---------------------------------------------------------------------------

_UPSTREAM = {"type": "object_type", "tls": "use_tls", "ssl": "use_ssl"}
MAILER_ARGS = sorted(
    {_UPSTREAM.get(name, name) for name in FluxMailSettings.model_fields}
    | {"logger", "log_level", "ssl_context", "env_file"}
)
# A logger of its own: a log_level= that happens to be valid must not change fluxmail's logger.
_LOGGER = logging.getLogger("fluxmail.tests.input_properties")
MAILER_BASES: dict[str, dict[str, Any]] = {
    "memory": {"object_type": "memory", "sender": "shop@example.com", "logger": _LOGGER},
    # Built, never connected: construction does no network traffic.
    "smtp": {
        "host": "127.0.0.1",
        "port": 2525,
        "sender": "shop@example.com",
        "audit": False,
        "logger": _LOGGER,
    },
}


def _build_mailer(kwargs: dict[str, Any]) -> None:
    """FluxMail(**kwargs); when it is built on the memory backend, send one message too."""
    try:
        mailer = FluxMail(**kwargs)
    except ConfigurationError:
        return
    try:
        if mailer.config.backend == "memory":
            _accepts_or_raises(lambda: mailer.create(**CREATE_BASE).send(), FluxMailException)
        repr(mailer)
        mailer.describe()
    finally:
        mailer.close()


def test_mailer_arguments_are_all_covered() -> None:
    """Every setting is reachable by its argument name, upstream names included."""
    assert {"object_type", "host", "use_tls", "use_ssl", "ssl_context", "logger"} <= set(
        MAILER_ARGS
    )
    assert not {"type", "tls", "ssl"} & set(MAILER_ARGS)


@pytest.mark.parametrize("base", sorted(MAILER_BASES))
@pytest.mark.parametrize("name", MAILER_ARGS)
@settings(SETTINGS, max_examples=60)
@given(value=ANY)
def test_mailer_refuses_any_bad_argument_with_configuration_error(
    name: str, base: str, value: object
) -> None:
    """Any value for any FluxMail(...) keyword builds a mailer or raises ConfigurationError."""
    _build_mailer({**MAILER_BASES[base], name: value})


@SETTINGS
@given(data=st.data())
def test_mailer_with_several_bad_arguments(data: st.DataObject) -> None:
    """Several keywords replaced at once behave the same."""
    names = data.draw(st.lists(st.sampled_from(MAILER_ARGS), min_size=2, max_size=4, unique=True))
    kwargs = dict(MAILER_BASES[data.draw(st.sampled_from(sorted(MAILER_BASES)))])
    for name in names:
        kwargs[name] = data.draw(ANY, label=name)
    _build_mailer(kwargs)


@SETTINGS
@given(url=st.one_of(ANY, st.text().map(lambda text: "smtp://" + text)))
def test_from_url_refuses_any_bad_url_with_configuration_error(url: object) -> None:
    """FluxMail.from_url() with any value builds a mailer or raises ConfigurationError."""
    try:
        mailer = FluxMail.from_url(url, audit=False)  # type: ignore[arg-type]
    except ConfigurationError:
        return
    mailer.close()


# -- send_many() options -----------------------------------------------------------------------

BULK_OPTIONS = [
    "concurrency",
    "rate_limit",
    "rate_limit_per_connection",
    "max_messages_per_connection",
    "progress",
    "dry_run",
]
# Not "messages": the source given twice is Python's TypeError, raised before send_many runs
# (Hypothesis draws names from string literals in the code, so it does come up).
_OPTION_NAMES = st.one_of(
    st.sampled_from([*BULK_OPTIONS, "max_per_second", "retries"]),
    st.text().filter(lambda name: name != "messages"),
)


def _items() -> list[dict[str, Any]]:
    return [{**CREATE_BASE, "recipients": [f"r{n}@example.com"]} for n in range(3)]


def _run_bulk(mailer: FluxMail, messages: object, options: dict[str, Any]) -> None:
    """send_many() and send_many_async(): refused up front, or every message sent once."""
    outbox.clear()
    try:
        summary = mailer.send_many(messages, progress=False, **options).wait()  # type: ignore[arg-type]
    except ConfigurationError:
        assert len(outbox) == 0  # refused before anything was sent
        return
    dry = options.get("dry_run") is True
    assert summary.total == 3 and len(outbox) == (0 if dry else 3)


@pytest.mark.parametrize("name", BULK_OPTIONS)
@SETTINGS
@given(value=ANY)
def test_send_many_refuses_any_bad_option_with_configuration_error(
    memory_mailer: FluxMail, name: str, value: object
) -> None:
    """Any value for any send_many() option runs the batch or raises ConfigurationError."""
    options = {name: value}
    if name == "progress":
        with contextlib.suppress(ConfigurationError):
            memory_mailer.send_many(_items(), **options)
        return  # a valid progress= would draw a bar: checking that it is accepted is enough
    _run_bulk(memory_mailer, _items(), options)


@SETTINGS
@given(options=st.dictionaries(_OPTION_NAMES, ANY, max_size=3))
def test_send_many_with_any_options(memory_mailer: FluxMail, options: dict[str, Any]) -> None:
    """Unknown option names and several bad values at once raise ConfigurationError too."""
    options.pop("progress", None)
    _run_bulk(memory_mailer, _items(), options)


BATCH_OPTIONS = ["concurrency", "progress", "max_per_second", "on_success", "on_error"]


@pytest.mark.parametrize("name", BATCH_OPTIONS)
@settings(SETTINGS, max_examples=60)
@given(value=ANY)
def test_bulk_sender_refuses_any_bad_option_with_configuration_error(
    memory_mailer: FluxMail, name: str, value: object
) -> None:
    """BulkSender.send_batch / send_batch_async (upstream API): run, or ConfigurationError."""
    if name == "progress" and isinstance(value, bool):
        return  # valid: would draw a bar on a terminal; the flag check is proven above
    if name.startswith("on_") and callable(value):
        return  # a user's callback that raises is the user's error, passed on as is
    sender = BulkSender(memory_mailer)
    option: dict[str, Any] = {name: value}
    for face in ("sync", "async"):
        outbox.clear()
        if name == "max_per_second" and face == "sync":
            continue  # an option of send_batch_async only
        try:
            if face == "sync":
                report = sender.send_batch(_items(), **option)
            else:
                report = asyncio.run(sender.send_batch_async(_items(), **option))
        except ConfigurationError:
            assert len(outbox) == 0
            continue
        assert report["total"] == 3


@SETTINGS
@given(messages=ANY)
def test_send_many_refuses_a_source_that_is_not_iterable(
    memory_mailer: FluxMail, messages: object
) -> None:
    """send_many(<not an iterable of messages>) raises ConfigurationError up front."""
    if isinstance(messages, (list, tuple, frozenset, range)):
        return  # iterables: their items are per-message outcomes, not a bad argument
    with pytest.raises(ConfigurationError):
        memory_mailer.send_many(messages, progress=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"concurrency": 2.5}, "invalid_concurrency"),
        ({"concurrency": True}, "invalid_concurrency"),
        ({"concurrency": "4"}, "invalid_concurrency"),
        ({"rate_limit": "10"}, "invalid_rate_limit"),
        ({"rate_limit": math.inf}, "invalid_rate_limit"),
        ({"rate_limit_per_connection": [1]}, "invalid_rate_limit"),
        ({"max_messages_per_connection": "5"}, "invalid_option"),
        ({"max_messages_per_connection": 0}, "invalid_option"),
        ({"progress": "no"}, "invalid_option"),
        ({"dry_run": "false"}, "invalid_option"),
        ({"max_per_second": 5}, "invalid_option"),
    ],
)
def test_send_many_option_errors_name_the_option(
    memory_mailer: FluxMail, options: dict[str, Any], code: str
) -> None:
    """Each bad option raises its code, names the option, and nothing is sent."""
    outbox.clear()
    with pytest.raises(ConfigurationError) as caught:
        memory_mailer.send_many(_items(), **options)
    assert caught.value.code == code
    assert next(iter(options)) in caught.value.message
    assert len(outbox) == 0


# -- against a real server: bad input never reaches it ------------------------------------------

SERVER_BAD_CREATE = [
    {"headers": {"X-A": 123}},
    {"headers": "X-A: b"},
    {"metadata": {"score": math.nan}},
    {"references": 5},
    {"html_body": "no"},
]


@pytest.mark.parametrize("bad", SERVER_BAD_CREATE, ids=lambda bad: next(iter(bad)))
def test_bad_create_input_sends_nothing(
    smtp_server: Callable[..., SMTPTestServer], bad: dict[str, Any]
) -> None:
    """The property-test finds, against a real server: MessageError and no connection at all."""
    server = smtp_server()
    mailer = mailer_for(server)
    try:
        with pytest.raises(MessageError):
            mailer.create(**{**CREATE_BASE, **bad}).send()
        mailer.create(**CREATE_BASE).send()  # the same mailer still works
    finally:
        mailer.close()
    assert len(server.messages) == 1 and server.connections == 1


@pytest.mark.parametrize(
    "options",
    [{"concurrency": 2.5}, {"max_messages_per_connection": "5"}, {"dry_run": "false"}, {"x": 1}],
    ids=["concurrency", "max_messages_per_connection", "dry_run", "unknown"],
)
def test_bad_send_many_option_sends_nothing(
    smtp_server: Callable[..., SMTPTestServer], options: dict[str, Any]
) -> None:
    """A bad send_many() option is refused before any connection is made."""
    server = smtp_server()
    mailer = mailer_for(server)
    try:
        with pytest.raises(ConfigurationError):
            mailer.send_many(_items(), progress=False, **options).wait()
    finally:
        mailer.close()
    assert server.connections == 0 and server.messages == []


def test_header_values_must_be_strings_on_the_wire(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    """headers={"X-A": 123} used to go out as "X-A: 123"; now only str values are accepted."""
    server = smtp_server()
    mailer = mailer_for(server)
    try:
        with pytest.raises(MessageError) as caught:
            mailer.create(**CREATE_BASE, headers={"X-A": 123})  # type: ignore[dict-item]
        assert caught.value.code == "invalid_header_value" and "X-A" in caught.value.message
        mailer.create(**CREATE_BASE, headers={"X-A": "123"}).send()
    finally:
        mailer.close()
    [received] = server.messages
    assert b"\r\nX-A: 123\r\n" in received.data
