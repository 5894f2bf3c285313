"""Prepaid liability (预收余额) per site at the end of a day: what the group owes its
tenants — the sum of the wallets — next to the money received into them up to then, and
what usage, refunds and the rest took out, so that received − usage − refunds ± transfers
± adjustments = liability, every figure from the wallets' postings."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import pg_array
from cloud.reports import postings as pt
from cloud.reports.period import Period
from cloud.reports.scope import Scope
from cloud.reports.table import N_, Column, Table, chart_of, totals

_ROWS = f"""
WITH {pt.BOUNDS}, {pt.HOME}, {pt.WALLET_MOVES},
wp AS (
  SELECT w.account_id, x.amount, {pt.movement_case("x.kind")} AS movement
  FROM w JOIN x ON x.wallet_id = w.wallet_id WHERE x.effective_at < w.t1
),
per_account AS (
  SELECT h.site_id, wp.account_id, -sum(amount) AS balance,
         coalesce(-sum(amount) FILTER (WHERE movement = 'topups'), 0.00) AS received,
         coalesce(sum(amount) FILTER (WHERE movement = 'usage'), 0.00) AS usage,
         coalesce(sum(amount) FILTER (WHERE movement = 'refunds'), 0.00) AS refunds,
         coalesce(-sum(amount) FILTER (WHERE movement IN ('transfers', 'adjustments')), 0.00)
           AS other
  FROM wp JOIN home h ON h.id = wp.account_id GROUP BY 1, 2
)
SELECT b.site_name AS site, count(x.account_id) AS accounts,
       coalesce(sum(x.received), 0.00) AS received, coalesce(sum(x.usage), 0.00) AS usage,
       coalesce(sum(x.refunds), 0.00) AS refunds, coalesce(sum(x.other), 0.00) AS other,
       coalesce(sum(x.balance) FILTER (WHERE x.balance > 0), 0.00) AS in_credit,
       coalesce(-sum(x.balance) FILTER (WHERE x.balance < 0), 0.00) AS in_arrears,
       coalesce(sum(x.balance), 0.00) AS liability
FROM bounds b LEFT JOIN per_account x ON x.site_id = b.site_id
GROUP BY b.site_name ORDER BY b.site_name
"""

COLUMNS = (
    Column("site", N_("Site")),
    Column("accounts", N_("Number of accounts"), "int"),
    Column("received", N_("Received to date"), "money"),
    Column("usage", N_("Usage to date"), "money"),
    Column("refunds", N_("Refunds to date"), "money"),
    Column("other", N_("Transfers and adjustments"), "money"),
    Column("in_credit", N_("Wallets in credit"), "money"),
    Column("in_arrears", N_("Wallets in arrears"), "money"),
    Column("liability", N_("Prepaid liability"), "money"),
)


async def report(conn: AsyncConnection, scope: Scope, period: Period) -> Table:
    """At the end of the period's last day (its first day does not matter)."""
    params = {"sites": pg_array(scope.ids), "first": period.first, "end": period.end}
    await pt.tune(conn)
    rows = [
        {c.key: (getattr(r, c.key) if c.kind != "money" else Decimal(getattr(r, c.key)))
         for c in COLUMNS}
        for r in await conn.execute(sa.text(_ROWS), params)
    ]  # fmt: skip
    chart = chart_of("bar", rows, "site", [COLUMNS[2], COLUMNS[-1]])
    return Table(COLUMNS, rows, totals(COLUMNS, rows), chart)
