"""A SendResult's JSON columns (recipients, attempts, final_reply), written field by field.

The same text as ``rows.dumps_plain`` of each dataclass's fields, which a bulk run pays for
three times per message: the C encoder walks a dict per object (and reading ``__dict__``
makes one for each), where a format string of the known fields costs about half. Values of
an unexpected type go through the encoder, so the text stays what ``json`` writes;
tests/audit/test_audit_bulk_shortcuts.py pins the field lists to the dataclasses.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fluxmail.results import Attempt, RecipientStatus, ServerReply

__all__ = ["attempts_json", "recipients_json", "reply_json"]

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_string = json.encoder.encode_basestring  # ensure_ascii=False's, as _encode uses


def _text(value: Any) -> str:
    if type(value) is str:
        return _string(value)
    return "null" if value is None else _encode(value)


def _number(value: Any) -> str:
    # repr() is json's form of an int or a finite float; NaN, bools and the rest: the encoder's.
    kind = type(value)
    if kind is int or (kind is float and value - value == 0.0):
        return repr(value)
    return "null" if value is None else _encode(value)


def recipients_json(recipients: Mapping[str, RecipientStatus]) -> str:
    """``{address: {address, status, code, enhanced_status, text}}``."""
    return "{" + ",".join([_recipient(a, r) for a, r in recipients.items()]) + "}"


def _recipient(address: str, r: RecipientStatus) -> str:
    return (
        f'{_text(address)}:{{"address":{_text(r.address)},"status":{_text(r.status)},'
        f'"code":{_number(r.code)},"enhanced_status":{_text(r.enhanced_status)},'
        f'"text":{_text(r.text)}}}'
    )


def attempts_json(prior: Sequence[Any], attempts: Iterable[Attempt]) -> str:
    """The earlier claims' attempts (stored dicts) and these, numbered on from them."""
    done = [_encode(p) for p in prior] if prior else []
    done += [_attempt(number, a) for number, a in enumerate(attempts, len(prior) + 1)]
    return "[" + ",".join(done) + "]"


def _attempt(number: int, a: Attempt) -> str:
    return (
        f'{{"number":{number},"started_at":{_number(a.started_at)},'
        f'"elapsed":{_number(a.elapsed)},"error":{_text(a.error)},'
        f'"error_code":{_text(a.error_code)},"smtp_code":{_number(a.smtp_code)},'
        f'"smtp_text":{_text(a.smtp_text)}}}'
    )


def reply_json(reply: ServerReply | None) -> str | None:
    if reply is None:
        return None
    return (
        f'{{"code":{_number(reply.code)},"text":{_text(reply.text)},'
        f'"enhanced_status":{_text(reply.enhanced_status)}}}'
    )
