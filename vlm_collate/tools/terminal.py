"""Text from a dataset, made safe to print on a terminal.

A row can hold escape sequences that set the terminal's title, clear the
screen or move the cursor, and bidirectional-override characters that reorder
what is shown. `visible` writes every such character as a visible escape
(``\\x1b``, ``\\u202e``), keeping newlines and tabs.
"""

from __future__ import annotations

import re

__all__ = ["visible"]

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional controls.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control character but newline and tab written as an escape."""
    return _UNSAFE.sub(_escape, text)
