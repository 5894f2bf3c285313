"""The business office's console pages over HTTP: a double-submitted sale sells once and
shows the same receipt, a sale form without the CSRF token sells nothing, a bad amount is
a message in Chinese with nothing sold, the reversal form, another group's account and
sale are 404 pages, the gateway page lists the meters waiting for 装表, and the import
page's dry run names the refused row."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.documents import receipt
from cloud.ingest.service import IngestService
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import api_client, console_form, console_login, group_spec, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _group(db: Database) -> tuple[Seeded, str]:
    spec = group_spec()
    return await seed_group(db, spec), spec.slug


async def _sales(db: Database, g: Seeded) -> int:
    async with db.tenant(g.tenant_id) as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM counter_sale")) or 0)


async def test_a_sale_sells_once_and_can_be_reversed(db: Database, http: httpx.AsyncClient) -> None:
    g, slug = await _group(db)
    number = g.accounts["m1"]
    await console_login(http, slug)
    page = await http.get(f"/console/counter/{number}")
    assert page.status_code == 200 and "收款并售电" in page.text
    key = re.search(r'name="form_key" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    body = {"amount": "50", "method": "cash", "outlet_id": str(g.outlet_id), "form_key": key}
    no_csrf = await http.post(f"/console/counter/{number}/sell", data=body)
    assert no_csrf.status_code == 403 and await _sales(db, g) == 0
    bad = await console_form(http, f"/console/counter/{number}/sell", {**body, "amount": "12.345"})
    assert bad.status_code == 422 and "最多 2 位小数" in bad.text and await _sales(db, g) == 0
    first = await console_form(
        http, f"/console/counter/{number}/sell", body, follow_redirects=False
    )
    again = await console_form(
        http, f"/console/counter/{number}/sell", body, follow_redirects=False
    )
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]  # the same receipt
    assert await _sales(db, g) == 1
    receipt = await http.get(first.headers["location"])
    assert "¥50.00" in receipt.text and "冲正本笔售电" in receipt.text
    assert "(Asia/Shanghai)" in receipt.text
    no = first.headers["location"].rsplit("/", 1)[1]
    rkey = re.search(r'name="form_key" value="([0-9a-f]+)"', receipt.text).group(1)  # type: ignore[union-attr]
    empty = await console_form(
        http, f"/console/sales/{no}/reverse", {"reason": "", "form_key": rkey}
    )
    assert empty.status_code == 422 and "请填写" in empty.text
    keyless = await console_form(http, f"/console/sales/{no}/reverse", {"reason": "收错户号"})
    assert keyless.status_code == 422 and "刷新页面" in keyless.text
    reversal = {"reason": "收错户号", "form_key": rkey}
    done = await console_form(
        http, f"/console/sales/{no}/reverse", reversal, follow_redirects=False
    )
    # A double click (the same form sent again) reverses once and shows the first result.
    resent = await console_form(
        http, f"/console/sales/{no}/reverse", reversal, follow_redirects=False
    )
    assert done.status_code == resent.status_code == 303
    assert resent.headers["location"] == done.headers["location"]
    shown = await http.get(done.headers["location"])
    assert "已冲正" in shown.text and "收错户号" in shown.text
    async with db.tenant(g.tenant_id) as conn:
        entries = await conn.scalar(
            sa.text("SELECT count(*) FROM journal_entry WHERE kind = 'reversal'")
        )
    assert entries == 1
    twice = await console_form(
        http, f"/console/sales/{no}/reverse", {"reason": "again", "form_key": "e" * 32}
    )
    assert twice.status_code == 409
    xlsx = await http.get("/console/sales?export=xlsx")
    rows = list(load_workbook(io.BytesIO(xlsx.content)).active.iter_rows(values_only=True))
    assert rows[0][0] == "收据" and rows[1][0] == no and rows[1][6] == 50 and rows[1][8]


async def test_another_groups_account_and_sale_are_not_found(
    db: Database, http: httpx.AsyncClient
) -> None:
    _, slug = await _group(db)
    other, _ = await _group(db)
    await console_login(http, slug)
    r = await http.get(f"/console/accounts/{other.accounts['m1']}")
    # (both groups number their accounts alike: the page shows our own A000001)
    assert r.status_code == 200 and "Shop 1" in r.text
    missing = await http.get("/console/accounts/Z999999")
    assert missing.status_code == 404 and "未找到" in missing.text
    sale = await http.get("/console/sales/R99999999")
    assert sale.status_code == 404
    sell = await console_form(
        http,
        "/console/counter/Z999999/sell",
        {"amount": "5", "method": "cash", "outlet_id": str(other.outlet_id), "form_key": "k" * 32},
    )
    assert sell.status_code == 404 and await _sales(db, other) == 0


async def test_the_gateway_page_lists_meters_waiting_for_installation(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug = await _group(db)
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO reading_quarantine (gateway_id, device, channel, measured_at, "
                "tenant_id, reason, reading, received_at) VALUES (:g, 'new-201', 1, :at, :t, "
                "'unknown_channel', CAST(:r AS jsonb), :at)"
            ),
            {
                "g": g.gateway_id,
                "at": datetime.now(UTC),
                "t": g.tenant_id,
                "r": '{"total": "321.50"}',
            },
        )
        code = await conn.scalar(sa.text("SELECT code FROM gateway"))
    await console_login(http, slug)
    listing = await http.get("/console/gateways")
    assert listing.status_code == 200 and code in listing.text
    page = await http.get(f"/console/gateways/{code}")
    assert "new-201" in page.text and "321.50" in page.text and "m1" in page.text
    assert "已留存但不计费的读数" not in page.text
    # a registered meter whose clock runs two hours fast: its reading is kept aside, shown
    now = datetime.now(UTC)
    ahead = Reading(device="m1", measured_at=now + timedelta(hours=2), total=Decimal("12"))
    batch = TelemetryBatch(gateway=code, boot_id="b", seq=1, sent_at=now, readings=(ahead,))
    await IngestService(db, CommandTiming()).store_telemetry(code, batch, now)
    page = await http.get(f"/console/gateways/{code}")
    assert "已留存但不计费的读数" in page.text and "表计时钟偏快" in page.text
    assert (await http.get(f"/console/gateways/gw-{uuid.uuid4().hex}")).status_code == 404


async def test_the_import_page_names_the_refused_row(db: Database, http: httpx.AsyncClient) -> None:
    g, slug = await _group(db)
    await console_login(http, slug)
    page = await http.get("/console/imports")
    assert page.status_code == 200 and "导入" in page.text
    template = (ROOT / "cloud/registry/import_template.csv").read_bytes()
    token = http.cookies.get("prepay_csrf")
    key = re.search(r'name="form_key" value="([0-9a-f]+)"', page.text)
    assert key, "the import form has no one-time key"
    r = await http.post(
        "/console/imports",
        data={"csrf_token": token or "", "mode": "import", "form_key": key.group(1)},
        files={"file": ("legacy.csv", template, "text/csv")},
    )
    # the template's example names the demo's gateway, unknown to this group
    assert r.status_code == 422 and "没有写入任何数据" in r.text
    assert re.search(r'<td class="num">2</td>', r.text)  # row 2, the example row
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM account")) == 1
    # the run's refused rows, as Excel, to correct the file against
    link = re.search(r'href="(/console/imports\?export=xlsx&amp;run=[0-9a-f-]+)"', r.text)
    assert link, "the earlier runs list no refused rows to download"
    book = await http.get(link.group(1).replace("&amp;", "&"))
    rows = list(load_workbook(io.BytesIO(book.content)).active.iter_rows(values_only=True))
    assert rows[0] == ("行", "列", "原因") and rows[1][0] == 2 and "网关" in rows[1][2]
    other = f"/console/imports?export=xlsx&run={uuid.uuid4()}"
    assert (await http.get(other)).status_code == 404


async def test_a_sales_receipt_is_drawn_before_the_click(db: Database, db_url: str) -> None:
    g, slug = await _group(db)
    before = receipt.kept_receipts()
    settings = CloudSettings(database_url=db_url, draw_receipts_ahead=True)
    async with api_client(settings, db_url) as http:
        await console_login(http, slug)
        body = {
            "amount": "8.00",
            "method": "cash",
            "outlet_id": str(g.outlet_id),
            "form_key": uuid.uuid4().hex,
        }
        r = await console_form(
            http, f"/console/counter/{g.accounts['m1']}/sell", body, follow_redirects=False
        )
        assert r.status_code == 303

        async def drawn() -> bool:
            return receipt.kept_receipts() > before

        await wait_for(drawn, 30, "the receipt drawn in the background")
        kept = receipt.kept_receipts()
        pdf = await http.get(f"/api/v1/sales/{r.headers['location'].rsplit('/', 1)[1]}/receipt.pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert receipt.kept_receipts() == kept  # served as drawn, not drawn again


async def test_a_refusal_names_its_values_in_chinese(db: Database, http: httpx.AsyncClient) -> None:
    g, slug = await _group(db)
    await console_login(http, slug)
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE account SET status = 'closed'"))
    number = g.accounts["m1"]
    body = {"amount": "5", "method": "cash", "outlet_id": str(g.outlet_id), "form_key": "c" * 32}
    r = await console_form(http, f"/console/counter/{number}/sell", body)
    assert r.status_code == 409 and f"户号 {number} 已销户" in r.text
    assert await _sales(db, g) == 0


async def _premises(db: Database, g: Seeded) -> tuple[uuid.UUID, uuid.UUID]:
    """A free premises at the group's site, and its electricity tariff."""
    async with db.tenant(g.tenant_id) as conn:
        building = await conn.scalar(
            sa.text(
                "INSERT INTO building (id, tenant_id, site_id, name) "
                "VALUES (gen_random_uuid(), :t, :s, 'C栋') RETURNING id"
            ),
            {"t": g.tenant_id, "s": g.site_id},
        )
        premises = await conn.scalar(
            sa.text(
                "INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number, kind) "
                "VALUES (gen_random_uuid(), :t, :s, :b, '1', '108', 'shop') RETURNING id"
            ),
            {"t": g.tenant_id, "s": g.site_id, "b": building},
        )
        tariff = await conn.scalar(sa.text("SELECT id FROM tariff WHERE utility = 'electricity'"))
    return premises, tariff


