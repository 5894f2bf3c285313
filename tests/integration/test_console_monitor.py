"""The room monitor (监控): a site's rooms by building and floor, each point coloured by
its state with its balance and today's consumption; the state, utility and tenant-name
filters; the same route answering htmx's poll with the tiles only; another group's site a
404."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import IngestService
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import api_client, console_login, group_spec


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def place(db: Database, g: Seeded, rooms: dict[str, str | None]) -> None:
    """Building A with the given rooms (``number`` → the meter whose point is there, or
    None for an empty room); the floor is the number's first digit; the gateway online."""
    async with db.tenant(g.tenant_id) as conn:
        building = uuid.uuid4()
        await conn.execute(
            sa.text("INSERT INTO building (id, tenant_id, site_id, name) VALUES (:b, :t, :s, 'A')"),
            {"b": building, "t": g.tenant_id, "s": g.site_id},
        )
        for number, meter in rooms.items():
            premises = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number)"
                    " VALUES (:p, :t, :s, :b, :f, :n)"
                ),
                {"p": premises, "t": g.tenant_id, "s": g.site_id, "b": building,
                 "f": number[0], "n": number},
            )  # fmt: skip
            if meter:
                await conn.execute(
                    sa.text("UPDATE service_point SET premises_id = :p WHERE id = :sp"),
                    {"p": premises, "sp": g.points[meter]},
                )
        await conn.execute(sa.text("UPDATE gateway SET online = true"))


async def read(
    db: Database, gateway: str, totals: dict[str, tuple[str, str]], now: datetime
) -> None:
    """Two readings per meter, 40 and 10 minutes ago."""
    ingest = IngestService(db, CommandTiming())
    readings = tuple(
        Reading(device=m, measured_at=now - timedelta(minutes=ago), total=Decimal(t))
        for m, pair in totals.items()
        for ago, t in zip((40, 10), pair, strict=True)
    )
    seq = int(now.timestamp())  # a later batch is not a re-sent one
    batch = TelemetryBatch(gateway=gateway, boot_id="b1", seq=seq, sent_at=now, readings=readings)
    await ingest.store_telemetry(gateway, batch, now)


def tile_state(html: str, point: uuid.UUID) -> str:
    found = re.search(rf'href="/console/points/{point}" class="pt st-(\w+)"', html)
    assert found, html
    return found.group(1)


async def test_rooms_by_floor_coloured_by_state_and_filtered(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec(meters=3, balance="10.00")
    g = await seed_group(db, spec)
    await place(db, g, {"101": "m1", "102": "m2", "201": None, "202": "m3"})
    now = datetime.now(UTC)
    # m1 uses 1 kWh (¥9 left), m2 15 kWh (¥-5: in arrears); m3 never reports
    await read(db, spec.gateway_code, {"m1": ("100", "101"), "m2": ("100", "115")}, now)
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE customer SET name = 'Zhang Wei' WHERE id = (SELECT customer_id "
                    "FROM account WHERE number = :n)"),
            {"n": g.accounts["m1"]},
        )  # fmt: skip
    await console_login(http, spec.slug)

    page = await http.get("/console/monitor")
    assert page.status_code == 200 and "房间监控" in page.text
    assert page.headers["vary"] == "HX-Request"
    assert "楼层 1" in page.text and "楼层 2" in page.text
    assert tile_state(page.text, g.points["m1"]) == "credit"
    assert tile_state(page.text, g.points["m2"]) == "arrears"
    assert tile_state(page.text, g.points["m3"]) == "lost"
    assert "¥9.00" in page.text and "-¥5.00" in page.text
    assert "今日 1.00 kWh" in page.text and "今日 15.00 kWh" in page.text
    assert 'aria-label="201 未开户"' in page.text
    assert "(Asia/Shanghai)" in page.text

    arrears = await http.get(f"/console/monitor?site={g.site_id}&state=arrears")
    assert str(g.points["m2"]) in arrears.text and str(g.points["m1"]) not in arrears.text
    assert "显示 1 个房间" in arrears.text
    named = await http.get("/console/monitor?name=zhang")
    assert str(g.points["m1"]) in named.text and str(g.points["m2"]) not in named.text
    water = await http.get("/console/monitor?utility=water")
    assert "没有符合条件的房间" in water.text
    odd = await http.get("/console/monitor?state=bogus&utility=gas")
    assert odd.status_code == 200 and str(g.points["m2"]) in odd.text

    poll = await http.get("/console/monitor?state=arrears", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and poll.headers["vary"] == "HX-Request"
    assert poll.text.lstrip().startswith('<div id="tiles"') and "<html" not in poll.text
    assert str(g.points["m2"]) in poll.text


async def test_another_groups_site_is_not_found(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec())
    await place(db, other, {"101": "m1"})
    await console_login(http, spec.slug)
    r = await http.get(f"/console/monitor?site={other.site_id}")
    assert r.status_code == 404 and str(other.points["m1"]) not in r.text
    r = await http.get(f"/console/monitor?site={other.site_id}", headers={"HX-Request": "true"})
    assert r.status_code == 404
    mine = await http.get(f"/console/monitor?site={g.site_id}")
    assert mine.status_code == 200
