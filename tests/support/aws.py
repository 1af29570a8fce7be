"""Amazon SES for the tests: moto's server (``moto[server]``, an extra of the tests) on 127.0.0.1.

moto runs in a thread of the test process and checks every request as AWS does once IAM
authentication is on (``/moto-api/reset-auth``): the access key must belong to an IAM user, the
Signature V4 is recomputed from the request moto received and compared, and the user's policy
must allow the action. A test therefore proves that the bytes fluxmail signed are the bytes it
sent. What SES "sent" is read back from moto's SES backend (the same process).

``aws_env(monkeypatch)`` keeps botocore away from the developer's own AWS files, metadata
service and keys; :func:`moto_server_fixture` starts the server (a module-scoped fixture) and
:func:`moto_ses_fixture` (``yield from`` both in fixtures) yields a :class:`MotoSES` with a
verified domain, an IAM user's keys and a role, on a freshly reset server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = ["REGION", "MotoSES", "aws_env", "moto_server_fixture", "moto_ses_fixture"]

REGION = "eu-west-1"
DOMAIN = "example.com"
ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
TRUST_ANYONE = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
}
ROLE = "fluxmail-function-role"


@dataclass
class MotoSES:
    """A running moto server: its URL, the region, and an IAM user's access key."""

    url: str
    region: str
    access_key_id: str
    secret_access_key: str
    account_id: str

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{ROLE}"

    def role_credentials(self) -> dict[str, Any]:
        """Temporary credentials of the role (AssumeRole, signed and checked like any call):
        what a Lambda function or an ECS task is given."""
        sts = self.client("sts")
        found = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="fluxmail-test")
        return dict(found["Credentials"])

    def sent(self) -> list[Any]:
        """The raw messages SES took, oldest first (``raw_data``, ``destinations``, ``id``)."""
        from moto.ses.models import ses_backends

        backend = ses_backends[self.account_id][self.region]
        return [m for m in backend.sent_messages if hasattr(m, "raw_data")]

    def client(self, service: str, **keys: str) -> Any:
        """A botocore client for this server (setup and read-back, never the code under test)."""
        import botocore.session

        session = botocore.session.Session()
        return session.create_client(
            service,
            region_name=self.region,
            endpoint_url=self.url,
            aws_access_key_id=keys.get("key", self.access_key_id),
            aws_secret_access_key=keys.get("secret", self.secret_access_key),
        )


def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS setting of the machine leaks in: no files, no metadata service, no keys."""
    for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/fluxmail-tests/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/fluxmail-tests/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _authenticated(url: str, on: bool) -> None:
    """moto's switch: from now on every request is authenticated (or none is)."""
    import httpx

    count = "0" if on else "inf"
    httpx.post(f"{url}/moto-api/reset-auth", content=count.encode(), timeout=10).raise_for_status()


def _setup(url: str) -> MotoSES:
    """An IAM user allowed everything, its key, and a verified sending domain (auth still off)."""
    bootstrap = MotoSES(url, REGION, "AKIDBOOTSTRAP0000000", "bootstrap", "")
    iam = bootstrap.client("iam")
    iam.create_user(UserName="fluxmail-test")
    iam.put_user_policy(
        UserName="fluxmail-test", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL)
    )
    key = iam.create_access_key(UserName="fluxmail-test")["AccessKey"]
    account = iam.get_user(UserName="fluxmail-test")["User"]["Arn"].split(":")[4]
    ses = MotoSES(url, REGION, key["AccessKeyId"], key["SecretAccessKey"], account)
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(TRUST_ANYONE))
    iam.put_role_policy(RoleName=ROLE, PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
    ses.client("ses").verify_domain_identity(Domain=DOMAIN)
    return ses


def moto_server_fixture() -> Iterator[str]:
    """Start moto on a free port of 127.0.0.1 (once per module: starting costs ~0.5 s); yields
    its URL and stops it after."""
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (the dev extra)")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def moto_ses_fixture(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoSES]:
    """A fresh moto (every backend reset), prepared, authentication on; off again after."""
    import httpx

    aws_env(monkeypatch)
    _authenticated(url, False)
    httpx.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    ses = _setup(url)
    _authenticated(url, True)
    try:
        yield ses
    finally:
        _authenticated(url, False)
