"""A point's page and an account's statement in the console: the consumption per hour, day
and month (site's zone) equals what rating charged over the same periods — an impossible
jump and a register going down count nothing there too —; the statement's lines with
their causes, running balance and receipt links tie to the live balance; the lifecycle,
work orders and notifications are listed; bad chart input is refused in Chinese; another
group's point or account, or one beyond the scope, is not found."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from cloud.auth import Principal
from cloud.console.format import number
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.errors import NotFound
from cloud.ingest.service import IngestService
from cloud.ledger.statement import account_statement
from cloud.lifecycle.consumption import Grain, point_consumption
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import admin_auth, api_client, console_login, group_spec

SHANGHAI = ZoneInfo("Asia/Shanghai")
_CELL = '<td class="num">([^<]+)</td>'


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


def _registers() -> list[tuple[datetime, Decimal]]:
    """Every 3 hours from 28 November to 3 December (Shanghai), 1.5 kWh a step, with an
    impossible jump (+5,000 kWh in 3 h) and a register going down (a reset)."""
    start = datetime(2026, 11, 28, 0, 30, tzinfo=SHANGHAI).astimezone(UTC)
    out, total = [], Decimal("100.000")
    for i in range(6 * 8):
        at = start + timedelta(hours=3 * i)
        if i == 10:
            total += Decimal(5000)
        elif i == 25:
            total = Decimal("3.000")
        else:
            total += Decimal("1.500") + Decimal(i % 3) / 4
        out.append((at, total))
    return out


async def _rated(db: Database, tenant: uuid.UUID, point: uuid.UUID) -> Decimal:
    async with db.tenant(tenant) as conn:
        v = await conn.scalar(
            sa.text("SELECT consumption_total FROM rating_state WHERE service_point_id = :p"),
            {"p": point},
        )
    return Decimal(v or 0)


async def test_the_charts_show_what_rating_charged_per_day_and_month(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec(balance="100.00")
    g = await seed_group(db, spec)
    point = g.points["m1"]
    ingest = IngestService(db, CommandTiming())
    # one batch per local day; what rating charged in it is the day's rated consumption
    by_day: dict[date, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for at, total in _registers():
        by_day[at.astimezone(SHANGHAI).date()].append((at, total))
    rated: dict[date, Decimal] = {}
    before = Decimal(0)
    for seq, (day, regs) in enumerate(sorted(by_day.items()), start=1):
        batch = TelemetryBatch(
            gateway=spec.gateway_code, boot_id="b1", seq=seq, sent_at=regs[-1][0],
            readings=tuple(Reading(device="m1", measured_at=at, total=t) for at, t in regs),
        )  # fmt: skip
        await ingest.store_telemetry(spec.gateway_code, batch, regs[-1][0] + timedelta(minutes=1))
        now = await _rated(db, g.tenant_id, point)
        rated[day], before = now - before, now
    assert rated[date(2026, 11, 29)] < 100  # the impossible jump (+5,000) was not charged
    admin = Principal(g.tenant_id, g.operator_id, "admin", frozenset({"registry.view"}), "tenant",
                      frozenset())  # fmt: skip
    clock = datetime(2026, 12, 4, tzinfo=UTC)

    days = await point_consumption(db, admin, point, Grain.DAY, date(2026, 12, 2), clock)
    shown = {p.label: p.used for p in days.periods}
    assert len(shown) == 31
    for day, used in rated.items():
        if day.month == 12:
            assert shown[day.isoformat()] == used, day
    assert days.total == sum(v for d, v in rated.items() if d.month == 12)
    november = await point_consumption(db, admin, point, Grain.DAY, date(2026, 11, 1), clock)
    assert {p.label: p.used for p in november.periods}["2026-11-29"] == rated[date(2026, 11, 29)]

    months = await point_consumption(db, admin, point, Grain.MONTH, date(2026, 12, 2), clock)
    per_month = {p.label: p.used for p in months.periods}
    assert list(per_month)[-1] == "2026-12" and len(per_month) == 12
    assert per_month["2026-11"] == sum(v for d, v in rated.items() if d.month == 11)
    assert per_month["2026-12"] == sum(v for d, v in rated.items() if d.month == 12)
    assert months.total == await _rated(db, g.tenant_id, point)

    hours = await point_consumption(db, admin, point, Grain.HOUR, date(2026, 12, 1), clock)
    assert hours.total == rated[date(2026, 12, 1)]
    # 2026-12-01 00:30 Shanghai is the first reading of that day: in the 00:00 hour
    assert hours.periods[0].used > 0 and hours.periods[1].used == 0

    await console_login(http, spec.slug)
    page = await http.get(f"/console/points/{point}?grain=day&day=2026-12-02")
    assert page.status_code == 200 and "用量" in page.text
    assert 'id="point-chart"' in page.text and "echarts.min.js" in page.text
    figures = dict(
        re.findall(r'<tr><td>(2026-12-\d\d)</td><td class="num">([^<]+)</td>', page.text)
    )
    assert figures["2026-12-02"] == number(rated[date(2026, 12, 2)], 3)
    assert figures["2026-12-25"] == number(Decimal(0), 3)
    month_page = await http.get(f"/console/points/{point}?grain=month&day=2026-12-02")
    assert month_page.status_code == 200
    figures = dict(
        re.findall(r'<tr><td>(2026-\d\d)</td><td class="num">([^<]+)</td>', month_page.text)
    )
    assert figures["2026-11"] == number(per_month["2026-11"], 3)
    # lifecycle: the seeded meter, in service
    assert spec.gateway_code in page.text and "在用" in page.text

    for bad in ("grain=week", "day=2026-13-01", "day=yesterday"):
        r = await http.get(f"/console/points/{point}?{bad}")
        assert r.status_code == 422 and "按小时、日或月" in r.text, bad


async def test_the_statement_ties_to_the_live_balance_with_receipt_links(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec(balance="10.00")
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec(meters=3))  # its A000003: none of ours
    account = g.accounts["m1"]
    auth = await admin_auth(http, spec.slug)
    sale = await http.post(
        "/api/v1/sales", json={"account": account, "amount": "25.50", "method": "cash"},
        headers={**auth, "Idempotency-Key": "statement-0001"},
    )  # fmt: skip
    assert sale.status_code == 201, sale.text
    receipt = sale.json()["receipt_no"]
    async with db.tenant(g.tenant_id) as conn:
        wo = await conn.scalar(
            sa.text(
                "INSERT INTO work_order (id, tenant_id, kind, service_point_id, detail, status, "
                "created_at) VALUES (gen_random_uuid(), :t, 'reading_anomaly', :p, "
                "CAST(:d AS jsonb), 'open', now()) RETURNING id"
            ),
            {"t": g.tenant_id, "p": g.points["m1"], "d": '{"message": "register went down"}'},
        )

    admin = Principal(g.tenant_id, g.operator_id, "admin", frozenset({"registry.view"}), "tenant",
                      frozenset())  # fmt: skip
    st = await account_statement(db, admin, account)
    assert [li.amount for li in st.lines] == [Decimal("10.00"), Decimal("25.50")]
    assert st.lines[-1].balance == Decimal("35.50") and st.ties
    assert st.lines[-1].receipt_no == receipt

    await console_login(http, spec.slug)
    page = await http.get(f"/console/accounts/{account}/statement")
    assert page.status_code == 200 and "对账单" in page.text
    assert f'href="/console/sales/{receipt}"' in page.text and "充值" in page.text
    xlsx = await http.get(f"/console/accounts/{account}/statement?export=xlsx")
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    acc = await http.get(f"/console/accounts/{account}")
    assert f"/console/accounts/{account}/statement" in acc.text
    assert f'href="/console/points/{g.points["m1"]}"' in acc.text
    point = await http.get(f"/console/points/{g.points['m1']}")
    assert f'href="/console/workorders/{wo}"' in point.text and "register went down" in point.text

    # another group's account and point: not found, from the page and the service
    theirs = other.accounts["m3"]
    assert (await http.get(f"/console/accounts/{theirs}/statement")).status_code == 404
    assert (await http.get(f"/console/points/{other.points['m3']}")).status_code == 404
    with pytest.raises(NotFound):
        await account_statement(db, admin, theirs)
    far = replace(admin, scope="site", scope_ids=frozenset({uuid.uuid4()}))
    with pytest.raises(NotFound):
        await account_statement(db, far, account)
    with pytest.raises(NotFound):
        await point_consumption(db, far, g.points["m1"], Grain.DAY, None, datetime.now(UTC))
