"""Kept for imports written against fluxmail 1.0: the audit log lives in fluxmail.audit.log."""

from fluxmail.audit.log import AuditLog, outbound_record

__all__ = ["AuditLog", "outbound_record"]
