"""The energy and finance report (Acrel's 能耗财务报表) per point, account, building and
site: opening balance, top-ups, usage (kWh / m³ and money), refunds, transfers,
adjustments and closing balance, with the opening and closing register values.

Money is read from the wallets' postings only (``postings``); registers from the readings
of the channels the points were bound to in the period (a meter swap: each binding's part
is added). closing = opening + movements holds per row by construction and is checked."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import pg_array
from cloud.reports import postings as pt
from cloud.reports.period import Period
from cloud.reports.postings import tune
from cloud.reports.scope import Scope
from cloud.reports.table import N_, Column, Table, chart_of, totals

LEVELS = ("site", "building", "account", "point")
LEVEL_WORDS = {
    "site": N_("per site"),
    "building": N_("per building"),
    "account": N_("per account"),
    "point": N_("per service point"),
}
UNIT = {"electricity": "kwh", "water": "m3"}

_MONEY = f"""
WITH {pt.BOUNDS}, {pt.HOME}, {pt.WALLET_MOVES}
SELECT w.account_id, x.kind, x.effective_at >= w.t0 AS inside,
  CASE WHEN x.kind IN ('usage', 'fixed_charge') AND x.effective_at >= w.t0
       THEN split_part(x.cause, ':', 2) END AS point,
  sum(x.amount) AS amount
FROM w JOIN x ON x.wallet_id = w.wallet_id
WHERE x.effective_at < w.t1
GROUP BY 1, 2, 3, 4
"""

_ACCOUNTS = f"""
WITH {pt.BOUNDS}, {pt.HOME}
SELECT h.id, h.number, c.name AS customer, h.site_id, b.site_name, bl.name AS building,
       pr.floor, pr.number AS room
FROM home h JOIN bounds b ON b.site_id = h.site_id JOIN customer c ON c.id = h.customer_id
LEFT JOIN premises pr ON pr.id = h.premises_id LEFT JOIN building bl ON bl.id = pr.building_id
WHERE h.opened_at < b.t1 AND (h.closed_at IS NULL OR h.closed_at >= b.t0)
   OR h.id = ANY(CAST(:moved AS uuid[]))
"""

_POINTS = f"""
WITH {pt.BOUNDS}, {pt.HOME},
seg AS MATERIALIZED (
  SELECT sp.id AS point, sp.account_id, sp.name, sp.utility, t.name AS tariff, b.t0, b.t1,
         bd.channel_id, bd.installed_at, bd.removed_at, bd.install_register,
         bd.removal_register, greatest(b.t0, bd.installed_at) AS lo,
         least(b.t1, bd.removed_at + interval '1 microsecond') AS hi
  FROM service_point sp JOIN home h ON h.id = sp.account_id
  JOIN bounds b ON b.site_id = h.site_id JOIN tariff t ON t.id = sp.tariff_id
  LEFT JOIN binding bd ON bd.service_point_id = sp.id AND bd.installed_at < b.t1
       AND (bd.removed_at IS NULL OR bd.removed_at > b.t0)
  WHERE sp.removed_at IS NULL OR sp.removed_at >= b.t0
)
SELECT seg.*,
  (SELECT r.total FROM reading r WHERE r.channel_id = seg.channel_id
     AND r.measured_at >= seg.installed_at AND r.measured_at <= seg.lo
     AND r.total IS NOT NULL ORDER BY r.measured_at DESC LIMIT 1) AS open_read,
  (SELECT r.total FROM reading r WHERE r.channel_id = seg.channel_id
     AND r.measured_at >= seg.lo AND r.measured_at < seg.hi
     AND r.total IS NOT NULL ORDER BY r.measured_at LIMIT 1) AS first_read,
  (SELECT r.total FROM reading r WHERE r.channel_id = seg.channel_id
     AND r.measured_at >= seg.installed_at AND r.measured_at < seg.hi
     AND r.total IS NOT NULL ORDER BY r.measured_at DESC LIMIT 1) AS close_read
