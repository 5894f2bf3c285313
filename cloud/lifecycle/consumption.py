"""A service point's consumption per hour, day or month in the site's zone, for its page's
charts: what rating charged between each pair of registers while a meter was bound to the
point (from the register at 装表 to the one at 拆表/换表), put in the period of the later
register, with the last register of each period. The difference between two registers is
:func:`cloud.rating.core.consumed`, the rule rating applies: a register gone down or an
impossible jump counts nothing, a wrap past the modulus counts its wrap."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import NotFound
from cloud.rating.core import Limits, consumed, limits_for
from cloud.registry.scope import sites_of


class Grain(StrEnum):
    HOUR = "hour"  # the 24 hours of one day
    DAY = "day"  # the days of one month
    MONTH = "month"  # the twelve months ending with one


@dataclass(frozen=True)
class Period:
    label: str  # "2026-12-01 13时" / "2026-12-01" / "2026-12", in the site's zone
    start: datetime  # UTC
    end: datetime
    used: Decimal
    register: Decimal | None  # the last register read in the period


@dataclass(frozen=True)
class Consumption:
    grain: Grain
    day: date  # the day asked for, in the site's zone
    timezone: str
    utility: str
    periods: list[Period]

    @property
    def total(self) -> Decimal:
        return sum((p.used for p in self.periods), Decimal(0))


def _midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time(), tz).astimezone(UTC)


def periods_of(grain: Grain, day: date, tz: ZoneInfo) -> list[tuple[str, datetime, datetime]]:
    """The chart's periods (label, start, end) in UTC, local boundaries."""
    if grain is Grain.HOUR:
        out = []
        for h in range(24):
            # wall-clock hours: a DST day has 23 or 25 of them; the zone's shift folds in
            start = datetime.combine(day, time(h), tz).astimezone(UTC)
            end = (
                datetime.combine(day, time(h + 1), tz).astimezone(UTC)
                if h < 23
                else _midnight(day + timedelta(days=1), tz)
            )
            out.append((f"{h:02d}:00", start, end))
        return out
    if grain is Grain.DAY:
        first = day.replace(day=1)
        days = []
        d = first
        while d.month == first.month:
            days.append((d.isoformat(), _midnight(d, tz), _midnight(d + timedelta(days=1), tz)))
            d += timedelta(days=1)
        return days
    months = []
    y, m = day.year, day.month
    for _ in range(12):
        months.append(date(y, m, 1))
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    months.reverse()
    return [
        (
            f"{m0:%Y-%m}",
            _midnight(m0, tz),
            _midnight(date(m0.year + (m0.month == 12), m0.month % 12 + 1, 1), tz),
        )
        for m0 in months
    ]


_POINT = """
SELECT sp.id, sp.site_id, sp.utility, sp.max_rate, s.timezone
FROM service_point sp JOIN site s ON s.id = sp.site_id WHERE sp.id = :p
"""
_BINDINGS = """
SELECT channel_id, installed_at, install_register, removed_at, removal_register
FROM binding WHERE service_point_id = :p AND installed_at < :until
  AND (removed_at IS NULL OR removed_at >= :since)
ORDER BY installed_at
"""
# The binding's readings in the range, and the one before it (the first difference's base)
_READINGS = """
(SELECT measured_at, total FROM reading
  WHERE channel_id = :c AND total IS NOT NULL AND measured_at > :installed
    AND measured_at < :since AND (CAST(:removed AS timestamptz) IS NULL OR measured_at <= :removed)
  ORDER BY measured_at DESC LIMIT 1)
UNION ALL
(SELECT measured_at, total FROM reading
  WHERE channel_id = :c AND total IS NOT NULL AND measured_at > :installed
    AND measured_at >= :since AND measured_at < :until
    AND (CAST(:removed AS timestamptz) IS NULL OR measured_at <= :removed)
  ORDER BY measured_at)
"""


def differences(
    registers: list[tuple[datetime, Decimal]], lim: Limits
) -> list[tuple[datetime, Decimal, Decimal]]:
    """(time, register, consumed since the register before) for every register after the
    first, in time order."""
    out = []
    for (t0, r0), (t1, r1) in pairwise(registers):
        out.append((t1, r1, consumed(r0, r1, t1 - t0, lim) or Decimal(0)))
    return out


async def point_consumption(
    db: Database, who: Principal, point_id: uuid.UUID, grain: Grain, day: date | None, now: datetime
) -> Consumption:
    """The point's consumption per period of ``grain`` around ``day`` (today in the site's
    zone when None). NotFound for a point of another tenant or beyond the scope."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        p = (await conn.execute(sa.text(_POINT), {"p": point_id})).first()
        sites = await sites_of(conn, who)
        if p is None or (sites is not None and p.site_id not in sites):
            raise NotFound(f"service point {point_id} not found")
        tz = ZoneInfo(p.timezone or "Asia/Shanghai")
        day = day or now.astimezone(tz).date()
        spans = periods_of(grain, day, tz)
        since, until = spans[0][1], spans[-1][2]
        lim = limits_for(p.utility, p.max_rate)
        steps: list[tuple[datetime, Decimal, Decimal]] = []
        bindings = (
            await conn.execute(sa.text(_BINDINGS), {"p": point_id, "since": since, "until": until})
        ).all()
        for b in bindings:
            rows = (
                await conn.execute(
                    sa.text(_READINGS),
                    {
                        "c": b.channel_id,
                        "installed": b.installed_at,
                        "removed": b.removed_at,
                        "since": since,
                        "until": until,
                    },
                )
            ).all()
            registers = [(r.measured_at, r.total) for r in rows]
            if b.install_register is not None and (not registers or registers[0][0] >= since):
                registers.insert(0, (b.installed_at, b.install_register))
            if (
                b.removed_at is not None
                and b.removal_register is not None
                and since <= b.removed_at < until
                and (not registers or registers[-1][0] < b.removed_at)
            ):
                registers.append((b.removed_at, b.removal_register))
            steps.extend(s for s in differences(registers, lim) if since <= s[0] < until)
    steps.sort(key=lambda s: s[0])
    periods = []
    i = 0
    for label, start, end in spans:
        used, register = Decimal(0), None
        while i < len(steps) and steps[i][0] < end:
            if steps[i][0] >= start:
                used += steps[i][2]
                register = steps[i][1]
            i += 1
        periods.append(Period(label, start, end, used, register))
    return Consumption(grain, day, str(tz), p.utility, periods)
