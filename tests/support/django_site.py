"""A real Django project for the backend tests: settings configured once per process.

``django_site()`` configures Django (once per xdist worker: settings can be configured only
once) with no apps and fluxmail as the email backend; ``fluxmail_settings(server)`` is the
``FLUXMAIL = {...}`` Django setting for a test server (its TLS mode, trusting the test CA).
Use both through the ``site`` fixture (import ``site_fixture`` into a test module), which closes the
shared mailers after each test so that one test's server never serves the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.servers import SMTPTestServer

BACKEND = "fluxmail.django.EmailBackend"
SENDER = "Shop <shop@example.com>"
ADMINS = [("Ops", "ops@example.com"), ("Dev", "dev@example.com")]


def django_site() -> None:
    """Configure Django's settings (once) and load its app registry."""
    import django
    from django.conf import settings

    if not settings.configured:
        # DEFAULT_FROM_EMAIL and SERVER_EMAIL are left at Django's placeholders on purpose.
        settings.configure(
            INSTALLED_APPS=[],
            EMAIL_BACKEND=BACKEND,
            ADMINS=ADMINS,
            MANAGERS=ADMINS[:1],
            USE_TZ=True,
        )
    django.setup()


def fluxmail_settings(server: SMTPTestServer, **extra: Any) -> dict[str, Any]:
    """``settings.FLUXMAIL`` for ``server``; the audit off unless ``audit_dir`` is given."""
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "use_tls": server.tls == "starttls",
        "use_ssl": server.tls == "implicit",
        "sender": SENDER,
        "audit": "audit_dir" in extra,
        "retry_delay": 0.01,
    }
    if server.tls != "none":
        options["ca_file"] = str(server.ca_path)
    options.update(extra)
    return options


@pytest.fixture(name="site")
def site_fixture() -> Iterator[Callable[..., None]]:
    """Django configured; ``site(FLUXMAIL=..., ADMINS=...)`` overrides settings for the test.
    At teardown the overrides are undone and the shared mailers closed."""
    from django.test import override_settings

    from fluxmail.django import close_mailers

    django_site()
    active: list[Any] = []

    def apply(**settings: Any) -> None:
        override = override_settings(**settings)
        override.enable()
        active.append(override)

    yield apply
    for override in reversed(active):
        override.disable()
    close_mailers()
