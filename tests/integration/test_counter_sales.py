"""The counter against the real PostgreSQL: scoped operators and cross-outlet grants,
bank transfers, reversal (冲正) and each of its refusals with nothing changed, receipts
(PDF text, ESC/POS bytes), pages of sales, other groups' sales not found."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from cloud.auth import PERMISSIONS, Principal, hash_password
from cloud.check import check
from cloud.db import Database
from cloud.payments.handover import record_handover
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, group_spec


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _group(db: Database, balance: str = "10.00") -> tuple[Seeded, str]:
    spec = group_spec(balance=balance)
    return await seed_group(db, spec), spec.slug


async def _outlet(db: Database, g: Seeded, name: str, own_site: bool = False) -> uuid.UUID:
    """A new outlet at the group's site, or (``own_site``) at a new site of its own."""
    outlet_id, site_id = uuid.uuid4(), g.site_id
    async with db.tenant(g.tenant_id) as conn:
        if own_site:
            site_id = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO site (id, tenant_id, name, timezone) "
                    "VALUES (:id, :t, :n, 'Asia/Shanghai')"
                ),
                {"id": site_id, "t": g.tenant_id, "n": f"{name} site"},
            )
        await conn.execute(
            sa.text("INSERT INTO outlet (id, tenant_id, site_id, name) VALUES (:id, :t, :s, :n)"),
            {"id": outlet_id, "t": g.tenant_id, "s": site_id, "n": name},
        )
    return outlet_id


async def _operator(
    db: Database,
    http: httpx.AsyncClient,
    g: Seeded,
    slug: str,
    permissions: list[str],
    scope: str = "tenant",
    scope_ids: list[uuid.UUID] | None = None,
) -> tuple[uuid.UUID, dict[str, str]]:
    """A new operator with a role of ``permissions`` and that scope; bearer headers."""
    username = f"clerk{uuid.uuid4().hex[:6]}"
    op_id, role_id = uuid.uuid4(), uuid.uuid4()
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("INSERT INTO role (id, tenant_id, name, permissions) VALUES (:id, :t, :n, :p)"),
            {"id": role_id, "t": g.tenant_id, "n": f"role {username}", "p": permissions},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active, scope, scope_ids) VALUES (:id, :t, :u, :d, :h, :r, true, "
                ":s, :ids)"
            ),
            {
                "id": op_id,
                "t": g.tenant_id,
                "u": username,
                "d": "李收银",
                "h": hash_password("clerk-pass"),
                "r": role_id,
                "s": scope,
                "ids": scope_ids or [],
            },
        )
    r = await http.post(
        "/api/v1/auth/token",
        json={"tenant": slug, "username": username, "password": "clerk-pass"},
    )
    assert r.status_code == 200, r.text
    return op_id, {"authorization": f"Bearer {r.json()['access_token']}"}


async def _sell(
    http: httpx.AsyncClient, auth: dict[str, str], account: str, amount: str, **extra: Any
) -> httpx.Response:
    body = {"account": account, "amount": amount, **extra}
    headers = {**auth, "Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    return await http.post("/api/v1/sales", json=body, headers=headers)


async def _balance(http: httpx.AsyncClient, auth: dict[str, str], account: str) -> str:
    r = await http.get(f"/api/v1/accounts/{account}/balance", headers=auth)
    assert r.status_code == 200, r.text
    return str(r.json()["balance"])


async def _grant(
    db: Database, g: Seeded, operator_id: uuid.UUID, outlet_id: uuid.UUID
) -> uuid.UUID:
    grant_id = uuid.uuid4()
    now = datetime.now(UTC)
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outlet_grant (id, tenant_id, operator_id, outlet_id, starts_at, "
                "ends_at, reason, granted_by, created_at) VALUES (:id, :t, :op, :o, :s, :e, "
                ":why, 'operator:admin', :s)"
            ),
            {
                "id": grant_id,
                "t": g.tenant_id,
                "op": operator_id,
                "o": outlet_id,
                "s": now - timedelta(minutes=5),
                "e": now + timedelta(hours=8),
                "why": "东区营业厅停电",
            },
        )
    return grant_id


