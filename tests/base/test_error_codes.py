"""Every stable error code used in fluxmail/ is documented in docs/errors.md, with its class.

Codes are collected from the source, not from a list kept by hand:

- ``code="..."`` keyword arguments and ``code = "..."`` class attributes anywhere in fluxmail/;
- the table-driven codes of ``fluxmail/transport/smtp/replies.py`` (string constants shaped like
  a code, minus stage and function names) and of ``fluxmail/config/settings.py`` (``invalid_*``
  constants);
- the codes built as ``f"{stage}_refused"`` / ``f"{stage}_failed"`` in replies.py, expanded
  for the stages that reach them (``TEMPLATED``; the test fails if a template disappears).
"""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

import fluxmail.errors as errors
from fluxmail.cli.exit_codes import BY_CLASS, EXIT_CODES, exit_code
from fluxmail.transport.smtp.replies import STAGES, transient_reply
from tests.support import ROOT

PACKAGE = ROOT / "fluxmail"
PAGE = ROOT / "docs" / "errors.md"
SHAPE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# reply_error(): 5xx to the greeting or EHLO -> f"{stage}_refused"; RSET/NOOP -> f"{stage}_failed".
TEMPLATED = {"_refused": ("greeting", "ehlo"), "_failed": ("rset", "noop")}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _strings(node: ast.AST) -> set[str]:
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def keyword_and_class_codes() -> set[str]:
    """``code="x"`` in calls and ``code = "x"`` in class bodies, across the package."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.keyword) and node.arg == "code":
                found |= _strings(node.value)  # also `code="a" if ... else ...`
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    targets: list[ast.expr] = (
                        [item.target] if isinstance(item, ast.AnnAssign) else []
                    )
                    targets += item.targets if isinstance(item, ast.Assign) else []
                    if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                        found |= _strings(item)
    return found


def table_codes() -> set[str]:
    """Codes chosen from tables in transport/smtp/replies.py and config/settings.py."""
    smtp = _tree(PACKAGE / "transport" / "smtp" / "replies.py")
    functions = {n.name for n in ast.walk(smtp) if isinstance(n, ast.FunctionDef)}
    ignored = set(STAGES) | functions
    found = {s for s in _strings(smtp) if "_" in s and SHAPE.match(s) and s not in ignored}
    settings = _tree(PACKAGE / "config" / "settings.py")
    found |= {s for s in _strings(settings) if s.startswith("invalid_") and SHAPE.match(s)}
    return found


def templated_codes() -> set[str]:
    source = (PACKAGE / "transport" / "smtp" / "replies.py").read_text(encoding="utf-8")
    codes: set[str] = set()
    for suffix, stages in TEMPLATED.items():
        assert f'f"{{stage}}{suffix}"' in source, f"the {suffix} template moved; update TEMPLATED"
        codes |= {stage + suffix for stage in stages}
    return codes


def all_codes() -> set[str]:
    return keyword_and_class_codes() | table_codes() | templated_codes()


def documented() -> str:
    return PAGE.read_text(encoding="utf-8")


def test_collection_finds_the_known_codes() -> None:
    """The collector sees codes of every kind (guards against it silently finding nothing)."""
    codes = all_codes()
    known = ("invalid_config", "header_injection", "sender_refused", "invalid_boolean")
    for code in (*known, "auth_required", "smtputf8_required", "tls_handshake_failed"):
        assert code in codes
    assert "greeting_refused" in codes and "end_of_data" not in codes
    assert {"unknown_setting", "idempotency_needs_audit"} <= codes
    assert len(codes) > 60


@pytest.mark.parametrize("code", sorted(all_codes()))
def test_code_is_documented(code: str) -> None:
    """Each code used in the source appears in docs/errors.md as `code` in a table row."""
    rows = [line for line in documented().splitlines() if line.startswith(f"| `{code}` |")]
    assert rows, f"error code {code!r} is used in fluxmail/ but not documented in docs/errors.md"


def test_every_documented_code_exists() -> None:
    """docs/errors.md documents no code that the source no longer uses."""
    codes = all_codes()
    section = documented().split("## Configuration codes", 1)[1]
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE))
    assert listed - codes == set()


CLASSES = [n for n in errors.__all__ if isinstance(getattr(errors, n), type)]


@pytest.mark.parametrize("name", CLASSES)
def test_class_row_matches_code_and_exit(name: str) -> None:
    """The class table gives each class's real default code and CLI exit code."""
    cls = getattr(errors, name)
    row = next(line for line in documented().splitlines() if line.startswith(f"| `{name}` |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == f"`{cls.code}`" and cells[3] == str(exit_code(cls)), row


def test_delivery_rows_give_the_class_exit_code() -> None:
    """In the delivery table, each row's exit code is the one its class owns."""
    section = documented().split("## Delivery codes", 1)[1].split("## Other codes", 1)[0]
    for row in re.findall(r"^\| `[a-z0-9_]+` \|.*$", section, flags=re.MULTILINE):
        cells = [cell.strip().strip("`") for cell in row.strip("|").split("|")]
        assert str(exit_code(getattr(errors, cells[1]))) == cells[2], row


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (errors.SendTimeout, TimeoutError),
        (errors.SendTimeout, ConnectionError),
        (errors.ConnectionFailed, ConnectionError),
        (errors.ConfigurationError, ValueError),
        (errors.MessageError, ValueError),
    ],
)
def test_errors_have_the_standard_library_base(cls: type[Exception], base: type) -> None:
    """`except TimeoutError`, `ConnectionError` or `ValueError` catches the fluxmail error."""
    error = cls("the server did not answer", code="timeout")
    assert isinstance(error, base) and isinstance(error, errors.FluxMailException)
    with pytest.raises(base) as caught:
        raise error
    assert caught.value is error


