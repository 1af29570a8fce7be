"""The audit errors both backends raise, worded once."""

from __future__ import annotations

from fluxmail.errors import AuditError, RecordNotFound

__all__ = ["conflict", "newer_schema", "not_found"]


def conflict(key: str) -> AuditError:
    """Same key, different content: names the key, never the content."""
    return AuditError(
        f"idempotency key {key!r} was already used for a different message; "
        "use a new key for a new message",
        code="idempotency_conflict",
    )


def not_found(audit_id: str) -> RecordNotFound:
    return RecordNotFound(f"no audit record with id {audit_id!r}")


def newer_schema(location: str, found: int, latest: int) -> AuditError:
    """A store written by a newer fluxmail: refuse it rather than guess at its schema."""
    where = f" {location}" if location else ""
    return AuditError(
        f"the audit database{where} has schema version {found}, newer than this fluxmail "
        f"understands ({latest}); upgrade fluxmail",
        code="audit_incompatible",
    )