COUNTER = ["registry.view", "sale.create"]


async def test_scoped_operator_sells_at_own_outlet_only_until_granted(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug = await _group(db)
    outlet_b = await _outlet(db, g, "East Office", own_site=True)
    op_id, auth = await _operator(
        db, http, g, slug, [*COUNTER, "sale.reverse"], "outlet", [g.outlet_id]
    )
    account = g.accounts["m1"]

    own = await _sell(http, auth, account, "5.00", outlet_id=str(g.outlet_id))
    assert own.status_code == 201, own.text
    assert own.json()["grant_id"] is None and own.json()["outlet_id"] == str(g.outlet_id)

    refused = await _sell(http, auth, account, "5.00", outlet_id=str(outlet_b))
    assert refused.status_code == 403, refused.text
    assert "outside your scope" in refused.json()["detail"]
    nowhere = await _sell(http, auth, account, "5.00")
    assert nowhere.status_code == 422 and "outlet" in nowhere.json()["detail"]
    assert await _balance(http, auth, account) == "15.00"

    grant_id = await _grant(db, g, op_id, outlet_b)
    granted = await _sell(http, auth, account, "7.00", outlet_id=str(outlet_b))
    assert granted.status_code == 201, granted.text
    assert granted.json()["grant_id"] == str(grant_id)
    detail = await http.get(f"/api/v1/sales/{granted.json()['receipt_no']}", headers=auth)
    assert detail.status_code == 200, detail.text
    assert detail.json()["outlet"] == "East Office"
    assert detail.json()["grant"]["id"] == str(grant_id)
    assert detail.json()["grant"]["reason"] == "东区营业厅停电"

    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE outlet_grant SET revoked_at = now(), revoked_by = 'x' WHERE id = :g"),
            {"g": grant_id},
        )
    after = await _sell(http, auth, account, "7.00", outlet_id=str(outlet_b))
    assert after.status_code == 403
    assert await _balance(http, auth, account) == "22.00"
    # the sale made under the grant stays the operator's own: listed, and reversible today
    mine = await http.get("/api/v1/sales?limit=10", headers=auth)
    assert granted.json()["receipt_no"] in [s["receipt_no"] for s in mine.json()["items"]]
    rev = await http.post(
        f"/api/v1/sales/{granted.json()['receipt_no']}/reverse",
        json={"reason": "sold at the wrong office"},
        headers=auth,
    )
    assert rev.status_code == 200, rev.text
    assert await _balance(http, auth, account) == "15.00"


async def test_bank_transfer_sits_in_transfer_clearing(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug = await _group(db)
    auth = await admin_auth(http, slug)
    r = await _sell(http, auth, g.accounts["m1"], "120.00", method="transfer")
    assert r.status_code == 201, r.text
    assert r.json()["method"] == "transfer" and r.json()["balance_after"] == "130.00"
    async with db.tenant(g.tenant_id) as conn:
        held = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = 'clearing:transfer'")
        )
        day = await conn.scalar(sa.text("SELECT business_day FROM counter_sale"))
    assert held == Decimal("120.00")
    assert day == datetime.now(ZoneInfo("Asia/Shanghai")).date()  # the site's, cut-off 00:00
    bad = await _sell(http, auth, g.accounts["m1"], "1.00", method="wechat")
    assert bad.status_code == 422


async def _state(db: Database, g: Seeded) -> tuple[Any, ...]:
    """What a refused reversal must leave as it was."""
    async with db.tenant(g.tenant_id) as conn:
        return (
            await conn.scalar(
                sa.text("SELECT count(*) FROM journal_entry WHERE kind = 'reversal'")
            ),
            await conn.scalar(
                sa.text("SELECT count(*) FROM counter_sale WHERE reversed_at IS NOT NULL")
            ),
            await conn.scalar(
                sa.text("SELECT count(*) FROM audit_event WHERE action = 'sale.reverse'")
            ),
            await conn.scalar(
                sa.text("SELECT balance FROM ledger_account WHERE code LIKE 'wallet:%'")
            ),
        )