@pytest.mark.parametrize("cls", [getattr(errors, n) for n in CLASSES])
def test_str_repr_args_and_pickle_stay_plain(cls: type[errors.FluxMailException]) -> None:
    """The stdlib bases leak nothing: str() is the message, repr() as before, pickling keeps all."""
    error = cls("Could not connect to smtp.example.com:587", field="host")
    assert str(error) == error.message == "Could not connect to smtp.example.com:587"
    assert repr(error) == f"{cls.__name__}({error.message!r}, code={cls.code!r})"
    assert error.args == (error.message,) and error.details == {"field": "host"}
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.code, copy.details) == (
        cls,
        str(error),
        cls.code,
        {"field": "host"},
    )


def test_stage_is_a_typed_attribute() -> None:
    """A delivery error names its failing stage as `.stage` (one of STAGES), not in details."""
    error = errors.Refused("no", code="sender_refused", stage="mail", smtp_code=550)
    assert error.stage == "mail" and "stage" not in error.details
    assert errors.DeliveryError("x").stage is None
    assert set(STAGES) == set(errors.STAGES) and "end_of_data" in STAGES


@pytest.mark.parametrize(
    ("cls", "transient"),
    [
        (errors.DeliveryError, True),
        (errors.ConnectionFailed, True),
        (errors.SendTimeout, True),
        (errors.TLSFailure, False),
        (errors.AuthenticationFailed, False),
        (errors.Refused, False),
        (errors.OutcomeUnknown, False),
    ],
)
def test_transient_follows_from_the_class(cls: type[errors.DeliveryError], transient: bool) -> None:
    """Without an override, `transient` is the kind of the error."""
    assert cls("x").transient is transient


def test_outcome_unknown_is_never_transient() -> None:
    """Even a caller that says otherwise cannot make an unknown outcome retryable."""
    assert errors.OutcomeUnknown("x", transient=True).transient is False


@pytest.mark.parametrize(
    ("code", "transient"),
    [(421, True), (451, True), (454, True), (500, False), (535, False), (554, False)],
)
def test_transient_reply_is_4xx(code: int, transient: bool) -> None:
    """RFC 5321 4.2.1: 4yz is a transient failure, 5yz a permanent one."""
    assert transient_reply(code) is transient


def test_exit_code_table_is_most_specific_first() -> None:
    """No class in the CLI table comes after one of its own bases (it would never be chosen)."""
    classes = [cls for cls, _ in BY_CLASS]
    for i, cls in enumerate(classes):
        assert not any(issubclass(cls, earlier) for earlier in classes[:i]), cls
    assert classes[-1] is errors.FluxMailException


def test_errors_carry_no_exit_code_and_the_old_table_still_imports() -> None:
    """Exit codes are the CLI's; `fluxmail.errors.EXIT_CODES` stays for old code, equal to it."""
    assert not hasattr(errors.Refused, "exit_code")
    assert dict(errors.EXIT_CODES) == dict(EXIT_CODES)
    assert exit_code(errors.RecordNotFound("x")) == 9 and exit_code(errors.SendTimeout) == 5