FROM seg ORDER BY seg.point, seg.installed_at
"""


@dataclass(frozen=True)
class Segment:
    """A point's binding to a channel, as far as it overlaps the period."""

    t0: datetime
    t1: datetime
    installed_at: datetime | None
    removed_at: datetime | None
    install_register: Decimal | None
    removal_register: Decimal | None
    open_read: Decimal | None  # the last reading at or before the period's (or binding's) start
    first_read: Decimal | None  # the first reading inside
    close_read: Decimal | None  # the last reading inside


def registers(seg: Segment) -> tuple[Decimal | None, Decimal | None]:
    """The register at the start and at the end of the segment's part of the period: a
    binding made inside the period starts at its install register, one removed inside it
    ends at its removal register; otherwise the readings nearest the bounds."""
    if seg.installed_at is None:
        return None, None
    if seg.installed_at >= seg.t0:
        start: Decimal | None = seg.install_register
        if start is None:
            start = seg.first_read
    else:
        start = seg.open_read if seg.open_read is not None else seg.first_read
    end: Decimal | None
    if seg.removed_at is not None and seg.removed_at < seg.t1 and seg.removal_register is not None:
        end = seg.removal_register
    else:
        end = seg.close_read if seg.close_read is not None else start
    return start, end


@dataclass
class PointLine:
    point: uuid.UUID
    account_id: uuid.UUID
    name: str
    utility: str
    tariff: str
    opening_register: Decimal | None = None
    closing_register: Decimal | None = None
    consumption: Decimal = Decimal(0)
    usage: Decimal = Decimal("0.00")


def point_lines(rows: Sequence[Any]) -> dict[uuid.UUID, PointLine]:
    """Per point: the first segment's start register, the last one's end, the sum of the
    segments' consumption (rows ordered by point, then installation)."""
    out: dict[uuid.UUID, PointLine] = {}
    for r in rows:
        line = out.setdefault(
            r.point, PointLine(r.point, r.account_id, r.name, r.utility, r.tariff)
        )
        start, end = registers(
            Segment(
                r.t0, r.t1, r.installed_at, r.removed_at, r.install_register,
                r.removal_register, r.open_read, r.first_read, r.close_read,
            )
        )  # fmt: skip
        if start is None or end is None:
            continue
        if line.opening_register is None:
            line.opening_register = start
        line.closing_register = end
        line.consumption += max(end - start, Decimal(0))
    return out


@dataclass
class AccountLine:
    account_id: uuid.UUID
    number: str
    customer: str
    site: str
    building: str
    room: str
    opening: Decimal = Decimal("0.00")
    moves: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    closing: Decimal = Decimal("0.00")
    points: list[PointLine] = field(default_factory=list)

    @property
    def ties(self) -> bool:
        return self.closing == pt.closing_of(self.opening, self.moves)


ACCOUNT_COLUMNS = (
    Column("site", N_("Site")),
    Column("building", N_("Building")),
    Column("room", N_("Premises")),
    Column("account", N_("Account")),
    Column("customer", N_("Customer")),
)
MONEY_COLUMNS = (
    Column("opening", N_("Opening balance"), "money"),
    Column("topups", N_("Topped up"), "money"),
    Column("kwh", N_("Electricity (kWh)"), "kwh"),
    Column("m3", N_("Water (m³)"), "m3"),
    Column("usage", N_("Usage charged"), "money"),
    Column("refunds", N_("Refunds"), "money"),
    Column("transfers", N_("Transfers"), "money"),
    Column("adjustments", N_("Adjustments"), "money"),
    Column("closing", N_("Closing balance"), "money"),
)
POINT_COLUMNS = (
    *ACCOUNT_COLUMNS,
    Column("point", N_("Service point")),
    Column("utility", N_("Utility"), "label"),
    Column("tariff", N_("Tariff")),
    Column("opening_register", N_("Opening register"), "register"),
    Column("closing_register", N_("Closing register"), "register"),
    Column("kwh", N_("Electricity (kWh)"), "kwh"),
    Column("m3", N_("Water (m³)"), "m3"),
    Column("usage", N_("Usage charged"), "money"),
)


