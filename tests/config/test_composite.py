"""The composite URL form, failover(...) / roundrobin(...): parsing, stable error codes before
any traffic, one Config per member sharing the rest, and no credentials in what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail import ConfigurationError, FluxMail
from fluxmail.config.composite import Composite, is_composite, member_urls, parse_composite
from fluxmail.config.resolve import resolve_config

A = "smtp://u:pa55-a@a.example:587"
B = "smtps://u:pa55-b@b.example:465"


def test_parse_nested_members() -> None:
    found = parse_composite(f"  failover( roundrobin({A}\n{B})\tmemory:// ) ")
    assert found.kind == "failover" and found.members[1] == "memory://"
    inner = found.members[0]
    assert isinstance(inner, Composite) and inner.kind == "roundrobin" and inner.members == (A, B)
    assert "pa55" not in repr(found)


@pytest.mark.parametrize(
    "text",
    [
        f"failover({A} {B}",  # unbalanced
        f"failover({A} {B}))",
        f"failover({A} roundrobin({B})",
        "failover()",
        "roundrobin(   )",
        f"failover({A} not-a-url)",
        f"failover({A} a.example:587)",
        f"failover({A}(x))",
        "failover(" * 10 + A + ")" * 10,  # nested too deep
    ],
)
def test_bad_composites_have_a_stable_code_and_echo_nothing(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_config(url=text)
    assert caught.value.code == "invalid_composite_url"
    assert "pa55" not in str(caught.value) and "not-a-url" not in str(caught.value)


def test_a_bad_member_url_names_its_position_not_its_text() -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_config(url=f"failover({A} smtp://u:pa55-c@[bad:1)")
    assert caught.value.code == "invalid_url" and "member 2" in str(caught.value)
    assert "pa55" not in str(caught.value)


def test_members_resolve_alone_and_share_the_rest() -> None:
    config = resolve_config(url=f"failover({A} {B} file:///tmp/out)", sender="s@example.com",
                            timeout=7, max_retries=2, failover_cooldown=5)  # fmt: skip
    a, b, f = config.members
    assert config.backend == "failover" and config.failover_cooldown == 5
    assert (a.host, a.port, a.security, a.username) == ("a.example", 587, "starttls", "u")
    assert (b.host, b.port, b.security) == ("b.example", 465, "implicit")
    assert a.password is not None and a.password.get_secret_value() == "pa55-a"
    assert f.backend == "file" and f.file_dir == Path("/tmp/out")
    assert {m.sender for m in config.members} == {"s@example.com"}
    assert {(m.timeout, m.max_retries) for m in (a, b)} == {(7.0, 2)}
    assert config.endpoint == "failover(smtp://a.example:587 smtps://b.example:465 file)"
    shown = str(config.describe()) + repr(config)
    assert "pa55" not in shown and "smtps://b.example:465" in shown


def test_from_the_environment_and_a_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLUXMAIL_URL", f"roundrobin({A} {B})")
    assert resolve_config().backend == "roundrobin"
    monkeypatch.delenv("FLUXMAIL_URL")
    secret = tmp_path / "url"
    secret.write_text(f"failover({A} {B})\n")
    monkeypatch.setenv("FLUXMAIL_URL_FILE", str(secret))
    monkeypatch.setenv("FLUXMAIL_STRICT", "true")
    config = resolve_config()
    assert config.backend == "failover" and config.sources["members"] == "secret file"


def test_a_connection_setting_outside_the_members_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLUXMAIL_HOST", "c.example")
    with pytest.raises(ConfigurationError) as caught:
        resolve_config(url=f"failover({A} {B})")
    assert caught.value.code == "composite_conflict" and "FLUXMAIL_HOST" in str(caught.value)
    monkeypatch.delenv("FLUXMAIL_HOST")
    with pytest.raises(ConfigurationError) as again:
        FluxMail.failover(A, B, password="x")
    assert again.value.code == "composite_conflict"


def test_python_face_takes_urls_and_mailers() -> None:
    single = FluxMail(url=B, sender="s@example.com", audit=False)
    mailer = FluxMail.roundrobin(A, single, sender="s@example.com", audit=False)
    assert mailer.config.members[1] is single.config
    assert repr(mailer) == "<FluxMail roundrobin(smtp://a.example:587 smtps://b.example:465)>"
    with pytest.raises(ConfigurationError) as caught:
        FluxMail.failover()
    assert caught.value.code == "invalid_composite_url"
    with pytest.raises(ConfigurationError):
        FluxMail.failover(A, 42)  # type: ignore[arg-type]
    single.close()
    mailer.close()


def test_helpers() -> None:
    assert is_composite(" Failover (x)") and not is_composite(A)
    assert member_urls(f"failover({A} roundrobin({B}))") == [A, B]
