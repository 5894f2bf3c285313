"""Dunning (催费) against the real PostgreSQL: the arrears list by site, building and floor
with what each account owes (its live wallet) and since when (the ledger's history), the
Excel export, and the dunning notices as one PDF, a page per customer, whose amounts are
the live arrears; another group sees none of it."""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from cloud.auth import PERMISSIONS, Principal
from cloud.db import Database
from cloud.dunning.arrears import ArrearsQuery, every_arrears, list_arrears
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_login, group_spec

NOW = datetime.now(UTC)
NEEDS_PDF = pytest.mark.skipif(
    not Path("/usr/bin/pdftotext").exists(), reason="needs poppler-utils (pdftotext)"
)


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _move(db: Database, g: Seeded, key: str, amount: str, days_ago: float, n: int) -> None:
    """Usage charged (amount > 0) or credit given (< 0) to meter ``key``'s wallet."""
    async with db.tenant(g.tenant_id) as conn:
        account_id = await conn.scalar(
            sa.text("SELECT id FROM account WHERE number = :n"), {"n": g.accounts[key]}
        )
        wallet = ledger.wallet(account_id, g.accounts[key])
        value = Decimal(amount)
        legs = (
            ledger.usage(wallet, ledger.revenue("electricity"), value)
            if value > 0
            else ledger.transfer(ledger.adjustments(), wallet, -value)
        )
        draft = ledger.EntryDraft(
            idempotency_key=f"test:{key}:{n}",
            kind=ledger.EntryKind.USAGE if value > 0 else ledger.EntryKind.ADJUSTMENT,
            actor="test",
            effective_at=NOW - timedelta(days=days_ago),
            legs=legs,
        )
        await post(conn, g.tenant_id, draft)


async def _place(db: Database, g: Seeded, key: str, building: str, floor: str) -> uuid.UUID:
    """Put meter ``key``'s point in a premises of ``building`` (made when missing)."""
    async with db.tenant(g.tenant_id) as conn:
        b = await conn.scalar(sa.text("SELECT id FROM building WHERE name = :n"), {"n": building})
        if b is None:
            b = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO building (id, tenant_id, site_id, name) VALUES (:i, :t, :s, :n)"
                ),
                {"i": b, "t": g.tenant_id, "s": g.site_id, "n": building},
            )
        p = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number, kind) "
                "VALUES (:i, :t, :s, :b, :f, :n, 'shop')"
            ),
            {
                "i": p,
                "t": g.tenant_id,
                "s": g.site_id,
                "b": b,
                "f": floor,
                "n": f"{floor}0{key[-1]}",
            },
        )
        await conn.execute(
            sa.text("UPDATE service_point SET premises_id = :p WHERE id = :sp"),
            {"p": p, "sp": g.points[key]},
        )
        return b


def _admin(g: Seeded) -> Principal:
    return Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))


@pytest.fixture
async def owing(db: Database) -> tuple[str, Seeded, dict[str, uuid.UUID]]:
    """Four shops from ¥0: m1 owes 15 since 10 days; m2 fell 30 days ago, was back in
    credit 15 days ago, and owes 2 since 8 days; m3 owes 10 since 20 days (a part payment
    5 days ago did not clear it). m4 is in credit."""
    spec = group_spec(meters=4, balance="0")
    g = await seed_group(db, spec)
    await _move(db, g, "m1", "15", 10, 1)
    await _move(db, g, "m2", "10", 30, 1)
    await _move(db, g, "m2", "-15", 15, 2)
    await _move(db, g, "m2", "7", 8, 3)
    await _move(db, g, "m3", "20", 20, 1)
    await _move(db, g, "m3", "-10", 5, 2)
    await _move(db, g, "m4", "-10", 3, 1)
    await _move(db, g, "m4", "4", 2, 2)
    buildings = {
        "A": await _place(db, g, "m1", "A栋", "1"),
        "B": await _place(db, g, "m3", "B栋", "2"),
    }
    await _place(db, g, "m2", "A栋", "1")
    return spec.slug, g, buildings


async def test_the_arrears_list_reads_the_ledger(
    db: Database, owing: tuple[str, Seeded, dict[str, uuid.UUID]]
) -> None:
    _slug, g, buildings = owing
    who = _admin(g)
    page = await list_arrears(db, who, ArrearsQuery(), NOW)
    got = [(r.account_number, r.owed, r.days) for r in page.items]
    a = g.accounts
    assert got == [
        (a["m1"], Decimal("15.00"), 10),
        (a["m3"], Decimal("10.00"), 20),
        (a["m2"], Decimal("2.00"), 8),
    ]
    assert page.total == 3 and page.total_owed == Decimal("27.00")
    assert page.items[0].premises == "A栋 1层 101" and page.items[0].points.endswith("electricity")

    def numbers(p: object) -> list[str]:
        return [r.account_number for r in p.items]  # type: ignore[attr-defined]

    assert numbers(await list_arrears(db, who, ArrearsQuery(min_days=9), NOW)) == [a["m1"], a["m3"]]
    by_a = await list_arrears(db, who, ArrearsQuery(building_id=buildings["A"]), NOW)
    assert numbers(by_a) == [a["m1"], a["m2"]]
    assert numbers(await list_arrears(db, who, ArrearsQuery(floor="2"), NOW)) == [a["m3"]]
    assert numbers(await list_arrears(db, who, ArrearsQuery(q="Shop 2"), NOW)) == [a["m2"]]
    second = await list_arrears(db, who, ArrearsQuery(limit=2, offset=2), NOW)
    assert numbers(second) == [a["m2"]] and second.total == 3

    # the live balances are what the list says
    async with db.tenant(g.tenant_id) as conn:
        live = await conn.scalar(
            sa.text(
                "SELECT -sum(balance) FROM ledger_account WHERE kind = 'wallet' AND balance < 0"
            )
        )
    assert live == page.total_owed

    # another group sees none of it
    other = await seed_group(db, group_spec())
    assert (await list_arrears(db, _admin(other), ArrearsQuery(), NOW)).total == 0
    picked = ArrearsQuery(account_ids=tuple(r.account_id for r in page.items))
    assert (await list_arrears(db, _admin(other), picked, NOW)).total == 0


