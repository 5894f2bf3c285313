"""公摊 in the console and the worker: a common meter shared by floor area among two shops,
a month previewed (nothing written) and posted once however often it is posted, the month
posted by `prepay worker`'s job when nobody did; bad input refused in Chinese and nothing
saved; another group's meter or group not found."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from cloud.common_area.groups import allocate_due
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import IngestService
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import api_client, console_form, console_login, group_spec

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _common_meter_used(db: Database, spec_gateway: str, g: Seeded) -> None:
    """m1 (the common meter) used 30 kWh in November 2026 (Shanghai); m2, m3 have areas."""
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE service_point SET floor_area = :a WHERE id = :p"),
            [{"a": Decimal(10), "p": g.points["m2"]}, {"a": Decimal(20), "p": g.points["m3"]}],
        )
    start = datetime(2026, 11, 1, tzinfo=SHANGHAI).astimezone(UTC)
    steps = [(start - timedelta(hours=1), "100.0")] + [
        (start + timedelta(days=d, hours=12), str(101 + d)) for d in range(30)
    ]
    batch = TelemetryBatch(
        gateway=spec_gateway, boot_id="b1", seq=1, sent_at=steps[-1][0],
        readings=tuple(Reading(device="m1", measured_at=t, total=Decimal(v)) for t, v in steps),
    )  # fmt: skip
    ingest = IngestService(db, CommandTiming())
    await ingest.store_telemetry(spec_gateway, batch, steps[-1][0] + timedelta(minutes=1))


async def _entries(db: Database, g: Seeded) -> int:
    async with db.tenant(g.tenant_id) as conn:
        return int(
            await conn.scalar(
                sa.text("SELECT count(*) FROM journal_entry WHERE kind = 'common_area'")
            )
            or 0
        )


async def test_share_preview_and_post_a_month_once(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec(meters=3, balance="100.00")
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec(meters=2))
    await console_login(http, spec.slug)
    m1, m2, m3 = (str(g.points[k]) for k in ("m1", "m2", "m3"))

    # refused: no members, the meter among them, another group's point, by area without one
    bad = await console_form(http, "/console/common-area", {"common": m1, "basis": "area"})
    assert bad.status_code == 422 and "请选择分摊的计量点" in bad.text
    own = {"common": m1, "basis": "area", "members": [m1, m2]}
    assert (await console_form(http, "/console/common-area", own)).status_code == 422
    far = {"common": m1, "basis": "area", "members": [str(other.points["m2"])]}
    assert (await console_form(http, "/console/common-area", far)).status_code == 404
    area = {"common": m1, "basis": "area", "members": [m2, m3], "monthly": "1"}
    r = await console_form(http, "/console/common-area", area)
    assert r.status_code == 422 and "面积" in r.text
    odd = {"common": m1, "basis": "volume", "members": [m2]}
    assert (await console_form(http, "/console/common-area", odd)).status_code == 422
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM common_area_group")) == 0

    await _common_meter_used(db, spec.gateway_code, g)
    saved = await console_form(http, "/console/common-area", area, follow_redirects=True)
    assert saved.status_code == 200 and "已保存" in saved.text
    group_url = str(saved.url).split("?")[0]
    page = await http.get(f"{group_url}?month=2026-11")
    assert page.status_code == 200
    shares = re.findall(r'<td class="num">(¥[\d.,]+)</td></tr>', page.text)
    assert sorted(shares) == ["¥10.00", "¥20.00"], shares
    assert await _entries(db, g) == 0  # a preview writes nothing
    assert (await http.get(f"{group_url}?month=2026-13")).status_code == 422

    for _ in range(2):
        posted = await console_form(
            http, f"{group_url}/post", {"month": "2026-11"}, follow_redirects=True
        )
        assert posted.status_code == 200 and "已入账" in posted.text
    assert await _entries(db, g) == 1
    async with db.tenant(g.tenant_id) as conn:
        balances = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT sp.id, la.balance FROM service_point sp JOIN account a "
                        "ON a.id = sp.account_id JOIN ledger_account la ON la.id = a.wallet_id"
                    )
                )
            ).all()
        )
    assert balances[g.points["m2"]] == Decimal("90.00")
    assert balances[g.points["m3"]] == Decimal("80.00")
    # the worker's job: the month is posted already, nothing more
    await allocate_due(db, datetime(2026, 12, 2, tzinfo=UTC))
    assert await _entries(db, g) == 1


async def test_the_worker_posts_the_month_just_ended(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec(meters=3, balance="100.00")
    g = await seed_group(db, spec)
    other_spec = group_spec()
    await seed_group(db, other_spec)
    await _common_meter_used(db, spec.gateway_code, g)
    await console_login(http, spec.slug)
    area = {"common": str(g.points["m1"]), "basis": "area",
            "members": [str(g.points["m2"]), str(g.points["m3"])], "monthly": "1"}  # fmt: skip
    saved = await console_form(http, "/console/common-area", area, follow_redirects=True)
    group_url = str(saved.url).split("?")[0]
    assert await allocate_due(db, datetime(2026, 12, 1, 3, tzinfo=UTC)) >= 1
    assert await _entries(db, g) == 1
    await allocate_due(db, datetime(2026, 12, 1, 4, tzinfo=UTC))
    assert "2026-11" in (await http.get(group_url)).text

    await console_login(http, other_spec.slug)
    assert (await http.get(group_url)).status_code == 404
    r = await console_form(http, f"{group_url}/post", {"month": "2026-11"})
    assert r.status_code == 404
    assert await _entries(db, g) == 1
