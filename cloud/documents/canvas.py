"""Documents drawn straight onto a reportlab canvas, with the documents' CJK font in
TrueType outlines (:func:`cloud.documents.pdf.build_truetype`) subset and embedded.

A receipt takes a few milliseconds this way (WeasyPrint: about 150 ms of layout and
subsetting), so it is drawn in the server's own process on the click. :func:`cjk_font`
is None until the font is in the cache; callers then fall back to WeasyPrint."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from cloud.documents.pdf import start_fonts, truetype_path

FONT = "PrepayCJK"
_LATIN = "".join(chr(c) for c in range(0x21, 0x7F))
_NO_LINE_START = frozenset("，。、；：！？）」』》〉】,.;:!?)]%")
_lock = threading.Lock()
_glyphs: frozenset[int] | None = None


def cjk_font() -> frozenset[int] | None:
    """The code points the registered font draws (registering it on the first call), or
    None while the font is not cut yet (its cutting is then started)."""
    global _glyphs
    if _glyphs is not None:
        return _glyphs
    with _lock:
        if _glyphs is None:
            path = truetype_path()
            if not path.exists():
                start_fonts()
                return None
            from reportlab.pdfbase import pdfmetrics
            from reportlab.pdfbase.ttfonts import TTFont

            font = TTFont(FONT, str(path))
            pdfmetrics.registerFont(font)
            _glyphs = frozenset(font.face.charToGlyph)
    return _glyphs


def drawable(texts: Iterator[str] | list[str]) -> bool:
    """Whether the font draws every character of ``texts`` (a rare name's hanzi outside
    GB 2312 is not: that document goes to WeasyPrint and the full font)."""
    glyphs = cjk_font()
    if glyphs is None:
        return False
    return all(ord(ch) in glyphs for text in texts for ch in text if ch not in "\n\t")


def width(text: str, size: float) -> float:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    return float(stringWidth(text, FONT, size))


def wrap(text: str, size: float, limit: float) -> list[str]:
    """``text`` broken into lines no wider than ``limit`` points: between any two
    characters (Chinese has no spaces to break at), keeping a Latin word whole where it
    fits on a line of its own."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for ch in paragraph:
            # a closing mark never starts a line: it hangs past the edge instead (禁则)
            if width(line + ch, size) <= limit or not line or ch in _NO_LINE_START:
                line += ch
                continue
            cut = len(line)
            if ch.isascii() and not ch.isspace():  # keep a Latin word or number whole
                tail = len(line) - len(line.rstrip(_LATIN))
                if 0 < tail < len(line):
                    cut = len(line) - tail
            lines.append(line[:cut].rstrip())
            line = line[cut:].lstrip() + ch
        lines.append(line)
    return lines


def table(
    c: Any,
    rows: Sequence[tuple[str, str]],
    x0: float,
    x1: float,
    y: float,
    label_share: float,
    pad: float,
    size: float = 10.0,
    lead: float = 13.0,
) -> float:
    """A bordered two-column table of label and value under ``y`` (labels on a grey
    ground, values wrapped); returns the y below it. Receipts and notices draw their fields
    with it."""
    mm = 72 / 25.4
    label_w = label_share * (x1 - x0)
    c.setLineWidth(0.4)
    for label, value in rows:
        lines = wrap(value, size, x1 - x0 - label_w - 2 * pad)
        rh = 2.2 * mm + size + (len(lines) - 1) * lead
        c.setFillGray(0.945)
        c.rect(x0, y - rh, label_w, rh, stroke=0, fill=1)
        c.setFillGray(0.07)
        c.rect(x0, y - rh, x1 - x0, rh)
        c.line(x0 + label_w, y, x0 + label_w, y - rh)
        c.setFont(FONT, size)
        base = y - 1.1 * mm - size * 0.88
        c.drawString(x0 + pad, base, label)
        for i, text_line in enumerate(lines):
            c.drawString(x0 + label_w + pad, base - i * lead, text_line)
        y -= rh
    return y
