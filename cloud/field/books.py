"""Meter books (表册): a site's service points on an ordered route, the field workers
assigned to a book, and reading cycles with a task per point to read by hand — a point
with no gateway, or whose gateway has been silent longer than its site allows
(``site.gateway_offline_minutes``).

A field worker (permission ``field.work``) sees and touches only the points on the books
assigned to them (:func:`book_points`); an operator with ``field.books`` makes books within
their own scope (sites, outlets)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import Conflict, Invalid, NotFound
from cloud.registry.scope import require_site, sites_of


async def book_points(conn: AsyncConnection, who: Principal) -> set[uuid.UUID]:
    """The service points on the books assigned to ``who``."""
    rows = await conn.scalars(
        sa.text(
            "SELECT p.service_point_id FROM meter_book_point p "
            "JOIN meter_book_worker w ON w.book_id = p.book_id WHERE w.operator_id = :o"
        ),
        {"o": who.operator_id},
    )
    return set(rows)


async def _book_site(conn: AsyncConnection, who: Principal, book_id: uuid.UUID) -> uuid.UUID:
    site = await conn.scalar(
        sa.text("SELECT site_id FROM meter_book WHERE id = :b"), {"b": book_id}
    )
    if site is None:
        raise NotFound(f"meter book {book_id} not found")
    await require_site(conn, who, site)
    return uuid.UUID(str(site))


async def create_book(
    db: Database, who: Principal, site_id: uuid.UUID, code: str, name: str, now: datetime
) -> uuid.UUID:
    who.require("field.books")
    code, name = code.strip(), name.strip()
    if not code or not name or len(code) > 40:
        raise Invalid("a meter book needs a code (up to 40 characters) and a name")
    book_id = uuid.uuid4()
    async with db.tenant(who.tenant_id) as conn:
        await require_site(conn, who, site_id)
        if await conn.scalar(sa.text("SELECT 1 FROM site WHERE id = :s"), {"s": site_id}) is None:
            raise NotFound(f"site {site_id} not found")
        taken = await conn.scalar(sa.text("SELECT 1 FROM meter_book WHERE code = :c"), {"c": code})
        if taken:
            raise Conflict(f"a meter book with code {code!r} exists already")
        await conn.execute(
            sa.text(
                "INSERT INTO meter_book (id, tenant_id, site_id, code, name, created_at) "
                "VALUES (:id, :t, :s, :c, :n, :now)"
            ),
            {"id": book_id, "t": who.tenant_id, "s": site_id, "c": code, "n": name, "now": now},
        )
        await audit.record(conn, who.tenant_id, who.actor, "book.create", f"book:{code}", now)
    return book_id


async def set_route(
    db: Database, who: Principal, book_id: uuid.UUID, points: Sequence[uuid.UUID], now: datetime
) -> None:
    """The book's route is ``points`` in this order (points of the book's site, each on no
    other book)."""
    who.require("field.books")
    if len(set(points)) != len(points):
        raise Invalid("a point appears twice on the route")
    async with db.tenant(who.tenant_id) as conn:
        site = await _book_site(conn, who, book_id)
        found = set(
            await conn.scalars(
                sa.text("SELECT id FROM service_point WHERE id = ANY(:ids) AND site_id = :s"),
                {"ids": list(points), "s": site},
            )
        )
        missing = [p for p in points if p not in found]
        if missing:
            raise NotFound(f"service point {missing[0]} not found at the book's site")
        elsewhere = await conn.scalar(
            sa.text(
                "SELECT b.code FROM meter_book_point p JOIN meter_book b ON b.id = p.book_id "
                "WHERE p.service_point_id = ANY(:ids) AND p.book_id <> :b LIMIT 1"
            ),
            {"ids": list(points), "b": book_id},
        )
        if elsewhere:
            raise Conflict(f"a point of the route is on meter book {elsewhere} already")
        await conn.execute(
            sa.text("DELETE FROM meter_book_point WHERE book_id = :b"), {"b": book_id}
        )
        if points:
            await conn.execute(
                sa.text(
                    "INSERT INTO meter_book_point (book_id, service_point_id, tenant_id, position) "
                    "VALUES (:b, :p, :t, :n)"
                ),
                [
                    {"b": book_id, "p": p, "t": who.tenant_id, "n": n}
                    for n, p in enumerate(points, start=1)
                ],
            )
        await audit.record(conn, who.tenant_id, who.actor, "book.route", f"book:{book_id}", now)


async def assign(
    db: Database, who: Principal, book_id: uuid.UUID, operator_id: uuid.UUID, now: datetime
) -> None:
    """Assign the book to a field worker (an active operator whose role has ``field.work``)."""
    who.require("field.books")
    async with db.tenant(who.tenant_id) as conn:
        await _book_site(conn, who, book_id)
        worker = await conn.scalar(
            sa.text(
                "SELECT o.username FROM operator o JOIN role r ON r.id = o.role_id "
                "WHERE o.id = :o AND o.active AND 'field.work' = ANY(r.permissions)"
            ),
            {"o": operator_id},
        )
        if worker is None:
            raise NotFound(f"field worker {operator_id} not found")
        await conn.execute(
            sa.text(
                "INSERT INTO meter_book_worker (book_id, operator_id, tenant_id) "
                "VALUES (:b, :o, :t) ON CONFLICT DO NOTHING"
            ),
            {"b": book_id, "o": operator_id, "t": who.tenant_id},
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "book.assign", f"book:{book_id}:{worker}", now
        )


# The book's points to read by hand, in route order: those bound to no channel of a
# gateway, and those whose gateway has not been heard from for the site's allowance.
_TO_READ = """
SELECT p.service_point_id, p.position,
  CASE WHEN d.gateway_id IS NULL THEN 'no_gateway' ELSE 'gateway_silent' END AS reason
