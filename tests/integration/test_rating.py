"""Rating against the real database: each anomaly leaves a work order and the charge that
results (or none); tariffs stored as versions rate as the core says; swaps rebase."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.check import check
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import IngestResult, IngestService
from cloud.rating.service import close_usage_windows, post_closed_windows
from cloud.registry.service import MeterSwap, Seeded, swap_meter
from contract.mqtt import Reading, TelemetryBatch

T0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
TIMING = CommandTiming()


async def _gw(db: Database, group: Seeded) -> str:
    async with db.tenant(group.tenant_id) as conn:
        return str(await conn.scalar(sa.text("SELECT code FROM gateway")))


async def feed(
    db: Database,
    group: Seeded,
    readings: list[Reading],
    seq: int = 1,
    service: IngestService | None = None,
) -> IngestResult:
    gw = await _gw(db, group)
    batch = TelemetryBatch(gateway=gw, boot_id="b", seq=seq, sent_at=T0, readings=tuple(readings))
    service = service or IngestService(db, TIMING)
    return await service.store_telemetry(gw, batch, datetime.now(UTC))


def r(minutes: float, total: str, **kw: object) -> Reading:
    return Reading.model_validate(
        {"device": "m1", "measured_at": T0 + timedelta(minutes=minutes), "total": total, **kw}
    )


async def orders(db: Database, group: Seeded) -> list[tuple[str, dict[str, str]]]:
    async with db.tenant(group.tenant_id) as conn:
        rows = await conn.execute(
            sa.text("SELECT kind, detail FROM work_order ORDER BY created_at, kind")
        )
        return [(row.kind, row.detail) for row in rows]


async def balance(db: Database, group: Seeded) -> Decimal:
    async with db.tenant(group.tenant_id) as conn:
        value = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE kind = 'wallet'")
        )
    assert isinstance(value, Decimal)
    return value


async def assert_books_close(db: Database, group: Seeded) -> None:
    """Invariants hold now, and again once every window is journaled."""
    assert (await check(db, [group.tenant_id])).ok
    async with db.tenant(group.tenant_id) as conn:
        await post_closed_windows(conn, group.tenant_id, datetime(2100, 1, 1, tzinfo=UTC), TIMING)
    report = await check(db, [group.tenant_id])
    assert report.ok, report.breaches


# Opening balance is ¥10.00 at ¥1.0000/kWh (tests/conftest.group_spec).


async def test_rollover_is_charged_across_the_wrap_with_a_work_order(
    db: Database, group: Seeded
) -> None:
    await feed(db, group, [r(0, "999999.50"), r(15, "1.25")])
    assert [k for k, _ in await orders(db, group)] == ["rollover"]
    assert (await orders(db, group))[0][1]["charged_consumption"] == "1.750"
    assert await balance(db, group) == Decimal("8.25")
    await assert_books_close(db, group)


async def test_register_going_down_is_not_charged_and_rebases(db: Database, group: Seeded) -> None:
    await feed(db, group, [r(0, "50.00"), r(15, "3.00"), r(30, "4.00")])
    assert [k for k, _ in await orders(db, group)] == ["register_down"]
    assert await balance(db, group) == Decimal("9.00")  # only the 1 kWh after the drop
    await assert_books_close(db, group)


async def test_impossible_jump_is_not_charged(db: Database, group: Seeded) -> None:
    await feed(db, group, [r(0, "100.00"), r(15, "900.00"), r(30, "902.00")])
    kinds = await orders(db, group)
    assert [k for k, _ in kinds] == ["impossible_jump"]
    assert "800.00" in kinds[0][1]["detail"]
    assert await balance(db, group) == Decimal("8.00")
    await assert_books_close(db, group)


async def test_stuck_register_while_drawing_power_opens_one_work_order(
    db: Database, group: Seeded
) -> None:
    await feed(db, group, [r(15 * i, "7.00", power=Decimal("2.5")) for i in range(3)])
    await feed(db, group, [r(15 * i, "7.00", power=Decimal("2.5")) for i in range(3, 6)], seq=2)
    assert [k for k, _ in await orders(db, group)] == ["stuck_register"]
    assert await balance(db, group) == Decimal("10.00")
    await feed(db, group, [r(120, "7.50", power=Decimal("2.5"))], seq=3)
    assert await balance(db, group) == Decimal("9.50")
    await assert_books_close(db, group)


async def test_gap_is_flagged_and_the_consumption_over_it_charged(
    db: Database, group: Seeded
) -> None:
    await feed(db, group, [r(0, "10.00"), r(300, "14.00")])
    kinds = await orders(db, group)
    assert [k for k, _ in kinds] == ["reading_gap"]
    assert await balance(db, group) == Decimal("6.00")
    await assert_books_close(db, group)


async def test_late_and_out_of_order_readings_never_double_charge(
    db: Database, group: Seeded
) -> None:
    await feed(db, group, [r(0, "10.00"), r(60, "12.00")])
    # a reading that was delayed (between the two) and one re-sent: neither charges
    result = await feed(db, group, [r(30, "11.00"), r(60, "12.00")], seq=2)
    assert result.stored == 1 and result.duplicates == 1
    assert await orders(db, group) == []
    assert await balance(db, group) == Decimal("8.00")
    await assert_books_close(db, group)


async def test_a_register_finer_than_its_column_is_rated_as_stored(
    db: Database, group: Seeded
) -> None:
    """reading.total keeps 3 decimals; what is charged is the difference of what is kept."""
    await feed(db, group, [r(0, "10.0004"), r(30, "12.0046")])
    async with db.tenant(group.tenant_id) as conn:
        stored = (await conn.execute(sa.text("SELECT total FROM reading ORDER BY 1"))).scalars()
        assert list(stored) == [Decimal("10.000"), Decimal("12.005")]
        used = await conn.scalar(sa.text("SELECT consumption_total FROM rating_state"))
    assert used == Decimal("2.005")
    assert await balance(db, group) == Decimal("7.99")  # 2.005 at 1.0000, half up to the fen
    await assert_books_close(db, group)


async def test_meter_swap_charges_the_final_reading_and_rebases_on_the_new_meter(
    db: Database, group: Seeded
) -> None:
    ingest = IngestService(db, TIMING)  # one worker throughout: its registry cache must notice
    await feed(db, group, [r(0, "500.00")], service=ingest)
    async with db.tenant(group.tenant_id) as conn:
        device = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO device (id, tenant_id, gateway_id, key, profile, bus, address) "
                "VALUES (:d, :t, :g, 'm1-new', 'acrel-ddsy1352-modbus', 'bus1', '9')"
            ),
            {"d": device, "t": group.tenant_id, "g": group.gateway_id},
        )
        channel = await conn.scalar(
            sa.text(
                "INSERT INTO channel (id, tenant_id, device_id, number) "
                "VALUES (gen_random_uuid(), :t, :d, 1) RETURNING id"
            ),
            {"t": group.tenant_id, "d": device},
        )
    report = await swap_meter(
        db,
        group.tenant_id,
        MeterSwap(
            group.points["m1"], channel, T0 + timedelta(minutes=30), Decimal("503"), Decimal("0.4")
        ),
        "installer",
        TIMING,
    )
    assert report.charged == Decimal("3.00")
    kinds = await orders(db, group)
    assert [k for k, _ in kinds] == ["meter_swap"]
    assert "final 503" in kinds[0][1]["detail"] and "initial 0.4" in kinds[0][1]["detail"]
    # the old meter's readings no longer rate; the new one's do, from its initial reading
    await feed(db, group, [r(45, "520.00"), r(60, "2.40", device="m1-new")], seq=2, service=ingest)
    assert await balance(db, group) == Decimal("5.00")
    async with db.tenant(group.tenant_id) as conn:
        bindings = (
            await conn.execute(
                sa.text(
                    "SELECT install_register, removal_register FROM binding "
                    "ORDER BY removed_at NULLS LAST"
                )
            )
        ).all()
    assert [tuple(b) for b in bindings][-2:] == [
        (None, Decimal("503.000")),
        (Decimal("0.400"), None),
    ]
    await assert_books_close(db, group)


async def _set_tariff(
    db: Database, group: Seeded, kind: str, spec: dict[str, object], fee: str = "0"
) -> None:
    async with db.tenant(group.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO tariff_version (id, tenant_id, tariff_id, effective_from, kind, "
                "unit_price, spec, monthly_fee) SELECT gen_random_uuid(), tenant_id, id, :at, "
                ":k, NULL, CAST(:s AS jsonb), :fee FROM tariff"
            ),
            {"at": T0 - timedelta(days=1), "k": kind, "s": json.dumps(spec), "fee": Decimal(fee)},
        )


async def test_tou_by_the_meters_registers(db: Database, group: Seeded) -> None:
    await _set_tariff(
        db,
        group,
        "tou",
        {
            "prices": {"sharp": "1.5", "peak": "1.2", "flat": "0.7", "valley": "0.3"},
            "windows": [
                {"start": "00:00", "period": "valley"},
                {"start": "08:00", "period": "peak"},
            ],
        },
    )
    tou0 = (Decimal("1"), Decimal("2"), Decimal("3"), Decimal("4"))
    tou1 = (Decimal("1.5"), Decimal("3"), Decimal("3.5"), Decimal("6"))  # 0.5, 1, 0.5, 2
    await feed(db, group, [r(0, "10.00", tou=tou0), r(15, "14.00", tou=tou1)])
    # 0.5×1.5 + 1×1.2 + 0.5×0.7 + 2×0.3 = 2.90, though the clock says "peak" for all 4 kWh
    assert await balance(db, group) == Decimal("7.10")
    await assert_books_close(db, group)


async def test_tou_by_timestamps_in_the_sites_time_zone(db: Database, group: Seeded) -> None:
    await _set_tariff(
        db,
        group,
        "tou",
        {
            "prices": {"peak": "1.2", "valley": "0.3"},
            "windows": [
                {"start": "00:00", "period": "valley"},
                {"start": "11:00", "period": "peak"},
            ],
        },
    )
    # 10:45 → 11:00 Shanghai is valley, 11:00 → 11:15 is peak
    await feed(db, group, [r(45, "10.00"), r(60, "11.00"), r(75, "12.00")])
    assert await balance(db, group) == Decimal("8.50")
    await assert_books_close(db, group)


async def test_tiered_month_with_fee_and_a_water_point_priced_per_m3(
    db: Database, group: Seeded
) -> None:
    async with db.tenant(group.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE service_point SET utility = 'water'"))
    await _set_tariff(
        db,
        group,
        "tiered",
        {
            "cycle": "month",
            "blocks": [{"up_to": "2", "price": "3.45"}, {"up_to": None, "price": "4.60"}],
        },
        fee="1.00",
    )
    await feed(db, group, [r(0, "100.000"), r(30, "101.500"), r(60, "102.345")])
    # fee 1.00; 1.5 m³ at 3.45; 0.5 m³ at 3.45 + 0.345 m³ at 4.60 → 6.90 + 1.587 = 8.487
    assert await balance(db, group) == Decimal("10.00") - Decimal("1.00") - Decimal("8.49")
    async with db.tenant(group.tenant_id) as conn:
        kinds = (await conn.execute(sa.text("SELECT kind FROM journal_entry"))).scalars().all()
    assert sorted(kinds) == ["adjustment", "fixed_charge"]  # usage still in its open window
    await assert_books_close(db, group)


@pytest.mark.parametrize("later_price", ["2.0000"])
async def test_a_new_price_version_never_rerates_what_was_rated(
    db: Database, group: Seeded, later_price: str
) -> None:
    await feed(db, group, [r(0, "10.00"), r(30, "12.00")])
    async with db.tenant(group.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO tariff_version (id, tenant_id, tariff_id, effective_from, kind, "
                "unit_price) SELECT gen_random_uuid(), tenant_id, id, :at, 'flat', :p FROM tariff"
            ),
            {"at": T0 + timedelta(minutes=40), "p": Decimal(later_price)},
        )
    await feed(db, group, [r(60, "13.00")], seq=2)
    assert await balance(db, group) == Decimal("10.00") - 2 - 2
    await assert_books_close(db, group)


async def test_the_worker_job_journals_windows_that_ended_and_only_those(
    db: Database, group: Seeded
) -> None:
    await feed(db, group, [r(0, "10.00"), r(30, "11.00"), r(90, "12.50")])
    # 10:00–11:00 closed when the 11:30 reading came; 11:00–12:00 is still open
    async with db.tenant(group.tenant_id) as conn:
        usage = await conn.scalar(sa.text("SELECT count(*) FROM journal_entry WHERE kind='usage'"))
    assert usage == 1
    assert await close_usage_windows(db, T0 + timedelta(minutes=119), TIMING) >= 0
    async with db.tenant(group.tenant_id) as conn:
        assert (
            await conn.scalar(sa.text("SELECT count(*) FROM journal_entry WHERE kind='usage'")) == 1
        )
    await close_usage_windows(db, T0 + timedelta(minutes=120), TIMING)
    async with db.tenant(group.tenant_id) as conn:
        amounts = (
            (
                await conn.execute(
                    sa.text(
                        "SELECT p.amount FROM journal_entry e JOIN posting p ON p.entry_id = e.id "
                        "WHERE e.kind = 'usage' AND p.amount > 0 ORDER BY e.effective_at"
                    )
                )
            )
            .scalars()
            .all()
        )
        unposted = await conn.scalar(
            sa.text("SELECT unposted FROM ledger_account WHERE kind = 'wallet'")
        )
    assert amounts == [Decimal("1.00"), Decimal("1.50")] and unposted == 0
    assert await balance(db, group) == Decimal("7.50")
    assert (await check(db, [group.tenant_id])).ok
