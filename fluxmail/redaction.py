"""One redaction marker, and one rule for text fluxmail did not write (server replies, errors).

A secret is replaced only where it stands as a whole word: a password such as ``pass`` or ``1``
must not turn ``password`` into ``********word`` (which both corrupts the text and shows where the
secret was). Fields that hold secrets are redacted by structure where they are produced instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "redact_words"]

REDACTED = "********"


def redact_words(text: str, secrets: Iterable[str | bytes | None]) -> str:
    """``text`` with every whole-word occurrence of a secret replaced by REDACTED."""
    for secret in secrets:
        value = secret.decode("ascii", "replace") if isinstance(secret, bytes) else secret
        if value:
            # Word edges only where the secret itself starts/ends with a word character.
            head = r"(?<!\w)" if value[0].isalnum() or value[0] == "_" else ""
            tail = r"(?!\w)" if value[-1].isalnum() or value[-1] == "_" else ""
            text = re.sub(head + re.escape(value) + tail, REDACTED, text)
    return text