FROM meter_book_point p
JOIN meter_book bk ON bk.id = p.book_id JOIN site s ON s.id = bk.site_id
LEFT JOIN binding b ON b.service_point_id = p.service_point_id AND b.removed_at IS NULL
LEFT JOIN channel ch ON ch.id = b.channel_id LEFT JOIN device d ON d.id = ch.device_id
LEFT JOIN gateway g ON g.id = d.gateway_id
WHERE p.book_id = :b AND (d.gateway_id IS NULL OR g.last_seen_at IS NULL
  OR g.last_seen_at < :now - make_interval(mins => s.gateway_offline_minutes))
ORDER BY p.position
"""


async def open_cycle(
    db: Database, who: Principal, book_id: uuid.UUID, starts_on: date, now: datetime
) -> tuple[uuid.UUID, int]:
    """Open the book's reading cycle starting ``starts_on`` (once: opening it again
    answers the same cycle) with its tasks; the cycle's id and how many tasks it has."""
    who.require("field.books")
    async with db.tenant(who.tenant_id) as conn:
        await _book_site(conn, who, book_id)
        cycle = await conn.scalar(
            sa.text(
                "INSERT INTO reading_cycle (id, tenant_id, book_id, starts_on, opened_at) "
                "VALUES (:id, :t, :b, :d, :now) ON CONFLICT (book_id, starts_on) DO NOTHING "
                "RETURNING id"
            ),
            {"id": uuid.uuid4(), "t": who.tenant_id, "b": book_id, "d": starts_on, "now": now},
        )
        if cycle is None:
            cycle = await conn.scalar(
                sa.text("SELECT id FROM reading_cycle WHERE book_id = :b AND starts_on = :d"),
                {"b": book_id, "d": starts_on},
            )
            count = await conn.scalar(
                sa.text("SELECT count(*) FROM reading_task WHERE cycle_id = :c"), {"c": cycle}
            )
            return uuid.UUID(str(cycle)), int(count or 0)
        rows = (await conn.execute(sa.text(_TO_READ), {"b": book_id, "now": now})).all()
        if rows:
            await conn.execute(
                sa.text(
                    "INSERT INTO reading_task (id, tenant_id, cycle_id, service_point_id, "
                    "position, reason) VALUES (:id, :t, :c, :p, :n, :r)"
                ),
                [
                    {
                        "id": uuid.uuid4(),
                        "t": who.tenant_id,
                        "c": cycle,
                        "p": r.service_point_id,
                        "n": r.position,
                        "r": r.reason,
                    }
                    for r in rows
                ],
            )
        await audit.record(
            conn, who.tenant_id, who.actor, "book.cycle", f"book:{book_id}:{starts_on}", now
        )
    return uuid.UUID(str(cycle)), len(rows)


@dataclass(frozen=True)
class TaskView:
    """One point to read, as the phone keeps it offline."""

    task_id: uuid.UUID
    book_code: str
    position: int
    point_id: uuid.UUID
    point_name: str
    account_number: str | None
    reason: str
    last_total: Decimal | None
    last_at: datetime | None
    balance: Decimal | None
    done: bool
    #: the price of a unit for the estimated bill (预算电费) shown as a reading is typed
    #: in: the flat price of the point's tariff in force (None: tiered or time-of-use,
    #: where the estimate needs the rating and is left to the upload's answer)
    unit_price: Decimal | None
    zone: str  # the site's time zone


_DOWNLOAD = """
SELECT t.id AS task_id, bk.code, t.position, sp.id AS point_id, sp.name, a.number,
  t.reason, t.done_at, w.balance, last.total, last.measured_at,
  CASE WHEN tv.kind = 'flat' THEN tv.unit_price END AS unit_price, s.timezone
FROM meter_book_worker mw
JOIN meter_book bk ON bk.id = mw.book_id JOIN site s ON s.id = bk.site_id
JOIN reading_cycle c ON c.book_id = bk.id
JOIN reading_task t ON t.cycle_id = c.id
JOIN service_point sp ON sp.id = t.service_point_id
LEFT JOIN account a ON a.id = sp.account_id
LEFT JOIN ledger_account w ON w.id = a.wallet_id
LEFT JOIN binding b ON b.service_point_id = sp.id AND b.removed_at IS NULL
LEFT JOIN LATERAL (
  SELECT r.total, r.measured_at FROM reading r
  WHERE r.channel_id = b.channel_id AND r.total IS NOT NULL
  ORDER BY r.measured_at DESC LIMIT 1) last ON true
LEFT JOIN LATERAL (
  SELECT v.kind, v.unit_price FROM tariff_version v
  WHERE v.tariff_id = sp.tariff_id AND v.effective_from <= :now
  ORDER BY v.effective_from DESC LIMIT 1) tv ON true
WHERE mw.operator_id = :o AND c.starts_on <= :today AND c.starts_on > :since
ORDER BY bk.code, c.starts_on, t.position
"""

