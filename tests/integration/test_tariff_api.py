"""Tariffs over HTTP against the real PostgreSQL: permissions, scope, tenant isolation, the
start-date and margin rules, assignment all or nothing, the price notice's text."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cloud import schema
from cloud.auth import hash_password
from cloud.check import check
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import IngestService
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import admin_auth, api_client, group_spec

TIMING = CommandTiming()


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _group(db: Database, meters: int = 2) -> tuple[Seeded, str]:
    spec = group_spec(meters=meters)
    return await seed_group(db, spec), spec.slug


async def _operator(
    db: Database,
    http: httpx.AsyncClient,
    group: Seeded,
    slug: str,
    permissions: list[str],
    scope: str = "tenant",
    scope_ids: list[uuid.UUID] | None = None,
) -> dict[str, str]:
    name = f"op{uuid.uuid4().hex[:6]}"
    async with db.tenant(group.tenant_id) as conn:
        role = uuid.uuid4()
        await conn.execute(
            sa.insert(schema.Role.__table__).values(  # type: ignore[attr-defined]
                id=role, tenant_id=group.tenant_id, name=name, permissions=permissions
            )
        )
        await conn.execute(
            sa.insert(schema.Operator.__table__).values(  # type: ignore[attr-defined]
                id=uuid.uuid4(),
                tenant_id=group.tenant_id,
                username=name,
                display_name=name,
                password_hash=hash_password("pw-12345"),
                role_id=role,
                scope=scope,
                scope_ids=scope_ids or [],
            )
        )
    r = await http.post(
        "/api/v1/auth/token", json={"tenant": slug, "username": name, "password": "pw-12345"}
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


async def _state(db: Database, group: Seeded) -> tuple[Any, ...]:
    """Everything a tariff write could change in the group."""
    async with db.tenant(group.tenant_id) as conn:
        tariffs = (await conn.execute(sa.text("SELECT * FROM tariff ORDER BY id"))).all()
        versions = (await conn.execute(sa.text("SELECT * FROM tariff_version ORDER BY id"))).all()
        points = (
            await conn.execute(sa.text("SELECT id, tariff_id FROM service_point ORDER BY id"))
        ).all()
        audits = await conn.scalar(sa.text("SELECT count(*) FROM audit_event"))
    return tuple(tariffs), tuple(versions), tuple(points), audits


async def _audits(db: Database, group: Seeded, action: str) -> int:
    async with db.tenant(group.tenant_id) as conn:
        n = await conn.scalar(
            sa.text("SELECT count(*) FROM audit_event WHERE action = :a"), {"a": action}
        )
    return int(n or 0)


def _poppler(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _flat(price: str = "1.1000", **version: Any) -> dict[str, Any]:
    return {"plan": {"kind": "flat", "unit_price": price}, **version}


def _new(name: str = "Shops 2027", **version: Any) -> dict[str, Any]:
    return {"name": name, "utility": "electricity", "version": _flat(**version)}


def _later(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def test_create_list_get_and_schedule_a_version(
    db: Database, http: httpx.AsyncClient
) -> None:
    group, slug = await _group(db)
    auth = await admin_auth(http, slug)
    r = await http.post("/api/v1/tariffs", json=_new(monthly_fee="8.00"), headers=auth)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["current"]["plan"] == {"kind": "flat", "unit_price": "1.1000"}
    assert made["current"]["monthly_fee"] == "8.00" and made["scheduled"] == []
    assert made["current"]["created_by"] == "operator:admin"
    tid = made["id"]

    tiered = {
        "effective_from": _later(),
        "plan": {
            "kind": "tiered",
            "cycle": "month",
            "blocks": [{"up_to": "200", "price": "0.9"}, {"up_to": None, "price": "1.3"}],
        },
    }
    r = await http.post(f"/api/v1/tariffs/{tid}/versions", json=tiered, headers=auth)
    assert r.status_code == 201, r.text
    assert len(r.json()["versions"]) == 2 and len(r.json()["scheduled"]) == 1
    assert r.json()["current"]["plan"]["unit_price"] == "1.1000"  # still in force now

    listed = (await http.get("/api/v1/tariffs", headers=auth)).json()
    mine = next(t for t in listed if t["id"] == tid)
    assert mine["scheduled"][0]["plan"]["blocks"][1] == {"up_to": None, "price": "1.3"}
    seeded = next(t for t in listed if t["name"] == "Commercial flat")
    assert seeded["current"]["plan"] == {"kind": "flat", "unit_price": "1.0000"}
    assert await _audits(db, group, "tariff.create") == 1
    assert await _audits(db, group, "tariff.version") == 1

    # the same name again is a conflict
    before = await _state(db, group)
    r = await http.post("/api/v1/tariffs", json=_new(), headers=auth)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert await _state(db, group) == before


async def test_writes_need_tariff_edit(db: Database, http: httpx.AsyncClient) -> None:
    group, slug = await _group(db)
    viewer = await _operator(db, http, group, slug, ["registry.view"])
    tid = (await http.get("/api/v1/tariffs", headers=viewer)).json()[0]["id"]
    before = await _state(db, group)
    writes = [
        ("/api/v1/tariffs", _new()),
        (f"/api/v1/tariffs/{tid}/versions", _flat(effective_from=_later())),
        (f"/api/v1/tariffs/{tid}/assign", {"service_point_ids": [str(group.points["m1"])]}),
    ]
    for path, body in writes:
        r = await http.post(path, json=body, headers=viewer)
        assert r.status_code == 403, (path, r.text)
        assert "tariff.edit" in r.json()["detail"]
    r = await http.patch(f"/api/v1/tariffs/{tid}", json={"name": "X"}, headers=viewer)
    assert r.status_code == 403
    assert await _state(db, group) == before
    nobody = await _operator(db, http, group, slug, ["sale.create"])
    assert (await http.get("/api/v1/tariffs", headers=nobody)).status_code == 403
    r = await http.get(f"/api/v1/sites/{group.site_id}/price-notice.pdf", headers=nobody)
    assert r.status_code == 403


async def test_another_groups_tariffs_points_and_sites_are_not_found(
    db: Database, http: httpx.AsyncClient
) -> None:
    mine, slug = await _group(db)
    theirs, their_slug = await _group(db)
    auth = await admin_auth(http, slug)
    their_auth = await admin_auth(http, their_slug)
    their_tariff = (await http.get("/api/v1/tariffs", headers=their_auth)).json()[0]["id"]
    my_tariff = (await http.get("/api/v1/tariffs", headers=auth)).json()[0]["id"]
    assert their_tariff != my_tariff
    before, their_before = await _state(db, mine), await _state(db, theirs)

    assert (await http.get(f"/api/v1/tariffs/{their_tariff}", headers=auth)).status_code == 404
    r = await http.patch(f"/api/v1/tariffs/{their_tariff}", json={"active": False}, headers=auth)
    assert r.status_code == 404
    r = await http.post(
        f"/api/v1/tariffs/{their_tariff}/versions",
        json=_flat(effective_from=_later()),
        headers=auth,
    )
    assert r.status_code == 404
    r = await http.post(
        f"/api/v1/tariffs/{their_tariff}/assign",
        json={"service_point_ids": [str(mine.points["m1"])]},
        headers=auth,
    )
    assert r.status_code == 404
    r = await http.post(
        f"/api/v1/tariffs/{my_tariff}/assign",
        json={"service_point_ids": [str(mine.points["m1"]), str(theirs.points["m1"])]},
        headers=auth,
    )
    assert r.status_code == 404 and str(theirs.points["m1"]) in r.json()["detail"]
    r = await http.post(
        "/api/v1/tariffs", json={**_new(), "site_id": str(theirs.site_id)}, headers=auth
    )
    assert r.status_code == 404
    r = await http.get(f"/api/v1/sites/{theirs.site_id}/price-notice.pdf", headers=auth)
    assert r.status_code == 404
    assert await _state(db, mine) == before and await _state(db, theirs) == their_before


async def test_a_start_in_the_past_is_refused(db: Database, http: httpx.AsyncClient) -> None:
    group, slug = await _group(db)
    auth = await admin_auth(http, slug)
    tid = (await http.get("/api/v1/tariffs", headers=auth)).json()[0]["id"]
    before = await _state(db, group)
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for path, body in [
        ("/api/v1/tariffs", _new(effective_from=past)),
        (f"/api/v1/tariffs/{tid}/versions", _flat(effective_from=past)),
    ]:
        r = await http.post(path, json=body, headers=auth)
        assert r.status_code == 422, r.text
        assert "in the past" in r.json()["detail"] and "never re-rated" in r.json()["detail"]
    # a start the seed's version already has
    r = await http.post(
        f"/api/v1/tariffs/{tid}/versions",
        json=_flat(effective_from="2020-01-01T00:00:00+00:00"),
        headers=auth,
    )
    assert r.status_code == 422
    later = _later(10)
    assert (
        await http.post(
            f"/api/v1/tariffs/{tid}/versions", json=_flat(effective_from=later), headers=auth
        )
    ).status_code == 201
    again = await http.post(
        f"/api/v1/tariffs/{tid}/versions", json=_flat("1.2", effective_from=later), headers=auth
    )
    assert again.status_code == 422 and "already has a version" in again.json()["detail"]
    # a few seconds of clock skew starts now
    skew = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    r = await http.post(
        f"/api/v1/tariffs/{tid}/versions", json=_flat(effective_from=skew), headers=auth
    )
    assert r.status_code == 201
    started = datetime.fromisoformat(r.json()["current"]["effective_from"])
    assert started > datetime.fromisoformat(skew)
    assert len((await _state(db, group))[1]) == len(before[1]) + 2


@pytest.mark.parametrize(
    "body",
    [
        _new(price="abc"),
        _new(price="NaN"),
        _new(price="0"),
        _new(price="1.23456"),
        _new(effective_from="2030-01-01T00:00:00"),  # no zone
        {**_new(), "utility": "gas"},
        {**_new(), "name": ""},
        {**_new(), "name": "bad\x00name"},
        {**_new(), "extra": 1},
        {
            "name": "W",
            "utility": "water",
            "version": {
                "plan": {
                    "kind": "tou",
                    "prices": {"peak": "1"},
                    "windows": [{"start": "00:00", "period": "peak"}],
                }
            },
        },
        {
            **_new(),
            "version": {"plan": {"kind": "tiered", "blocks": [{"up_to": "100", "price": "1"}]}},
        },
        {**_new(), "version": {**_flat(), "monthly_fee": "-1"}},
        {**_new(), "version": {**_flat(), "monthly_fee": "1.005"}},
        {
            **_new(),
            "version": {
                "plan": {
                    "kind": "tou",
                    "prices": {"peak": "1"},
                    "windows": [{"start": "08:00", "period": "peak"}],
                }
            },
        },
    ],
)
async def test_bad_input_is_a_clear_422_and_changes_nothing(
    db: Database, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    group, slug = await _group(db, meters=1)
    auth = await admin_auth(http, slug)
    before = await _state(db, group)
    r = await http.post("/api/v1/tariffs", json=body, headers=auth)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert await _state(db, group) == before


async def test_margin_refused_then_accepted_with_a_reason(
    db: Database, http: httpx.AsyncClient
) -> None:
    group, slug = await _group(db, meters=1)
    auth = await admin_auth(http, slug)
    async with db.tenant(group.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE site SET catalogue_price = 1.0000, price_margin = 0.15 WHERE id = :s"),
            {"s": group.site_id},
        )
    site = str(group.site_id)
    within = {**_new("Within"), "site_id": site, "version": _flat("1.1500")}
    assert (await http.post("/api/v1/tariffs", json=within, headers=auth)).status_code == 201

    before = await _state(db, group)
    over = {**_new("Over"), "site_id": site, "version": _flat("1.2000")}
    r = await http.post("/api/v1/tariffs", json=over, headers=auth)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "1.2000" in detail and "1.1500" in detail and "reason" in detail
    # a TOU version whose peak is above the ceiling, on the tariff within it
    tid = (await http.get("/api/v1/tariffs", headers=auth)).json()
    within_id = next(t["id"] for t in tid if t["name"] == "Within")
    tou = {
        "effective_from": _later(),
        "plan": {
            "kind": "tou",
            "prices": {"peak": "1.3000", "valley": "0.5000"},
            "windows": [
                {"start": "00:00", "period": "valley"},
                {"start": "08:00", "period": "peak"},
            ],
        },
    }
    r = await http.post(f"/api/v1/tariffs/{within_id}/versions", json=tou, headers=auth)
    assert r.status_code == 422 and "1.3000" in r.json()["detail"]
    assert await _state(db, group) == before

    r = await http.post(
        "/api/v1/tariffs",
        json={**over, "version": {**over["version"], "margin_reason": "shared transformer losses"}},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    assert r.json()["current"]["margin_reason"] == "shared transformer losses"
    async with db.tenant(group.tenant_id) as conn:
        kept = await conn.scalar(
            sa.text("SELECT margin_reason FROM tariff_version WHERE tariff_id = :t"),
            {"t": r.json()["id"]},
        )
    assert kept == "shared transformer losses"
    # water is not under the rule
    water = {"name": "Water", "utility": "water", "site_id": site, "version": _flat("5.0000")}
    assert (await http.post("/api/v1/tariffs", json=water, headers=auth)).status_code == 201


async def test_assign_many_all_or_nothing(db: Database, http: httpx.AsyncClient) -> None:
    group, slug = await _group(db, meters=3)
    auth = await admin_auth(http, slug)
    made = (await http.post("/api/v1/tariffs", json=_new(), headers=auth)).json()
    water = (
        await http.post(
            "/api/v1/tariffs",
            json={"name": "Water", "utility": "water", "version": _flat("4")},
            headers=auth,
        )
    ).json()
    scheduled = (
        await http.post(
            "/api/v1/tariffs", json=_new("Next year", effective_from=_later(365)), headers=auth
        )
    ).json()
    ids = [str(p) for p in group.points.values()]
    before = await _state(db, group)
    for tariff, points, message in [
        (water["id"], ids, "is electricity; tariff Water is water"),
        (scheduled["id"], ids, "no version in force yet"),
        (made["id"], [*ids, str(uuid.uuid4())], "not found"),
    ]:
        r = await http.post(
            f"/api/v1/tariffs/{tariff}/assign", json={"service_point_ids": points}, headers=auth
        )
        assert r.status_code in (404, 422), r.text
        assert message in r.json()["detail"]
    r = await http.post(
        f"/api/v1/tariffs/{made['id']}/assign", json={"service_point_ids": []}, headers=auth
    )
    assert r.status_code == 422
    assert await _state(db, group) == before

    r = await http.post(
        f"/api/v1/tariffs/{made['id']}/assign", json={"service_point_ids": ids}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == 3
    async with db.tenant(group.tenant_id) as conn:
        on = set(await conn.scalars(sa.text("SELECT DISTINCT tariff_id FROM service_point")))
    assert on == {uuid.UUID(made["id"])}
    assert await _audits(db, group, "tariff.assign") == 1
    again = await http.post(
        f"/api/v1/tariffs/{made['id']}/assign", json={"service_point_ids": ids[:1]}, headers=auth
    )
    assert again.json()["changed"] == 0


async def test_a_site_scoped_operator_sees_and_changes_only_its_site(
    db: Database, http: httpx.AsyncClient
) -> None:
    group, slug = await _group(db, meters=1)
    auth = await admin_auth(http, slug)
    other_site = uuid.uuid4()
    async with db.tenant(group.tenant_id) as conn:
        await conn.execute(
            sa.insert(schema.Site.__table__).values(  # type: ignore[attr-defined]
                id=other_site, tenant_id=group.tenant_id, name="Harbour"
            )
        )
    here = (
        await http.post(
            "/api/v1/tariffs", json={**_new("Here"), "site_id": str(group.site_id)}, headers=auth
        )
    ).json()
    scoped = await _operator(
        db, http, group, slug, ["registry.view", "tariff.edit"], "site", [other_site]
    )
    seen = {t["name"] for t in (await http.get("/api/v1/tariffs", headers=scoped)).json()}
    assert seen == {"Commercial flat"}  # the group's tariff, not the other site's
    before = await _state(db, group)
    assert (await http.get(f"/api/v1/tariffs/{here['id']}", headers=scoped)).status_code == 404
    r = await http.post(
        f"/api/v1/tariffs/{here['id']}/versions",
        json=_flat(effective_from=_later()),
        headers=scoped,
    )
    assert r.status_code == 404
    mine = (
        await http.post(
            "/api/v1/tariffs", json={**_new("Harbour"), "site_id": str(other_site)}, headers=scoped
        )
    ).json()
    r = await http.post(
        f"/api/v1/tariffs/{mine['id']}/assign",
        json={"service_point_ids": [str(group.points["m1"])]},
        headers=scoped,
    )
    assert r.status_code == 404  # the point is at a site outside the scope
    r = await http.post("/api/v1/tariffs", json=_new("Everywhere"), headers=scoped)
    assert r.status_code == 403  # a tariff of the whole group needs a group operator
    group_tariff = next(t["id"] for t in (await http.get("/api/v1/tariffs", headers=scoped)).json())
    r = await http.post(
        f"/api/v1/tariffs/{group_tariff}/versions",
        json=_flat(effective_from=_later()),
        headers=scoped,
    )
    assert r.status_code == 403
    r = await http.get(f"/api/v1/sites/{group.site_id}/price-notice.pdf", headers=scoped)
    assert r.status_code == 404
    after = await _state(db, group)
    assert after[2] == before[2] and len(after[0]) == len(before[0]) + 1
    assert len(after[1]) == len(before[1]) + 1  # the Harbour tariff's first version only

    # an operator of the point's site puts it on a group tariff (no change to the tariff)
    everywhere = (await http.post("/api/v1/tariffs", json=_new("Group B"), headers=auth)).json()
    at_home = await _operator(
        db, http, group, slug, ["registry.view", "tariff.edit"], "site", [group.site_id]
    )
    r = await http.post(
        f"/api/v1/tariffs/{everywhere['id']}/assign",
        json={"service_point_ids": [str(group.points["m1"])]},
        headers=at_home,
    )
    assert r.status_code == 200 and r.json()["changed"] == 1


async def test_price_notice_lists_every_tariff_in_force_and_scheduled(
    db: Database, http: httpx.AsyncClient, tmp_path: Any
) -> None:
    group, slug = await _group(db, meters=1)
    auth = await admin_auth(http, slug)
    async with db.tenant(group.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE site SET catalogue_price = 1.0000, price_margin = 0.15 WHERE id = :s"),
            {"s": group.site_id},
        )
    site = str(group.site_id)
    tou = {
        "name": "分时电价",
        "utility": "electricity",
        "site_id": site,
        "version": {
            "plan": {
                "kind": "tou",
                "prices": {"peak": "1.1000", "flat": "0.7000", "valley": "0.3500"},
                "windows": [
                    {"start": "00:00", "period": "valley"},
                    {"start": "08:00", "period": "peak"},
                    {"start": "12:00", "period": "flat"},
                    {"start": "22:00", "period": "valley"},
                ],
            },
            "monthly_fee": "12.50",
        },
    }
    assert (await http.post("/api/v1/tariffs", json=tou, headers=auth)).status_code == 201
    tiered = {
        "name": "居民阶梯水价",
        "utility": "water",
        "site_id": site,
        "version": {
            "plan": {
                "kind": "tiered",
                "cycle": "month",
                "blocks": [{"up_to": "10", "price": "3.5"}, {"up_to": None, "price": "5.25"}],
            }
        },
    }
    assert (await http.post("/api/v1/tariffs", json=tiered, headers=auth)).status_code == 201
    tid = next(
        t["id"]
        for t in (await http.get("/api/v1/tariffs", headers=auth)).json()
        if t["name"] == "Commercial flat"
    )
    start = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
    r = await http.post(
        f"/api/v1/tariffs/{tid}/versions",
        json=_flat("1.3000", effective_from=start.isoformat(), margin_reason="调价 agreed"),
        headers=auth,
    )
    assert r.status_code == 201, r.text

    r = await http.get(f"/api/v1/sites/{site}/price-notice.pdf", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    pdf = tmp_path / "notice.pdf"
    pdf.write_bytes(r.content)
    text = _poppler("pdftotext", "-layout", str(pdf), "-")
    flat = "".join(text.split())
    for expected in [
        "电价公示",
        "Riverside Market",
        f"Group {slug[1:]}",
        "分时电价",
        "峰时段08:00–12:00",
        "1.1000元/千瓦时",
        "谷时段00:00–08:00，22:00–24:00",
        "¥12.50/月",
        "居民阶梯水价",
        "第1档（每月）0–10立方米",
        "5.2500元/立方米",
        "Commercial flat",
        "1.0000元/千瓦时",  # the version in force
        "2027年1月1日08:00",  # the scheduled one, in the site's time
        "Asia/Shanghai，UTC+08:00",
        "1.3000元/千瓦时",
        "调价agreed",
        "最高收费标准：1.1500元/千瓦时",
        "允许加价幅度15%",
    ]:
        assert "".join(expected.split()) in flat, (expected, text)
    assert "595.276 x 841.89" in _poppler("pdfinfo", str(pdf))  # A4
    fonts = _poppler("pdffonts", str(pdf))
    assert "CJK" in fonts and " yes " in fonts  # embedded


async def test_assigning_prices_what_is_rated_from_now_on_and_never_the_past(
    db: Database, http: httpx.AsyncClient
) -> None:
    group, slug = await _group(db, meters=1)
    auth = await admin_auth(http, slug)
    now = datetime.now(UTC)

    async def feed(minutes_ago: float, total: str, seq: int) -> None:
        reading = Reading.model_validate(
            {"device": "m1", "measured_at": now - timedelta(minutes=minutes_ago), "total": total}
        )
        batch = TelemetryBatch(gateway=gw, boot_id="b", seq=seq, sent_at=now, readings=(reading,))
        await IngestService(db, TIMING).store_telemetry(gw, batch, datetime.now(UTC))

    async with db.tenant(group.tenant_id) as conn:
        gw = str(await conn.scalar(sa.text("SELECT code FROM gateway")))
    await feed(10, "100", 1)
    await feed(8, "101", 2)  # 1 kWh at the seeded ¥1.0000
    assert await balance(db, group) == Decimal("9.00")

    made = (await http.post("/api/v1/tariffs", json=_new(price="2.0000"), headers=auth)).json()
    r = await http.post(
        f"/api/v1/tariffs/{made['id']}/assign",
        json={"service_point_ids": [str(group.points["m1"])]},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert await balance(db, group) == Decimal("9.00")  # nothing rated again
    # a reading taken before the new tariff's first version, arriving after the move, is
    # rated at the point's tariff now (the batch is not jammed), and so is the next one
    await feed(5, "102", 3)
    await feed(1, "103", 4)
    assert await balance(db, group) == Decimal("5.00")
    assert (await check(db, [group.tenant_id])).ok


async def balance(db: Database, group: Seeded) -> Decimal:
    async with db.tenant(group.tenant_id) as conn:
        value = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE kind = 'wallet'")
        )
    assert isinstance(value, Decimal)
    return value


async def test_rename_and_deactivate(db: Database, http: httpx.AsyncClient) -> None:
    group, slug = await _group(db, meters=1)
    auth = await admin_auth(http, slug)
    seeded = (await http.get("/api/v1/tariffs", headers=auth)).json()[0]["id"]
    spare = (await http.post("/api/v1/tariffs", json=_new("Spare"), headers=auth)).json()["id"]
    before = await _state(db, group)
    r = await http.patch(f"/api/v1/tariffs/{seeded}", json={"active": False}, headers=auth)
    assert r.status_code == 422 and "used by 1 service point" in r.json()["detail"]
    r = await http.patch(f"/api/v1/tariffs/{spare}", json={"name": "Commercial flat"}, headers=auth)
    assert r.status_code == 409
    r = await http.patch(f"/api/v1/tariffs/{spare}", json={"name": ""}, headers=auth)
    assert r.status_code == 422
    assert await _state(db, group) == before

    r = await http.patch(
        f"/api/v1/tariffs/{spare}", json={"name": "Old shops", "active": False}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Old shops" and r.json()["active"] is False
    assert await _audits(db, group, "tariff.update") == 1
    r = await http.post(
        f"/api/v1/tariffs/{spare}/assign",
        json={"service_point_ids": [str(group.points["m1"])]},
        headers=auth,
    )
    assert r.status_code == 422 and "not active" in r.json()["detail"]
