"""Cross-outlet selling (异地售电) in the console against the real PostgreSQL: an outlet
clerk granted another site's outlet through the API finds that site's account at the
counter, sells to it, and cannot once the grant has ended; the grant opens the counter
only (not 营业's account page, not settings); another group's outlet cannot be granted."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, console_form, console_login, group_spec


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _sales(db: Database, g: Seeded) -> int:
    async with db.tenant(g.tenant_id) as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM counter_sale")) or 0)


async def _clerk_elsewhere(http: httpx.AsyncClient, auth: dict[str, str]) -> tuple[str, str]:
    """Through the API: a new site with its outlet, and a counter clerk scoped to that
    outlet alone. Returns (the clerk's id, login name)."""
    site = await http.post("/api/v1/sites", json={"name": "东区"}, headers=auth)
    assert site.status_code == 201, site.text
    outlet = await http.post(
        f"/api/v1/sites/{site.json()['id']}/outlets", json={"name": "东区营业厅"}, headers=auth
    )
    assert outlet.status_code == 201, outlet.text
    role = await http.post(
        "/api/v1/roles",
        json={"name": "收银员", "permissions": ["registry.view", "sale.create"]},
        headers=auth,
    )
    assert role.status_code == 201, role.text
    username = f"clerk{uuid.uuid4().hex[:6]}"
    clerk = await http.post(
        "/api/v1/operators",
        json={
            "username": username,
            "display_name": "王收银",
            "password": "clerk-pass-1",
            "role_id": role.json()["id"],
            "scope": "outlet",
            "scope_ids": [outlet.json()["id"]],
        },
        headers=auth,
    )
    assert clerk.status_code == 201, clerk.text
    return clerk.json()["id"], username


def _key(page: str) -> str:
    m = re.search(r'name="form_key" value="([0-9a-f]+)"', page)
    assert m, "the sale form has no one-time key"
    return m.group(1)


async def test_a_granted_clerk_finds_and_sells_to_the_granted_sites_account_until_it_ends(
    db: Database, db_url: str, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    number = g.accounts["m1"]  # at the seeded site, whose outlet is g.outlet_id
    auth = await admin_auth(http, spec.slug)
    clerk_id, username = await _clerk_elsewhere(http, auth)
    async with api_client(CloudSettings(database_url=db_url), db_url) as clerk:
        await console_login(clerk, spec.slug, username, "clerk-pass-1")
        # Without a grant the other site's account is not there for them.
        none = await clerk.get("/console/counter", params={"q": number})
        assert none.status_code == 200 and "没有找到户号" in none.text
        assert (await clerk.get(f"/console/counter/{number}")).status_code == 404

        ends = datetime.now(UTC) + timedelta(seconds=10)
        grant = await http.post(
            f"/api/v1/operators/{clerk_id}/outlet-grants",
            json={
                "outlet_id": str(g.outlet_id),
                "starts_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
                "ends_at": ends.isoformat(),
                "reason": "西区营业厅停电",
            },
            headers=auth,
        )
        assert grant.status_code == 201, grant.text

        found = await clerk.get("/console/counter", params={"q": number})
        assert (
            found.status_code == 303 and found.headers["location"] == f"/console/counter/{number}"
        )
        page = await clerk.get(f"/console/counter/{number}")
        assert page.status_code == 200 and "收款并售电" in page.text
        # the granted outlet, at the account's site, is the one chosen
        assert re.search(rf'<option value="{g.outlet_id}" selected>', page.text), page.text
        body = {
            "amount": "12.00",
            "method": "cash",
            "outlet_id": str(g.outlet_id),
            "form_key": _key(page.text),
        }
        sold = await console_form(
            clerk, f"/console/counter/{number}/sell", body, follow_redirects=False
        )
        assert sold.status_code == 303, sold.text
        receipt = await clerk.get(sold.headers["location"])
        assert "¥12.00" in receipt.text and "西区营业厅停电" in receipt.text  # the grant shown
        assert await _sales(db, g) == 1
        # and through the API: the counter's search and the balance
        token = await http.post(
            "/api/v1/auth/token",
            json={"tenant": spec.slug, "username": username, "password": "clerk-pass-1"},
        )
        bearer = {"authorization": f"Bearer {token.json()['access_token']}"}
        hits = await http.get("/api/v1/accounts", params={"q": number}, headers=bearer)
        assert [h["number"] for h in hits.json()["items"]] == [number]
        balance = await http.get(f"/api/v1/accounts/{number}/balance", headers=bearer)
        assert balance.status_code == 200
        # The grant lets them sell, nothing more: not 营业's account page, not settings.
        assert (await clerk.get(f"/console/accounts/{number}")).status_code == 404
        site = await clerk.get(f"/console/settings/sites/{g.site_id}")
        assert site.status_code == 404

        await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.2)
        gone = await clerk.get("/console/counter", params={"q": number})
        assert gone.status_code == 200 and "没有找到户号" in gone.text
        assert (await clerk.get(f"/console/counter/{number}")).status_code == 404
        hits = await http.get("/api/v1/accounts", params={"q": number}, headers=bearer)
        assert hits.json()["total"] == 0
        balance = await http.get(f"/api/v1/accounts/{number}/balance", headers=bearer)
        assert balance.status_code == 404
        body["form_key"] = uuid.uuid4().hex
        late = await console_form(clerk, f"/console/counter/{number}/sell", body)
        assert late.status_code in (403, 404) and await _sales(db, g) == 1


async def test_another_groups_outlet_cannot_be_granted_nor_sold_at(
    db: Database, db_url: str, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec())
    auth = await admin_auth(http, spec.slug)
    clerk_id, username = await _clerk_elsewhere(http, auth)
    window = {
        "starts_at": datetime.now(UTC).isoformat(),
        "ends_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        "reason": "借用营业厅",
    }
    api = await http.post(
        f"/api/v1/operators/{clerk_id}/outlet-grants",
        json={"outlet_id": str(other.outlet_id), **window},
        headers=auth,
    )
    assert api.status_code == 404, api.text
    await console_login(http, spec.slug)
    page = await http.get("/console/settings/grants")
    console = await console_form(
        http,
        "/console/settings/grants",
        {
            "operator_id": clerk_id,
            "outlet_id": str(other.outlet_id),
            "starts_at": f"{datetime.now(UTC) + timedelta(days=1):%Y-%m-%dT%H:%M}",
            "ends_at": f"{datetime.now(UTC) + timedelta(days=2):%Y-%m-%dT%H:%M}",
            "reason": "借用营业厅",
            "form_key": _key(page.text),
        },
    )
    assert console.status_code == 404
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM outlet_grant")) == 0
    # Granted their own group's outlet, the clerk still reaches nothing of the other group.
    ok = await http.post(
        f"/api/v1/operators/{clerk_id}/outlet-grants",
        json={"outlet_id": str(g.outlet_id), **window},
        headers=auth,
    )
    assert ok.status_code == 201, ok.text
    stranger = f"外组客户{uuid.uuid4().hex[:4]}"
    async with db.tenant(other.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE customer SET name = :n"), {"n": stranger})
    async with api_client(CloudSettings(database_url=db_url), db_url) as clerk:
        await console_login(clerk, spec.slug, username, "clerk-pass-1")
        hits = await clerk.get("/console/counter", params={"q": stranger})
        assert hits.status_code == 200 and "没有找到户号" in hits.text
        body = {
            "amount": "5.00",
            "method": "cash",
            "outlet_id": str(other.outlet_id),
            "form_key": uuid.uuid4().hex,
        }
        sell = await console_form(clerk, f"/console/counter/{g.accounts['m1']}/sell", body)
        assert sell.status_code == 404 and await _sales(db, other) == 0 and await _sales(db, g) == 0
