"""Revenue per utility and tariff: what usage, monthly fees and common-area shares took
from the wallets over the period (net of reversals), by the point each charge was for
(its key names it: ``usage:<point>:…``, ``fee:<point>:…``, ``common:<point>:…``)."""

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
charged AS (
  SELECT CASE WHEN split_part(x.cause, ':', 2) ~ '^[0-9a-f-]{{36}}$'
              THEN CAST(split_part(x.cause, ':', 2) AS uuid) END AS point,
         x.kind, x.amount
  FROM w JOIN x ON x.wallet_id = w.wallet_id
  WHERE x.effective_at >= w.t0 AND x.effective_at < w.t1
    AND {pt.movement_case("x.kind")} = 'usage'
)
SELECT coalesce(sp.utility, '') AS utility, coalesce(t.name, '') AS tariff,
       coalesce(sum(c.amount) FILTER (WHERE c.kind = 'usage'), 0.00) AS usage,
       coalesce(sum(c.amount) FILTER (WHERE c.kind = 'fixed_charge'), 0.00) AS fees,
       coalesce(sum(c.amount) FILTER (WHERE c.kind = 'common_area'), 0.00) AS common,
       sum(c.amount) AS revenue
FROM charged c LEFT JOIN service_point sp ON sp.id = c.point
LEFT JOIN tariff t ON t.id = sp.tariff_id
GROUP BY 1, 2 ORDER BY 1, 2
"""

COLUMNS = (
    Column("utility", N_("Utility"), "label"),
    Column("tariff", N_("Tariff")),
    Column("usage", N_("Usage charges"), "money"),
    Column("fees", N_("Monthly fees"), "money"),
    Column("common", N_("Common-area shares"), "money"),
    Column("revenue", N_("Revenue"), "money"),
)


async def report(conn: AsyncConnection, scope: Scope, period: Period) -> Table:
    params = {"sites": pg_array(scope.ids), "first": period.first, "end": period.end}
    await pt.tune(conn)
    rows = [
        {
            "utility": r.utility,
            "tariff": r.tariff or "—",
            "usage": Decimal(r.usage),
            "fees": Decimal(r.fees),
            "common": Decimal(r.common),
            "revenue": Decimal(r.revenue),
        }
        for r in await conn.execute(sa.text(_ROWS), params)
    ]
    chart = chart_of("pie", rows, "tariff", [COLUMNS[-1]])
    return Table(COLUMNS, rows, totals(COLUMNS, rows), chart)
