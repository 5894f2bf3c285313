"""Arrears and their age (欠费账龄) at the end of a day: every wallet below zero, how much,
and since when it has been below zero without a break (the last posting that took its
running balance from zero or more to below zero), in the usual 30-day buckets."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import pg_array
from cloud.reports import postings as pt
from cloud.reports.period import Period
from cloud.reports.scope import Scope
from cloud.reports.table import N_, Chart, Column, Series, Table, totals

_ROWS = f"""
WITH {pt.BOUNDS}, {pt.HOME}, {pt.WALLET_POSTINGS},
owing AS (
  SELECT account_id FROM wp GROUP BY account_id HAVING sum(amount) > 0
),
running AS (
  SELECT w.account_id, w.effective_at,
         row_number() OVER (PARTITION BY w.account_id ORDER BY w.effective_at, w.amount) AS n,
         -sum(w.amount) OVER (PARTITION BY w.account_id ORDER BY w.effective_at, w.amount
                              ROWS UNBOUNDED PRECEDING) AS balance
  FROM wp w JOIN owing USING (account_id)
),
turned AS (
  SELECT account_id, effective_at, balance,
         lag(balance) OVER (PARTITION BY account_id ORDER BY n) AS before
  FROM running
)
SELECT h.number, c.name AS customer, b.site_name AS site, b.timezone, bl.name AS building,
       pr.floor, pr.number AS room,
       (SELECT -sum(amount) FROM wp WHERE wp.account_id = h.id) AS balance,
       (SELECT max(effective_at) FROM turned t WHERE t.account_id = h.id AND t.balance < 0
          AND (t.before IS NULL OR t.before >= 0)) AS since
FROM owing o JOIN home h ON h.id = o.account_id JOIN bounds b ON b.site_id = h.site_id
JOIN customer c ON c.id = h.customer_id
LEFT JOIN premises pr ON pr.id = h.premises_id LEFT JOIN building bl ON bl.id = pr.building_id
ORDER BY b.site_name, h.number
"""

BUCKETS = ((30, N_("up to 30 days")), (60, N_("31–60 days")), (90, N_("61–90 days")))
OVER = N_("over 90 days")

COLUMNS = (
    Column("site", N_("Site")),
    Column("building", N_("Building")),
    Column("room", N_("Premises")),
    Column("account", N_("Account")),
    Column("customer", N_("Customer")),
    Column("arrears", N_("Arrears"), "money"),
    Column("since", N_("In arrears since")),
    Column("days", N_("Days"), "days"),
    Column("age", N_("Age"), "label"),
)


def age_of(days: int) -> str:
    for limit, label in BUCKETS:
        if days <= limit:
            return label
    return OVER


def days_between(since: datetime | None, zone: str, as_of: date) -> int:
    if since is None:
        return 0
    return max(0, (as_of - since.astimezone(ZoneInfo(zone)).date()).days)


async def report(conn: AsyncConnection, scope: Scope, period: Period) -> Table:
    params = {"sites": pg_array(scope.ids), "first": period.first, "end": period.end}
    rows = []
    for r in await conn.execute(sa.text(_ROWS), params):
        days = days_between(r.since, r.timezone, period.last)
        rows.append(
            {
                "site": r.site,
                "building": r.building or "—",
                "room": f"{r.floor}-{r.room}" if r.room else "—",
                "account": r.number,
                "customer": r.customer,
                "arrears": -Decimal(r.balance),
                "since": r.since.astimezone(ZoneInfo(r.timezone)).date().isoformat()
                if r.since
                else "—",
                "days": days,
                "age": age_of(days),
            }
        )
    labels = [label for _, label in BUCKETS] + [OVER]
    chart = Chart(
        "bar",
        labels,
        [Series(N_("Arrears"), [sum((r["arrears"] for r in rows if r["age"] == a), Decimal(0))
                                for a in labels])],
    )  # fmt: skip
    return Table(COLUMNS, rows, totals(COLUMNS, rows), chart)