@NEEDS_PDF
async def test_the_dunning_page_exports_and_prints_notices(
    http: httpx.AsyncClient,
    db: Database,
    db_url: str,
    owing: tuple[str, Seeded, dict[str, uuid.UUID]],
) -> None:
    slug, g, buildings = owing
    await console_login(http, slug)
    assert "/console/arrears" in (await http.get("/console/accounts")).text
    page = await http.get("/console/arrears")
    assert page.status_code == 200 and "欠费与催费" in page.text
    assert "共 3 户欠费，合计 ¥27.00。" in page.text
    assert page.text.index(g.accounts["m1"]) < page.text.index(g.accounts["m2"])
    assert "(Asia/Shanghai)" in page.text and '<label for="days">' in page.text
    filtered = await http.get("/console/arrears", params={"building": str(buildings["B"])})
    assert "共 1 户欠费，合计 ¥10.00。" in filtered.text
    bad = await http.get("/console/arrears", params={"days": "-1"})
    assert bad.status_code == 422 and "页面无法使用地址中的值（days）" in bad.text
    bad = await http.get("/console/arrears", params={"site": "A栋", "building": ""})
    assert bad.status_code == 422 and "请从列表中选择站点和楼栋" in bad.text
    bad = await http.get("/console/arrears/notices.pdf", params={"account": "x"})
    assert bad.status_code == 422 and "请从欠费列表中选择账户" in bad.text

    book = await http.get("/console/arrears", params={"export": "xlsx"})
    rows = list(load_workbook(io.BytesIO(book.content)).active.iter_rows(values_only=True))
    assert rows[0][:3] == ("户号", "客户", "电话") and len(rows) == 4
    assert [r[6] for r in rows[1:]] == [15, 10, 2]

    whole = await http.get("/console/arrears/notices.pdf")
    assert whole.headers["content-type"] == "application/pdf"
    text, pages = _pdf_text(whole.content)
    assert pages == 3
    for key, owed, capitals in (("m1", "¥15.00", "壹拾伍元整"), ("m3", "¥10.00", "壹拾元整")):
        assert g.accounts[key] in text and owed in text and capitals in text
    assert "催费通知单" in text and "欠费已 20 天" in text and "Shop 1" in text

    picked = await http.get(
        "/console/arrears/notices.pdf", params={"account": str(_id(page.text, g.accounts["m3"]))}
    )
    text, pages = _pdf_text(picked.content)
    assert pages == 1 and g.accounts["m3"] in text and g.accounts["m1"] not in text

    # another group's administrator prints nothing of this one
    other = group_spec()
    await seed_group(db, other)
    async with api_client(CloudSettings(database_url=db_url), db_url) as stranger:
        await console_login(stranger, other.slug)
        assert "共 0 户欠费" in (await stranger.get("/console/arrears")).text
        r = await stranger.get(
            "/console/arrears/notices.pdf",
            params={"account": str(_id(page.text, g.accounts["m3"]))},
        )
        assert r.status_code == 404 and "%PDF" not in r.text


def _id(html: str, number: str) -> str:
    found = re.search(
        rf'name="account" value="([0-9a-f-]+)" id="pick-[0-9a-f-]+" aria-label="勾选 {number}"',
        html,
    )
    assert found, f"no tick box for {number}"
    return found.group(1)


def _pdf_text(document: bytes) -> tuple[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.pdf"
        path.write_bytes(document)
        text = subprocess.run(
            ["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True
        ).stdout
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, check=True, text=True)
    pages = int(re.search(r"Pages:\s+(\d+)", info.stdout).group(1))  # type: ignore[union-attr]
    return text, pages


@NEEDS_PDF
async def test_five_hundred_notices_equal_the_live_arrears(db: Database) -> None:
    from cloud.documents import dunning

    g = await seed_group(db, group_spec(meters=500, balance="1.00"))
    for i, key in enumerate(sorted(g.accounts), start=1):
        await _move(db, g, key, f"{1 + i % 97}.{i % 100:02d}", 1 + i % 40, i)
    rows = await every_arrears(db, _admin(g), ArrearsQuery(), NOW, 2_000)
    assert len(rows) == 500
    document = dunning.notices_pdf(
        [dunning.notice_fields("集团", r, ["一号营业厅"], NOW) for r in rows]
    )
    text, pages = _pdf_text(document)
    assert pages == 500
    printed = sum(
        Decimal(m.replace(",", "")) for m in re.findall(r"欠费金额\s+¥([\d,]+\.\d\d)", text)
    )
    async with db.tenant(g.tenant_id) as conn:
        live = await conn.scalar(
            sa.text(
                "SELECT -sum(balance) FROM ledger_account WHERE kind = 'wallet' AND balance < 0"
            )
        )
    assert printed == live
