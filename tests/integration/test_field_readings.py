"""Field work against the real database: meter books and their reading tasks, and readings
uploaded from a phone's queue, rated by the gateway's own path — once, whatever is sent
twice, and never twice for a field and a gateway reading of the same meter."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.auth import PERMISSIONS, Principal, hash_password
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.errors import Forbidden, NotFound
from cloud.field import books
from cloud.field.readings import (
    IN_FUTURE,
    NEGATIVE,
    OUTSIDE_BOOKS,
    PHOTO_TOO_LARGE,
    FieldItem,
    upload,
)
from cloud.ingest.service import IngestService
from cloud.registry.service import Seeded, seed_group
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import group_spec

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=3)
TIMING = CommandTiming()


def admin(g: Seeded) -> Principal:
    return Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))


async def worker(
    db: Database, g: Seeded, name: str = "reader", also: tuple[str, ...] = ()
) -> Principal:
    """A field worker (role with field.work, and ``also``) of the group."""
    perms = ["field.work", *also]
    role, op = uuid.uuid4(), uuid.uuid4()
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO role (id, tenant_id, name, permissions) VALUES (:id, :t, :n, :perms)"
            ),
            {"id": role, "t": g.tenant_id, "n": f"field {name}", "perms": perms},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active) VALUES (:id, :t, :u, :u, :h, :r, true)"
            ),
            {"id": op, "t": g.tenant_id, "u": name, "h": hash_password("field-pass"), "r": role},
        )
    return Principal(g.tenant_id, op, name, frozenset(perms))


async def book_for(db: Database, g: Seeded, who: Principal, keys: list[str]) -> uuid.UUID:
    boss = admin(g)
    book = await books.create_book(db, boss, g.site_id, f"B{uuid.uuid4().hex[:4]}", "Row 1", NOW)
    await books.set_route(db, boss, book, [g.points[k] for k in keys], NOW)
    await books.assign(db, boss, book, who.operator_id, NOW)
    return book


async def wallet(db: Database, g: Seeded, key: str) -> Decimal:
    async with db.tenant(g.tenant_id) as conn:
        return Decimal(
            await conn.scalar(
                sa.text(
                    "SELECT w.balance FROM service_point sp JOIN account a ON a.id = sp.account_id "
                    "JOIN ledger_account w ON w.id = a.wallet_id WHERE sp.id = :p"
                ),
                {"p": g.points[key]},
            )
        )


async def counts(db: Database, g: Seeded) -> tuple[int, int, int, int]:
    async with db.tenant(g.tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM reading), (SELECT count(*) FROM field_reading), "
                    "(SELECT count(*) FROM work_order), (SELECT count(*) FROM journal_entry)"
                )
            )
        ).one()
    return row[0], row[1], row[2], row[3]


def item(g: Seeded, key: str, at: datetime, total: str | None, **kw: object) -> FieldItem:
    return FieldItem(
        uuid.uuid4(), g.points[key], at, None if total is None else Decimal(total), **kw
    )  # type: ignore[arg-type]


@pytest.fixture
async def g3(db: Database) -> Seeded:
    return await seed_group(db, group_spec(meters=3))


async def test_a_cycle_tasks_the_points_whose_gateway_is_silent(db: Database, g3: Seeded) -> None:
    who = await worker(db, g3)
    book = await book_for(db, g3, who, ["m2", "m1"])
    cycle, n = await books.open_cycle(db, admin(g3), book, date(2026, 11, 20), NOW)
    assert n == 2  # the seeded gateway has never been heard from
    assert await books.open_cycle(db, admin(g3), book, date(2026, 11, 20), NOW) == (cycle, 2)
    tasks = await books.download(db, who, date(2026, 11, 21), NOW)
    assert [t.point_id for t in tasks] == [g3.points["m2"], g3.points["m1"]]  # route order
    assert tasks[0].balance == Decimal("10.00") and tasks[0].reason == "gateway_silent"
    assert tasks[0].unit_price == Decimal("1.0000")
    # the gateway heard a minute ago: the next cycle has nothing to read by hand
    async with db.tenant(g3.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE gateway SET online = true, last_seen_at = :at"),
            {"at": NOW - timedelta(minutes=1)},
        )
    assert (await books.open_cycle(db, admin(g3), book, date(2026, 12, 20), NOW))[1] == 0


async def test_uploaded_readings_are_rated_once_and_a_second_upload_changes_nothing(
    db: Database, g3: Seeded
) -> None:
    who = await worker(db, g3)
    book = await book_for(db, g3, who, ["m1", "m2"])
    await books.open_cycle(db, admin(g3), book, date(2026, 11, 20), NOW)
    queue = [
        item(g3, "m1", T0, "100.00"),
        item(g3, "m1", T0 + timedelta(hours=1), "101.50"),
        item(g3, "m2", T0, None, anomaly="no_access"),
    ]
    results = await upload(db, who, queue, NOW, TIMING)
    assert [r.status for r in results] == ["stored"] * 3
    assert results[2].work_order_id is not None
    assert await wallet(db, g3, "m1") == Decimal("8.50")
    before = await counts(db, g3)
    again = await upload(db, who, [*queue, queue[0]], NOW + timedelta(minutes=5), TIMING)
    assert [r.status for r in again] == ["duplicate"] * 4
    assert await counts(db, g3) == before
    assert await wallet(db, g3, "m1") == Decimal("8.50")
    async with db.tenant(g3.tenant_id) as conn:
        kind = await conn.scalar(sa.text("SELECT kind FROM work_order"))
        open_tasks = await conn.scalar(
            sa.text("SELECT count(*) FROM reading_task WHERE done_at IS NULL")
        )
    assert kind == "field_no_access" and open_tasks == 0


async def test_bad_items_are_refused_with_a_reason_and_the_rest_is_kept(
    db: Database, g3: Seeded
) -> None:
    who = await worker(db, g3)
    await book_for(db, g3, who, ["m1"])
    queue = [
        item(g3, "m1", T0, "50.00"),
        item(g3, "m1", NOW + timedelta(hours=1), "51.00"),
        item(g3, "m1", T0 + timedelta(minutes=5), "-1"),
        item(g3, "m2", T0, "7.00"),  # not on the worker's books
        item(g3, "m1", T0 + timedelta(minutes=9), "50.20", photo=b"x" * (600 * 1024)),
        item(g3, "m1", T0 + timedelta(hours=1), "51.00", photo=b"\xff\xd8small jpeg"),
    ]
    results = await upload(db, who, queue, NOW, TIMING)
    assert [(r.status, r.message) for r in results] == [
        ("stored", None),
        ("refused", IN_FUTURE),
        ("refused", NEGATIVE),
        ("refused", OUTSIDE_BOOKS),
        ("refused", PHOTO_TOO_LARGE),
        ("stored", None),
    ]
    assert await wallet(db, g3, "m1") == Decimal("9.00")
    assert (await counts(db, g3))[:2] == (2, 2)


async def test_a_field_and_a_gateway_reading_of_one_meter_never_double_charge(
    db: Database, g3: Seeded
) -> None:
    who = await worker(db, g3)
    await book_for(db, g3, who, ["m1"])
    ingest = IngestService(db, TIMING)
    async with db.tenant(g3.tenant_id) as conn:
        gw = str(await conn.scalar(sa.text("SELECT code FROM gateway")))

    async def gateway(at: datetime, total: str) -> None:
        batch = TelemetryBatch(
            gateway=gw,
            boot_id="b1",
            seq=int(at.timestamp()),
            sent_at=at,
            readings=(Reading(device="m1", measured_at=at, total=Decimal(total)),),
        )
        await ingest.store_telemetry(gw, batch, at)

    await gateway(T0, "10.00")
    await gateway(T0 + timedelta(hours=1), "12.00")
    # the worker reads the meter seconds after the gateway did, and at the same second
    at = T0 + timedelta(hours=1)
    results = await upload(
        db,
        who,
        [item(g3, "m1", at + timedelta(seconds=20), "12.00"), item(g3, "m1", at, "12.00")],
        NOW,
        TIMING,
    )
    assert [r.status for r in results] == ["stored", "stored"]
    # the gateway's next reading, later, arrives after the field one
    await gateway(T0 + timedelta(hours=2), "13.00")
    assert await wallet(db, g3, "m1") == Decimal("7.00")  # 3 kWh, charged once
    async with db.tenant(g3.tenant_id) as conn:
        outcomes = sorted(await conn.scalars(sa.text("SELECT outcome FROM field_reading")))
    assert outcomes == ["duplicate_time", "stored"]


async def test_a_register_lower_than_the_last_is_not_charged_and_opens_a_work_order(
    db: Database, g3: Seeded
) -> None:
    who = await worker(db, g3)
    await book_for(db, g3, who, ["m1"])
    queue = [item(g3, "m1", T0, "20.00"), item(g3, "m1", T0 + timedelta(hours=1), "18.00")]
    assert [r.status for r in await upload(db, who, queue, NOW, TIMING)] == ["stored"] * 2
    assert await wallet(db, g3, "m1") == Decimal("10.00")
    async with db.tenant(g3.tenant_id) as conn:
        kinds = list(await conn.scalars(sa.text("SELECT kind FROM work_order")))
    assert kinds == ["register_down"]


async def test_another_groups_points_and_books_are_not_found_and_nothing_changes(
    db: Database, g3: Seeded
) -> None:
    other = await seed_group(db, group_spec(meters=1))
    who = await worker(db, g3)
    book = await book_for(db, g3, who, ["m1"])
    foreign_book = await books.create_book(db, admin(other), other.site_id, "X1", "Theirs", NOW)
    before = await counts(db, g3)
    results = await upload(
        db, who, [FieldItem(uuid.uuid4(), other.points["m1"], T0, Decimal(5))], NOW, TIMING
    )
    assert results[0].message == OUTSIDE_BOOKS
    with pytest.raises(NotFound):
        await books.set_route(db, admin(g3), book, [other.points["m1"]], NOW)
    with pytest.raises(NotFound):
        await books.assign(db, admin(g3), foreign_book, who.operator_id, NOW)
    with pytest.raises(NotFound):
        await books.open_cycle(db, admin(g3), foreign_book, date(2026, 11, 20), NOW)
    with pytest.raises(Forbidden):  # a field worker does not make books
        await books.create_book(db, who, g3.site_id, "B9", "Mine", NOW)
    assert await counts(db, g3) == before
    async with db.tenant(other.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM meter_book_point")) == 0
