"""The reports in the console: each page shows its table and chart data; its Excel file
opens with openpyxl and holds the page's figures cell for cell; bad input (a period in the
future, one too long, the days reversed, an unknown site, another group's site, a site
beyond the operator's scope, a missing permission) is refused in the user's language and
shows no figures; a site's staff see their site only."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from cloud.auth import PERMISSIONS, Principal, hash_password
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_login, group_spec

REPORTS = ("finance", "collections", "sales", "revenue", "liability", "arrears")


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _group(db: Database) -> tuple[Seeded, str, uuid.UUID]:
    """A group of two sites (m1 at the first, m2 at the second) with sales at both."""
    spec = group_spec(meters=2)
    g = await seed_group(db, spec)
    site2, outlet2 = uuid.uuid4(), uuid.uuid4()
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO site (id, tenant_id, name, timezone) "
                "VALUES (:id, :t, '东区市场', 'Asia/Shanghai')"
            ),
            {"id": site2, "t": g.tenant_id},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO outlet (id, tenant_id, site_id, name) "
                "VALUES (:id, :t, :s, '东区营业厅')"
            ),
            {"id": outlet2, "t": g.tenant_id, "s": site2},
        )
        await conn.execute(
            sa.text("UPDATE service_point SET site_id = :s WHERE id = :p"),
            {"s": site2, "p": g.points["m2"]},
        )
    who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
    now = datetime.now(UTC) - timedelta(minutes=5)
    for key, outlet, amount in (("m1", g.outlet_id, "12.30"), ("m2", outlet2, "45.60")):
        req = SaleRequest(g.accounts[key], Decimal(amount), "cash", outlet)
        await sell_credit(db, who, req, f"k-{uuid.uuid4().hex}", now, CommandTiming())
        async with db.tenant(g.tenant_id) as conn:  # an hour's usage, as rating posts it
            acct = (
                await conn.execute(
                    sa.text("SELECT id, number FROM account WHERE number = :n"),
                    {"n": g.accounts[key]},
                )
            ).one()
            legs = ledger.usage(
                ledger.wallet(acct.id, acct.number), ledger.revenue("electricity"), Decimal("3.21")
            )
            draft = ledger.EntryDraft(
                f"usage:{g.points[key]}:{now.isoformat()}/1", ledger.EntryKind.USAGE, "t", now, legs
            )
            await post(conn, g.tenant_id, draft)
    return g, spec.slug, site2


async def _operator(
    db: Database, g: Seeded, permissions: list[str], scope: str, ids: list[uuid.UUID]
) -> str:
    username = f"staff{uuid.uuid4().hex[:6]}"
    role = uuid.uuid4()
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("INSERT INTO role (id, tenant_id, name, permissions) VALUES (:id, :t, :n, :p)"),
            {"id": role, "t": g.tenant_id, "n": username, "p": permissions},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active, scope, scope_ids) VALUES (gen_random_uuid(), :t, :u, '王会计', "
                ":h, :r, true, :s, :ids)"
            ),
            {"t": g.tenant_id, "u": username, "h": hash_password("staff-pass"), "r": role,
             "s": scope, "ids": ids},
        )  # fmt: skip
    return username


class _Cells(HTMLParser):
    """The report table's rows: each cell's text, and its raw figure where it has one."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str | None]]] = []
        self._in = False
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "div" and ("class", "report-table") in attrs:
            self._in = True
        if not self._in:
            return
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell, self._value = [], dict(attrs).get("data-value")

    def handle_endtag(self, tag: str) -> None:
        if self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(("".join(self._cell).strip(), self._value))
            self._cell = None
        if tag == "table":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _table(html: str) -> list[list[tuple[str, str | None]]]:
    p = _Cells()
    p.feed(html)
    return p.rows