def shape(accounts: Sequence[AccountLine], level: str) -> Table:
    """The report's table at ``level`` (site, building, account or point)."""
    if level == "point":
        rows = []
        for a in accounts:
            for p in a.points:
                unit = UNIT.get(p.utility, "kwh")
                rows.append(
                    {
                        **_where(a),
                        "point": p.name,
                        "utility": p.utility,
                        "tariff": p.tariff,
                        "opening_register": p.opening_register,
                        "closing_register": p.closing_register,
                        "kwh": p.consumption if unit == "kwh" else None,
                        "m3": p.consumption if unit == "m3" else None,
                        "usage": p.usage,
                    }
                )
        return Table(POINT_COLUMNS, rows, totals(POINT_COLUMNS, rows))
    rows = [{**_where(a), **_money(a)} for a in accounts]
    columns: tuple[Column, ...]
    if level == "account":
        columns = ACCOUNT_COLUMNS + MONEY_COLUMNS
    else:
        keys = ("site",) if level == "site" else ("site", "building")
        columns = (
            *(c for c in ACCOUNT_COLUMNS if c.key in keys),
            Column("accounts", N_("Number of accounts"), "int"),
            *MONEY_COLUMNS,
        )
        rows = _grouped(rows, keys)
    chart = chart_of(
        "bar",
        rows[:40],
        "site" if level == "site" else ("building" if level == "building" else "account"),
        [MONEY_COLUMNS[1], MONEY_COLUMNS[4]],
    )
    return Table(columns, rows, totals(columns, rows), chart)


def _where(a: AccountLine) -> dict[str, Any]:
    return {
        "site": a.site,
        "building": a.building,
        "room": a.room,
        "account": a.number,
        "customer": a.customer,
    }


def _money(a: AccountLine) -> dict[str, Any]:
    kwh = sum((p.consumption for p in a.points if UNIT.get(p.utility) != "m3"), Decimal(0))
    m3 = sum((p.consumption for p in a.points if UNIT.get(p.utility) == "m3"), Decimal(0))
    return {
        "opening": a.opening,
        **{m: a.moves.get(m, Decimal("0.00")) for m in pt.MOVEMENTS},
        "kwh": kwh,
        "m3": m3,
        "closing": a.closing,
        "accounts": 1,
    }


def _grouped(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r[x] for x in keys)
        g = groups.get(k)
        if g is None:
            groups[k] = dict(r)
            continue
        for name in ("accounts", "opening", "kwh", "m3", "closing", *pt.MOVEMENTS):
            g[name] += r[name]
    return [groups[k] for k in sorted(groups, key=lambda k: tuple(str(x) for x in k))]


async def lines(conn: AsyncConnection, scope: Scope, period: Period) -> list[AccountLine]:
    """Every account of the scope's sites open in the period or with money moved in it."""
    params = {"sites": pg_array(scope.ids), "first": period.first, "end": period.end}
    await tune(conn)
    money = (await conn.execute(sa.text(_MONEY), params)).all()
    moved = sorted({r.account_id for r in money}, key=str)
    found = await conn.execute(sa.text(_ACCOUNTS), {**params, "moved": pg_array(moved)})
    accounts = {
        r.id: AccountLine(
            r.id, r.number, r.customer, r.site_name, r.building or "—",
            f"{r.floor}-{r.room}" if r.room else "—",
        )
        for r in found
    }  # fmt: skip
    usage_of: dict[str, Decimal] = defaultdict(Decimal)
    for r in money:
        a = accounts.get(r.account_id)
        if a is None:
            continue
        effect = -r.amount  # on the wallet's balance (credit-normal)
        a.closing += effect
        if not r.inside:
            a.opening += effect
            continue
        m = pt.movement(r.kind)
        a.moves[m] += -effect if m in pt.OUTGOING else effect
        if r.point:
            usage_of[r.point] += r.amount
    for p in point_lines((await conn.execute(sa.text(_POINTS), params)).all()).values():
        p.usage = usage_of.get(str(p.point), Decimal("0.00"))
        if (a := accounts.get(p.account_id)) is not None:
            a.points.append(p)
    out = sorted(accounts.values(), key=lambda a: (a.site, a.building, a.room, a.number))
    broken = [a.number for a in out if not a.ties]
    if broken:  # cannot happen: every posting is in one movement
        raise AssertionError(f"accounts {broken[:5]} do not tie out")
    return out


async def report(conn: AsyncConnection, scope: Scope, period: Period, level: str) -> Table:
    return shape(await lines(conn, scope, period), level)
