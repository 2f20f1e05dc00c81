"""Outside text made safe to show on a terminal (no Rich: the JSON and error paths use it too)."""

from __future__ import annotations

import re

__all__ = ["escape_control"]

# C0 and C1 controls and DEL, except tab; newlines are shown too (one datum, one line). Also the
# bidirectional overrides and isolates, which reorder what is shown (CVE-2021-42574, "Trojan
# Source"), and lone surrogates, which cannot be written as UTF-8 at all (issue 10).
_CONTROL = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def escape_control(text: str) -> str:
    """``text`` with every control character shown as an escape (``\x1b``, ``\n``)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
