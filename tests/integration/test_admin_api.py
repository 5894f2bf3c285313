"""Registry administration over HTTP against PostgreSQL: every route's happy path, the
permission it needs (403), the operator's scope (404 outside it), another group's ids
(404, nothing changed) and bad input (422, nothing changed); no privilege escalation;
password resets and deactivation revoke sessions; scope narrows the existing routes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cloud.auth import PERMISSIONS, Principal
from cloud.db import Database
from cloud.registry.scope import outlet_permit
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, group_spec

H = dict[str, str]
SITE_ADMIN_PERMS = ["registry.view", "registry.edit", "operator.manage", "sale.create"]


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def login(http: httpx.AsyncClient, slug: str, user: str, password: str) -> H:
    r = await http.post(
        "/api/v1/auth/token", json={"tenant": slug, "username": user, "password": password}
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


@dataclass
class World:
    """Group A: its seeded site 1 (with a point), a site 2 with an outlet, a building and
    a premises at each; a site administrator of site 2, a viewer with no permission.
    Group B: another property group, with a site, building, premises, outlet, operator."""

    a: Seeded
    slug: str
    admin: H
    site1: uuid.UUID
    site2: uuid.UUID
    outlet2: uuid.UUID
    building1: uuid.UUID
    building2: uuid.UUID
    premises1: uuid.UUID
    premises2: uuid.UUID
    admin_role: uuid.UUID
    site_role: uuid.UUID
    none_role: uuid.UUID
    site_admin_id: uuid.UUID
    site_admin: H
    nobody: H
    b: Seeded
    b_admin: H
    b_building: uuid.UUID
    b_premises: uuid.UUID
    b_role: uuid.UUID


@pytest.fixture
async def w(db: Database, http: httpx.AsyncClient) -> World:
    spec = group_spec()
    a = await seed_group(db, spec)
    admin = await admin_auth(http, spec.slug)
    site2 = ok(await http.post("/api/v1/sites", json={"name": "Site 2"}, headers=admin), 201)
    outlet2 = ok(
        await http.post(f"/api/v1/sites/{site2['id']}/outlets", json={"name": "O2"}, headers=admin),
        201,
    )
    b1 = ok(
        await http.post(f"/api/v1/sites/{a.site_id}/buildings", json={"name": "B1"}, headers=admin),
        201,
    )
    b2 = ok(
        await http.post(
            f"/api/v1/sites/{site2['id']}/buildings", json={"name": "B2"}, headers=admin
        ),
        201,
    )
    p1 = ok(
        await http.post(
            f"/api/v1/buildings/{b1['id']}/premises",
            json={"floor": "1", "number": "101"},
            headers=admin,
        ),
        201,
    )
    p2 = ok(
        await http.post(
            f"/api/v1/buildings/{b2['id']}/premises",
            json={"floor": "2", "number": "201"},
            headers=admin,
        ),
        201,
    )
    roles = ok(await http.get("/api/v1/roles", headers=admin))
    site_role = ok(
        await http.post(
            "/api/v1/roles",
            json={"name": "site admin", "permissions": SITE_ADMIN_PERMS},
            headers=admin,
        ),
        201,
    )
    none_role = ok(
        await http.post(
            "/api/v1/roles", json={"name": "nothing", "permissions": []}, headers=admin
        ),
        201,
    )
    sa_op = ok(
        await http.post(
            "/api/v1/operators",
            json={
                "username": "siteadm",
                "display_name": "Site admin",
                "password": "site-admin-pw",
                "role_id": site_role["id"],
                "scope": "site",
                "scope_ids": [site2["id"]],
            },
            headers=admin,
        ),
        201,
    )
    ok(
        await http.post(
            "/api/v1/operators",
            json={
                "username": "nobody",
                "display_name": "No one",
                "password": "nobody-pw",
                "role_id": none_role["id"],
            },
            headers=admin,
        ),
        201,
    )
    bspec = group_spec()
    b = await seed_group(db, bspec)
    b_admin = await admin_auth(http, bspec.slug)
    bb = ok(
        await http.post(
            f"/api/v1/sites/{b.site_id}/buildings", json={"name": "BB"}, headers=b_admin
        ),
        201,
    )
    bp = ok(
        await http.post(
            f"/api/v1/buildings/{bb['id']}/premises",
            json={"floor": "1", "number": "1"},
            headers=b_admin,
        ),
        201,
    )
    b_roles = ok(await http.get("/api/v1/roles", headers=b_admin))
    return World(
        a,
        spec.slug,
        admin,
        a.site_id,
        uuid.UUID(site2["id"]),
        uuid.UUID(outlet2["id"]),
        uuid.UUID(b1["id"]),
        uuid.UUID(b2["id"]),
        uuid.UUID(p1["id"]),
        uuid.UUID(p2["id"]),
        uuid.UUID(roles[0]["id"]),
        uuid.UUID(site_role["id"]),
        uuid.UUID(none_role["id"]),
        uuid.UUID(sa_op["id"]),
        await login(http, spec.slug, "siteadm", "site-admin-pw"),
        await login(http, spec.slug, "nobody", "nobody-pw"),
        b,
        b_admin,
        uuid.UUID(bb["id"]),
        uuid.UUID(bp["id"]),
        uuid.UUID(b_roles[0]["id"]),
    )


async def _audits(db: Database, tenant: uuid.UUID, action: str) -> int:
    async with db.tenant(tenant) as conn:
        n = await conn.scalar(
            sa.text("SELECT count(*) FROM audit_event WHERE action = :a"), {"a": action}
        )
    return int(n or 0)


# --- sites ---------------------------------------------------------------------------


async def test_sites_happy_path(http: httpx.AsyncClient, w: World, db: Database) -> None:
    body = {
        "name": "Garden Court",
        "timezone": "Asia/Urumqi",
        "business_day_cutoff": "02:00",
        "friendly_night_start": "23:00",
        "friendly_night_end": "07:30",
        "friendly_weekends": False,
        "friendly_holidays": True,
        "notice_minutes": 60,
        "alarm_hysteresis": "2.50",
        "catalogue_price": "0.6200",
        "price_margin": "0.1",
    }
    site = ok(await http.post("/api/v1/sites", json=body, headers=w.admin), 201)
    assert site["timezone"] == "Asia/Urumqi" and site["business_day_cutoff"] == "02:00:00"
    assert site["alarm_hysteresis"] == "2.50" and site["catalogue_price"] == "0.6200"
    assert site["price_margin"] == "0.1000" and site["notice_minutes"] == 60
    assert ok(await http.get(f"/api/v1/sites/{site['id']}", headers=w.admin)) == site
    names = [s["name"] for s in ok(await http.get("/api/v1/sites", headers=w.admin))]
    assert {"Garden Court", "Site 2"} <= set(names)
    patched = ok(
        await http.patch(
            f"/api/v1/sites/{site['id']}",
            json={
                "notice_minutes": 30,
                "friendly_night_start": None,
                "friendly_night_end": None,
                "catalogue_price": None,
            },
            headers=w.admin,
        )
    )
    assert patched["notice_minutes"] == 30 and patched["friendly_night_start"] is None
    assert patched["catalogue_price"] is None and patched["timezone"] == "Asia/Urumqi"
    assert await _audits(db, w.a.tenant_id, "site.updated") == 1


async def test_sites_need_their_permissions(http: httpx.AsyncClient, w: World) -> None:
    assert (await http.get("/api/v1/sites", headers=w.nobody)).status_code == 403
    assert (await http.get(f"/api/v1/sites/{w.site1}", headers=w.nobody)).status_code == 403
    r = await http.post("/api/v1/sites", json={"name": "X"}, headers=w.nobody)
    assert r.status_code == 403 and "registry.edit" in r.json()["detail"]
    r = await http.patch(f"/api/v1/sites/{w.site1}", json={"name": "X"}, headers=w.nobody)
    assert r.status_code == 403
    assert (await http.get("/api/v1/sites")).status_code == 401


async def test_sites_narrow_to_scope(http: httpx.AsyncClient, w: World) -> None:
    listed = ok(await http.get("/api/v1/sites", headers=w.site_admin))
    assert [s["id"] for s in listed] == [str(w.site2)]
    assert (await http.get(f"/api/v1/sites/{w.site1}", headers=w.site_admin)).status_code == 404
    r = await http.patch(f"/api/v1/sites/{w.site1}", json={"name": "Mine"}, headers=w.site_admin)
    assert r.status_code == 404
    ok(
        await http.patch(
            f"/api/v1/sites/{w.site2}", json={"notice_minutes": 5}, headers=w.site_admin
        )
    )
    r = await http.post("/api/v1/sites", json={"name": "New"}, headers=w.site_admin)
    assert r.status_code == 403 and "tenant-wide" in r.json()["detail"]
    assert ok(await http.get(f"/api/v1/sites/{w.site1}", headers=w.admin))["name"] != "Mine"


async def test_another_groups_site_is_not_found(http: httpx.AsyncClient, w: World) -> None:
    before = ok(await http.get(f"/api/v1/sites/{w.b.site_id}", headers=w.b_admin))
    assert (await http.get(f"/api/v1/sites/{w.b.site_id}", headers=w.admin)).status_code == 404
    r = await http.patch(f"/api/v1/sites/{w.b.site_id}", json={"name": "Stolen"}, headers=w.admin)
    assert r.status_code == 404
    assert ok(await http.get(f"/api/v1/sites/{w.b.site_id}", headers=w.b_admin)) == before
    assert str(w.b.site_id) not in {
        s["id"] for s in ok(await http.get("/api/v1/sites", headers=w.admin))
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": "UTC+8"}, "unknown time zone"),
        ({"business_day_cutoff": "25:00"}, "business_day_cutoff"),
        ({"friendly_night_start": None}, "both a start and an end"),
        ({"friendly_night_start": "08:00"}, "must differ"),
        ({"notice_minutes": 10081}, "notice_minutes"),
        ({"notice_minutes": -1}, "notice_minutes"),
        ({"alarm_hysteresis": "0.001"}, "decimal places"),
        ({"alarm_hysteresis": "1000.01"}, "at most 1000"),
        ({"alarm_hysteresis": "NaN"}, "alarm_hysteresis"),
        ({"catalogue_price": "0"}, "more than 0"),
        ({"catalogue_price": "1.23456"}, "decimal places"),
        ({"price_margin": "1.5"}, "at most 1"),
        ({"price_margin": "-0.1"}, "at least 0"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "must not be blank"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\u0000b"}, "control"),
        ({"colour": "red"}, "colour"),
        ({}, "nothing to change"),
    ],
)
async def test_bad_site_settings_are_422_and_change_nothing(
    http: httpx.AsyncClient, w: World, db: Database, change: dict[str, Any], message: str
) -> None:
    before = ok(await http.get(f"/api/v1/sites/{w.site2}", headers=w.admin))
    r = await http.patch(f"/api/v1/sites/{w.site2}", json=change, headers=w.admin)
    assert r.status_code == 422, r.text
    assert message in r.text
    assert ok(await http.get(f"/api/v1/sites/{w.site2}", headers=w.admin)) == before
    assert await _audits(db, w.a.tenant_id, "site.updated") == 0
    if change:
        r = await http.post("/api/v1/sites", json={"name": "Bad", **change}, headers=w.admin)
        assert r.status_code == 422, r.text
    assert len(ok(await http.get("/api/v1/sites", headers=w.admin))) == 2
    assert await _audits(db, w.a.tenant_id, "site.created") == 1  # site 2 of the fixture


# --- buildings -----------------------------------------------------------------------


async def test_buildings(http: httpx.AsyncClient, w: World) -> None:
    url = f"/api/v1/sites/{w.site2}/buildings"
    ok(await http.post(url, json={"name": "一号楼"}, headers=w.site_admin), 201)
    names = [b["name"] for b in ok(await http.get(url, headers=w.site_admin))]
    assert names == ["B2", "一号楼"]
    dup = await http.post(url, json={"name": "B2"}, headers=w.admin)
    assert dup.status_code == 409 and "already exists" in dup.json()["detail"]
    assert (await http.post(url, json={"name": "X"}, headers=w.nobody)).status_code == 403
    assert (await http.get(url, headers=w.nobody)).status_code == 403
    other = f"/api/v1/sites/{w.site1}/buildings"
    assert (await http.get(other, headers=w.site_admin)).status_code == 404
    assert (await http.post(other, json={"name": "X"}, headers=w.site_admin)).status_code == 404
    foreign = f"/api/v1/sites/{w.b.site_id}/buildings"
    assert (await http.get(foreign, headers=w.admin)).status_code == 404
    assert (await http.post(foreign, json={"name": "X"}, headers=w.admin)).status_code == 404
    for bad in ({"name": ""}, {"name": "  "}, {"name": "x" * 101}, {}, {"name": "a", "x": 1}):
        assert (await http.post(url, json=bad, headers=w.admin)).status_code == 422
    assert [b["name"] for b in ok(await http.get(url, headers=w.admin))] == ["B2", "一号楼"]
    assert [b["name"] for b in ok(await http.get(foreign, headers=w.b_admin))] == ["BB"]


# --- premises ------------------------------------------------------------------------


async def test_premises_create_search_and_patch(http: httpx.AsyncClient, w: World) -> None:
    url = f"/api/v1/buildings/{w.building2}/premises"
    for floor in ("3", "4"):
        for n in range(1, 4):
            ok(
                await http.post(
                    url,
                    json={
                        "floor": floor,
                        "number": f"{floor}0{n}",
                        "kind": "flat",
                        "floor_area": "85.5",
                    },
                    headers=w.admin,
                ),
                201,
            )
    page = ok(
        await http.get(
            "/api/v1/premises", params={"site_id": str(w.site2), "limit": 4}, headers=w.admin
        )
    )
    assert page["total"] == 7 and len(page["items"]) == 4
    rest = ok(
        await http.get(
            "/api/v1/premises", params={"site_id": str(w.site2), "offset": 4}, headers=w.admin
        )
    )
    assert len(rest["items"]) == 3
    numbers = {p["number"] for p in page["items"] + rest["items"]}
    assert numbers == {"201", "301", "302", "303", "401", "402", "403"}
    floor3 = ok(
        await http.get(
            "/api/v1/premises",
            params={"building_id": str(w.building2), "floor": "3"},
            headers=w.admin,
        )
    )
    assert floor3["total"] == 3 and floor3["items"][0]["floor_area"] == "85.50"
    found = ok(await http.get("/api/v1/premises", params={"q": "40"}, headers=w.admin))
    assert {p["number"] for p in found["items"]} == {"401", "402", "403"}
    assert ok(await http.get("/api/v1/premises", params={"q": "%"}, headers=w.admin))["total"] == 0
    pid = found["items"][0]["id"]
    patched = ok(
        await http.patch(
            f"/api/v1/premises/{pid}", json={"kind": "office", "floor_area": None}, headers=w.admin
        )
    )
    assert patched["kind"] == "office" and patched["floor_area"] is None
    dup = await http.post(url, json={"floor": "3", "number": "301"}, headers=w.admin)
    assert dup.status_code == 409
    clash = await http.patch(f"/api/v1/premises/{pid}", json={"number": "301"}, headers=w.admin)
    assert clash.status_code == 409


async def test_premises_permissions_scope_and_other_groups(
    http: httpx.AsyncClient, w: World
) -> None:
    body = {"floor": "9", "number": "901"}
    url1 = f"/api/v1/buildings/{w.building1}/premises"
    assert (await http.post(url1, json=body, headers=w.nobody)).status_code == 403
    assert (await http.get("/api/v1/premises", headers=w.nobody)).status_code == 403
    r = await http.patch(f"/api/v1/premises/{w.premises1}", json={"floor": "2"}, headers=w.nobody)
    assert r.status_code == 403
    # the site administrator of site 2 sees only site 2's premises
    mine = ok(await http.get("/api/v1/premises", headers=w.site_admin))
    assert [p["id"] for p in mine["items"]] == [str(w.premises2)] and mine["total"] == 1
    assert (await http.post(url1, json=body, headers=w.site_admin)).status_code == 404
    r = await http.patch(
        f"/api/v1/premises/{w.premises1}", json={"floor": "2"}, headers=w.site_admin
    )
    assert r.status_code == 404
    # another group's
    foreign = f"/api/v1/buildings/{w.b_building}/premises"
    assert (await http.post(foreign, json=body, headers=w.admin)).status_code == 404
    r = await http.patch(f"/api/v1/premises/{w.b_premises}", json={"floor": "7"}, headers=w.admin)
    assert r.status_code == 404
    theirs = ok(await http.get("/api/v1/premises", headers=w.b_admin))
    assert [(p["floor"], p["number"]) for p in theirs["items"]] == [("1", "1")]
    ours = ok(await http.get("/api/v1/premises", headers=w.admin))
    assert str(w.b_premises) not in {p["id"] for p in ours["items"]}


@pytest.mark.parametrize(
    "body",
    [
        {"floor": "1", "number": "102", "floor_area": "0"},
        {"floor": "1", "number": "102", "floor_area": "-3"},
        {"floor": "1", "number": "102", "floor_area": "1.005"},
        {"floor": "1", "number": "102", "floor_area": "1000000.01"},
        {"floor": "1", "number": "102", "kind": "garage"},
        {"floor": "", "number": "102"},
        {"floor": "1", "number": " "},
        {"floor": "1", "number": "1\u00002"},
        {"number": "102"},
    ],
)
async def test_bad_premises_are_422_and_change_nothing(
    http: httpx.AsyncClient, w: World, body: dict[str, Any]
) -> None:
    url = f"/api/v1/buildings/{w.building1}/premises"
    assert (await http.post(url, json=body, headers=w.admin)).status_code == 422
    patch = {k: v for k, v in body.items() if k != "number" or "floor" in body}
    r = await http.patch(f"/api/v1/premises/{w.premises1}", json=patch, headers=w.admin)
    assert r.status_code == 422, r.text
    page = ok(await http.get("/api/v1/premises", params={"site_id": str(w.site1)}, headers=w.admin))
    assert [(p["floor"], p["number"], p["kind"], p["floor_area"]) for p in page["items"]] == [
        ("1", "101", "shop", None)
    ]


async def test_premises_paging_bounds(http: httpx.AsyncClient, w: World) -> None:
    for params in (
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"site_id": "nope"},
        {"q": "1\u0000"},
        {"floor": "\u0000"},
        {"q": "x" * 101},
    ):
        r = await http.get("/api/v1/premises", params=params, headers=w.admin)
        assert r.status_code == 422, params


# --- outlets -------------------------------------------------------------------------


async def test_outlets(http: httpx.AsyncClient, w: World) -> None:
    ok(
        await http.post(
            f"/api/v1/sites/{w.site2}/outlets", json={"name": "O2b"}, headers=w.site_admin
        ),
        201,
    )
    mine = ok(await http.get("/api/v1/outlets", headers=w.site_admin))
    assert [o["name"] for o in mine] == ["O2", "O2b"]
    every = ok(await http.get("/api/v1/outlets", headers=w.admin))
    assert {o["name"] for o in every} == {"Counter 1", "O2", "O2b"}
    by_site = ok(
        await http.get("/api/v1/outlets", params={"site_id": str(w.site1)}, headers=w.admin)
    )
    assert [o["name"] for o in by_site] == ["Counter 1"]
    dup = await http.post(f"/api/v1/sites/{w.site2}/outlets", json={"name": "O2"}, headers=w.admin)
    assert dup.status_code == 409
    r = await http.post(
        f"/api/v1/sites/{w.site1}/outlets", json={"name": "X"}, headers=w.site_admin
    )
    assert r.status_code == 404
    r = await http.post(f"/api/v1/sites/{w.b.site_id}/outlets", json={"name": "X"}, headers=w.admin)
    assert r.status_code == 404
    r = await http.post(f"/api/v1/sites/{w.site1}/outlets", json={"name": "X"}, headers=w.nobody)
    assert r.status_code == 403
    assert (await http.get("/api/v1/outlets", headers=w.nobody)).status_code == 403
    r = await http.post(f"/api/v1/sites/{w.site1}/outlets", json={"name": ""}, headers=w.admin)
    assert r.status_code == 422
    assert str(w.b.outlet_id) not in {o["id"] for o in every}
    assert len(ok(await http.get("/api/v1/outlets", headers=w.b_admin))) == 1


# --- roles ---------------------------------------------------------------------------


async def test_roles(http: httpx.AsyncClient, w: World, db: Database) -> None:
    role = ok(
        await http.post(
            "/api/v1/roles",
            json={"name": "clerk", "permissions": ["sale.create", "registry.view", "sale.create"]},
            headers=w.admin,
        ),
        201,
    )
    assert role["permissions"] == ["registry.view", "sale.create"]
    names = [r["name"] for r in ok(await http.get("/api/v1/roles", headers=w.admin))]
    assert names == ["administrator", "clerk", "nothing", "site admin"]
    patched = ok(
        await http.patch(
            f"/api/v1/roles/{role['id']}",
            json={"permissions": ["registry.view", "sale.create", "sale.reverse"]},
            headers=w.admin,
        )
    )
    assert patched["permissions"] == ["registry.view", "sale.create", "sale.reverse"]
    assert (
        await http.post("/api/v1/roles", json={"name": "clerk", "permissions": []}, headers=w.admin)
    ).status_code == 409
    r = await http.patch(f"/api/v1/roles/{role['id']}", json={"name": "nothing"}, headers=w.admin)
    assert r.status_code == 409
    assert await _audits(db, w.a.tenant_id, "role.updated") == 1


async def test_roles_refusals(http: httpx.AsyncClient, w: World) -> None:
    body = {"name": "x", "permissions": ["sale.create"]}
    assert (await http.post("/api/v1/roles", json=body, headers=w.nobody)).status_code == 403
    assert (await http.get("/api/v1/roles", headers=w.nobody)).status_code == 403
    r = await http.post("/api/v1/roles", json=body, headers=w.site_admin)  # roles are tenant's
    assert r.status_code == 403 and "tenant-wide" in r.json()["detail"]
    r = await http.patch(
        f"/api/v1/roles/{w.site_role}",
        json={"permissions": list(PERMISSIONS)},
        headers=w.site_admin,
    )
    assert r.status_code == 403
    r = await http.patch(f"/api/v1/roles/{w.b_role}", json={"permissions": []}, headers=w.admin)
    assert r.status_code == 404
    b_roles = ok(await http.get("/api/v1/roles", headers=w.b_admin))
    assert b_roles[0]["permissions"] == list(PERMISSIONS)
    for bad in (
        {"name": "y", "permissions": ["root"]},
        {"name": "", "permissions": []},
        {"name": "y"},
        {"name": "y", "permissions": "sale.create"},
    ):
        assert (await http.post("/api/v1/roles", json=bad, headers=w.admin)).status_code == 422
    r = await http.patch(
        f"/api/v1/roles/{w.site_role}", json={"permissions": ["root"]}, headers=w.admin
    )
    assert r.status_code == 422  # the schema names the permissions (an enum)
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "permissions", 0] and error["input"] == "root"
    assert "'sale.create'" in error["msg"]
    roles = {r["name"]: r for r in ok(await http.get("/api/v1/roles", headers=w.admin))}
    assert set(roles) == {"administrator", "nothing", "site admin"}
    assert roles["site admin"]["permissions"] == SITE_ADMIN_PERMS


# --- operators -----------------------------------------------------------------------


def _op(
    username: str,
    role: uuid.UUID,
    scope: str = "tenant",
    ids: list[str] | None = None,
    password: str = "clerk-password",
) -> dict[str, Any]:
    return {
        "username": username,
        "display_name": username.title(),
        "password": password,
        "role_id": str(role),
        "scope": scope,
        "scope_ids": ids or [],
    }


async def test_operators_by_the_site_administrator(http: httpx.AsyncClient, w: World) -> None:
    clerk_role = ok(
        await http.post(
            "/api/v1/roles",
            json={"name": "clerk", "permissions": ["registry.view", "sale.create"]},
            headers=w.admin,
        ),
        201,
    )
    op = ok(
        await http.post(
            "/api/v1/operators",
            json=_op("clerk2", clerk_role["id"], "outlet", [str(w.outlet2)]),
            headers=w.site_admin,
        ),
        201,
    )
    assert op["scope"] == "outlet" and op["scope_ids"] == [str(w.outlet2)]
    clerk = await login(http, w.slug, "clerk2", "clerk-password")
    assert [s["id"] for s in ok(await http.get("/api/v1/sites", headers=clerk))] == [str(w.site2)]
    seen = {o["username"] for o in ok(await http.get("/api/v1/operators", headers=w.site_admin))}
    assert seen == {"siteadm", "clerk2"}  # not the tenant-wide admin nor nobody
    every = {o["username"] for o in ok(await http.get("/api/v1/operators", headers=w.admin))}
    assert every == {"admin", "siteadm", "nobody", "clerk2"}
    patched = ok(
        await http.patch(
            f"/api/v1/operators/{op['id']}", json={"display_name": "柜员二"}, headers=w.site_admin
        )
    )
    assert patched["display_name"] == "柜员二"


async def test_no_privilege_escalation(http: httpx.AsyncClient, w: World, db: Database) -> None:
    # a tenant-wide operator
    r = await http.post("/api/v1/operators", json=_op("wide", w.site_role), headers=w.site_admin)
    assert r.status_code == 403 and "wider than your own" in r.json()["detail"]
    # a site they do not have
    r = await http.post(
        "/api/v1/operators",
        json=_op("s1", w.site_role, "site", [str(w.site1)]),
        headers=w.site_admin,
    )
    assert r.status_code == 403
    r = await http.post(
        "/api/v1/operators",
        json=_op("o1", w.site_role, "outlet", [str(w.a.outlet_id)]),
        headers=w.site_admin,
    )
    assert r.status_code == 403
    # a role with permissions they lack
    r = await http.post(
        "/api/v1/operators",
        json=_op("boss", w.admin_role, "site", [str(w.site2)]),
        headers=w.site_admin,
    )
    assert r.status_code == 403 and "do not hold" in r.json()["detail"]
    # nor by promoting themselves
    r = await http.patch(
        f"/api/v1/operators/{w.site_admin_id}",
        json={"role_id": str(w.admin_role)},
        headers=w.site_admin,
    )
    assert r.status_code == 403
    r = await http.patch(
        f"/api/v1/operators/{w.site_admin_id}", json={"scope": "tenant"}, headers=w.site_admin
    )
    assert r.status_code == 403
    # the tenant administrator is beyond their scope: not found, password untouched
    r = await http.post(
        f"/api/v1/operators/{w.a.operator_id}/password",
        json={"password": "taken-over"},
        headers=w.site_admin,
    )
    assert r.status_code == 404
    r = await http.patch(
        f"/api/v1/operators/{w.a.operator_id}", json={"active": False}, headers=w.site_admin
    )
    assert r.status_code == 404
    await admin_auth(http, w.slug)
    ops = {o["username"]: o for o in ok(await http.get("/api/v1/operators", headers=w.admin))}
    assert set(ops) == {"admin", "siteadm", "nobody"}
    assert ops["siteadm"]["scope"] == "site" and ops["siteadm"]["role"] == "site admin"
    assert await _audits(db, w.a.tenant_id, "operator.updated") == 0


async def test_password_reset_revokes_sessions(
    http: httpx.AsyncClient, w: World, db: Database
) -> None:
    sessions = [uuid.uuid4(), uuid.uuid4()]
    async with db.tenant(w.a.tenant_id) as conn:
        for sid in sessions:
            await conn.execute(
                sa.text(
                    "INSERT INTO operator_session (id, tenant_id, operator_id, created_at) "
                    "VALUES (:id, :t, :o, now())"
                ),
                {"id": sid, "t": w.a.tenant_id, "o": w.site_admin_id},
            )
    r = ok(
        await http.post(
            f"/api/v1/operators/{w.site_admin_id}/password",
            json={"password": "brand-new-pw"},
            headers=w.admin,
        )
    )
    assert r["sessions_revoked"] == 3  # the two above and the one the fixture logged in
    stale = await http.get("/api/v1/service-points", headers=w.site_admin)
    assert stale.status_code == 401  # that session ended with the reset
    async with db.tenant(w.a.tenant_id) as conn:
        open_ = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM operator_session WHERE operator_id = :o "
                "AND revoked_at IS NULL"
            ),
            {"o": w.site_admin_id},
        )
    assert open_ == 0
    bad = await http.post(
        "/api/v1/auth/token",
        json={"tenant": w.slug, "username": "siteadm", "password": "site-admin-pw"},
    )
    assert bad.status_code == 401
    await login(http, w.slug, "siteadm", "brand-new-pw")
    for body in ({"password": "short"}, {"password": "long-enough\u0000"}, {}):
        r = await http.post(
            f"/api/v1/operators/{w.site_admin_id}/password", json=body, headers=w.admin
        )
        assert r.status_code == 422
    await login(http, w.slug, "siteadm", "brand-new-pw")
    r = await http.post(
        f"/api/v1/operators/{w.site_admin_id}/password",
        json={"password": "nobody-does-it"},
        headers=w.nobody,
    )
    assert r.status_code == 403
    b_op = w.b.operator_id
    r = await http.post(
        f"/api/v1/operators/{b_op}/password", json={"password": "stolen-pw!"}, headers=w.admin
    )
    assert r.status_code == 404
    await admin_auth(http, await _slug(db, w.b.tenant_id))  # B's admin keeps their password


async def _slug(db: Database, tenant: uuid.UUID) -> str:
    async with db.platform() as conn:
        slug = await conn.scalar(sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": tenant})
    assert isinstance(slug, str)
    return slug


async def test_deactivating_revokes_and_locks_out(
    http: httpx.AsyncClient, w: World, db: Database
) -> None:
    async with db.tenant(w.a.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO operator_session (id, tenant_id, operator_id, created_at) "
                "VALUES (:id, :t, :o, now())"
            ),
            {"id": uuid.uuid4(), "t": w.a.tenant_id, "o": w.site_admin_id},
        )
    r = ok(
        await http.patch(
            f"/api/v1/operators/{w.site_admin_id}", json={"active": False}, headers=w.admin
        )
    )
    assert r["active"] is False
    assert (await http.get("/api/v1/sites", headers=w.site_admin)).status_code == 401
    async with db.tenant(w.a.tenant_id) as conn:
        open_ = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM operator_session "
                "WHERE operator_id = :o AND revoked_at IS NULL"
            ),
            {"o": w.site_admin_id},
        )
    assert open_ == 0  # (the administrator's own sessions go on)
    me = await http.patch(
        f"/api/v1/operators/{w.a.operator_id}", json={"active": False}, headers=w.admin
    )
    assert me.status_code == 422 and "yourself" in me.json()["detail"]


async def test_operator_refusals_change_nothing(http: httpx.AsyncClient, w: World) -> None:
    before = ok(await http.get("/api/v1/operators", headers=w.admin))
    for body in (
        _op("nobody", w.none_role),  # taken
    ):
        assert (await http.post("/api/v1/operators", json=body, headers=w.admin)).status_code == 409
    for body in (
        _op("x1", w.none_role, password="short"),
        _op("x 2", w.none_role),
        _op("x3", uuid.uuid4()),  # no such role
        _op("x4", w.b_role),  # another group's role
        _op("x5", w.none_role, "site", []),
        _op("x6", w.none_role, "site", [str(w.outlet2)]),  # an outlet is not a site
        _op("x7", w.none_role, "outlet", [str(w.b.outlet_id)]),  # another group's outlet
        _op("x8", w.none_role, "tenant", [str(w.site1)]),
        _op("x9", w.none_role, "building", [str(w.site1)]),
        {**_op("x10", w.none_role), "extra": 1},
    ):
        r = await http.post("/api/v1/operators", json=body, headers=w.admin)
        assert r.status_code == 422, (body, r.text)
    r = await http.post("/api/v1/operators", json=_op("x11", w.none_role), headers=w.nobody)
    assert r.status_code == 403
    assert (await http.get("/api/v1/operators", headers=w.nobody)).status_code == 403
    r = await http.patch(
        f"/api/v1/operators/{w.b.operator_id}", json={"active": False}, headers=w.admin
    )
    assert r.status_code == 404
    for patch in (
        {},
        {"scope": "site"},
        {"scope_ids": [str(w.site1)]},
        {"scope": "site", "scope_ids": [str(uuid.uuid4())]},
        {"display_name": ""},
        {"role_id": str(w.b_role)},
    ):
        r = await http.patch(f"/api/v1/operators/{w.site_admin_id}", json=patch, headers=w.admin)
        assert r.status_code == 422, (patch, r.text)
    assert ok(await http.get("/api/v1/operators", headers=w.admin)) == before
    assert ok(await http.get("/api/v1/sites", headers=w.b_admin))  # group B's admin still active


# --- cross-outlet grants -------------------------------------------------------------


async def _clerk(http: httpx.AsyncClient, w: World) -> str:
    op = ok(
        await http.post(
            "/api/v1/operators",
            json=_op("clerk1", w.none_role, "outlet", [str(w.a.outlet_id)]),
            headers=w.admin,
        ),
        201,
    )
    return str(op["id"])


def _grant(outlet: uuid.UUID, hours: float = 8, reason: str = "covering leave") -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(minutes=1)
    return {
        "outlet_id": str(outlet),
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=hours)).isoformat(),
        "reason": reason,
    }


async def test_grants_happy_path(http: httpx.AsyncClient, w: World, db: Database) -> None:
    clerk = await _clerk(http, w)
    g = ok(
        await http.post(
            f"/api/v1/operators/{clerk}/outlet-grants", json=_grant(w.outlet2), headers=w.admin
        ),
        201,
    )
    assert g["username"] == "clerk1" and g["outlet"] == "O2" and g["revoked_at"] is None
    assert g["granted_by"] == "operator:admin" and g["site_id"] == str(w.site2)
    listed = ok(await http.get("/api/v1/outlet-grants", headers=w.admin))
    assert [x["id"] for x in listed] == [g["id"]]
    assert [x["id"] for x in ok(await http.get("/api/v1/outlet-grants", headers=w.site_admin))] == [
        g["id"]
    ]
    mine = ok(
        await http.get("/api/v1/outlet-grants", params={"operator_id": clerk}, headers=w.admin)
    )
    assert len(mine) == 1
    revoked = ok(await http.post(f"/api/v1/outlet-grants/{g['id']}/revoke", headers=w.admin))
    assert revoked["revoked_by"] == "operator:admin" and revoked["revoked_at"]
    again = await http.post(f"/api/v1/outlet-grants/{g['id']}/revoke", headers=w.admin)
    assert again.status_code == 409
    assert await _audits(db, w.a.tenant_id, "outlet_grant.revoked") == 1
    who = Principal(
        w.a.tenant_id, uuid.UUID(clerk), "clerk1", frozenset(), "outlet", frozenset({w.a.outlet_id})
    )
    ok(
        await http.post(
            f"/api/v1/operators/{clerk}/outlet-grants", json=_grant(w.outlet2), headers=w.admin
        ),
        201,
    )
    async with db.tenant(w.a.tenant_id) as conn:
        permit = await outlet_permit(conn, who, w.outlet2, datetime.now(UTC))
    assert permit.grant_id is not None


async def test_grants_refusals(http: httpx.AsyncClient, w: World, db: Database) -> None:
    clerk = await _clerk(http, w)
    url = f"/api/v1/operators/{clerk}/outlet-grants"
    r = await http.post(url, json=_grant(w.a.outlet_id), headers=w.admin)
    assert r.status_code == 422 and "already in this operator's scope" in r.json()["detail"]
    r = await http.post(url, json=_grant(w.outlet2, hours=31 * 24 + 1), headers=w.admin)
    assert r.status_code == 422 and "31 days" in r.json()["detail"]
    assert (
        await http.post(url, json=_grant(w.outlet2, hours=-1), headers=w.admin)
    ).status_code == 422
    assert (
        await http.post(url, json=_grant(w.outlet2, reason=""), headers=w.admin)
    ).status_code == 422
    naive = {**_grant(w.outlet2), "starts_at": "2026-01-01T00:00:00"}
    assert (await http.post(url, json=naive, headers=w.admin)).status_code == 422
    r = await http.post(url, json=_grant(w.b.outlet_id), headers=w.admin)  # another group's
    assert r.status_code == 404
    r = await http.post(
        f"/api/v1/operators/{w.b.operator_id}/outlet-grants",
        json=_grant(w.outlet2),
        headers=w.admin,
    )
    assert r.status_code == 404
    # the site administrator of site 2 cannot manage a clerk of site 1
    r = await http.post(url, json=_grant(w.outlet2), headers=w.site_admin)
    assert r.status_code == 404
    assert (await http.post(url, json=_grant(w.outlet2), headers=w.nobody)).status_code == 403
    assert (await http.get("/api/v1/outlet-grants", headers=w.nobody)).status_code == 403
    assert ok(await http.get("/api/v1/outlet-grants", headers=w.admin)) == []
    g = ok(await http.post(url, json=_grant(w.outlet2), headers=w.admin), 201)
    r = await http.post(f"/api/v1/outlet-grants/{g['id']}/revoke", headers=w.nobody)
    assert r.status_code == 403
    r = await http.post(f"/api/v1/outlet-grants/{g['id']}/revoke", headers=w.b_admin)
    assert r.status_code == 404
    r = await http.post(f"/api/v1/outlet-grants/{uuid.uuid4()}/revoke", headers=w.admin)
    assert r.status_code == 404
    assert ok(await http.get("/api/v1/outlet-grants", headers=w.admin))[0]["revoked_at"] is None
    assert await _audits(db, w.a.tenant_id, "outlet_grant.created") == 1


# --- scope on the existing routes ----------------------------------------------------


async def test_scope_narrows_points_balances_control_and_claims(
    http: httpx.AsyncClient, w: World
) -> None:
    point = w.a.points["m1"]
    account = w.a.accounts["m1"]
    role = ok(
        await http.post(
            "/api/v1/roles",
            json={
                "name": "site ops",
                "permissions": [
                    "registry.view",
                    "control.trip",
                    "control.restore",
                    "control.keep_power",
                    "gateway.commission",
                    "gateway.configure",
                ],
            },
            headers=w.admin,
        ),
        201,
    )
    ok(
        await http.post(
            "/api/v1/operators",
            json=_op("ops2", role["id"], "site", [str(w.site2)]),
            headers=w.admin,
        ),
        201,
    )
    ops = await login(http, w.slug, "ops2", "clerk-password")
    assert len(ok(await http.get("/api/v1/service-points", headers=w.admin))) == 1
    assert ok(await http.get("/api/v1/service-points", headers=ops)) == []
    assert (await http.get(f"/api/v1/service-points/{point}", headers=ops)).status_code == 404
    assert (await http.get(f"/api/v1/accounts/{account}/balance", headers=ops)).status_code == 404
    assert (
        await http.get(f"/api/v1/service-points/{point}/control", headers=ops)
    ).status_code == 404
    trip = {"action": "trip", "reason": "arrears", "override": True}
    r = await http.post(f"/api/v1/service-points/{point}/control", json=trip, headers=ops)
    assert r.status_code == 404
    r = await http.post(f"/api/v1/sites/{w.site1}/control", json=trip, headers=ops)
    assert r.status_code == 404
    r = await http.post(f"/api/v1/sites/{w.site1}/claim-codes", json={}, headers=ops)
    assert r.status_code == 404
    code = f"gw-{w.slug[1:]}"  # as group_spec names it
    r = await http.post(f"/api/v1/gateways/{code}/revoke-credential", headers=ops)
    assert r.status_code == 404
    # within the scope they work
    ok(await http.post(f"/api/v1/sites/{w.site2}/claim-codes", json={}, headers=ops), 201)
    assert ok(await http.post(f"/api/v1/sites/{w.site2}/control", json=trip, headers=ops)) == []
    # and the tenant-wide administrator still sees the point
    ok(await http.get(f"/api/v1/service-points/{point}", headers=w.admin))
    ok(await http.get(f"/api/v1/service-points/{point}/control", headers=w.admin))
    assert (
        ok(await http.get(f"/api/v1/accounts/{account}/balance", headers=w.admin))["balance"]
        == "10.00"
    )


async def test_a_tenant_wide_manager_hands_on_only_what_they_hold(
    http: httpx.AsyncClient, w: World
) -> None:
    role = ok(
        await http.post(
            "/api/v1/roles",
            json={"name": "hr", "permissions": ["operator.manage", "registry.view"]},
            headers=w.admin,
        ),
        201,
    )
    ok(await http.post("/api/v1/operators", json=_op("hr", role["id"]), headers=w.admin), 201)
    hr = await login(http, w.slug, "hr", "clerk-password")
    r = await http.post(
        "/api/v1/roles", json={"name": "seller", "permissions": ["sale.create"]}, headers=hr
    )
    assert r.status_code == 403 and "sale.create" in r.json()["detail"]
    r = await http.patch(f"/api/v1/roles/{w.admin_role}", json={"permissions": []}, headers=hr)
    assert r.status_code == 403  # the administrator role holds more than hr
    r = await http.post("/api/v1/operators", json=_op("boss2", w.admin_role), headers=hr)
    assert r.status_code == 403
    r = await http.post(
        f"/api/v1/operators/{w.a.operator_id}/password",
        json={"password": "taken-over"},
        headers=hr,
    )
    assert r.status_code == 403 and "holds permissions you do not" in r.json()["detail"]
    # within what hr holds, it works
    ok(
        await http.post(
            "/api/v1/roles", json={"name": "viewer", "permissions": ["registry.view"]}, headers=hr
        ),
        201,
    )
    await admin_auth(http, w.slug)  # the administrator's password is unchanged
    roles = {r["name"]: r for r in ok(await http.get("/api/v1/roles", headers=w.admin))}
    assert "seller" not in roles and roles["administrator"]["permissions"] == list(PERMISSIONS)
