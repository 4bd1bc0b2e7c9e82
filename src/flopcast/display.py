"""How flopcast writes numbers for people (CLI tables, the report). No torch."""

from __future__ import annotations

import math


def number(x: object, missing: str = "-", digits: int = 4) -> str:
    """``digits`` significant digits, scientific notation for very large or small values and for large
    integers (FLOP counts); ``missing`` for None and NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return missing
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}g}" if 1e-4 <= abs(x) < 1e5 or x == 0 else f"{x:.3e}"
    if isinstance(x, int) and abs(x) >= 10**6:
        return f"{x:.3e}"
    return str(x)