async def _opened(db: Database, g: Seeded) -> tuple[int, int]:
    async with db.tenant(g.tenant_id) as conn:
        accounts = await conn.scalar(sa.text("SELECT count(*) FROM account"))
        customers = await conn.scalar(sa.text("SELECT count(*) FROM customer"))
    return int(accounts or 0), int(customers or 0)


async def test_open_an_account_with_its_first_sale(db: Database, http: httpx.AsyncClient) -> None:
    g, slug = await _group(db)
    await console_login(http, slug)
    premises, tariff = await _premises(db, g)
    page = await http.get("/console/accounts/new")
    assert page.status_code == 200 and "首次售电" in page.text
    body = {
        "name": "周记茶行",
        "phone": "13900002222",
        "premises_id": str(premises),
        "with_electricity": "1",
        "tariff_electricity": str(tariff),
        "amount": "30.00",
        "method": "cash",
        "outlet_id": str(g.outlet_id),
        "form_key": "f" * 32,
    }
    before = (await _opened(db, g), await _sales(db, g))
    # The sale refused (an outlet that is none of the group's): nothing is opened.
    gone = await console_form(
        http, "/console/accounts/new", {**body, "outlet_id": str(uuid.uuid4())}
    )
    assert gone.status_code == 404 and "营业厅" in gone.text and "不存在" in gone.text
    bad = await console_form(http, "/console/accounts/new", {**body, "amount": "-5"})
    assert bad.status_code == 422 and "金额须大于 ¥0" in bad.text
    assert (await _opened(db, g), await _sales(db, g)) == before

    done = await console_form(http, "/console/accounts/new", body, follow_redirects=False)
    assert done.status_code == 303, done.text
    where = done.headers["location"]
    m = re.search(r"/console/accounts/([^/?]+)\?done=opened&receipt=(R\d+)", where)
    assert m is not None, where
    number, receipt_no = m.groups()
    shown = await http.get(where)
    assert "开户成功" in shown.text and receipt_no in shown.text and "30.00" in shown.text
    assert await _sales(db, g) == before[1] + 1
    # A re-sent form opens nothing more and shows the same opening.
    again = await console_form(http, "/console/accounts/new", body, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == where
    assert await _sales(db, g) == before[1] + 1
    pdf = await http.get(f"/api/v1/sales/{receipt_no}/receipt.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert number.startswith("A")


async def test_a_transfer_in_debt_is_refused_in_chinese_and_written_off(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec(balance="10.00")
    g = await seed_group(db, spec)
    await console_login(http, spec.slug)
    number = g.accounts["m1"]
    async with db.tenant(g.tenant_id) as conn:
        account_id = await conn.scalar(
            sa.text("SELECT id FROM account WHERE number = :n"), {"n": number}
        )
        await post(  # ¥14 used on ¥10 paid
            conn,
            g.tenant_id,
            ledger.EntryDraft(
                idempotency_key="usage:console-test",
                kind=ledger.EntryKind.USAGE,
                actor="test",
                effective_at=datetime.now(UTC),
                legs=ledger.usage(
                    ledger.wallet(account_id, number),
                    ledger.revenue("electricity"),
                    Decimal("14.00"),
                ),
                reason="usage",
            ),
        )
        await conn.execute(sa.text("UPDATE device_command SET state = 'acked'"))
    body = {"name": "接手人", "how": "move", "form_key": "t" * 32}
    r = await console_form(http, f"/console/accounts/{number}/transfer", body)
    assert r.status_code == 409, r.text
    assert f"户号 {number} 欠费 ¥4.00：过户不会把欠费转给新客户" in r.text
    assert await _opened(db, g) == (1, 1)
    off = {**body, "how": "write_off", "reason": "原租户失联", "form_key": "u" * 32}
    r = await console_form(
        http, f"/console/accounts/{number}/transfer", off, follow_redirects=False
    )
    assert r.status_code == 303 and "done=transferred" in r.headers["location"], r.text
    async with db.tenant(g.tenant_id) as conn:
        balances = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT a.number, la.balance FROM account a "
                        "JOIN ledger_account la ON la.id = a.wallet_id"
                    )
                )
            ).all()
        )
    assert len(balances) == 2 and set(balances.values()) == {0}
