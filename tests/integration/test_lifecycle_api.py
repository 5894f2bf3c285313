"""The lifecycle over HTTP: the counter's day from customer to cancellation, and every
route's permission, scope, other-group and bad-input refusals (nothing changed by them)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cloud.auth import hash_password
from cloud.db import Database
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, group_spec

SNIPPET = """# prepay-gateway scan: 1 meter(s) on bus bus1
buses:
- name: bus1
  transport: tcp
  timeout_s: 0.3
  devices:
  - key: bus1-u5
    profile: acrel-ddsy1352-modbus
    unit: 5
"""


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


class Group:
    def __init__(self, g: Seeded, slug: str, code: str, tariff: uuid.UUID, premises: uuid.UUID):
        self.g, self.slug, self.code, self.tariff, self.premises = g, slug, code, tariff, premises


async def _group(db: Database) -> Group:
    spec = group_spec(meters=0)
    g = await seed_group(db, spec)
    async with db.tenant(g.tenant_id) as conn:
        tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
        building = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO building (id, tenant_id, site_id, name) VALUES (:b, :t, :s, 'B栋')"
            ),
            {"b": building, "t": g.tenant_id, "s": g.site_id},
        )
        premises = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number) "
                "VALUES (:p, :t, :s, :b, '3', '301')"
            ),
            {"p": premises, "t": g.tenant_id, "s": g.site_id, "b": building},
        )
    return Group(g, spec.slug, spec.gateway_code, tariff, premises)


async def _operator(
    db: Database,
    http: httpx.AsyncClient,
    grp: Group,
    perms: list[str],
    scope: str = "tenant",
    scope_ids: list[uuid.UUID] | None = None,
) -> dict[str, str]:
    name = f"op{uuid.uuid4().hex[:6]}"
    async with db.tenant(grp.g.tenant_id) as conn:
        role = uuid.uuid4()
        await conn.execute(
            sa.text("INSERT INTO role (id, tenant_id, name, permissions) VALUES (:r, :t, :n, :p)"),
            {"r": role, "t": grp.g.tenant_id, "n": name, "p": perms},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active, scope, scope_ids) VALUES (gen_random_uuid(), :t, :u, :u, :h, "
                ":r, true, :s, :ids)"
            ),
            {
                "t": grp.g.tenant_id,
                "u": name,
                "h": hash_password("pw-123456"),
                "r": role,
                "s": scope,
                "ids": scope_ids or [],
            },
        )
    r = await http.post(
        "/api/v1/auth/token", json={"tenant": grp.slug, "username": name, "password": "pw-123456"}
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


def _open_body(grp: Group, **extra: Any) -> dict[str, Any]:
    return {
        "customer": {"name": "Lin Feng", "phone": "13900000001", "id_number": "110101199001011234"},
        "premises_id": str(grp.premises),
        "points": [{"utility": "electricity", "tariff_id": str(grp.tariff)}],
        **extra,
    }


async def _count(db: Database, grp: Group, table: str) -> int:
    async with db.tenant(grp.g.tenant_id) as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)


async def _ack(db: Database, grp: Group) -> None:
    async with db.tenant(grp.g.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE device_command SET state = 'acked' WHERE state IN ('queued', 'sent')")
        )


async def test_counter_day_over_http(db: Database, http: httpx.AsyncClient) -> None:
    grp = await _group(db)
    auth = await admin_auth(http, grp.slug)
    body = _open_body(
        grp,
        first_sale={
            "amount": "30.00",
            "method": "cash",
            "outlet_id": str(grp.g.outlet_id),
            "idempotency_key": "open-1",
        },
    )
    r = await http.post("/api/v1/accounts", json=body, headers=auth)
    assert r.status_code == 201, r.text
    number, point = r.json()["account"], r.json()["points"][0]
    assert r.json()["sale"]["balance_after"] == "30.00"

    found = await http.get("/api/v1/accounts", params={"q": "B栋-3-301"}, headers=auth)
    assert found.json()["total"] == 1 and found.json()["items"][0]["number"] == number
    customers = await http.get("/api/v1/customers", params={"q": "lin"}, headers=auth)
    cid = customers.json()[0]["id"]
    assert customers.json()[0]["accounts"] == [number]
    r = await http.patch(f"/api/v1/customers/{cid}", json={"phone": "13900000002"}, headers=auth)
    assert r.status_code == 200 and r.json()["phone"] == "13900000002"

    r = await http.post(
        f"/api/v1/service-points/{point}/install",
        json={
            "scan": {"gateway_code": grp.code, "snippet": SNIPPET, "key": "bus1-u5"},
            "install_register": "12.5",
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    page = (await http.get(f"/api/v1/accounts/{number}", headers=auth)).json()
    meter = page["points"][0]["meter"]
    assert meter["device_key"] == "bus1-u5" and meter["address"] == "5"
    assert meter["install_register"] == "12.500" and page["balance"] == "30.00"
    assert page["sales"][0]["amount"] == "30.00"
    assert (await http.get("/api/v1/accounts", params={"q": "5"}, headers=auth)).json()[
        "total"
    ] == 1

    await _ack(db, grp)
    r = await http.post(f"/api/v1/service-points/{point}/remove", json={}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["charged"] == "0.00" and r.json()["final_register"] == "12.500"
    r = await http.post(
        f"/api/v1/accounts/{number}/cancel",
        json={"settlement": "refund", "refund_amount": "30.00"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert r.json()["refunded"] == "30.00" and r.json()["receipt_no"].startswith("R")
    page = (await http.get(f"/api/v1/accounts/{number}", headers=auth)).json()
    assert page["status"] == "closed" and page["balance"] == "0.00"


async def test_transfer_over_http(db: Database, http: httpx.AsyncClient) -> None:
    grp = await _group(db)
    auth = await admin_auth(http, grp.slug)
    r = await http.post("/api/v1/accounts", json=_open_body(grp), headers=auth)
    number = r.json()["account"]
    r = await http.post(
        f"/api/v1/accounts/{number}/transfer",
        json={"customer": {"name": "New Holder"}, "settlement": "move"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    new = r.json()["new_account"]
    page = (await http.get(f"/api/v1/accounts/{new}", headers=auth)).json()
    assert page["customer"] == "New Holder" and len(page["points"]) == 1


async def test_another_groups_ids_are_not_found_and_change_nothing(
    db: Database, http: httpx.AsyncClient
) -> None:
    mine, theirs = await _group(db), await _group(db)
    auth = await admin_auth(http, mine.slug)
    their_auth = await admin_auth(http, theirs.slug)
    r = await http.post("/api/v1/accounts", json=_open_body(theirs), headers=their_auth)
    number, point = r.json()["account"], r.json()["points"][0]
    cid = (await http.get("/api/v1/customers", headers=their_auth)).json()[0]["id"]
    device = {
        "gateway_code": mine.code,
        "key": "k1",
        "profile": "acrel-ddsy1352-modbus",
        "bus": "bus1",
        "address": "1",
    }
    calls = [
        ("GET", f"/api/v1/accounts/{number}", None),
        ("PATCH", f"/api/v1/customers/{cid}", {"name": "Hijack"}),
        (
            "POST",
            f"/api/v1/service-points/{point}/install",
            {"device": device, "install_register": "0"},
        ),
        (
            "POST",
            f"/api/v1/service-points/{point}/swap",
            {"device": device, "final_register": "1", "initial_register": "0"},
        ),
        ("POST", f"/api/v1/service-points/{point}/remove", {}),
        ("POST", f"/api/v1/accounts/{number}/cancel", {}),
        ("POST", f"/api/v1/accounts/{number}/transfer", {"customer": {"name": "X"}}),
        ("POST", "/api/v1/accounts", _open_body(mine, premises_id=str(theirs.premises))),
        ("POST", "/api/v1/accounts", _open_body(mine, customer=None, customer_id=cid)),
    ]
    for method, url, body in calls:
        r = await http.request(method, url, json=body, headers=auth)
        assert r.status_code == 404, (url, r.status_code, r.text)
    assert (await http.get("/api/v1/accounts", params={"q": number}, headers=auth)).json()[
        "total"
    ] == 0
    page = (await http.get(f"/api/v1/accounts/{number}", headers=their_auth)).json()
    assert page["status"] == "active" and page["customer"] == "Lin Feng"
    assert await _count(db, mine, "account") == 0 and await _count(db, mine, "device") == 0


async def test_permissions_and_scope(db: Database, http: httpx.AsyncClient) -> None:
    grp = await _group(db)
    auth = await admin_auth(http, grp.slug)
    r = await http.post("/api/v1/accounts", json=_open_body(grp), headers=auth)
    number, point = r.json()["account"], r.json()["points"][0]
    viewer = await _operator(db, http, grp, ["registry.view"])
    install = {
        "device": {
            "gateway_code": grp.code,
            "key": "k1",
            "profile": "acrel-ddsy1352-modbus",
            "bus": "bus1",
            "address": "1",
        },
        "install_register": "0",
    }
    for url, body in [
        ("/api/v1/accounts", _open_body(grp)),
        ("/api/v1/customers", {"name": "Nobody"}),
        (f"/api/v1/service-points/{point}/install", install),
        (f"/api/v1/service-points/{point}/remove", {}),
        (f"/api/v1/accounts/{number}/cancel", {}),
        (f"/api/v1/accounts/{number}/transfer", {"customer": {"name": "X"}}),
    ]:
        r = await http.post(url, json=body, headers=viewer)
        assert r.status_code == 403, (url, r.text)
    # An operator scoped to another site does not see the account at all.
    async with db.tenant(grp.g.tenant_id) as conn:
        other_site = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO site (id, tenant_id, name, timezone, friendly_weekends, "
                "friendly_holidays, notice_minutes, alarm_hysteresis) "
                "VALUES (:s, :t, 'Far away', 'Asia/Shanghai', false, false, 0, 1)"
            ),
            {"s": other_site, "t": grp.g.tenant_id},
        )
    far = await _operator(
        db, http, grp, ["registry.view", "meter.install", "account.close"], "site", [other_site]
    )
    assert (await http.get(f"/api/v1/accounts/{number}", headers=far)).status_code == 404
    assert (await http.get("/api/v1/accounts", headers=far)).json()["total"] == 0
    r = await http.post(f"/api/v1/service-points/{point}/install", json=install, headers=far)
    assert r.status_code == 404
    assert await _count(db, grp, "device") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"install_register": "-1", "device": {"gateway_code": "G", "key": "k"}},
        {"install_register": "1.2345", "device": {"gateway_code": "G", "key": "k"}},
        {"install_register": "NaN", "device": {"gateway_code": "G", "key": "k"}},
        {"read": True, "install_register": "1", "device": {"gateway_code": "G", "key": "k"}},
        {"device": {"gateway_code": "G", "key": "k"}},
        {"install_register": "1"},
        {"install_register": "1", "device": {"gateway_code": "G", "key": "k\x00"}},
        {"install_register": "1", "device": {"gateway_code": "G", "key": "k", "channel": 0}},
        {"install_register": "1", "scan": {"gateway_code": "G", "snippet": "{{", "key": "k"}},
        {"install_register": "1", "scan": {"gateway_code": "G", "snippet": SNIPPET, "key": "zz"}},
        {"install_register": "1", "device": {"gateway_code": "G", "key": "new-one"}},
        {
            "install_register": "1",
            "device": {
                "gateway_code": "G",
                "key": "k",
                "profile": "nope",
                "bus": "b",
                "address": "1",
            },
        },
        {"install_register": "1", "device": {"gateway_code": "G", "key": "k"}, "extra": 1},
    ],
)
async def test_bad_install_is_422_and_changes_nothing(
    db: Database, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    grp = await _group(db)
    auth = await admin_auth(http, grp.slug)
    point = (await http.post("/api/v1/accounts", json=_open_body(grp), headers=auth)).json()[
        "points"
    ][0]
    for where in ("device", "scan"):
        if where in body and body[where]["gateway_code"] == "G":
            body = {**body, where: {**body[where], "gateway_code": grp.code}}
    r = await http.post(f"/api/v1/service-points/{point}/install", json=body, headers=auth)
    assert r.status_code == 422, r.text
    assert await _count(db, grp, "device") == 0 and await _count(db, grp, "binding") == 0


@pytest.mark.parametrize(
    "patch",
    [
        {"points": []},
        {"points": [{"utility": "gas", "tariff_id": "00000000-0000-0000-0000-000000000000"}]},
        {"customer": {"name": ""}},
        {"customer": {"name": "Li\x00"}},
        {"customer_id": "00000000-0000-0000-0000-000000000001"},  # and a customer: both
        {
            "first_sale": {
                "amount": "-1",
                "outlet_id": "00000000-0000-0000-0000-000000000001",
                "idempotency_key": "k",
            }
        },
        {"premises_id": "not-a-uuid"},
    ],
)
async def test_bad_open_is_422_and_changes_nothing(
    db: Database, http: httpx.AsyncClient, patch: dict[str, Any]
) -> None:
    grp = await _group(db)
    auth = await admin_auth(http, grp.slug)
    r = await http.post("/api/v1/accounts", json={**_open_body(grp), **patch}, headers=auth)
    assert r.status_code == 422, r.text
    assert await _count(db, grp, "account") == 0 and await _count(db, grp, "customer") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"settlement": "burn"},
        {"refund_amount": "0"},
        {"settlement": "refund", "refund_amount": "999.00"},
        {"settlement": "move"},
        {"write_off": True, "reason": "x\x00yz"},
        {"final_registers": {"00000000-0000-0000-0000-000000000001": "1"}},
    ],
)
async def test_bad_cancel_is_4xx_and_changes_nothing(
    db: Database, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    grp = await _group(db)
    auth = await admin_auth(http, grp.slug)
    body0 = _open_body(
        grp,
        first_sale={"amount": "5.00", "outlet_id": str(grp.g.outlet_id), "idempotency_key": "s1"},
    )
    number = (await http.post("/api/v1/accounts", json=body0, headers=auth)).json()["account"]
    r = await http.post(f"/api/v1/accounts/{number}/cancel", json=body, headers=auth)
    assert r.status_code == 422, r.text
    page = (await http.get(f"/api/v1/accounts/{number}", headers=auth)).json()
    assert page["status"] == "active" and page["balance"] == "5.00"


async def test_a_site_operator_works_at_their_site_and_search_pages(
    db: Database, http: httpx.AsyncClient
) -> None:
    grp = await _group(db)
    clerk = await _operator(
        db, http, grp, ["registry.view", "registry.edit", "account.open"], "site", [grp.g.site_id]
    )
    r = await http.post("/api/v1/accounts", json=_open_body(grp), headers=clerk)
    assert r.status_code == 201, r.text
    auth = await admin_auth(http, grp.slug)
    async with db.tenant(grp.g.tenant_id) as conn:  # a second premises for a second account
        building = await conn.scalar(sa.text("SELECT id FROM building"))
        premises = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number) "
                "VALUES (:p, :t, :s, :b, '3', '302')"
            ),
            {"p": premises, "t": grp.g.tenant_id, "s": grp.g.site_id, "b": building},
        )
    body = _open_body(grp, premises_id=str(premises))
    assert (await http.post("/api/v1/accounts", json=body, headers=auth)).status_code == 201
    pages = [
        (await http.get("/api/v1/accounts", params={"limit": 1, "offset": n}, headers=clerk)).json()
        for n in (0, 1, 2)
    ]
    assert [p["total"] for p in pages[:2]] == [2, 2] and pages[2]["items"] == []
    assert pages[0]["items"][0]["number"] < pages[1]["items"][0]["number"]
    r = await http.get("/api/v1/accounts", params={"limit": 0}, headers=clerk)
    assert r.status_code == 422
    r = await http.get("/api/v1/accounts", params={"site_id": str(uuid.uuid4())}, headers=clerk)
    assert r.status_code == 404


async def test_open_with_a_first_sale_over_http_is_one_step(
    db: Database, http: httpx.AsyncClient
) -> None:
    grp = await _group(db)
    auth = await admin_auth(http, grp.slug)
    sale = {"amount": "25.00", "outlet_id": str(grp.g.outlet_id), "idempotency_key": "open-a"}
    gone = {**sale, "outlet_id": str(uuid.uuid4())}
    r = await http.post("/api/v1/accounts", json=_open_body(grp, first_sale=gone), headers=auth)
    assert r.status_code == 404, r.text
    assert await _count(db, grp, "account") == 0 and await _count(db, grp, "customer") == 0
    meter = _open_body(grp, first_sale=sale)
    meter["points"][0]["control_mode"] = "meter"
    r = await http.post("/api/v1/accounts", json=meter, headers=auth)
    assert r.status_code == 422 and "after its meter is installed" in r.text
    assert await _count(db, grp, "account") == 0 and await _count(db, grp, "counter_sale") == 0

    r = await http.post("/api/v1/accounts", json=_open_body(grp, first_sale=sale), headers=auth)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["sale"]["amount"] == "25.00" and out["sale"]["balance_after"] == "25.00"
    again = await http.post("/api/v1/accounts", json=_open_body(grp, first_sale=sale), headers=auth)
    assert again.status_code == 201 and again.json() == out
    assert await _count(db, grp, "account") == 1 and await _count(db, grp, "counter_sale") == 1
    pdf = await http.get(f"/api/v1/sales/{out['sale']['receipt_no']}/receipt.pdf", headers=auth)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
