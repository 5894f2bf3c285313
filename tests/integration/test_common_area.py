"""公摊: a common meter's charge shared by floor area or by consumption, as its own entry."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from cloud.check import check
from cloud.common_area.core import Basis
from cloud.common_area.service import allocate_common_area
from cloud.db import Database
from cloud.registry.service import seed_group
from tests.conftest import group_spec
from tests.integration.test_rating import T0, feed, r


async def _site(db: Database):  # type: ignore[no-untyped-def]
    group = await seed_group(db, group_spec(meters=4, balance="50.00"))
    async with db.tenant(group.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE service_point SET common_area = true WHERE id = :p"),
            {"p": group.points["m4"]},
        )
        for key, area in (("m1", "30"), ("m2", "50"), ("m3", "20.5")):
            await conn.execute(
                sa.text("UPDATE service_point SET floor_area = :a WHERE id = :p"),
                {"a": Decimal(area), "p": group.points[key]},
            )
    return group


async def _wallets(db: Database, group) -> dict[str, Decimal]:  # type: ignore[no-untyped-def]
    async with db.tenant(group.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT sp.id, la.balance FROM service_point sp JOIN account a ON "
                "a.id = sp.account_id JOIN ledger_account la ON la.id = a.wallet_id"
            )
        )
        by_point = {row[0]: row[1] for row in rows}
    return {k: by_point[p] for k, p in group.points.items()}


async def test_common_meter_is_shared_by_floor_area_once_per_period(db: Database) -> None:
    group = await _site(db)
    # the common meter draws 100.50 kWh in two hours at ¥1.0000; it is never charged itself
    await feed(
        db,
        group,
        [
            r(0, "1000.00", device="m4"),
            r(60, "1050.00", device="m4"),
            r(120, "1100.50", device="m4"),
        ],
    )
    assert (await _wallets(db, group))["m4"] == Decimal("50.00")
    members = [group.points[k] for k in ("m1", "m2", "m3")]
    args = (group.points["m4"], members, Basis.AREA, T0, T0 + timedelta(hours=2), "op:finance")
    first = await allocate_common_area(db, group.tenant_id, *args)
    again = await allocate_common_area(db, group.tenant_id, *args)
    assert first.created and not again.created and again.entry_id == first.entry_id
    assert first.consumption == Decimal("100.50") and first.charge == Decimal("100.50")
    # 100.50 × 30/100.5, × 50/100.5, × 20.5/100.5
    assert list(first.shares.values()) == [Decimal("30.00"), Decimal("50.00"), Decimal("20.50")]
    wallets = await _wallets(db, group)
    assert [wallets[k] for k in ("m1", "m2", "m3", "m4")] == [
        Decimal("20.00"),
        Decimal("0.00"),
        Decimal("29.50"),
        Decimal("50.00"),
    ]
    async with db.tenant(group.tenant_id) as conn:
        kinds = (
            await conn.execute(sa.text("SELECT kind FROM journal_entry WHERE kind = 'common_area'"))
        ).all()
    assert len(kinds) == 1
    assert (await check(db, [group.tenant_id])).ok


async def test_common_meter_is_shared_by_the_members_own_consumption(db: Database) -> None:
    group = await _site(db)
    await feed(
        db,
        group,
        [
            r(0, "0.00", device="m4"),
            r(60, "10.00", device="m4"),  # ¥10.00 to share
            *(r(0, "0.00", device=k) for k in ("m1", "m2", "m3")),
            r(60, "1.00", device="m1"),
            r(60, "1.00", device="m2"),
            r(60, "1.00", device="m3"),
        ],
    )
    members = [group.points[k] for k in ("m1", "m2", "m3")]
    out = await allocate_common_area(
        db,
        group.tenant_id,
        group.points["m4"],
        members,
        Basis.CONSUMPTION,
        T0,
        T0 + timedelta(hours=1),
        "op:finance",
    )
    assert list(out.shares.values()) == [Decimal("3.34"), Decimal("3.33"), Decimal("3.33")]
    wallets = await _wallets(db, group)
    # each used 1 kWh (¥1.00) and carries a third of the common ¥10.00
    assert [wallets[k] for k in ("m1", "m2", "m3")] == [
        Decimal("45.66"),
        Decimal("45.67"),
        Decimal("45.67"),
    ]
    assert (await check(db, [group.tenant_id])).ok
