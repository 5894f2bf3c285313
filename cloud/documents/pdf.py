"""HTML → PDF with WeasyPrint: it embeds (subsets) the OpenType CJK fonts that Debian's
fonts-noto-cjk ships, which reportlab cannot (it embeds TrueType outlines only)."""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

# The font stack every document's CSS names; fontconfig finds the first one installed.
CJK_FONTS = '"Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "Source Han Sans SC"'


@functools.cache
def _weasyprint():  # type: ignore[no-untyped-def]
    import weasyprint  # imported on first use: it loads pango, which takes a while

    return weasyprint


def render_pdf(html: str) -> bytes:
    """The PDF of an HTML document (its CSS sets the page size, e.g. ``@page {size: A5}``)."""
    pdf: bytes = _weasyprint().HTML(string=html).write_pdf()
    return pdf