async def test_reversal_mirrors_the_sale_and_control_cuts_supply(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug = await _group(db, balance="0.00")
    auth = await admin_auth(http, slug)
    sale = await _sell(http, auth, g.accounts["m1"], "50.00")
    receipt = sale.json()["receipt_no"]
    r = await http.post(
        f"/api/v1/sales/{receipt}/reverse", json={"reason": "收错账户"}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["balance_after"] == "0.00"
    assert r.json()["commands"] >= 1  # the balance is back at the credit limit: a trip
    async with db.tenant(g.tenant_id) as conn:
        entry = (
            await conn.execute(
                sa.text(
                    "SELECT r.kind, r.reverses, s.entry_id, s.reversal_entry_id, s.reversed_by, "
                    "s.reversal_reason FROM counter_sale s JOIN journal_entry r ON "
                    "r.id = s.reversal_entry_id"
                )
            )
        ).one()
        desired = await conn.scalar(
            sa.text("SELECT desired FROM supply_twin WHERE channel_id = :c"),
            {"c": g.channels["m1"]},
        )
        audited = await conn.scalar(
            sa.text("SELECT detail->>'reason' FROM audit_event WHERE action = 'sale.reverse'")
        )
    assert entry.kind == "reversal" and entry.reverses == entry.entry_id
    assert entry.reversed_by == "operator:admin" and entry.reversal_reason == "收错账户"
    assert desired == "off" and audited == "收错账户"
    detail = await http.get(f"/api/v1/sales/{receipt}", headers=auth)
    assert detail.json()["reversal"]["reason"] == "收错账户"
    assert (await check(db, [g.tenant_id])).ok

    again = await http.post(
        f"/api/v1/sales/{receipt}/reverse", json={"reason": "again"}, headers=auth
    )
    assert again.status_code == 409 and "already reversed" in again.json()["detail"]


async def test_each_refused_reversal_changes_nothing(db: Database, http: httpx.AsyncClient) -> None:
    g, slug = await _group(db)
    auth = await admin_auth(http, slug)
    _, clerk = await _operator(db, http, g, slug, COUNTER)

    async def sale() -> str:
        r = await _sell(http, auth, g.accounts["m1"], "20.00")
        assert r.status_code == 201, r.text
        return str(r.json()["receipt_no"])

    async def refused(receipt: str, status: int, words: str, who: dict[str, str] = auth) -> None:
        before = await _state(db, g)
        r = await http.post(
            f"/api/v1/sales/{receipt}/reverse", json={"reason": "wrong"}, headers=who
        )
        assert r.status_code == status, r.text
        assert words in r.text
        assert await _state(db, g) == before

    # without sale.reverse
    await refused(await sale(), 403, "sale.reverse", clerk)
    # without a reason: too short for the API, blank for the rule
    receipt = await sale()
    before = await _state(db, g)
    for reason in ["", "  ", "\x00bad"]:
        r = await http.post(
            f"/api/v1/sales/{receipt}/reverse", json={"reason": reason}, headers=auth
        )
        assert r.status_code == 422, r.text
    blank = await http.post(
        f"/api/v1/sales/{receipt}/reverse", json={"reason": "    "}, headers=auth
    )
    assert blank.status_code == 422 and "needs a reason" in blank.json()["detail"]
    assert await _state(db, g) == before
    # the business day has closed
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "UPDATE counter_sale SET business_day = business_day - 1 WHERE receipt_no = :r"
            ),
            {"r": receipt},
        )
    await refused(receipt, 409, "has closed")
    # the operator's cash for the day has been handed over
    receipt = await sale()
    async with db.tenant(g.tenant_id) as conn:
        day = await conn.scalar(
            sa.text("SELECT business_day FROM counter_sale WHERE receipt_no = :r"), {"r": receipt}
        )
    admin = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
    handover = await record_handover(db, admin, g.operator_id, day, datetime.now(UTC))
    assert handover.amount == Decimal("40.00")  # today's two cash sales (one moved a day back)
    await refused(receipt, 409, "handed over")
    # the meter has taken the sale's recharge
    g2, slug2 = await _group(db)
    auth2 = await admin_auth(http, slug2)
    r = await _sell(http, auth2, g2.accounts["m1"], "20.00")
    receipt2 = r.json()["receipt_no"]
    async with db.tenant(g2.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO device_command (id, tenant_id, gateway_id, channel_id, "
                "service_point_id, origin, action, params, state, reason, created_at, deadline, "
                "attempts, result) VALUES (gen_random_uuid(), :t, :gw, :c, :p, 'topup', "
                "'recharge', CAST(:params AS jsonb), 'acked', '', now(), now(), 1, '{}')"
            ),
            {
                "t": g2.tenant_id,
                "gw": g2.gateway_id,
                "c": g2.channels["m1"],
                "p": g2.points["m1"],
                "params": f'{{"cause": "sale:{receipt2}", "amount": "20.00"}}',
            },
        )
    before2 = await _state(db, g2)
    r = await http.post(
        f"/api/v1/sales/{receipt2}/reverse", json={"reason": "wrong"}, headers=auth2
    )
    assert r.status_code == 409 and "meter has already taken" in r.json()["detail"]
    assert await _state(db, g2) == before2


