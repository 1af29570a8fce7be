"""Shared fixtures: a clean FLUXMAIL_* environment for every test, real SMTP and PostgreSQL servers.

``ca`` (session-scoped trustme CA) and ``smtp_server`` (a factory of aiosmtpd servers, stopped at
teardown) come from ``tests/support/servers.py``; its docstring explains every option and fault.
``oauth_server`` starts token endpoints (``tests/support/oauth_server.py``); ``http_api`` starts
recording HTTP(S) API servers with scripted replies (``tests/support/http_api.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.http_api import HttpApiServer
from tests.support.oauth_server import OAuthServer
from tests.support.postgres import pg_database_fixture, pg_server_fixture  # noqa: F401  (fixtures)
from tests.support.servers import SMTPTestServer, TestCA


@pytest.fixture(autouse=True)
def clean_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Every test starts with no FLUXMAIL_* variables and in an empty working directory."""
    for name in list(os.environ):
        if name.startswith("FLUXMAIL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """One trustme CA per session, with good, expired, wrong-host and untrusted certificates."""
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def smtp_server(ca: TestCA) -> Iterator[Callable[..., SMTPTestServer]]:
    """Factory: ``smtp_server(tls="starttls", auth=("u", "p"), faults=Faults(...))``."""
    servers: list[SMTPTestServer] = []

    def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(ca, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def oauth_server(ca: TestCA) -> Iterator[Callable[..., OAuthServer]]:
    """Factory: ``oauth_server(lifetime=3600)``, a token endpoint over HTTPS (trust ``ca``)."""
    servers: list[OAuthServer] = []

    def start(**options: Any) -> OAuthServer:
        server = OAuthServer(ca, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def http_api(ca: TestCA) -> Iterator[Callable[..., HttpApiServer]]:
    """Factory: ``http_api(tls=True, default=Reply(...))``, recording API servers over ``ca``."""
    servers: list[HttpApiServer] = []

    def start(**options: Any) -> HttpApiServer:
        server = HttpApiServer(ca, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(params=["sync", "async"])
def send(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Runs a draft through the sync face and, in a second run, the async face."""
    from tests.support.mailing import send_with

    return send_with(request.param)
