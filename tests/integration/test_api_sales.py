"""Counter sales over HTTP: idempotent replays, clear 422s, tenant isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cloud.db import Database
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, console_login, group_spec


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _group(db: Database) -> tuple[Seeded, str]:
    spec = group_spec()
    return await seed_group(db, spec), spec.slug


async def test_sale_credits_once_and_replay_changes_nothing(
    db: Database, http: httpx.AsyncClient
) -> None:
    group, slug = await _group(db)
    auth = await admin_auth(http, slug)
    account = group.accounts["m1"]
    body = {"account": account, "amount": "25.50", "method": "cash"}
    headers = {**auth, "Idempotency-Key": "counter-0001"}
    first = await http.post("/api/v1/sales", json=body, headers=headers)
    again = await http.post("/api/v1/sales", json=body, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["replayed"] is True
    assert again.json()["receipt_no"] == first.json()["receipt_no"]
    bal = await http.get(f"/api/v1/accounts/{account}/balance", headers=auth)
    assert bal.json()["balance"] == "35.50"  # 10.00 opening + 25.50 once

    clash = await http.post("/api/v1/sales", json={**body, "amount": "99.00"}, headers=headers)
    assert clash.status_code == 409
    assert "different sale" in clash.json()["detail"]


@pytest.mark.parametrize(
    "amount",
    ["-5.00", "0", "0.00", "1.234", "abc", "", "NaN", "Infinity", None, True, [1]],
)
async def test_bad_amount_is_a_clear_422(
    db: Database, http: httpx.AsyncClient, amount: object
) -> None:
    group, slug = await _group(db)
    auth = await admin_auth(http, slug)
    r = await http.post(
        "/api/v1/sales",
        json={"account": group.accounts["m1"], "amount": amount},
        headers={**auth, "Idempotency-Key": "bad-amount-1"},
    )
    assert r.status_code == 422, r.text
    assert any(e["loc"][-1] == "amount" for e in r.json()["detail"])
    bal = await http.get(f"/api/v1/accounts/{group.accounts['m1']}/balance", headers=auth)
    assert bal.json()["balance"] == "10.00"


async def test_missing_idempotency_key_is_422(db: Database, http: httpx.AsyncClient) -> None:
    group, slug = await _group(db)
    r = await http.post(
        "/api/v1/sales",
        json={"account": group.accounts["m1"], "amount": "5.00"},
        headers=await admin_auth(http, slug),
    )
    assert r.status_code == 422


async def test_another_groups_account_is_not_found(db: Database, http: httpx.AsyncClient) -> None:
    mine, slug = await _group(db)
    theirs, _ = await _group(db)
    auth = await admin_auth(http, slug)
    # Account numbers are per group, so look the other group's account up by point id.
    r = await http.get(f"/api/v1/service-points/{theirs.points['m1']}", headers=auth)
    assert r.status_code == 404
    r = await http.get(f"/api/v1/service-points/{mine.points['m1']}", headers=auth)
    assert r.status_code == 200


async def test_requests_without_login_are_401(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/service-points")).status_code == 401
    r = await http.get("/api/v1/service-points", headers={"authorization": "Bearer forged"})
    assert r.status_code == 401
    bad = await http.post(
        "/api/v1/auth/token", json={"tenant": "nope", "username": "a", "password": "b"}
    )
    assert bad.status_code == 401


async def test_console_login_and_service_point_page(db: Database, http: httpx.AsyncClient) -> None:
    group, slug = await _group(db)
    assert (await http.get("/console/", follow_redirects=False)).status_code == 303
    await console_login(http, slug)
    page = await http.get("/console/")
    assert page.status_code == 200
    assert "Shop 1 electricity" in page.text and group.accounts["m1"] in page.text
    assert 'http-equiv="refresh"' in page.text