def _pdf_text(pdf: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.pdf"
        path.write_bytes(pdf)
        out = subprocess.run(
            ["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True
        )
        fonts = subprocess.run(
            ["pdffonts", str(path)], capture_output=True, check=True, text=True
        ).stdout
    assert "CJK" in fonts and "yes" in fonts  # the CJK font is embedded
    return out.stdout


async def test_receipts_show_the_sale_the_grant_and_the_reversal(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug = await _group(db)
    outlet_b = await _outlet(db, g, "East Office")
    op_id, clerk = await _operator(
        db, http, g, slug, [*COUNTER, "sale.reverse"], "outlet", [g.outlet_id]
    )
    await _grant(db, g, op_id, outlet_b)
    sale = await _sell(http, clerk, g.accounts["m1"], "50.00", outlet_id=str(outlet_b))
    receipt = sale.json()["receipt_no"]
    async with db.tenant(g.tenant_id) as conn:
        group_name = await conn.scalar(
            sa.text("SELECT name FROM tenant WHERE id = :t"), {"t": g.tenant_id}
        )

    for layout in ("a5", "80mm"):
        r = await http.get(f"/api/v1/sales/{receipt}/receipt.pdf?layout={layout}", headers=clerk)
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        text = _pdf_text(r.content)
        assert "\x0c" not in text.rstrip("\x0c"), "the receipt fits one page"
        for shown in [
            group_name,
            "Riverside Market",
            "East Office",
            "李收银",
            g.accounts["m1"],
            "Shop 1",
            "¥50.00",
            "伍拾元整",
            "现金",
            "¥60.00",  # balance after
            receipt,
            "Asia/Shanghai",  # the time's zone (on a roll its offset may wrap to a new line)
            "(UTC+08:00)",
            "异地售电",
        ]:
            assert shown in text, (layout, shown, text)
        assert "已冲正" not in text

    esc = await http.get(f"/api/v1/sales/{receipt}/receipt.escpos", headers=clerk)
    assert esc.status_code == 200
    assert esc.content.startswith(b"\x1c\x26")  # Chinese mode: GB18030 text
    assert esc.content.endswith(b"\x1dV\x00")  # the cut
    printed = esc.content.decode("gb18030")
    for shown in ["伍拾元整", "¥50.00", receipt, "East Office", "异地售电", g.accounts["m1"]]:
        assert shown in printed

    rev = await http.post(
        f"/api/v1/sales/{receipt}/reverse", json={"reason": "客户多付"}, headers=clerk
    )
    assert rev.status_code == 200, rev.text
    text = _pdf_text(
        (await http.get(f"/api/v1/sales/{receipt}/receipt.pdf", headers=clerk)).content
    )
    flat = "".join(text.split())  # the reversal's box wraps where the operator's name ends
    assert "已冲正" in flat and "客户多付" in flat
    printed = (await http.get(f"/api/v1/sales/{receipt}/receipt.escpos", headers=clerk)).content
    assert "已冲正" in printed.decode("gb18030")

    bad = await http.get(f"/api/v1/sales/{receipt}/receipt.pdf?layout=a4", headers=clerk)
    assert bad.status_code == 422


async def test_pages_of_sales_filter_and_stay_in_scope(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug = await _group(db)
    auth = await admin_auth(http, slug)
    receipts = [
        (await _sell(http, auth, g.accounts["m1"], f"{i}.00")).json()["receipt_no"]
        for i in (1, 2, 3)
    ]
    r = await http.get("/api/v1/sales?limit=2&offset=0", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 3
    assert [s["receipt_no"] for s in r.json()["items"]] == receipts[::-1][:2]
    r = await http.get("/api/v1/sales?limit=2&offset=2&operator=admin", headers=auth)
    assert [s["receipt_no"] for s in r.json()["items"]] == receipts[:1]
    day = (await http.get(f"/api/v1/sales/{receipts[0]}", headers=auth)).json()["business_day"]
    r = await http.get(f"/api/v1/sales?business_day={day}&account={g.accounts['m1']}", headers=auth)
    assert r.json()["total"] == 3
    r = await http.get("/api/v1/sales?account=A999999", headers=auth)
    assert r.json()["total"] == 0
    for bad in ["limit=0", "limit=201", "offset=-1", "business_day=yesterday", "account=%00"]:
        assert (await http.get(f"/api/v1/sales?{bad}", headers=auth)).status_code == 422, bad
    # an operator scoped to another site sees none of them
    other_site = uuid.uuid4()
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO site (id, tenant_id, name, timezone) "
                "VALUES (:id, :t, 'North Park', 'Asia/Shanghai')"
            ),
            {"id": other_site, "t": g.tenant_id},
        )
    _, far = await _operator(db, http, g, slug, COUNTER, "site", [other_site])
    assert (await http.get("/api/v1/sales", headers=far)).json()["total"] == 0
    assert (await http.get(f"/api/v1/sales/{receipts[0]}", headers=far)).status_code == 404
    _, nobody = await _operator(db, http, g, slug, ["registry.view"])
    assert (await http.get("/api/v1/sales", headers=nobody)).status_code == 403


async def test_another_groups_sale_is_not_found_and_nothing_changes(
    db: Database, http: httpx.AsyncClient
) -> None:
    mine, slug = await _group(db)
    theirs, their_slug = await _group(db)
    auth = await admin_auth(http, slug)
    their_auth = await admin_auth(http, their_slug)
    receipt = (await _sell(http, auth, mine.accounts["m1"], "8.00")).json()["receipt_no"]
    before = await _state(db, mine)
    for path in ["", "/receipt.pdf", "/receipt.escpos"]:
        r = await http.get(f"/api/v1/sales/{receipt}{path}", headers=their_auth)
        assert r.status_code == 404, (path, r.text)
    r = await http.post(
        f"/api/v1/sales/{receipt}/reverse", json={"reason": "not mine"}, headers=their_auth
    )
    assert r.status_code == 404
    assert (await http.get("/api/v1/sales", headers=their_auth)).json()["total"] == 0
    their_outlet = await _sell(
        http, their_auth, theirs.accounts["m1"], "1.00", outlet_id=str(mine.outlet_id)
    )
    assert their_outlet.status_code == 404
    assert await _state(db, mine) == before
    assert (await http.get(f"/api/v1/sales/{receipt}", headers=auth)).status_code == 200


async def _meter_controlled(db: Database, g: Seeded) -> None:
    """m1 becomes meter-controlled, its meter's purchase count known (3)."""
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE service_point SET control_mode = 'meter' WHERE id = :p"),
            {"p": g.points["m1"]},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO control_state (service_point_id, tenant_id, purchase_count) "
                "VALUES (:p, :t, 3)"
            ),
            {"p": g.points["m1"], "t": g.tenant_id},
        )


async def test_reversal_cancels_a_queued_recharge_and_waits_for_a_sent_one(
    db: Database, http: httpx.AsyncClient
) -> None:
    g, slug = await _group(db)
    await _meter_controlled(db, g)
    auth = await admin_auth(http, slug)
    queued = (await _sell(http, auth, g.accounts["m1"], "30.00")).json()["receipt_no"]
    sent = (await _sell(http, auth, g.accounts["m1"], "40.00")).json()["receipt_no"]

    async def command(receipt: str) -> str:
        async with db.tenant(g.tenant_id) as conn:
            state = await conn.scalar(
                sa.text("SELECT state FROM device_command WHERE params->>'cause' = :c"),
                {"c": f"sale:{receipt}"},
            )
        return str(state)

    assert await command(queued) == "queued"
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "UPDATE device_command SET state = 'sent', sent_at = now() "
                "WHERE params->>'cause' = :c"
            ),
            {"c": f"sale:{sent}"},
        )
    before = await _state(db, g)
    r = await http.post(f"/api/v1/sales/{sent}/reverse", json={"reason": "wrong"}, headers=auth)
    assert r.status_code == 409 and "on its way to the meter" in r.json()["detail"]
    assert await _state(db, g) == before and await command(sent) == "sent"

    r = await http.post(f"/api/v1/sales/{queued}/reverse", json={"reason": "wrong"}, headers=auth)
    assert r.status_code == 200, r.text
    assert await command(queued) == "superseded"  # the meter never gets it
    assert await _balance(http, auth, g.accounts["m1"]) == "50.00"  # 10 + 30 + 40 - 30


