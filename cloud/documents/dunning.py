"""Dunning notices (催费通知单): one A5 page per customer in arrears, in Chinese, with
what the account owes in figures and in capitals, since when, where to pay, and that the
supply may be cut until it is paid (DESIGN §15).

Drawn with reportlab like the receipts (a few milliseconds a page, so 500 customers take
a second or two); WeasyPrint and the full font when the receipts' font is not cut yet or
lacks one of the names' characters."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from cloud.documents import canvas
from cloud.documents.pdf import CJK_FONTS, render_pdf
from cloud.documents.receipt import local_time, money
from cloud.dunning.arrears import ArrearsRow
from cloud.payments.capitals import amount_in_capitals

TITLE = "催费通知单"


@dataclass(frozen=True)
class NoticeFields:
    group: str
    rows: tuple[tuple[str, str], ...]  # label, value
    owed: str  # ¥1,234.50
    capitals: str
    body: str
    footer: str


def notice_fields(
    group: str, row: ArrearsRow, outlets: Sequence[str], now: datetime
) -> NoticeFields:
    """What one customer's notice says."""
    as_of = local_time(now, row.timezone)
    short = f"{now.astimezone(ZoneInfo(row.timezone)):%Y年%m月%d日 %H:%M}"
    where = "、".join(outlets) if outlets else "物业服务中心"
    body = (
        f"尊敬的{row.customer}：截至{short}，您的账户 {row.account_number} 已欠费"
        f"人民币 {money(row.owed)}（{amount_in_capitals(row.owed)}），"
        f"欠费已 {row.days} 天。请尽快到{where}或通过微信小程序缴费；"
        "欠费期间供电、供水可能按规定暂停，缴清后自动恢复。如已缴费，请忽略本通知。"
    )
    fields = (
        ("客户", row.customer),
        ("户号", row.account_number),
        ("房间", row.premises or "—"),
        ("计量点", row.points or "—"),
        ("欠费起始", local_time(row.since, row.timezone)),
        ("欠费天数", f"{row.days} 天"),
        ("欠费金额", money(row.owed)),
    )
    return NoticeFields(
        group=group,
        rows=fields,
        owed=money(row.owed),
        capitals=amount_in_capitals(row.owed),
        body=body,
        footer=f"{group} {row.site}    {as_of}",
    )


def _texts(notices: Sequence[NoticeFields]) -> list[str]:
    texts = [TITLE]
    for n in notices:
        texts += [n.group, n.owed, n.capitals, n.body, n.footer]
        texts += [text for pair in n.rows for text in pair]
    return texts


def notices_pdf(notices: Sequence[NoticeFields]) -> bytes:
    """Every notice, a page each: reportlab when its font draws them all, else WeasyPrint."""
    if notices and canvas.drawable(_texts(notices)):
        return _draw(notices)
    html = _templates().get_template("dunning.html").render(notices=notices, fonts=CJK_FONTS)
    return render_pdf(html)


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cloud.documents", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _draw(notices: Sequence[NoticeFields]) -> bytes:
    from reportlab.lib.pagesizes import A5
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    out = io.BytesIO()
    c: Any = Canvas(out, pagesize=A5, initialFontName=canvas.FONT, initialFontSize=10)
    c.setTitle(f"{TITLE} {notices[0].group}")
    c.setAuthor(notices[0].group)
    c.setCreator("PrepayCloud")
    w, h = A5
    x0, x1 = 12 * mm, w - 12 * mm
    for n in notices:
        y = h - 12 * mm - 16
        c.setFont(canvas.FONT, 16)
        c.drawCentredString(w / 2, y, n.group)
        y -= 3 * mm + 14
        c.setFont(canvas.FONT, 14)
        c.drawCentredString(w / 2, y, TITLE, charSpace=4)
        y -= 6 * mm
        y = canvas.table(c, n.rows, x0, x1, y, 0.24, 2.2 * mm)
        y -= 3 * mm + 12
        c.setFont(canvas.FONT, 11)
        c.drawCentredString(w / 2, y, f"人民币 {n.capitals}")
        y -= 6 * mm
        c.setFont(canvas.FONT, 10.5)
        for text_line in canvas.wrap(n.body, 10.5, x1 - x0):
            c.drawString(x0, y, text_line)
            y -= 10.5 * 1.6
        c.drawRightString(x1, y - 8 * mm, "（盖章）")
        c.setFont(canvas.FONT, 9)
        c.drawRightString(x1, 12 * mm, n.footer)
        c.showPage()
    c.save()
    return out.getvalue()
