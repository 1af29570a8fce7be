"""Amazon SES v2 SendEmail (raw) against moto's server with IAM authentication on, so every
request's Signature V4 is recomputed and checked: the exact audited bytes reach SES, keys come
from the URL or the standard AWS chain (a Lambda's role: nothing configured in fluxmail), region
and endpoint resolution, every outcome through both faces, the probe, the missing extra, and no
secret key anywhere."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from fluxmail import AuthenticationFailed, ConfigurationError
from tests.support.api_providers import (
    BCC,
    CC,
    SENDER,
    TO,
    Outcome,
    assert_nowhere,
    cli_outputs,
    eml_of,
    everyone,
    mailer_at,
    outcomes,
    probe,
    run_outcome,
    transport_for,
)
from tests.support.aws import REGION, MotoSES, aws_env, moto_server_fixture, moto_ses_fixture
from tests.support.http_api import Reply

pytest.importorskip("botocore", reason="needs fluxmail[ses] (botocore)")

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
STATIC = f"ses+api://{AKID}:{quote(SECRET, safe='')}@default?region={REGION}"
OK = {"MessageId": "0102018c2f0a1b2c-aaaa-bbbb-cccc-000000000000-000000"}
ERROR = {"message": "Email address is not verified. The following identities failed the check"}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_server_fixture()


@pytest.fixture
def moto_ses(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoSES]:
    yield from moto_ses_fixture(moto_url, monkeypatch)


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_env(monkeypatch)


def _keys_url(ses: MotoSES, secret: str | None = None) -> str:
    secret = quote(secret or ses.secret_access_key, safe="")
    return f"ses+api://{ses.access_key_id}:{secret}@default?region={ses.region}"


def _mailer(url: str, where: str, tmp_path: Path, **options: Any) -> Any:
    settings: dict[str, Any] = {
        "sender": SENDER, "audit_dir": tmp_path / "audit", "retry_delay": 0.01, "max_retries": 2,
    }  # fmt: skip
    from fluxmail import FluxMail

    settings.update(options)
    joiner = "&" if "?" in url else "?"
    return FluxMail.from_url(f"{url}{joiner}endpoint={quote(where, safe='')}", **settings)


def test_moto_takes_the_exact_audited_bytes(moto_ses: MotoSES, tmp_path: Path, send: Any) -> None:
    """Signed with the URL's keys; moto verifies the signature and stores exactly the .eml
    bytes, with every envelope recipient (Bcc included) as a destination."""
    mailer = _mailer(_keys_url(moto_ses), moto_ses.url, tmp_path)
    result = send(everyone(mailer))
    assert result.status == "queued"
    [stored] = moto_ses.sent()
    assert result.provider_message_id == stored.id
    assert result.transport == f"ses+api://{moto_ses.url.removeprefix('http://')}"
    eml = eml_of(mailer, result)
    assert stored.raw_data.encode("utf-8") == eml
    assert {TO, CC, BCC} <= set(stored.destinations) and BCC.encode() not in eml
    assert mailer.audit.get(result.audit_id).provider_message_id == stored.id


def test_lambda_role_from_the_environment(
    moto_ses: MotoSES, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: Any
) -> None:
    """``ses+api://default`` and nothing else: keys, region and endpoint come from the AWS
    variables a Lambda function (or a container) has, as botocore's chain reads them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_ses.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_ses.secret_access_key)
    monkeypatch.setenv("AWS_REGION", moto_ses.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", moto_ses.url)
    from fluxmail import FluxMail

    mailer = FluxMail.from_url("ses+api://default", sender=SENDER, audit_dir=tmp_path / "audit")
    result = send(everyone(mailer))
    assert result.status == "queued"
    [stored] = moto_ses.sent()
    assert stored.raw_data.encode("utf-8") == eml_of(mailer, result)


def test_a_wrong_signature_is_refused(moto_ses: MotoSES, tmp_path: Path) -> None:
    """moto recomputes the signature: one made with another secret is an AuthenticationFailed."""
    mailer = _mailer(_keys_url(moto_ses, secret="not-the-secret"), moto_ses.url, tmp_path)
    with pytest.raises(AuthenticationFailed, match="SignatureDoesNotMatch"):
        everyone(mailer).send()
    assert moto_ses.sent() == []


def test_an_unverified_sender_is_refused(moto_ses: MotoSES, tmp_path: Path) -> None:
    """SES's own refusal text (MessageRejected) reaches the caller; nothing is stored."""
    mailer = _mailer(_keys_url(moto_ses), moto_ses.url, tmp_path, sender="me@unverified.test")
    with pytest.raises(Exception, match="MessageRejected: Did not have authority") as info:
        everyone(mailer).send()
    assert info.value.result.status == "failed"  # type: ignore[attr-defined]
    assert moto_ses.sent() == []


def test_request_shape_and_signature_headers(http_api: Any, tmp_path: Path, no_aws: None) -> None:
    """The documented request: POST /v2/email/outbound-emails, JSON with the raw bytes in
    base64, a SigV4 Authorization for the region and service ``ses``."""
    import base64

    server = http_api(default=Reply(200, OK))
    mailer = mailer_at(STATIC, server, tmp_path)
    result = everyone(mailer).send()
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/v2/email/outbound-emails")
    assert seen.headers["content-type"] == "application/json"
    body = seen.json()
    assert body["FromEmailAddress"] == SENDER
    assert body["Destination"] == {"ToAddresses": [TO, CC, BCC]}
    assert base64.b64decode(body["Content"]["Raw"]["Data"]) == eml_of(mailer, result)
    auth = seen.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert (
        f"/{REGION}/ses/aws4_request" in auth
        and "SignedHeaders=content-type;host;x-amz-date" in auth
    )
    assert "x-amz-date" in seen.headers and result.provider_message_id == OK["MessageId"]


@pytest.mark.parametrize("row", outcomes(OK, ERROR))
def test_outcomes(http_api: Any, tmp_path: Path, send: Any, no_aws: None, row: Outcome) -> None:
    """2xx queued, 401/403 auth, 4xx refused with SES's text, 429 retried, 5xx exhausted, a
    drop after the body unknown and never resent."""
    server = http_api()
    run_outcome(send, mailer_at(STATIC, server, tmp_path), server, row, ERROR["message"])


def test_error_type_header_is_named(http_api: Any, tmp_path: Path, no_aws: None) -> None:
    """``x-amzn-ErrorType`` names the SES error next to its message."""
    server = http_api(default=Reply(400, ERROR, {"x-amzn-ErrorType": "MessageRejected:http://x/"}))
    with pytest.raises(Exception, match="MessageRejected: Email address is not verified"):
        everyone(mailer_at(STATIC, server, tmp_path)).send()


def test_no_credentials_is_an_auth_failure_before_sending(
    http_api: Any, tmp_path: Path, no_aws: None
) -> None:
    """The chain finds no keys: AuthenticationFailed naming where it looked, nothing sent."""
    server = http_api()
    mailer = mailer_at(f"ses+api://default?region={REGION}", server, tmp_path)
    with pytest.raises(AuthenticationFailed) as info:
        everyone(mailer).send()
    assert info.value.code == "aws_credentials_missing" and server.count == 0


def test_region_resolution(no_aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """?region= wins over AWS_REGION; none anywhere, or a malformed one, is refused."""
    with pytest.raises(ConfigurationError) as info:
        transport_for("ses+api://default")
    assert info.value.code == "region_required"
    with pytest.raises(ConfigurationError) as info:
        transport_for("ses+api://default?region=eu-west-1.evil.example")
    assert info.value.code == "invalid_region"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert transport_for("ses+api://default").base_url() == "https://email.us-west-2.amazonaws.com"
    assert transport_for(STATIC).base_url() == f"https://email.{REGION}.amazonaws.com"
    assert transport_for(STATIC).endpoint == f"ses+api://email.{REGION}.amazonaws.com"


def test_endpoint_resolution(no_aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUXMAIL's override > AWS_ENDPOINT_URL_SESV2 > AWS_ENDPOINT_URL > the regional host;
    plain http only to loopback; AWS_IGNORE_CONFIGURED_ENDPOINT_URLS turns the AWS ones off."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://all.example")
    assert transport_for(STATIC).base_url() == "https://all.example"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", "http://127.0.0.1:4566/")
    assert transport_for(STATIC).base_url() == "http://127.0.0.1:4566"
    override = transport_for(STATIC + "&endpoint=https%3A%2F%2Fgateway.example")
    assert override.base_url() == "https://gateway.example"
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert transport_for(STATIC).base_url() == f"https://email.{REGION}.amazonaws.com"
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", "http://ses.example")
    with pytest.raises(ConfigurationError) as info:
        transport_for(STATIC)
    assert info.value.code == "insecure_auth" and "AWS_ENDPOINT_URL_SESV2" in str(info.value)


def test_missing_botocore_names_the_extra(no_aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without botocore the mailer is refused when built, with the extra to install."""
    monkeypatch.setitem(sys.modules, "botocore", None)
    with pytest.raises(ConfigurationError) as info:
        transport_for(STATIC)
    assert info.value.code == "missing_extra" and "fluxmail[ses]" in str(info.value)


def test_probe_reads_the_account(http_api: Any, no_aws: None) -> None:
    """``fluxmail check``: a signed GetAccount, reported as sending status and quota."""
    account = {
        "SendingEnabled": True, "ProductionAccessEnabled": False,
        "SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 3.0},
    }  # fmt: skip
    server = http_api(default=Reply(200, account))
    transport = transport_for(
        f"{STATIC}&endpoint={quote(server.url, safe='')}", ca_file=server.ca_path
    )
    assert probe(transport) == (
        f"SES account in {REGION}: sending enabled, sandbox, 3 of 200 sent in 24 h, 1/s"
    )
    [seen] = server.requests
    assert (seen.method, seen.path) == ("GET", "/v2/email/account")
    assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_secret_key_never_written(
    moto_ses: MotoSES, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The secret key: not in results, errors, reprs, logs or the audit folder."""
    with caplog.at_level(logging.DEBUG):
        mailer = _mailer(_keys_url(moto_ses), moto_ses.url, tmp_path)
        sent = everyone(mailer).send()
        bad = _mailer(_keys_url(moto_ses, secret=moto_ses.secret_access_key + "x"), moto_ses.url,
                      tmp_path)  # fmt: skip
        with pytest.raises(AuthenticationFailed) as info:
            everyone(bad).send()
    secrets = (moto_ses.secret_access_key, quote(moto_ses.secret_access_key, safe=""))
    texts = (repr(sent), str(info.value), repr(info.value), repr(mailer), str(mailer.describe()))
    assert_nowhere(secrets, *texts, caplog.text, folders=[tmp_path / "audit"])


def test_cli_never_prints_the_secret(
    http_api: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_aws: None,
) -> None:
    """``fluxmail check`` / ``config``, text and JSON, keys in the URL and a refusal that
    quotes the secret: the secret key is never printed (the key id may be)."""
    echo = {"message": f"The security token {SECRET} is invalid"}
    server = http_api(default=Reply(403, echo, {"x-amzn-ErrorType": "UnrecognizedClientException"}))
    printed = cli_outputs(capsys, monkeypatch, STATIC, server)
    assert "UnrecognizedClientException" in printed
    assert_nowhere((SECRET, quote(SECRET, safe="")), printed)


def test_role_credentials_from_the_container_endpoint(
    moto_ses: MotoSES, http_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role's temporary keys (with a session token) served by the container credentials
    endpoint, as ECS and Lambda SnapStart do: botocore's chain fetches them, fluxmail signs
    with the token, moto checks the signature against the role's session."""
    role = moto_ses.role_credentials()
    served = {
        "AccessKeyId": role["AccessKeyId"], "SecretAccessKey": role["SecretAccessKey"],
        "Token": role["SessionToken"], "Expiration": role["Expiration"].isoformat(),
    }  # fmt: skip
    endpoint = http_api(tls=False, default=Reply(200, served, times=None))
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{endpoint.url}/v2/credentials")
    mailer = _mailer(f"ses+api://{REGION}", moto_ses.url, tmp_path)
    first, second = everyone(mailer).send(), everyone(mailer).send()
    assert first.status == second.status == "queued"
    assert [s.route for s in endpoint.requests] == ["/v2/credentials"]  # fetched once, reused
    stored = moto_ses.sent()
    assert [m.id for m in stored] == [first.provider_message_id, second.provider_message_id]
    assert_nowhere((role["SecretAccessKey"], role["SessionToken"]), repr(first), repr(mailer))


def test_send_many_signs_every_message(moto_ses: MotoSES, tmp_path: Path) -> None:
    """Bulk through SES, three at a time: each message signed (moto checks every one), stored
    byte for byte, its record queued with the MessageId SES gave it."""
    mailer = _mailer(_keys_url(moto_ses), moto_ses.url, tmp_path)
    items = [
        {"subject": f"n{i}", "recipients": [f"u{i}@example.com"], "body": "x"} for i in range(6)
    ]
    outcomes = list(mailer.send_many(items, concurrency=3, progress=False))
    assert len(outcomes) == 6 and all(o.ok for o in outcomes)
    stored = {m.id: m for m in moto_ses.sent()}
    records = mailer.audit.list()
    assert sorted(r.provider_message_id or "" for r in records) == sorted(stored)
    for record in records:
        assert record.status == "queued" and record.provider_message_id is not None
        raw = stored[record.provider_message_id].raw_data.encode("utf-8")
        assert raw == mailer.audit.get_eml(record.id)
    mailer.close()
