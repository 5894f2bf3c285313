"""Counter receipts (DESIGN §7): an A5 PDF, an 80 mm thermal-roll PDF and ESC/POS bytes
for a thermal printer, all from one set of formatted fields, so the three never differ."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import multiprocessing
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from cloud.auth import Principal
from cloud.db import Database
from cloud.documents import canvas
from cloud.documents.pdf import CJK_FONTS, render_pdf
from cloud.payments.capitals import amount_in_capitals
from cloud.payments.core import METHOD_NAMES
from cloud.payments.sales import SaleView, get_sale

LAYOUTS = ("a5", "80mm")
TEMPLATES = Path(__file__).parent / "templates"


def money(amount: Decimal) -> str:
    """¥ and two decimals with thousands separators: ¥1,234.50."""
    sign = "-" if amount < 0 else ""
    return f"{sign}¥{abs(amount):,.2f}"


def local_time(at: datetime, timezone: str) -> str:
    """The time in the site's zone, with the zone shown:
    ``2026-12-02 17:05:32 Asia/Shanghai (UTC+08:00)``."""
    local = at.astimezone(ZoneInfo(timezone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {timezone} (UTC{offset[:3]}:{offset[3:]})"


@dataclass(frozen=True)
class ReceiptFields:
    """What a receipt shows, formatted; every layout renders exactly these."""

    title: str
    group: str
    rows: list[tuple[str, str]]  # label, value
    amount: str
    capitals: str
    grant: str | None  # 异地售电: the grant the sale was made under
    reversal: str | None  # 已冲正: when, by whom, why
    receipt_no: str
    signatures: bool = True  # a counter's receipt is signed; an electronic one says so


def receipt_fields(sale: SaleView) -> ReceiptFields:
    utility = "售电/售水收据"
    rows = [
        ("收据号", sale.receipt_no),
        ("时间", local_time(sale.created_at, sale.timezone)),
        ("营业日", sale.business_day.isoformat() if sale.business_day else "—"),
        ("站点", sale.site_name or "—"),
        ("营业网点", sale.outlet_name or "—"),
        ("操作员", f"{sale.operator_name} ({sale.operator})"),
        ("账户", sale.account_number),
        ("客户", sale.customer),
        ("房屋", sale.premises or "—"),
        ("付款方式", METHOD_NAMES.get(sale.method, sale.method)),
        ("金额", money(sale.amount)),
        ("金额大写", amount_in_capitals(sale.amount)),
        ("售后余额", money(sale.balance_after) if sale.balance_after is not None else "—"),
    ]
    grant = None
    if sale.grant is not None:
        g = sale.grant
        grant = (
            f"异地售电 授权 {local_time(g.starts_at, sale.timezone)[:16]} 至 "
            f"{local_time(g.ends_at, sale.timezone)[:16]}，授权人 {g.granted_by}"
            + (f"，{g.reason}" if g.reason else "")
        )
    reversal = None
    if sale.reversed_at is not None:
        reversal = (
            f"已冲正 {local_time(sale.reversed_at, sale.timezone)[:19]}，"
            f"{sale.reversed_by or ''}，原因：{sale.reversal_reason or ''}"
        )
    return ReceiptFields(
        title=utility,
        group=sale.group_name,
        rows=rows,
        amount=money(sale.amount),
        capitals=amount_in_capitals(sale.amount),
        grant=grant,
        reversal=reversal,
        receipt_no=sale.receipt_no,
    )


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


ELECTRONIC = "电子收据，无需签字"


@dataclass(frozen=True)
class PaymentFacts:
    """A WeChat Pay top-up as its receipt shows it (the tenant app's 收据)."""

    out_trade_no: str
    transaction_id: str | None
    paid_at: datetime
    amount: Decimal
    refunded: Decimal
    group_name: str
    site_name: str | None
    timezone: str
    account_number: str
    customer: str
    premises: str | None


def payment_fields(p: PaymentFacts) -> ReceiptFields:
    rows = [
        ("收据号", p.out_trade_no),
        ("时间", local_time(p.paid_at, p.timezone)),
        ("站点", p.site_name or "—"),
        ("账户", p.account_number),
        ("客户", p.customer),
        ("房屋", p.premises or "—"),
        ("付款方式", "微信支付"),
        ("微信支付单号", p.transaction_id or "—"),
        ("金额", money(p.amount)),
        ("金额大写", amount_in_capitals(p.amount)),
    ]
    if p.refunded:
        rows.append(("已退款", money(p.refunded)))
    return ReceiptFields(
        title="充值收据",
        group=p.group_name,
        rows=rows,
        amount=money(p.amount),
        capitals=amount_in_capitals(p.amount),
        grant=None,
        reversal=None,
        receipt_no=p.out_trade_no,
        signatures=False,
    )


def fields_pdf(fields: ReceiptFields, layout: str = "a5") -> bytes:
    """A receipt's PDF from its fields (see :func:`receipt_pdf`)."""
    return _draw_fields(fields, layout) or render_pdf(fields_html(fields, layout))


def receipt_html(sale: SaleView, layout: str = "a5") -> str:
    return fields_html(receipt_fields(sale), layout)


def fields_html(fields: ReceiptFields, layout: str = "a5") -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    template = _templates().get_template(f"receipt_{layout}.html")
    # a roll has no page height: one long enough for this receipt's lines, no second page
    roll_mm = 60 + 5 * len(fields.rows) + (16 if fields.grant else 0)
    roll_mm += 16 if fields.reversal else 0
    return template.render(r=fields, fonts=CJK_FONTS, roll_mm=roll_mm, electronic=ELECTRONIC)


log = logging.getLogger(__name__)


def receipt_pdf(sale: SaleView, layout: str = "a5") -> bytes:
    """The receipt as a PDF, CJK font embedded: ``a5`` (a sheet) or ``80mm`` (a roll).
    Drawn with reportlab when the documents' TrueType font is cut and has every character
    the receipt needs; otherwise laid out by WeasyPrint from the HTML template."""
    return draw_receipt(sale, layout) or render_pdf(receipt_html(sale, layout))


def _texts(f: ReceiptFields) -> list[str]:
    texts = [
        f.title,
        f.group,
        f.amount,
        f.capitals,
        f.receipt_no,
        "人民币经办人签字：客户签字：请妥善保管本收据",
        ELECTRONIC,
    ]
    texts += [t for row in f.rows for t in row]
    return texts + [t for t in (f.grant, f.reversal) if t]


def draw_receipt(sale: SaleView, layout: str = "a5") -> bytes | None:
    """The receipt drawn with reportlab in a few milliseconds, or None when the font is
    not ready or lacks one of its characters (the caller uses WeasyPrint then)."""
    return _draw_fields(receipt_fields(sale), layout)


def _draw_fields(f: ReceiptFields, layout: str) -> bytes | None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if not canvas.drawable(_texts(f)):
        return None
    return _draw_a5(f) if layout == "a5" else _draw_roll(f)


def _new_canvas(size: tuple[float, float], f: ReceiptFields) -> tuple[Any, io.BytesIO]:
    from reportlab.pdfgen.canvas import Canvas

    out = io.BytesIO()
    c = Canvas(out, pagesize=size, initialFontName=canvas.FONT, initialFontSize=10)
    c.setTitle(f"{f.title} {f.receipt_no}")
    c.setAuthor(f.group)
    c.setCreator("PrepayCloud")
    return c, out


def _bold_centred(c: Any, x: float, y: float, text: str, size: float) -> None:
    """Bold from the regular face: the glyphs filled and stroked (text render mode 2)."""
    c.saveState()
    c.setLineWidth(size / 30)
    t = c.beginText(x - canvas.width(text, size) / 2, y)
    t.setFont(canvas.FONT, size)
    t.setTextRenderMode(2)
    t.textOut(text)
    c.drawText(t)
    c.restoreState()


def _box(c: Any, text: str, x: float, y: float, w: float, size: float, pad: float,
         dashed: bool = False, red: bool = False, line: float = 0.6) -> float:  # fmt: skip
    """A bordered box of wrapped text under ``y``; returns the y below it."""
    lines = canvas.wrap(text, size, w - 2 * pad)
    lead = size * 1.45
    h = len(lines) * lead + 2 * pad - (lead - size)
    c.saveState()
    c.setLineWidth(line)
    if dashed:
        c.setDash(3, 2)
    if red:
        c.setStrokeColorRGB(0.69, 0, 0)
        c.setFillColorRGB(0.69, 0, 0)
    c.rect(x, y - h, w, h)
    c.setFont(canvas.FONT, size)
    for i, text_line in enumerate(lines):
        c.drawString(x + pad, y - pad - size * 0.88 - i * lead, text_line)
    c.restoreState()
    return y - h


def _draw_a5(f: ReceiptFields) -> bytes:
    """A5 sheet: the group's name, the title, a bordered table of the fields, the amount
    large with its 大写 in capitals, the grant and the reversal boxed, two signatures."""
    from reportlab.lib.pagesizes import A5
    from reportlab.lib.units import mm

    c, out = _new_canvas(A5, f)
    w, h = A5
    x0, x1 = 12 * mm, w - 12 * mm
    y = h - 10 * mm
    c.setFont(canvas.FONT, 16)
    y -= 16
    c.drawCentredString(w / 2, y, f.group)
    y -= 2 * mm + 12
    c.setFont(canvas.FONT, 12)
    c.drawCentredString(w / 2, y, f.title, charSpace=3.6)
    y -= 5 * mm
    c.setStrokeGray(0.33)
    y = canvas.table(c, f.rows, x0, x1, y, 0.26, 2.4 * mm)
    c.setFont(canvas.FONT, 15)
    y -= 3 * mm + 15
    _bold_centred(c, w / 2, y, f.amount, 15)
    c.setFont(canvas.FONT, 12)
    y -= 1 * mm + 12 * 1.2
    c.drawCentredString(w / 2, y, f"人民币 {f.capitals}")
    y -= 4 * mm
    if f.grant:
        y = _box(c, f.grant, x0, y - 3 * mm, x1 - x0, 10, 2 * mm, dashed=True)
    if f.reversal:
        y = _box(c, f.reversal, x0, y - 3 * mm, x1 - x0, 12, 2 * mm, red=True, line=1.2)
    c.setFont(canvas.FONT, 10)
    y -= 7 * mm + 10
    if f.signatures:
        c.drawString(x0, y, "经办人签字：")
        c.drawRightString(x1 - 30 * mm, y, "客户签字：")
    else:
        c.drawCentredString(w / 2, y, ELECTRONIC)
    c.showPage()
    c.save()
    return out.getvalue()


def _draw_roll(f: ReceiptFields) -> bytes:
    """80 mm roll (72 mm printable): the fields as label-left, value-right lines between
    dashed rules; the page as long as this receipt."""
    from reportlab.lib.units import mm

    width, margin, size, lead = 80 * mm, 4 * mm, 8.5, 8.5 * 1.35
    inner = width - 2 * margin
    plan: list[tuple[str, str, list[str]]] = []
    for label, value in f.rows:
        room = inner - canvas.width(label, size) - 2 * mm
        plan.append((label, value, canvas.wrap(value, size, room)))
    grant = canvas.wrap(f.grant, size, inner) if f.grant else []
    reversal = canvas.wrap(f.reversal, size, inner - 2 * mm) if f.reversal else []
    lines = sum(len(v) for _, _, v in plan) + len(grant) + len(reversal)
    height = 3 * mm * 2 + 12 * 1.3 + lead * (lines + 3) + 14 * 1.3 + 6 * 1.5 * mm + 4 * mm
    c, out = _new_canvas((width, height), f)
    x0, x1 = margin, width - margin
    y = height - 3 * mm - 12

    def rule(at: float) -> float:
        c.saveState()
        c.setDash(2, 1.5)
        c.setLineWidth(0.6)
        c.line(x0, at, x1, at)
        c.restoreState()
        return float(at - 1.5 * mm)

    c.setFont(canvas.FONT, 12)
    _bold_centred(c, width / 2, y, f.group, 12)
    c.setFont(canvas.FONT, size)
    y -= lead
    c.drawCentredString(width / 2, y, f.title)
    y = rule(y - 2 * mm) - size
    for label, _value, value_lines in plan:
        c.drawString(x0, y, label)
        for text_line in value_lines:
            c.drawRightString(x1, y, text_line)
            y -= lead
    y = rule(y + lead - size - 1.5 * mm)
    c.setFont(canvas.FONT, 14)
    y -= 14 + 1 * mm
    _bold_centred(c, width / 2, y, f.amount, 14)
    c.setFont(canvas.FONT, size)
    y -= lead
    c.drawCentredString(width / 2, y, f.capitals)
    for text_line in grant:
        y -= lead
        c.drawString(x0, y, text_line)
    if f.reversal:
        y = _box(c, f.reversal, x0, y - 1.5 * mm - 3, inner, size, 1 * mm, line=0.8)
        y += size
    y = rule(y - 1.5 * mm - 3)
    c.drawCentredString(width / 2, y - size - 0.5 * mm, "请妥善保管本收据")
    c.showPage()
    c.save()
    return out.getvalue()


# A receipt drawn with reportlab takes a few milliseconds and is drawn here, in the server's
# process. One that WeasyPrint must lay out (the font not cut yet, or a character outside
# it) is ~0.2 s of Python holding the interpreter: in the server's own process it would
# stall every request behind it, so it runs in a worker process of its own. The drawn PDFs
# are kept for the click and for reprints (the key is every field of the sale, its
# reversal included, so a changed sale is drawn anew).
_KEEP = 512
_drawn: OrderedDict[tuple[SaleView, str], bytes] = OrderedDict()
_drawing: dict[tuple[SaleView, str], asyncio.Future[bytes]] = {}
_pool: ProcessPoolExecutor | None = None


def _workers() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _pool


async def drawn_receipt(sale: SaleView, layout: str = "a5") -> bytes:
    """The receipt's PDF: drawn here with reportlab, or laid out by WeasyPrint in the
    worker process (once, however many ask at once)."""
    key = (sale, layout)
    if (pdf := _drawn.get(key)) is not None:
        _drawn.move_to_end(key)
        return pdf
    drawn = draw_receipt(sale, layout)
    if drawn is not None:
        _keep(key, drawn)
        return drawn
    future = _drawing.get(key)
    if future is None:
        loop = asyncio.get_running_loop()
        future = asyncio.ensure_future(loop.run_in_executor(_workers(), _laid_out, sale, layout))
        _drawing[key] = future
    try:
        pdf = await asyncio.shield(future)
    finally:
        _drawing.pop(key, None)
    _keep(key, pdf)
    return pdf


def _laid_out(sale: SaleView, layout: str) -> bytes:
    return render_pdf(receipt_html(sale, layout))


def _keep(key: tuple[SaleView, str], pdf: bytes) -> None:
    _drawn[key] = pdf
    while len(_drawn) > _KEEP:
        _drawn.popitem(last=False)


def kept_receipts() -> int:
    return len(_drawn)


_ahead: set[asyncio.Task[None]] = set()  # receipts being drawn ahead (kept referenced)


def draw_ahead(db: Database, who: Principal, receipt_no: str) -> None:
    """Draw a new sale's A5 receipt in the background, so the clerk's 打印 a moment later
    finds it drawn; a failure here only means it is drawn on the click instead."""

    async def draw() -> None:
        try:
            await drawn_receipt(await get_sale(db, who, receipt_no), "a5")
        except Exception:
            log.warning("receipt %s not drawn ahead", receipt_no, exc_info=True)

    task = asyncio.get_running_loop().create_task(draw())
    _ahead.add(task)
    task.add_done_callback(_ahead.discard)


# ESC/POS: FS & selects the Chinese character mode, in which the printer reads GB18030
_CHINESE_ON = b"\x1c\x26"


def receipt_escpos(sale: SaleView, width: int = 32) -> bytes:
    """The receipt for an 80 mm ESC/POS thermal printer (python-escpos's Dummy printer
    collects the bytes); Chinese text in GB18030. ``width``: columns of a full-width line
    counted in half-width characters (48 for 80 mm at font A; 32 keeps long values whole)."""
    from escpos.printer import Dummy  # imported on first use

    f = receipt_fields(sale)
    p = Dummy()
    p._raw(_CHINESE_ON)

    def line(text: str) -> None:
        p._raw(text.encode("gb18030") + b"\n")

    p.set(align="center", bold=True, double_height=True, double_width=True)
    line(f.group)
    p.set(align="center", bold=False, normal_textsize=True)
    line(f.title)
    p.set(align="left", normal_textsize=True)
    line("-" * width)
    for label, value in f.rows:
        line(f"{label}：{value}")
    line("-" * width)
    p.set(align="center", bold=True, double_height=True)
    line(f.amount)
    p.set(align="center", bold=False, normal_textsize=True)
    line(f.capitals)
    if f.grant:
        line(f.grant)
    if f.reversal:
        p.set(align="center", bold=True)
        line(f.reversal)
        p.set(bold=False)
    p.set(align="left", normal_textsize=True)
    line("-" * width)
    line("请妥善保管本收据")
    p.cut()
    return bytes(p.output)
