"""The one conversion of a domain to its ASCII form, for addresses, Message-IDs and hosts.

IDNA 2008 (RFC 5891) with the UTS #46 mapping (https://www.unicode.org/reports/tr46/), by the
``idna`` package: upper-case and fullwidth forms map to their lower-case letters, ``faß.de`` is
``xn--fa-hia.de`` (the standard library's IDNA 2003 codec would say ``fass.de``, another
domain), and symbols such as ``☃`` have no form at all. Kept apart from the address grammar so
that the settings layer can use it without compiling the address patterns (cold start).
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["idna_domain"]


@lru_cache(maxsize=4096)
def idna_domain(domain: str) -> str:
    """The ASCII form of a domain (IDNA 2008, UTS #46 mapping); UnicodeError when it has none.

    ``idna.IDNAError`` is a ``UnicodeError``: callers map it to their own error code.
    """
    if domain.isascii():
        return domain
    # Imported here: pure Python with large tables, needed only for international domains.
    # Cached: bulk sends repeat domains, and the UTS #46 mapping is slow.
    import idna

    return idna.encode(domain, uts46=True).decode("ascii")