async def test_every_report_shows_and_exports_the_same_figures(
    db: Database, http: httpx.AsyncClient
) -> None:
    _g, slug, _site2 = await _group(db)
    await console_login(http, slug)
    index = await http.get("/console/reports")
    for name in REPORTS:
        assert f"/console/reports/{name}" in index.text
    for name, by in [(r, "") for r in REPORTS] + [
        ("finance", "point"), ("finance", "site"), ("collections", "operator"),
        ("collections", "method"), ("sales", "month"),
    ]:  # fmt: skip
        page = await http.get(f"/console/reports/{name}", params={"by": by})
        assert page.status_code == 200, (name, page.text[:500])
        rows = _table(page.text)
        assert rows, name
        book = await http.get(f"/console/reports/{name}", params={"by": by, "export": "xlsx"})
        assert book.status_code == 200
        ws = load_workbook(io.BytesIO(book.content)).active
        assert ws is not None
        cells = [list(r) for r in ws.iter_rows(min_row=3, values_only=True)]
        headers, body = cells[0], cells[1:]
        assert [t for t, _ in rows[0]] == [h for h in headers], name
        data = [r for r in rows[1:] if [t for t, _ in r] != ["此期间没有数据。"]]
        assert len(data) == len(body), name  # the rows and the totals row
        for got, want in zip(body, data, strict=True):
            for cell, (text, value) in zip(got, want, strict=False):
                if value is not None and value != "":
                    assert cell is not None and Decimal(str(cell)) == Decimal(value), (name, text)
                elif cell is not None and not isinstance(cell, (int, float)):
                    assert str(cell) == text or text == "—", (name, cell, text)
    collections = await http.get("/console/reports/collections", params={"by": "outlet"})
    assert "¥57.90" in collections.text  # both sites' sales, with the group's outlets
    assert "东区营业厅" in collections.text and "report-chart-data" in collections.text


async def test_bad_input_is_refused_clearly_and_shows_no_figures(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug, site2 = await _group(db)
    other, _other_slug, other_site = await _group(db)
    await console_login(http, slug)
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
    cases = [
        ({"last": (today + timedelta(days=1)).isoformat()}, 422, "未来"),
        ({"first": (today - timedelta(days=400)).isoformat()}, 422, "366"),
        (
            {"first": today.isoformat(), "last": (today - timedelta(days=1)).isoformat()},
            422,
            "互换",
        ),
        ({"first": "2026-02-30"}, 422, "年-月-日"),
        ({"site": str(uuid.uuid4())}, 404, "未找到"),
        ({"site": "东区"}, 404, "未找到"),
        ({"site": str(other_site)}, 404, "未找到"),  # another group's site
    ]
    for params, status, words in cases:
        r = await http.get("/console/reports/finance", params=params)
        assert r.status_code == status, (params, r.status_code)
        assert words in r.text, (params, r.text[-800:])
        assert 'class="report-table"' not in r.text
    assert other.tenant_id != g.tenant_id
    # a year of sales per month is fine, per day it is too long
    longer = {"first": (today - timedelta(days=700)).isoformat()}
    assert (
        await http.get("/console/reports/sales", params={**longer, "by": "month"})
    ).status_code == 200
    assert (
        await http.get("/console/reports/sales", params={**longer, "by": "day"})
    ).status_code == 422
    assert (await http.get("/console/reports/nonsense")).status_code == 404

    # staff without the view permission, and a site's staff asking for the other site
    blind = await _operator(db, g, ["sale.create"], "tenant", [])
    http.cookies.clear()
    await console_login(http, slug, blind, "staff-pass")
    r = await http.get("/console/reports/collections")
    assert r.status_code == 403 and "无权操作" in r.text
    east = await _operator(db, g, ["registry.view"], "site", [site2])
    http.cookies.clear()
    await console_login(http, slug, east, "staff-pass")
    refused = await http.get("/console/reports/collections", params={"site": str(g.site_id)})
    assert refused.status_code == 404
    own = await http.get("/console/reports/collections", params={"by": "site"})
    assert own.status_code == 200
    assert "东区市场" in own.text and "¥45.60" in own.text
    assert "Riverside Market" not in own.text and "¥12.30" not in own.text
    assert re.search(r"<option value=\"[^\"]+\"", own.text).group(0).count(str(site2)) == 1  # type: ignore[union-attr]
