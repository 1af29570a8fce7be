"""Amazon SES API v2: ``SendEmail`` with raw content, signed with AWS Signature Version 4.

API reference: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
(``POST /v2/email/outbound-emails``; ``Content.Raw.Data`` is the whole message, base64) and
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_GetAccount.html for ``fluxmail check``.
The bytes posted are exactly the bytes the audit recorded; ``Destination`` is the envelope (Bcc
included), the headers the recipients see come from those bytes.

Signing is botocore's (``SigV4Auth``, ``fluxmail[ses]``), never our own. Credentials: keys in the
URL (``ses+api://AKID:SECRET@default``) or botocore's standard chain (environment, shared files,
container and instance roles), so a Lambda function's IAM role works with no key configured. The
endpoint: ``FLUXMAIL_API_BASE_URL`` / ``?endpoint=``, else the AWS variables
``AWS_ENDPOINT_URL_SESV2`` / ``AWS_ENDPOINT_URL``, else ``https://email.{region}.amazonaws.com``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from fluxmail.config.api import check_base_url
from fluxmail.errors import AuthenticationFailed, ConfigurationError
from fluxmail.transport.api.base import ApiReply, ApiRequest, ApiTransport
from fluxmail.transport.mail import Mail

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = ["TRANSPORT", "SESTransport"]

INSTALL_HINT = (
    "the Amazon SES API transport signs requests with botocore: install fluxmail[ses] "
    "(python -m pip install 'fluxmail[ses]')"
)
SEND_PATH = "/v2/email/outbound-emails"
ACCOUNT_PATH = "/v2/email/account"
# The signing name of the SES v2 API (its endpoint is email.<region>.amazonaws.com).
SIGNING_NAME = "ses"
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-\d{1,2}")
_SIGNED = ("authorization", "x-amz-date", "x-amz-security-token")
_XML_CODE = re.compile(r"<Code>([^<]{1,200})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{1,500})</Message>")


def _botocore() -> Any:
    """botocore's signer and credential chain, or the install hint."""
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.credentials
        import botocore.session
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT, code="missing_extra") from exc
    return botocore


def region_of(config: Config, environ: Any = os.environ) -> str:
    """``?region=``, ``FLUXMAIL_REGION``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, shared config."""
    for value in (
        config.api_options.get("region"),
        config.region,
        environ.get("AWS_REGION"),
        environ.get("AWS_DEFAULT_REGION"),
    ):
        if value:
            return _checked_region(value)
    configured = _botocore().session.get_session().get_config_variable("region")
    if configured:
        return _checked_region(configured)
    raise ConfigurationError(
        "Amazon SES needs a region: ses+api://default?region=eu-west-1 in FLUXMAIL_URL, "
        "FLUXMAIL_REGION, or AWS_REGION",
        code="region_required",
    )


def _checked_region(value: str) -> str:
    # The region goes into the host name and the signature scope: no free text.
    if not _REGION.fullmatch(value):
        raise ConfigurationError(
            f"{value!r} is not an AWS region name such as eu-west-1", code="invalid_region"
        )
    return value


def endpoint_of(config: Config, region: str, environ: Any = os.environ) -> str:
    """Where requests go: the fluxmail override, the AWS endpoint variables, the regional host."""
    if config.api_base_url:
        return config.api_base_url.rstrip("/")
    ignored = environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    for name in () if ignored else ("AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL"):
        value = environ.get(name)
        if value:
            return check_base_url(value, name)
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://email.{region}.{suffix}"


