"""A service point's reading history, for the counter and the installer: what its meters
reported while they were bound to it (装表 to 拆表/换表), newest first, with the
consumption between one reading and the next. Read only, narrowed by scope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import NotFound
from cloud.registry.scope import sites_of


@dataclass(frozen=True)
class PointHead:
    id: uuid.UUID
    name: str
    utility: str
    account_number: str
    customer: str
    premises: str | None
    timezone: str


@dataclass(frozen=True)
class ReadingRow:
    measured_at: datetime
    received_at: datetime
    meter: str  # the meter's number (or its key on the gateway)
    total: Decimal | None
    used: Decimal | None  # since the meter's previous reading (None for its first here)
    power: Decimal | None
    voltage: Decimal | None
    current: Decimal | None
    supply_on: bool | None
    meter_balance: Decimal | None


@dataclass(frozen=True)
class History:
    point: PointHead
    first: date  # the window's days, in the site's zone
    last: date
    total: int  # readings in the window
    used: Decimal  # the window's consumption, every meter of the point together
    rows: list[ReadingRow]


_HEAD = """
SELECT sp.id, sp.name, sp.utility, sp.site_id, a.number, c.name AS customer, s.timezone,
  b.name || '-' || p.floor || '-' || p.number AS premises
FROM service_point sp JOIN account a ON a.id = sp.account_id
JOIN customer c ON c.id = a.customer_id JOIN site s ON s.id = sp.site_id
LEFT JOIN premises p ON p.id = sp.premises_id LEFT JOIN building b ON b.id = p.building_id
WHERE sp.id = :p
"""

# Each binding's readings within its own period and the window; the consumption against the
# same meter's previous reading, looked up before the window too (the first row in the
# window has one when the meter reported before it).
_READINGS = """
WITH bound AS (
  SELECT bi.channel_id, bi.installed_at, bi.removed_at,
         coalesce(d.serial, d.key) AS meter
  FROM binding bi JOIN channel ch ON ch.id = bi.channel_id JOIN device d ON d.id = ch.device_id
  WHERE bi.service_point_id = :p
), seen AS (
  SELECT r.measured_at, r.received_at, b.meter, r.total, r.power, r.voltage, r.current,
         r.supply_on, r.meter_balance,
         r.total - lag(r.total) OVER (PARTITION BY b.channel_id, b.installed_at
                                      ORDER BY r.measured_at) AS used
  FROM bound b JOIN reading r ON r.channel_id = b.channel_id
   AND r.measured_at >= b.installed_at AND (b.removed_at IS NULL OR r.measured_at <= b.removed_at)
   AND r.measured_at < :until
   AND r.measured_at >= (
     SELECT coalesce(max(e.measured_at), :since) FROM reading e
     WHERE e.channel_id = b.channel_id AND e.measured_at < :since
       AND e.measured_at >= b.installed_at)
)
SELECT *, count(*) OVER () AS n, sum(used) OVER () AS window_used FROM seen
WHERE measured_at >= :since ORDER BY measured_at DESC LIMIT :lim OFFSET :off
"""


@dataclass(frozen=True)
class Window:
    """Days in the site's zone, both included; None: the last :data:`DEFAULT_DAYS` days."""

    first: date | None = None
    last: date | None = None


DEFAULT_DAYS = 7


def window_times(w: Window, zone: str, now: datetime) -> tuple[date, date, datetime, datetime]:
    """(first day, last day, since, until) of ``w`` in ``zone``: from the first day's
    midnight to the midnight after the last day."""
    tz = ZoneInfo(zone)
    last = w.last or now.astimezone(tz).date()
    first = w.first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        first, last = last, first

    def midnight(d: date) -> datetime:
        return datetime.combine(d, time(), tz).astimezone(UTC)

    return first, last, midnight(first), midnight(last + timedelta(days=1))


async def point_history(
    db: Database,
    who: Principal,
    point_id: uuid.UUID,
    window: Window,
    now: datetime,
    offset: int = 0,
    limit: int = 50,
) -> History:
    """The readings measured in the window's days (the site's zone) while a meter was
    bound to the point. NotFound for a point of another tenant or beyond the scope."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        h = (await conn.execute(sa.text(_HEAD), {"p": point_id})).first()
        sites = await sites_of(conn, who)
        if h is None or (sites is not None and h.site_id not in sites):
            raise NotFound(f"service point {point_id} not found")
        zone = h.timezone or "Asia/Shanghai"
        first, last, since, until = window_times(window, zone, now)
        rows = (
            await conn.execute(
                sa.text(_READINGS),
                {"p": point_id, "since": since, "until": until, "lim": limit, "off": offset},
            )
        ).all()
        if not rows and offset:  # past the end: the window's figures all the same
            top = (
                await conn.execute(
                    sa.text(_READINGS),
                    {"p": point_id, "since": since, "until": until, "lim": 1, "off": 0},
                )
            ).first()
            n, used = (top.n, top.window_used) if top is not None else (0, None)
        else:
            n, used = (rows[0].n, rows[0].window_used) if rows else (0, None)
    head = PointHead(h.id, h.name, h.utility, h.number, h.customer, h.premises, zone)
    return History(
        head,
        first,
        last,
        n,
        used or Decimal(0),
        [
            ReadingRow(
                r.measured_at,
                r.received_at,
                r.meter,
                r.total,
                r.used,
                r.power,
                r.voltage,
                r.current,
                r.supply_on,
                r.meter_balance,
            )
            for r in rows
        ],
    )
