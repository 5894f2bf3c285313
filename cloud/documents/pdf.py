"""HTML → PDF with WeasyPrint: it embeds (subsets) the OpenType CJK fonts that Debian's
fonts-noto-cjk ships, which reportlab cannot (it embeds TrueType outlines only).

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


def _characters() -> set[int]:
    chars = set(range(0x20, 0x7F)) | set(range(0xA0, 0x100))
    chars |= set(range(0x3000, 0x3040)) | set(range(0xFF00, 0xFFF0))
    chars |= {0x2014, 0x2026, 0x2022, 0x2192, 0x2116, 0x00B2, 0x00B3, 0x33A1}
    for b1 in range(0xB0, 0xF8):  # GB 2312's hanzi rows
        for b2 in range(0xA1, 0xFF):
            try:
                chars.add(ord(bytes([b1, b2]).decode("gb2312")))
            except UnicodeDecodeError:
                pass
    return chars


def build_subset(source: Path = _SOURCE, target: Path | None = None) -> Path | None:
    """Cut the documents' font from the installed Noto Sans CJK SC (None when it is not
    installed); written beside and renamed, so a reader never sees half a font."""
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
    cutter.populate(unicodes=_characters())
    cutter.subset(font)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(f".{os.getpid()}.part")
    font.save(str(part))
    part.replace(target)
    log.info("documents' CJK font cut: %s (%d bytes)", target, target.stat().st_size)
    return target


def _start_subset() -> None:
    global _building
    with _lock:
        if _building is not None or subset_path().exists() or not _SOURCE.exists():
            return
        _building = threading.Thread(target=_build_quietly, name="cjk-subset", daemon=True)
        _building.start()


def _build_quietly() -> None:
    try:
        build_subset()
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
