"""How many SMS segments a text costs (what a carrier bills), by the GSM 03.38 rules.

A text in the GSM 7-bit default alphabet takes 160 septets in one message, 153 a segment
when split (the user-data header takes 7); characters of the extension table (``{ } [ ] ~
\\ | ^ €`` and form feed) take two septets, an escape and the character, and are never
split across segments. Any other character makes the whole text UCS-2: 70 UTF-16 code
units in one message, 67 a segment when split; a character outside the BMP (most emoji)
is two code units, never split either.
"""

from __future__ import annotations

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


def is_gsm7(text: str) -> bool:
    return all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)


def _units(text: str) -> list[int]:
    """Each character's cost in the text's encoding (septets or UTF-16 code units)."""
    if is_gsm7(text):
        return [2 if c in GSM_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def segments(text: str) -> int:
    """Segments of ``text`` as an SMS (an empty text is one segment)."""
    gsm = is_gsm7(text)
    units = _units(text)
    single, part = (GSM_SINGLE, GSM_PART) if gsm else (UCS2_SINGLE, UCS2_PART)
    if sum(units) <= single:
        return 1
    count, used = 1, 0
    for u in units:  # a two-unit character is never split across segments
        if used + u > part:
            count, used = count + 1, 0
        used += u
    return count


def encoding(text: str) -> str:
    return "GSM-7" if is_gsm7(text) else "UCS-2"
