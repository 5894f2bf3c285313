"""Readings are rated only within reason (issue 22, item 7): one measured longer ago than
the site takes (default a year), or before its meter was bound to the point, is kept in
quarantine with its own reason, counted, and never stored nor rated as if it were recent;
a reading in reason beside it is rated as before. What no clock says (year 1) the contract
refuses outright (tests/integration/test_ingest_fuzz.py, batch 109)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import IngestResult, IngestService
from cloud.registry.service import Seeded, seed_group
from contract.mqtt import ContractError, Reading, TelemetryBatch
from tests.conftest import group_spec

NOW = datetime.now(UTC).replace(microsecond=0)


async def _group(db: Database, **spec: object) -> tuple[Seeded, str]:
    base = group_spec()
    g = await seed_group(db, replace(base, reading_max_age_days=365, **spec))  # type: ignore[arg-type]
    return g, base.gateway_code


async def _send(
    service: IngestService, gw: str, *readings: tuple[datetime, str], received: datetime = NOW
) -> IngestResult:
    batch = TelemetryBatch(
        gateway=gw,
        boot_id="b1",
        seq=int(uuid.uuid4().int % 10**9),
        sent_at=received,
        readings=tuple(
            Reading(device="m1", measured_at=at, total=Decimal(t)) for at, t in readings
        ),
    )
    return await service.store_telemetry(gw, batch, received)


async def _kept(db: Database, g: Seeded) -> list[tuple[str, datetime]]:
    async with db.tenant(g.tenant_id) as conn:
        rows = await conn.execute(
            sa.text("SELECT reason, measured_at FROM reading_quarantine ORDER BY measured_at")
        )
        return [(r.reason, r.measured_at) for r in rows]


async def _stored(db: Database, g: Seeded) -> list[datetime]:
    async with db.tenant(g.tenant_id) as conn:
        rows = await conn.execute(sa.text("SELECT measured_at FROM reading ORDER BY measured_at"))
        return [r.measured_at for r in rows]


async def _balance(db: Database, g: Seeded) -> Decimal:
    async with db.tenant(g.tenant_id) as conn:
        value = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE kind = 'wallet'")
        )
    return Decimal(value)


async def test_a_reading_older_than_the_site_allows_is_kept_not_rated(db: Database) -> None:
    g, gw = await _group(db)
    service = IngestService(db, CommandTiming())
    year_ago = NOW - timedelta(days=366)
    ancient = datetime(2001, 3, 1, tzinfo=UTC)  # the contract lets it through (from 2000)
    base, later = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    result = await _send(
        service, gw, (ancient, "1.00"), (year_ago, "2.00"), (base, "100.00"), (later, "101.50")
    )
    assert result.quarantined == {"too_old": 2}
    assert (result.stored, result.charged) == (2, Decimal("1.50"))
    assert await _kept(db, g) == [("too_old", ancient), ("too_old", year_ago)]
    assert await _stored(db, g) == [base, later]
    # 1.50 kWh at ¥1 between the two recent readings; the old ones charged nothing (were
    # they rated, the year-old 2.00 would have been the base and 98 kWh charged)
    assert await _balance(db, g) == Decimal("8.50")

    # a day inside the year is in reason: stored, and being earlier than the point's
    # baseline (its earliest reading rated) it moves the baseline back: the 50 kWh the
    # meter turned between then and the baseline are charged (rating's baseline rule)
    inside = await _send(service, gw, (NOW - timedelta(days=300), "50.00"))
    assert (inside.stored, inside.quarantined) == (1, {})
    assert await _balance(db, g) == Decimal("-41.50")
    # the same reading again changes nothing
    await _send(service, gw, (NOW - timedelta(days=300), "50.00"))
    assert await _balance(db, g) == Decimal("-41.50")


async def test_the_sites_allowed_age_is_its_own_and_read_again_when_changed(
    db: Database,
) -> None:
    g, gw = await _group(db)
    service = IngestService(db, CommandTiming())
    forty = NOW - timedelta(days=40)
    assert (await _send(service, gw, (forty, "10.00"))).stored == 1  # the map is cached
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE site SET reading_max_age_days = 30 WHERE id = :s"), {"s": g.site_id}
        )
    # the cached map is read again: a 35-day-old reading is now too old for this site
    result = await _send(service, gw, (NOW - timedelta(days=35), "11.00"), (NOW, "12.00"))
    assert (result.quarantined, result.stored) == ({"too_old": 1}, 1)
    assert result.charged == Decimal("2.00")  # 10.00 → 12.00, the old one not in between
    with pytest.raises(sa.exc.IntegrityError):  # the column holds only a sane age
        async with db.tenant(g.tenant_id) as conn:
            await conn.execute(sa.text("UPDATE site SET reading_max_age_days = 0"))


async def test_a_reading_before_the_meter_was_installed_is_kept_not_rated(
    db: Database,
) -> None:
    installed = NOW - timedelta(hours=3)
    g, gw = await _group(db, installed_at=installed)
    service = IngestService(db, CommandTiming())
    before = installed - timedelta(minutes=1)
    result = await _send(
        service,
        gw,
        (before, "90.00"),
        (installed, "100.00"),
        (installed + timedelta(hours=1), "101.25"),
        (NOW + timedelta(minutes=30), "999.00"),  # and one from the future, as before
    )
    assert result.quarantined == {"before_installation": 1, "future_timestamp": 1}
    assert (result.stored, result.charged) == (2, Decimal("1.25"))
    assert [r for r, _ in await _kept(db, g)] == ["before_installation", "future_timestamp"]
    assert await _stored(db, g) == [installed, installed + timedelta(hours=1)]
    assert await _balance(db, g) == Decimal("8.75")
    # a reading the same meter measured before 装表 arriving late (an outbox drained after
    # days offline): kept, not charged to the point
    late = await _send(service, gw, (installed - timedelta(days=2), "80.00"))
    assert (late.stored, late.quarantined) == (0, {"before_installation": 1})
    assert await _balance(db, g) == Decimal("8.75")


async def test_a_swap_moves_the_installation_to_the_new_meter(db: Database) -> None:
    """After 换表 the point's binding starts at the swap: the new meter's readings from
    before it are not the point's."""
    from cloud.registry.service import MeterSwap, swap_meter

    g, gw = await _group(db)
    service = IngestService(db, CommandTiming())
    async with db.tenant(g.tenant_id) as conn:
        device = await conn.scalar(
            sa.text(
                "INSERT INTO device (id, tenant_id, gateway_id, key, profile, bus, address) "
                "VALUES (gen_random_uuid(), :t, :g, 'm2', 'x', 'bus1', '2') RETURNING id"
            ),
            {"t": g.tenant_id, "g": g.gateway_id},
        )
        channel = await conn.scalar(
            sa.text(
                "INSERT INTO channel (id, tenant_id, device_id, number) "
                "VALUES (gen_random_uuid(), :t, :d, 1) RETURNING id"
            ),
            {"t": g.tenant_id, "d": device},
        )
    at = NOW - timedelta(hours=1)
    swap = MeterSwap(g.points["m1"], channel, at, Decimal("5.00"), Decimal("0.00"))
    await swap_meter(db, g.tenant_id, swap, "installer", CommandTiming())

    def on_m2(*readings: tuple[datetime, str]) -> TelemetryBatch:
        return TelemetryBatch(
            gateway=gw,
            boot_id="b1",
            seq=7,
            sent_at=NOW,
            readings=tuple(
                Reading(device="m2", measured_at=t, total=Decimal(v)) for t, v in readings
            ),
        )

    result = await service.store_telemetry(
        gw, on_m2((at - timedelta(minutes=5), "0.00"), (at + timedelta(minutes=30), "0.40")), NOW
    )
    assert (result.quarantined, result.stored) == ({"before_installation": 1}, 1)
    assert result.charged == Decimal("0.40")  # from the new meter's initial 0.00


def test_the_contract_refuses_what_no_clock_says() -> None:
    for when in ("0001-01-01T00:00:00+00:00", "1999-12-31T23:59:59+00:00"):
        raw = json.dumps(
            {
                "v": 1,
                "gateway": "gw-1",
                "boot_id": "b",
                "seq": 1,
                "sent_at": NOW.isoformat(),
                "readings": [{"device": "m1", "measured_at": when}],
            }
        )
        with pytest.raises(ContractError, match=r"readings\.0\.measured_at"):
            TelemetryBatch.model_validate_json(raw)
