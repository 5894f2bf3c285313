"""Collection in the field over HTTP: a cash sale to an account on the worker's books
lands in the worker's own cash drawer once, whatever is sent twice; its receipt comes as
a PDF and as ESC/POS bytes; an account off the books, or another group's, is 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, group_spec
from tests.integration.test_field_api import token
from tests.integration.test_field_readings import book_for, worker


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def test_a_field_sale_lands_in_the_workers_drawer_once(
    http: httpx.AsyncClient, db: Database
) -> None:
    spec = group_spec(meters=2)
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec(meters=1))
    who = await worker(db, g, also=("sale.create",))
    await book_for(db, g, who, ["m1"])
    auth = await token(http, spec.slug, "reader")
    sale = {"account": g.accounts["m1"], "amount": "50.00", "key": "phone-key-0001"}
    first = await http.post("/field/api/sales", json=sale, headers=auth)
    assert first.status_code == 200, first.text
    again = await http.post("/field/api/sales", json=sale, headers=auth)
    assert again.json()["receipt_no"] == first.json()["receipt_no"] and again.json()["replayed"]
    assert first.json()["balance_after"] == "60.00"
    async with db.tenant(g.tenant_id) as conn:
        drawer = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = :c"),
            {"c": f"cash:{who.operator_id}"},
        )
        sales = await conn.scalar(sa.text("SELECT count(*) FROM counter_sale"))
    assert Decimal(drawer) == Decimal("50.00") and sales == 1
    no = first.json()["receipt_no"]
    escpos = await http.get(f"/field/api/sales/{no}/receipt.escpos", headers=auth)
    assert escpos.status_code == 200
    # Chinese mode (FS &) first, the paper cut (GS V 0) last, the amount in between
    assert escpos.content.startswith(b"\x1c&") and escpos.content.endswith(b"\x1dV\x00")
    assert b"50.00" in escpos.content and spec.name.encode() in escpos.content
    pdf = await http.get(f"/field/api/sales/{no}/receipt.pdf", headers=auth)
    assert pdf.content.startswith(b"%PDF")
    # off the books; unknown here (account numbers are per group: another group's A000001
    # is this group's own A000001, so another group's account cannot even be named)
    for account in (g.accounts["m2"], "A999999"):
        r = await http.post(
            "/field/api/sales", json={**sale, "account": account, "key": f"k-{account}"},
            headers=auth,
        )  # fmt: skip
        assert r.status_code == 404, r.text
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM counter_sale")) == 1
    async with db.tenant(other.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM counter_sale")) == 0
