"""A service point's reading history in the console (抄表记录): the days in the site's
zone, the consumption between readings (the first of the window against the reading
before it), the Excel export, a bad day refused in Chinese, and another group's point or
one beyond the operator's scope a 404."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook

from cloud.auth import Principal
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.errors import Forbidden, NotFound
from cloud.ingest.service import IngestService
from cloud.lifecycle.history import Window, point_history
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import api_client, console_login, group_spec

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def test_a_points_readings_by_day_with_their_consumption(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec(balance="100.00")
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec())
    ingest = IngestService(db, CommandTiming())
    # 2026-11-30 23:30 in Shanghai is 15:30 UTC: the 30th there, and the day before the window
    base = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
    totals = ["10.000", "11.500", "13.000", "16.250"]
    batch = TelemetryBatch(
        gateway=spec.gateway_code,
        boot_id="b1",
        seq=1,
        sent_at=base,
        readings=tuple(
            Reading(device="m1", measured_at=base + timedelta(hours=h), total=Decimal(t))
            for h, t in zip((0, 1, 2, 30), totals, strict=True)
        ),
    )
    await ingest.store_telemetry(spec.gateway_code, batch, base + timedelta(hours=31))
    point = g.points["m1"]
    await console_login(http, spec.slug)

    account = await http.get(f"/console/accounts/{g.accounts['m1']}")
    assert f"/console/points/{point}/readings" in account.text and "抄表记录" in account.text

    page = await http.get(f"/console/points/{point}/readings?first=2026-12-01&last=2026-12-02")
    assert page.status_code == 200 and "抄表记录" in page.text
    # three readings on 1 and 2 December (local), 16.25 - 10 used: the first one in the
    # window counts from the 30 November reading before it
    assert "共 3 条读数，用量 6.250 kWh" in page.text
    assert "2026-12-01 00:30 (Asia/Shanghai)" in page.text
    assert "2026-11-30 23:30" not in page.text

    xlsx = await http.get(
        f"/console/points/{point}/readings?first=2026-12-01&last=2026-12-02&export=xlsx"
    )
    assert xlsx.status_code == 200
    rows = list(load_workbook(io.BytesIO(xlsx.content)).active.iter_rows(values_only=True))
    assert rows[0][0] == "抄读时间" and len(rows) == 4
    assert rows[1][0] == "2026-12-02 05:30 (Asia/Shanghai)"
    assert [r[3] for r in rows[1:]] == [3.25, 1.5, 1.5]

    bad = await http.get(f"/console/points/{point}/readings?first=2026-13-01")
    assert bad.status_code == 422 and "年-月-日" in bad.text
    nowhere = await http.get(f"/console/points/{other.points['m1']}/readings")
    assert nowhere.status_code == 404


async def test_a_point_beyond_the_scope_is_not_found(db: Database) -> None:
    g = await seed_group(db, group_spec())
    now = datetime.now(UTC)
    here = Principal(g.tenant_id, g.operator_id, "clerk", frozenset({"registry.view"}), "site",
                     frozenset({g.site_id}))  # fmt: skip
    seen = await point_history(db, here, g.points["m1"], Window(), now)
    assert seen.point.id == g.points["m1"] and seen.last == now.astimezone(SHANGHAI).date()
    assert seen.first == seen.last - timedelta(days=6)
    far = replace(here, scope_ids=frozenset({uuid.uuid4()}))
    with pytest.raises(NotFound):
        await point_history(db, far, g.points["m1"], Window(), now)
    with pytest.raises(Forbidden):
        await point_history(
            db, replace(here, permissions=frozenset()), g.points["m1"], Window(), now
        )
