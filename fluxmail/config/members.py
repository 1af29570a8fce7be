"""Resolving ``failover(...)`` / ``roundrobin(...)``: one ``Config`` per member, one for the whole.

Each member URL is resolved as its own configuration (its host, port, TLS mode, credentials and
provider come from the URL alone) sharing everything else with the whole: the sender, the audit,
timeouts, retries, TLS trust. So a connection setting outside the members (FLUXMAIL_HOST,
FLUXMAIL_USERNAME, ...) is refused: it would be unclear which member it belongs to.

``resolve`` is :func:`fluxmail.config.resolve.resolve_config`, passed in (it calls this module).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fluxmail._lazy import lazy_module
from fluxmail.config.model import Config
from fluxmail.config.settings import SettingsFields, where
from fluxmail.errors import ConfigurationError

if TYPE_CHECKING:
    from fluxmail.config import composite as composites
    from fluxmail.config.composite import Composite
else:  # parsed only for a composite URL or argument: not every cold start
    composites = lazy_module("fluxmail.config.composite")

__all__ = ["CONNECTION_FIELDS", "composite_of", "resolve_members"]

Resolve = Callable[..., Config]
# Settings that say where and how to connect: only a member URL may give them.
CONNECTION_FIELDS = ("type", "host", "port", "username", "password", "tls", "ssl", "provider",
                     "region", "transport", "api_key", "api_base_url")  # fmt: skip


def composite_of(given: object, s: SettingsFields) -> Composite | None:
    """The composite to resolve: the ``composite=`` argument, or a composite FLUXMAIL_URL."""
    if given is not None:
        if not isinstance(given, composites.Composite):
            raise ConfigurationError(
                "argument composite= must be a fluxmail.config.composite.Composite; use "
                "FluxMail.failover(...) or FluxMail.roundrobin(...)",
                code="invalid_config",
            )
        return given
    text = s.url.get_secret_value() if s.url is not None else None
    if text is None or not composites.is_composite(text):
        return None
    return composites.parse_composite(text)


def _check_conflicts(s: SettingsFields) -> None:
    origins = s.origins
    clashing = [n for n in CONNECTION_FIELDS if origins.get(n, "default") not in ("default", "url")]
    if clashing:
        named = ", ".join(where(n, origins[n]) for n in clashing)
        raise ConfigurationError(
            f"{named} cannot be combined with failover(...) / roundrobin(...): each member URL "
            "carries its own connection settings; move them into the member URLs",
            code="composite_conflict",
        )


def resolve_members(
    composite: Composite, s: SettingsFields, kwargs: Mapping[str, object], resolve: Resolve
) -> Config:
    """The whole's Config (``backend`` = the composite's kind, ``members`` resolved)."""
    _check_conflicts(s)
    shared = {k: v for k, v in kwargs.items() if k not in ("url", "composite", "object_type")}
    origin = "argument" if "composite" in kwargs else s.origins.get("url", "argument")
    return _resolve(composite, shared, resolve, origin, "")


def _resolve(
    composite: Composite, shared: dict[str, object], resolve: Resolve, origin: str, path: str
) -> Config:
    members = tuple(
        _member(m, shared, resolve, origin, f"{path}{n}")
        for n, m in enumerate(composite.members, 1)
    )
    # url="": the composite FLUXMAIL_URL, if any, is not read again for the shared settings.
    whole = resolve(**shared, object_type="memory", url="")
    sources = {**whole.sources, "backend": origin, "members": origin}
    return dataclasses.replace(whole, backend=composite.kind, members=members, sources=sources)


def _member(
    member: object, shared: dict[str, object], resolve: Resolve, origin: str, label: str
) -> Config:
    if isinstance(member, Config):
        return member  # FluxMail.failover(mailer, ...): that mailer's whole configuration
    if isinstance(member, composites.Composite):
        return _resolve(member, shared, resolve, origin, f"{label}.")
    if not isinstance(member, str):
        raise ConfigurationError(
            f"member {label} of failover() / roundrobin() must be a URL, a FluxMail or a "
            f"nested failover()/roundrobin(), not {type(member).__name__}",
            code="invalid_composite_url",
        )
    if composites.is_composite(member):
        return _resolve(composites.parse_composite(member), shared, resolve, origin, f"{label}.")
    settings: dict[str, Any] = {"url": "", **composites.member_settings(member)}
    try:
        return resolve(**{**shared, **settings})
    except ConfigurationError as exc:
        error = ConfigurationError(f"member {label}: {exc.message}", code=exc.code)
    raise error  # outside the except block: one error, naming the member by position