async def test_a_closed_account_takes_no_sale(db: Database, http: httpx.AsyncClient) -> None:
    g, slug = await _group(db)
    auth = await admin_auth(http, slug)
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE account SET status = 'closed', closed_at = now() WHERE number = :n"),
            {"n": g.accounts["m1"]},
        )
    r = await _sell(http, auth, g.accounts["m1"], "5.00")
    assert r.status_code == 409 and f"account {g.accounts['m1']} is closed" in r.json()["detail"]
    assert await _balance(http, auth, g.accounts["m1"]) == "10.00"


async def test_an_outlet_clerk_cannot_credit_an_account_of_a_site_beyond_their_scope(
    db: Database, http: httpx.AsyncClient
) -> None:
    """Naming their own outlet proves nothing about the account: a clerk of outlet A
    selling to an account whose supply is at another site gets 404, and no money moves."""
    g, slug = await _group(db)
    outlet_b = await _outlet(db, g, "East Office", own_site=True)
    _op, auth = await _operator(db, http, g, slug, COUNTER, "outlet", [g.outlet_id])
    async with db.tenant(g.tenant_id) as conn:
        east = await conn.scalar(
            sa.text("SELECT site_id FROM outlet WHERE id = :o"), {"o": outlet_b}
        )
        await conn.execute(
            sa.text("UPDATE service_point SET site_id = :s WHERE id = :p"),
            {"s": east, "p": g.points["m1"]},
        )
    refused = await _sell(http, auth, g.accounts["m1"], "5.00", outlet_id=str(g.outlet_id))
    assert refused.status_code == 404, refused.text
    async with db.tenant(g.tenant_id) as conn:
        sales = await conn.scalar(sa.text("SELECT count(*) FROM counter_sale"))
    assert sales == 0
