"""The site's price notice (电价公示): every tariff in force at a site and those scheduled,
as an A4 PDF in Chinese (for the notice board of the business office)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import sqlalchemy as sa
from babel.dates import format_datetime

from cloud.auth import Principal
from cloud.db import Database
from cloud.documents.pdf import CJK_FONTS, render_pdf
from cloud.errors import NotFound
from cloud.registry.scope import require_site
from cloud.tariffs import admin

LOCALE = "zh_CN"
UTILITY = {"electricity": "电", "water": "水"}
UNIT = {"electricity": "元/千瓦时", "water": "元/立方米"}
USAGE_UNIT = {"electricity": "千瓦时", "water": "立方米"}
KIND = {"flat": "单一制", "tiered": "阶梯", "tou": "分时"}
CYCLE = {"month": "月", "year": "年"}
PERIOD = {"sharp": "尖", "peak": "峰", "flat": "平", "valley": "谷"}
PERIOD_ORDER = ("sharp", "peak", "flat", "valley")


@dataclass(frozen=True)
class NoticeSite:
    name: str
    group: str
    timezone: str
    catalogue_price: Decimal | None
    price_margin: Decimal


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cloud.documents", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _price(value: Any) -> str:
    return f"{Decimal(str(value)).quantize(Decimal('0.0001'))}"


def _money(value: Decimal) -> str:
    return f"¥{value.quantize(Decimal('0.01'))}"


def _offset(ts: datetime, tz: ZoneInfo) -> str:
    offset = ts.astimezone(tz).strftime("%z")
    return f"UTC{offset[:3]}:{offset[3:]}"


def _when(ts: datetime, tz: ZoneInfo, usual: str | None = None) -> str:
    """Local date and time; with its UTC offset where it is not the ``usual`` one (a zone
    with summer time)."""
    text = format_datetime(ts, "yyyy年M月d日 HH:mm", tzinfo=tz, locale=LOCALE)
    offset = _offset(ts, tz)
    return text if offset == usual else f"{text}（{offset}）"


def _rows(utility: str, v: admin.VersionView) -> list[tuple[str, str]]:
    """(what, price) lines of a version's plan."""
    spec, unit = v.spec, UNIT[utility]
    if v.kind == "flat":
        return [("单一价格", f"{_price(spec['unit_price'])} {unit}")]
    if v.kind == "tiered":
        lines, lower = [], Decimal(0)
        cycle = CYCLE.get(spec.get("cycle", "month"), "月")
        for n, b in enumerate(spec["blocks"], 1):
            if b.get("up_to") is None:
                span = f"{lower.normalize():f} {USAGE_UNIT[utility]}以上"
            else:
                upper = Decimal(str(b["up_to"]))
                span = f"{lower.normalize():f}–{upper.normalize():f} {USAGE_UNIT[utility]}"
                lower = upper
            lines.append((f"第{n}档（每{cycle}）{span}", f"{_price(b['price'])} {unit}"))
        return lines
    windows = spec["windows"]
    lines = []
    for p in PERIOD_ORDER:
        if p not in spec["prices"]:
            continue
        spans = []
        for i, w in enumerate(windows):
            if w["period"] == p:
                end = windows[i + 1]["start"] if i + 1 < len(windows) else "24:00"
                spans.append(f"{w['start'][:5]}–{end[:5]}")
        lines.append((f"{PERIOD[p]}时段 {'，'.join(spans)}", f"{_price(spec['prices'][p])} {unit}"))
    return lines


def _version(utility: str, v: admin.VersionView, tz: ZoneInfo, usual: str) -> dict[str, Any]:
    return {
        "kind": KIND.get(v.kind, v.kind),
        "from": _when(v.effective_from, tz, usual),
        "rows": _rows(utility, v),
        "fee": _money(v.monthly_fee) if v.monthly_fee else None,
        "margin_reason": v.margin_reason,
    }


def render_notice(site: NoticeSite, tariffs: list[admin.TariffView], now: datetime) -> str:
    """The notice's HTML (what :func:`render_pdf` prints)."""
    tz = ZoneInfo(site.timezone)
    usual = _offset(now, tz)
    zone = f"{site.timezone}，{usual}"
    shown = []
    for t in tariffs:
        if t.current is None and not t.scheduled:
            continue
        shown.append(
            {
                "name": t.name,
                "utility": UTILITY.get(t.utility, t.utility),
                "scope": "本项目" if t.site_id else "集团通用",
                "current": _version(t.utility, t.current, tz, usual) if t.current else None,
                "scheduled": [_version(t.utility, v, tz, usual) for v in t.scheduled],
            }
        )
    catalogue = None
    if site.catalogue_price is not None:
        ceiling = site.catalogue_price * (1 + site.price_margin)
        catalogue = {
            "price": _price(site.catalogue_price),
            "margin": f"{(site.price_margin * 100).normalize():f}%",
            "ceiling": _price(ceiling),
        }
    return (
        _templates()
        .get_template("price_notice.html")
        .render(
            fonts=CJK_FONTS,
            site=site,
            zone=zone,
            printed=_when(now, tz, usual),
            tariffs=shown,
            catalogue=catalogue,
        )
    )


async def price_notice_pdf(
    db: Database, who: Principal, site_id: uuid.UUID, now: datetime
) -> bytes:
    """The A4 PDF of a site's notice; NotFound for a site outside the operator's scope."""
    async with db.tenant(who.tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT s.name, t.name AS group_name, s.timezone, s.catalogue_price, "
                    "s.price_margin FROM site s JOIN tenant t ON t.id = s.tenant_id "
                    "WHERE s.id = :s"
                ),
                {"s": site_id},
            )
        ).first()
        if row is None:
            raise NotFound(f"site {site_id} not found")
        await require_site(conn, who, site_id)
        tariffs = await admin.tariffs_at_site(conn, who, site_id, now)
    site = NoticeSite(row.name, row.group_name, row.timezone, row.catalogue_price, row.price_margin)
    return render_pdf(render_notice(site, tariffs, now))
