"""Readings a field worker takes by hand, uploaded from the phone's queue.

Each item carries the id the phone gave it: uploaded twice, it is stored once (the second
answer says ``duplicate``). Each is checked on its own — a point outside the worker's
books, a time in the future, a negative register, a photo too large are refused with a
reason and the rest of the upload is kept. A register goes into ``reading`` and is rated
by the same path as a gateway's (:func:`cloud.ingest.service.store_and_rate`): the same
marks, anomalies (a register lower than the last is not charged and opens a register-down
work order) and control. A field and a gateway reading of the same meter never charge
twice: rating advances each point's mark under a row lock, and a reading at a time
already stored is not stored again. An anomaly code opens a work order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pydantic
import sqlalchemy as sa

from cloud.auth import Principal
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.field.books import book_points
from cloud.ingest.service import DEFAULT_MAX_AGE, MAX_FUTURE, staged_line, store_and_rate, unratable
from cloud.workorders.open import open_work_order
from contract.mqtt import Reading

ANOMALIES = (
    "meter_stopped",
    "display_broken",
    "no_access",
    "seal_broken",
    "meter_reversed",
    "other",
)
MAX_PHOTO = 512 * 1024  # bytes; the phone shrinks a photo to well below this
MAX_ITEMS = 1000  # per upload

# Why an item is refused (the messages the field pages translate)
OUTSIDE_BOOKS = "this point is not on your meter books"
IN_FUTURE = "the reading's time is in the future"
NEGATIVE = "a register cannot be negative"
PHOTO_TOO_LARGE = "the photo is larger than 512 KB"
UNKNOWN_ANOMALY = "unknown anomaly code"
NOTE_REQUIRED = "an anomaly 'other' needs a note"
NOTHING_READ = "a reading needs a register value or an anomaly code"
NO_METER = "the point has no meter installed"
TOO_OLD = "the reading is older than the site accepts"
BEFORE_INSTALLATION = "the reading is from before the meter was installed"
OUT_OF_RANGE = "the register value is out of range"
_UNRATABLE = {
    "future_timestamp": IN_FUTURE,
    "too_old": TOO_OLD,
    "before_installation": BEFORE_INSTALLATION,
    "negative_register": NEGATIVE,
}


@dataclass(frozen=True)
class FieldItem:
    """One queued reading as the phone sends it."""

    id: uuid.UUID
    point_id: uuid.UUID
    measured_at: datetime
    total: Decimal | None = None
    anomaly: str | None = None
    note: str | None = None
    photo: bytes | None = None


@dataclass(frozen=True)
class ItemResult:
    id: uuid.UUID
    status: str  # stored | duplicate | refused
    message: str | None = None  # why refused (plain English; the pages translate it)
    work_order_id: uuid.UUID | None = None


def check_item(item: FieldItem, allowed: set[uuid.UUID], now: datetime) -> str | None:
    """Why ``item`` is refused before anything is stored, or None (pure)."""
    if item.point_id not in allowed:
        return OUTSIDE_BOOKS
    if item.anomaly is not None and item.anomaly not in ANOMALIES:
        return UNKNOWN_ANOMALY
    if item.anomaly == "other" and not (item.note or "").strip():
        return NOTE_REQUIRED
    if item.total is None and item.anomaly is None:
        return NOTHING_READ
    if item.total is not None and item.total < 0:
        return NEGATIVE
    if item.measured_at > now + MAX_FUTURE:
        return IN_FUTURE
    if item.photo is not None and len(item.photo) > MAX_PHOTO:
        return PHOTO_TOO_LARGE
    return None


_BINDINGS = """
SELECT b.service_point_id, b.channel_id, b.installed_at, s.reading_max_age_days
FROM binding b JOIN service_point sp ON sp.id = b.service_point_id JOIN site s ON s.id = sp.site_id
WHERE b.removed_at IS NULL AND b.service_point_id = ANY(:ids)
"""
_KEEP = sa.text(
    "INSERT INTO field_reading (id, tenant_id, operator_id, service_point_id, channel_id, "
    "measured_at, total, anomaly, note, photo, outcome, received_at) "
    "VALUES (:id, :t, :o, :p, :c, :at, :total, :anomaly, :note, :photo, :outcome, :now) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


async def upload(
    db: Database,
    who: Principal,
    items: list[FieldItem],
    now: datetime,
    timing: CommandTiming,
) -> list[ItemResult]:
    """Store and rate the worker's queued readings in one transaction; one result per item,
    in order."""
    who.require("field.work")
    results: dict[uuid.UUID, ItemResult] = {}  # by item id; a repeat within the upload:
    repeats: set[int] = set()  # (its place) is a duplicate of the first
    async with db.tenant(who.tenant_id) as conn:
        allowed = await book_points(conn, who)
        bound = {
            r.service_point_id: r
            for r in await conn.execute(
                sa.text(_BINDINGS), {"ids": list({i.point_id for i in items} & allowed)}
            )
        }
        fresh: list[tuple[FieldItem, uuid.UUID | None]] = []
        seen: set[uuid.UUID] = set()
        for n, item in enumerate(items):
            if item.id in seen:
                repeats.add(n)
                continue
            seen.add(item.id)
            reason = check_item(item, allowed, now)
            b = bound.get(item.point_id)
            if reason is None and item.total is not None:
                if b is None:
                    reason = NO_METER
                else:
                    reason = _unratable(item, b.installed_at, b.reading_max_age_days, now)
            if reason is not None:
                results[item.id] = ItemResult(item.id, "refused", reason)
                continue
            channel = None if b is None else b.channel_id
            kept = await conn.scalar(
                _KEEP,
                {
                    "id": item.id,
                    "t": who.tenant_id,
                    "o": who.operator_id,
                    "p": item.point_id,
                    "c": channel,
                    "at": item.measured_at,
                    "total": item.total,
                    "anomaly": item.anomaly,
                    "note": item.note,
                    "photo": item.photo,
                    "outcome": "anomaly" if item.total is None else "stored",
                    "now": now,
                },
            )
            if kept is None:
                results[item.id] = ItemResult(item.id, "duplicate")
                continue
            fresh.append((item, channel))
        lines: list[str] = []
        points: set[uuid.UUID] = set()
        for item, channel in fresh:
            if item.total is None or channel is None:
                continue
            reading = Reading(device="field", measured_at=item.measured_at, total=item.total)
            lines.append(staged_line(reading, channel, item.point_id, len(lines)))
            points.add(item.point_id)
        if lines:
            skipped, _ = await store_and_rate(conn, who.tenant_id, lines, len(points), now, timing)
            rated = [(i, c) for i, c in fresh if i.total is not None and c is not None]
            same_time = [rated[n][0].id for n in skipped]
            if same_time:  # a reading of the meter at that very time was stored already
                await conn.execute(
                    sa.text(
                        "UPDATE field_reading SET outcome = 'duplicate_time' WHERE id = ANY(:ids)"
                    ),
                    {"ids": same_time},
                )
        for item, channel in fresh:
            order = None
            if item.anomaly is not None:
                detail = {"code": item.anomaly, "by": who.username, "reading": str(item.id)}
                if item.note:
                    detail["note"] = item.note
                if item.total is not None:
                    detail["total"] = str(item.total)
                order = await open_work_order(
                    conn,
                    who.tenant_id,
                    f"field_{item.anomaly}",
                    item.point_id,
                    channel,
                    now,
                    detail,
                )
                await conn.execute(
                    sa.text("UPDATE field_reading SET work_order_id = :w WHERE id = :id"),
                    {"w": order, "id": item.id},
                )
            results[item.id] = ItemResult(item.id, "stored", None, order)
        done = list({i.point_id for i, _ in fresh})
        if done:
            await conn.execute(
                sa.text(
                    "UPDATE reading_task SET done_at = :now WHERE done_at IS NULL "
                    "AND service_point_id = ANY(:ids)"
                ),
                {"now": now, "ids": done},
            )
    return [
        ItemResult(i.id, "duplicate") if n in repeats else results[i.id]
        for n, i in enumerate(items)
    ]


def _unratable(
    item: FieldItem, installed_at: datetime | None, max_age_days: int | None, now: datetime
) -> str | None:
    max_age = DEFAULT_MAX_AGE if max_age_days is None else timedelta(days=max_age_days)
    try:
        reading = Reading(device="field", measured_at=item.measured_at, total=item.total)
    except pydantic.ValidationError:
        return OUT_OF_RANGE
    installed = None if installed_at is None else installed_at.astimezone(UTC)
    why = unratable(reading, now + MAX_FUTURE, now - max_age, installed)
    return None if why is None else _UNRATABLE.get(why, why)