class SESTransport(ApiTransport):
    """SES v2 SendEmail (raw) over HTTPS, SigV4-signed with the standard AWS credentials."""

    name: ClassVar[str] = "ses"
    default_base_url: ClassVar[str] = "https://email.us-east-1.amazonaws.com"
    requires_key: ClassVar[bool] = False  # the AWS credential chain needs none configured

    def __init__(self, config: Config) -> None:
        self._boto = _botocore()  # missing extra: refused when the mailer is built
        super().__init__(config)
        self.region = region_of(config)
        self._endpoint = endpoint_of(config, self.region)
        self._static = self._url_credentials(config)
        self._own_secrets = self.secrets
        self._chain: Any = None
        self._chain_lock = threading.Lock()

    def _url_credentials(self, config: Config) -> Any:
        key = config.api_key
        if key is None:
            return None
        if not config.username:
            raise ConfigurationError(
                "Amazon SES keys in the URL need both parts: "
                "ses+api://ACCESS_KEY_ID:SECRET@default (or no keys, for the AWS chain)",
                code="credentials_incomplete",
            )
        # The secret is redacted already (ApiTransport lists the key among its secrets).
        return self._boto.credentials.Credentials(config.username, key.get_secret_value())

    def base_url(self) -> str:
        return self._endpoint

    # -- the request ------------------------------------------------------------------------------
    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        body: dict[str, Any] = {
            "FromEmailAddress": mail.envelope.sender,
            "Destination": {"ToAddresses": list(mail.envelope.recipients)},
            "Content": {"Raw": {"Data": base64.b64encode(mail.data).decode("ascii")}},
        }
        # Serialised here, so the bytes signed are the bytes sent.
        content = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return ApiRequest(
            "POST", SEND_PATH, headers={"Content-Type": "application/json"}, content=content
        )

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        data = reply.json()
        value = data.get("MessageId") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    def error_text(self, reply: ApiReply) -> str:
        """``x-amzn-errortype`` (``MessageRejected:...``) and the body's ``message``."""
        kind = reply.headers.get("x-amzn-errortype", "").split(":", 1)[0]
        data = reply.json()
        text = ""
        if isinstance(data, dict):
            text = str(data.get("message") or data.get("Message") or "")
            kind = kind or str(data.get("__type", "")).rpartition("#")[2]
        elif reply.body.lstrip().startswith(b"<"):  # the query API's XML error shape
            body = reply.body.decode("utf-8", "replace")
            code, message = _XML_CODE.search(body), _XML_MESSAGE.search(body)
            kind = kind or (code.group(1) if code else "")
            text = message.group(1) if message else ""
        text = text or reply.body[:300].decode("utf-8", "replace").strip()
        return f"{kind}: {text}" if kind and text else kind or text or f"HTTP {reply.status}"

    # -- signing ----------------------------------------------------------------------------------
    async def sign(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> dict[str, str]:
        """SigV4 over the method, URL, host, Content-Type and body (botocore's SigV4Auth)."""
        frozen = await self._frozen_credentials()
        kind = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        signed = {"Content-Type": kind} if kind else {}
        request = self._boto.awsrequest.AWSRequest(
            method=method, url=url, data=body, headers=signed
        )
        self._boto.auth.SigV4Auth(frozen, SIGNING_NAME, self.region).add_auth(request)
        return {k: v for k, v in request.headers.items() if k.lower() in _SIGNED}

    async def _frozen_credentials(self) -> Any:
        if self._static is not None:
            return self._static.get_frozen_credentials()
        # The chain may read files or ask the instance/container metadata service, and a role's
        # keys refresh themselves: both block, so off the event loop.
        frozen = await asyncio.to_thread(self._chain_credentials)
        if frozen.secret_key not in self.secrets:
            # A role's keys rotate: remember the current ones (and a few before), not all.
            fresh = tuple(s for s in (frozen.secret_key, frozen.token) if s)
            self.secrets = (*self._own_secrets, *fresh, *self.secrets[len(self._own_secrets) :])[
                : len(self._own_secrets) + 6
            ]
        return frozen

    def _chain_credentials(self) -> Any:
        with self._chain_lock:
            if self._chain is None:
                self._chain = self._boto.session.get_session().get_credentials()
        if self._chain is None:
            raise AuthenticationFailed(
                "no AWS credentials for Amazon SES: none in FLUXMAIL_URL and none found by the "
                "AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE and "
                "~/.aws/credentials, a container or instance role)",
                code="aws_credentials_missing",
            )
        return self._chain.get_frozen_credentials()

    # -- fluxmail check ---------------------------------------------------------------------------
    async def probe(self) -> str:
        """GetAccount: signed like a send, changes nothing; reports sending status and quota."""
        reply = await self.call(ApiRequest("GET", ACCOUNT_PATH))
        if not 200 <= reply.status < 300:
            raise self.refused_probe(reply)
        data = reply.json() if isinstance(reply.json(), dict) else {}
        quota = data.get("SendQuota") or {}
        enabled = "enabled" if data.get("SendingEnabled") else "paused"
        access = "production" if data.get("ProductionAccessEnabled") else "sandbox"
        return (
            f"SES account in {self.region}: sending {enabled}, {access}, "
            f"{_number(quota.get('SentLast24Hours'))} of {_number(quota.get('Max24HourSend'))} "
            f"sent in 24 h, {_number(quota.get('MaxSendRate'))}/s"
        )


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "?" if value is None else str(value)


TRANSPORT = SESTransport
