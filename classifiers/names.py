"""Names shown to people (file names, study folders): hidden and reordering characters made visible."""

from __future__ import annotations

import unicodedata

# Control (Cc), format (Cf: bidirectional overrides, zero-width joiners...), surrogate (Cs: bytes of a
# file name that are not UTF-8, as os.fsdecode leaves them), line and paragraph separators (Zl, Zp).
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
SURROGATE_ESCAPE_FIRST, SURROGATE_ESCAPE_LAST = 0xDC80, 0xDCFF


def escape_character(character: str) -> str:
    """Write one hidden character as a visible escape: \\xNN for an undecodable byte, else \\uXXXX."""
    code_point = ord(character)
    if SURROGATE_ESCAPE_FIRST <= code_point <= SURROGATE_ESCAPE_LAST:
        return f"\\x{code_point - 0xDC00:02x}"
    if code_point < 0x100:
        return f"\\x{code_point:02x}"
    return f"\\u{code_point:04x}" if code_point <= 0xFFFF else f"\\U{code_point:08x}"


def printable_name(name: str) -> str:
    """Return `name` with every control, format, surrogate or separator character escaped.

    `evil\\u202egnp.exe` (a right-to-left override that displays as "evilexe.png") comes back as the
    visible text `evil\\u202egnp.exe`; a file name that is not valid UTF-8 comes back with its bad bytes
    as `\\xNN`, so it can be written to any UTF-8 output.
    """
    return "".join(
        escape_character(character) if unicodedata.category(character) in HIDDEN_CATEGORIES else character
        for character in name
    )
