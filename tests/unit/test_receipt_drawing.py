"""Receipts drawn with reportlab (cloud.documents.canvas): every field is on the page in
both layouts, the CJK font is embedded, long values wrap inside the page, and a character
the font lacks sends the receipt to WeasyPrint and the full font instead of a blank."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cloud.documents import canvas, pdf, receipt
from cloud.payments.sales import GrantView, SaleView

pytestmark = [
    pytest.mark.skipif(
        not Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc").exists(),
        reason="needs fonts-noto-cjk (apt-get install -y fonts-noto-cjk poppler-utils)",
    ),
    # the first test waits for the font to be cut on a new machine: about a minute alone,
    # several on a busy one
    pytest.mark.timeout(900),
]
NOW = datetime(2026, 12, 3, 7, 5, 32, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def font() -> None:
    if not pdf.truetype_path().exists():  # once per machine: about a minute
        pdf.build_truetype()
    assert canvas.cjk_font() is not None


def _sale(**changes: Any) -> SaleView:
    fields: dict[str, Any] = dict(
        id=uuid.uuid4(), receipt_no="R000000123", group_name="东方广场物业集团有限公司",
        site_name="东方广场", timezone="Asia/Shanghai", outlet_id=None,
        outlet_name="一楼服务台", operator="clerk", operator_name="张三",
        account_number="A-0001", customer="李四百货商行", premises="A栋 1层 101",
        amount=Decimal("50.00"), method="cash", balance_after=Decimal("150.20"),
        created_at=NOW, business_day=date(2026, 12, 3), grant=None, reversed_at=None,
        reversed_by=None, reversal_reason=None, reversal_entry_id=None,
    )  # fmt: skip
    fields.update(changes)
    return SaleView(**fields)


def _text(document: bytes) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.pdf"
        path.write_bytes(document)
        text = subprocess.run(
            ["pdftotext", "-raw", str(path), "-"], capture_output=True, check=True, text=True
        ).stdout
        fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, text=True)
    return text, fonts.stdout


@pytest.mark.parametrize("layout", receipt.LAYOUTS)
def test_a_drawn_receipt_shows_every_field_with_the_font_embedded(layout: str) -> None:
    grant = GrantView(uuid.uuid4(), NOW, NOW + timedelta(days=2), "东区营业厅装修期间代售", "admin")
    sale = _sale(
        grant=grant, reversed_at=NOW, reversed_by="主管王五",
        reversal_reason="客户要求退回，金额输错了，应为五十元整，已当面核对现金",
    )  # fmt: skip
    drawn = receipt.draw_receipt(sale, layout)
    assert drawn is not None and drawn.startswith(b"%PDF")
    text, fonts = _text(drawn)
    flat = text.replace("\n", "")
    for label, value in receipt.receipt_fields(sale).rows:
        assert label in text and value.replace(" ", "") in flat.replace(" ", ""), (label, value)
    for words in ("东方广场物业集团有限公司", "伍拾元整", "异地售电", "已冲正", "已当面核对现金"):
        assert words in flat, words
    assert "2026-12-03 15:05:32 Asia/Shanghai" in flat  # the site's time, zone named
    assert "NotoSansCJK" in fonts and " yes yes " in fonts  # embedded, subset
    assert "Helvetica" not in fonts  # no font the viewer must supply
    assert b"ReportLab" in receipt.receipt_pdf(sale, layout)  # the route draws it this way


def test_a_hanzi_outside_the_font_goes_to_weasyprint_and_is_printed() -> None:
    rare = _sale(customer="王𠀾堃")  # 𠀾: CJK extension B, outside GBK
    assert receipt.draw_receipt(rare, "a5") is None
    text, _ = _text(receipt.receipt_pdf(rare, "a5"))
    assert "王𠀾堃" in text
    assert receipt.draw_receipt(_sale(customer="王堃喆"), "a5") is not None  # GBK is drawn


def test_wrapping_keeps_lines_inside_words_whole_and_no_line_starts_with_a_comma() -> None:
    text = "已冲正 2026-12-03 15:07:54，主管王五，原因：客户要求退回，金额输错了，应为五十元整"
    for limit in (60.0, 90.0, 140.0, 200.0):
        lines = canvas.wrap(text, 10, limit)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
        assert all(not line.startswith(("，", "：")) for line in lines)
        for line in lines:  # only a hanging mark may pass the edge
            assert canvas.width(line.rstrip("，：。"), 10) <= limit
    assert canvas.wrap("Asia/Shanghai (UTC+08:00)", 10, 80)[-1] == "(UTC+08:00)"
    assert canvas.wrap("a\nb", 10, 100) == ["a", "b"]


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="layout"):
        receipt.draw_receipt(_sale(), "a4")