CYCLE_DAYS = 31  # a cycle's tasks are downloaded for a month after it starts


async def download(db: Database, who: Principal, today: date, now: datetime) -> list[TaskView]:
    """The tasks of the worker's books in the cycles running ``today``, in route order,
    with each point's last reading and balance: what the phone keeps for the day."""
    who.require("field.work")
    async with db.tenant(who.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(_DOWNLOAD),
            {
                "o": who.operator_id,
                "today": today,
                "since": today - timedelta(days=CYCLE_DAYS),
                "now": now,
            },
        )
        return [
            TaskView(
                r.task_id,
                r.code,
                r.position,
                r.point_id,
                r.name,
                r.number,
                r.reason,
                r.total,
                r.measured_at,
                r.balance,
                r.done_at is not None,
                r.unit_price,
                r.timezone,
            )
            for r in rows
        ]


@dataclass(frozen=True)
class BookRow:
    id: uuid.UUID
    site_id: uuid.UUID
    site: str
    code: str
    name: str
    points: int
    workers: tuple[str, ...]
    last_cycle: date | None
    open_tasks: int


_BOOKS = """
SELECT bk.id, bk.site_id, s.name AS site, bk.code, bk.name,
  (SELECT count(*) FROM meter_book_point p WHERE p.book_id = bk.id) AS points,
  ARRAY(SELECT o.username FROM meter_book_worker w JOIN operator o ON o.id = w.operator_id
        WHERE w.book_id = bk.id ORDER BY o.username) AS workers,
  (SELECT max(c.starts_on) FROM reading_cycle c WHERE c.book_id = bk.id) AS last_cycle,
  (SELECT count(*) FROM reading_task t JOIN reading_cycle c ON c.id = t.cycle_id
   WHERE c.book_id = bk.id AND t.done_at IS NULL) AS open_tasks
FROM meter_book bk JOIN site s ON s.id = bk.site_id
WHERE (CAST(:sites AS uuid[]) IS NULL OR bk.site_id = ANY(CAST(:sites AS uuid[])))
  AND (CAST(:book AS uuid) IS NULL OR bk.id = CAST(:book AS uuid))
ORDER BY s.name, bk.code
"""


async def list_books(
    db: Database, who: Principal, book_id: uuid.UUID | None = None
) -> list[BookRow]:
    """The books of the sites in the operator's scope (or the one ``book_id``)."""
    who.require("field.books")
    async with db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        rows = await conn.execute(sa.text(_BOOKS), {"sites": sites, "book": book_id})
        return [
            BookRow(
                r.id,
                r.site_id,
                r.site,
                r.code,
                r.name,
                r.points,
                tuple(r.workers),
                r.last_cycle,
                r.open_tasks,
            )
            for r in rows
        ]


@dataclass(frozen=True)
class RoutePoint:
    id: uuid.UUID
    name: str
    account: str | None
    position: int | None  # its place on this book's route, None: not on it
    other_book: str | None  # the code of another book it is on


@dataclass(frozen=True)
class BookDetail:
    book: BookRow
    points: list[RoutePoint]  # the site's points: the route's first, in order
    workers: list[tuple[uuid.UUID, str]]  # every field worker (id, username)


async def book_detail(db: Database, who: Principal, book_id: uuid.UUID) -> BookDetail:
    found = await list_books(db, who, book_id)
    if not found:
        raise NotFound(f"meter book {book_id} not found")
    book = found[0]
    async with db.tenant(who.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT sp.id, sp.name, a.number, p.position, ob.code AS other "
                "FROM service_point sp LEFT JOIN account a ON a.id = sp.account_id "
                "LEFT JOIN meter_book_point p ON p.service_point_id = sp.id AND p.book_id = :b "
                "LEFT JOIN meter_book_point op ON op.service_point_id = sp.id "
                "AND op.book_id <> :b LEFT JOIN meter_book ob ON ob.id = op.book_id "
                "WHERE sp.site_id = :s AND sp.removed_at IS NULL "
                "ORDER BY p.position NULLS LAST, sp.name"
            ),
            {"b": book_id, "s": book.site_id},
        )
        points = [RoutePoint(r.id, r.name, r.number, r.position, r.other) for r in rows]
        workers = await conn.execute(
            sa.text(
                "SELECT o.id, o.username FROM operator o JOIN role r ON r.id = o.role_id "
                "WHERE o.active AND 'field.work' = ANY(r.permissions) ORDER BY o.username"
            )
        )
        return BookDetail(book, points, [(w.id, w.username) for w in workers])
