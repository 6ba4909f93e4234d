"""The one rule for token counts (pure): a non-negative whole number, never a bool.

``token_count(value)`` reads a provider's typed usage object (AG2's and the SDKs' ``usage``) before we record it as
a span attribute: only a real int below 2**63 (what an OTLP int64 holds) counts.
``token_count(value, lenient=True)`` reads a span attribute that any instrumentation may have written (through OTLP
or JSON a count can arrive as an integral float or a string of digits): those count too, at any size.
"""

from __future__ import annotations

import math
from typing import Any

LIMIT = 2**63


def token_count(value: Any, *, lenient: bool = False) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        count = value
    elif lenient and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        count = int(value)
    elif lenient and isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        count = int(value.strip())
    else:
        return None
    return count if count >= 0 and (lenient or count < LIMIT) else None
