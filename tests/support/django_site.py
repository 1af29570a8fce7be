"""A real Django project for the backend tests: settings configured once per process.

``django_site()`` configures Django (once per xdist worker: settings can be configured only
once) with no apps and fluxmail as the email backend, the way the running Django prefers:
``MAILERS`` where Django has it (6.1+), ``EMAIL_BACKEND`` before; ``fluxmail_settings(server)``
is the ``FLUXMAIL = {...}`` Django setting (or a ``MAILERS`` entry's ``OPTIONS``) for a test
server (its TLS mode, trusting the test CA). Use both through the ``site`` fixture (import
``site_fixture`` into a test module), which closes the shared mailers after each test so that
one test's server never serves the next.

``LEGACY_MAIL_API`` marks tests that call Django's mail API as it was before 6.1
(``get_connection()``, ``fail_silently=``, ``auth_user=``, ``connection=``): on 6.1 Django
warns about those calls, and the mark lets through only the warnings Django attributes to
the tests' own code. A warning attributed to fluxmail (a deprecated API used by the backend)
still fails the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.servers import SMTPTestServer

BACKEND = "fluxmail.django.EmailBackend"
SENDER = "Shop <shop@example.com>"
ADMINS = ["ops@example.com", "dev@example.com"]
# Django's deprecation warnings (PendingDeprecationWarning subclasses in 6.1) raised for calls
# made by test code, and only those; see the module docstring.
LEGACY_MAIL_API = pytest.mark.filterwarnings(r"ignore::PendingDeprecationWarning:tests\.")


def has_mailers() -> bool:
    """Django 6.1's MAILERS setting and ``django.core.mail.mailers`` (feature-detected, as
    Django's migration guide suggests)."""
    from django.core import mail

    return hasattr(mail, "mailers")


def backend_settings(**options: Any) -> dict[str, Any]:
    """The settings that make fluxmail the default backend: ``MAILERS`` (with ``options`` as
    its OPTIONS) where Django has it, else ``EMAIL_BACKEND`` (and no options: use FLUXMAIL)."""
    if has_mailers():
        return {"MAILERS": {"default": {"BACKEND": BACKEND, "OPTIONS": options}}}
    assert not options, "before Django 6.1 the options go in the FLUXMAIL setting"
    return {"EMAIL_BACKEND": BACKEND}


def django_site() -> None:
    """Configure Django's settings (once) and load its app registry."""
    import django
    from django.conf import settings

    if not settings.configured:
        # Django 6.0 takes ADMINS as address strings and deprecates (name, address) pairs,
        # which are all that Django before 6.0 takes; no feature tells them apart.
        admins: list[Any] = ADMINS if django.VERSION >= (6, 0) else [("", a) for a in ADMINS]
        # DEFAULT_FROM_EMAIL and SERVER_EMAIL are left at Django's placeholders on purpose.
        settings.configure(
            INSTALLED_APPS=[],
            ADMINS=admins,
            MANAGERS=admins[:1],
            USE_TZ=True,
            **backend_settings(),
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
