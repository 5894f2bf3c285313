"""HTML → PDF with WeasyPrint: it embeds (subsets) the OpenType CJK fonts that Debian's
fonts-noto-cjk ships, which reportlab cannot (it embeds TrueType outlines only).

Receipts are drawn with reportlab instead (a few milliseconds against WeasyPrint's 150):
for them the GB 2312 cut below is also converted once to TrueType outlines (cubic to
quadratic curves, ``cjk-gbk.ttf`` beside it, with GBK's hanzi), which reportlab subsets
and embeds.

Subsetting the whole Noto Sans CJK collection (65,535 glyphs, 19 MB) costs WeasyPrint
most of a second per document. So the first document also starts, in a thread, a font of
the characters receipts and notices use — ASCII, Latin-1, CJK punctuation and the 6,763
hanzi of GB 2312 — cut once from the installed Noto Sans CJK SC and kept in the font
cache (``PREPAY_FONT_CACHE``, default ``~/.cache/prepaycloud``); documents use it as soon
as it is there (about 0.1 s each instead of up to 1 s). A character outside it (a rare
name) is drawn from the full font, next in the stack."""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUBSET_FAMILY = "PrepayCJK"
# The font stack every document's CSS names; fontconfig finds the first one installed.
CJK_FONTS = (
    f'"{SUBSET_FAMILY}", "Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", '
    '"Source Han Sans SC"'
)
_SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
_lock = threading.Lock()
_building: threading.Thread | None = None


def _cache() -> Path:
    return Path(os.environ.get("PREPAY_FONT_CACHE") or Path.home() / ".cache" / "prepaycloud")


def subset_path() -> Path:
    return _cache() / "cjk-gb2312.otf"


def truetype_path() -> Path:
    return _cache() / "cjk-gbk.ttf"


def _characters(codec: str = "gb2312") -> set[int]:
    """ASCII, Latin-1, the punctuation documents use and the hanzi of ``codec``: GB 2312's
    6,763, or GBK's 21,003 (names often hold a hanzi outside GB 2312: 喆, 堃, 昇)."""
    chars = set(range(0x20, 0x7F)) | set(range(0xA0, 0x100))
    chars |= set(range(0x3000, 0x3040)) | set(range(0xFF00, 0xFFF0))
    chars |= {0x2014, 0x2026, 0x2022, 0x2192, 0x2116, 0x00B2, 0x00B3, 0x33A1}
    rows, cells = (range(0xB0, 0xF8), range(0xA1, 0xFF))  # GB 2312's hanzi rows
    if codec == "gbk":
        rows, cells = range(0x81, 0xFF), range(0x40, 0xFF)
    for b1 in rows:
        for b2 in cells:
            try:
                ch = bytes([b1, b2]).decode(codec)
            except UnicodeDecodeError:
                continue
            if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff":
                chars.add(ord(ch))
    return chars


def build_subset(
    source: Path = _SOURCE, target: Path | None = None, codec: str = "gb2312"
) -> Path | None:
    """Cut the documents' font (the characters of :func:`_characters`) from the installed
    Noto Sans CJK SC (None when it is not installed); written beside and renamed, so a
    reader never sees half a font."""
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    target = target or subset_path()
    if not source.exists():
        return None
    fonts = TTCollection(str(source)).fonts
    font = next((f for f in fonts if "SC" in (f["name"].getDebugName(1) or "")), None)
    if font is None:
        return None
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.notdef_outline = True
    cutter = subset.Subsetter(options)
    cutter.populate(unicodes=_characters(codec))
    cutter.subset(font)
    return _save(font, target, "documents' CJK font cut")


def _save(font: Any, target: Path, what: str) -> Path:
    """Written beside and renamed, so a reader never sees half a font."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(f".{os.getpid()}.part")
    font.save(str(part))
    part.replace(target)
    log.info("%s: %s (%d bytes)", what, target, target.stat().st_size)
    return target


def build_truetype(source: Path = _SOURCE, target: Path | None = None) -> Path | None:
    """The receipts' font, for reportlab: GBK's hanzi cut from Noto Sans CJK SC like
    :func:`build_subset`, with TrueType outlines (every CFF glyph's cubic curves
    approximated by quadratic ones within one unit of 1,000, invisible at any print size).
    About half a minute, once; None when the source font is not installed."""
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import TTFont, newTable

    target = target or truetype_path()
    cut = target.with_suffix(f".{os.getpid()}.otf")
    if build_subset(source, cut, codec="gbk") is None:
        return None
    try:
        font = TTFont(str(cut))
        font.ensureDecompiled()
    finally:
        cut.unlink(missing_ok=True)
    order = font.getGlyphOrder()
    glyphs = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyphs)
        # PostScript outlines run counter-clockwise, TrueType's clockwise
        glyphs[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
        glyf[name] = pen.glyph()
    font["glyf"] = glyf
    font["loca"] = newTable("loca")
    for table in ("CFF ", "VORG"):
        if table in font:
            del font[table]
    maxp = newTable("maxp")
    maxp.tableVersion = 0x00010000
    maxp.numGlyphs = len(order)
    for field in (
        "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
        "maxStackElements", "maxSizeOfInstructions", "maxComponentElements",
    ):  # fmt: skip
        setattr(maxp, field, 0)
    maxp.maxZones = 1
    font["maxp"] = maxp
    font["head"].glyphDataFormat = 0
    post = font["post"]
    post.formatType = 2.0
    post.extraNames = []
    post.mapping = {}
    post.glyphOrder = order
    font.sfntVersion = "\x00\x01\x00\x00"
    return _save(font, target, "receipts' TrueType CJK font")


def start_fonts() -> None:
    """Cut the documents' fonts in the background if they are not in the cache yet."""
    _start_subset()


def _start_subset() -> None:
    global _building
    with _lock:
        ready = subset_path().exists() and truetype_path().exists()
        if _building is not None or ready or not _SOURCE.exists():
            return
        _building = threading.Thread(target=_build_quietly, name="cjk-subset", daemon=True)
        _building.start()


def _build_quietly() -> None:
    try:
        if not subset_path().exists():
            build_subset()
        build_truetype()
    except Exception:  # the full font serves meanwhile; documents stay correct
        log.exception("could not cut the documents' CJK font")


@functools.cache
def _weasyprint() -> Any:
    import weasyprint  # imported on first use: it loads pango, which takes a while

    return weasyprint


def render_pdf(html: str) -> bytes:
    """The PDF of an HTML document (its CSS sets the page size, e.g. ``@page {size: A5}``)."""
    wp = _weasyprint()
    stylesheets = []
    font_config = None
    path = subset_path()
    if path.exists():
        from weasyprint.text.fonts import FontConfiguration

        font_config = FontConfiguration()
        face = f'@font-face {{ font-family: "{SUBSET_FAMILY}"; src: url("{path.as_uri()}"); }}'
        stylesheets.append(wp.CSS(string=face, font_config=font_config))
    else:
        _start_subset()
    pdf: bytes = wp.HTML(string=html).write_pdf(stylesheets=stylesheets, font_config=font_config)
    return pdf
