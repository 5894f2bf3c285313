"""Collections (收费汇总): the money received into wallets over a period — every counter
sale and every WeChat payment, net of reversals — per site, outlet, operator, method and
channel (seed 004: any office, any period, every sale), and per day, month or year (the
sales report, ``sales``).

Read from the postings on wallets of top-up entries (a reversal counts against the sale
it reverses, on the reversal's day). The counter's sale row names the outlet, operator
and method; the entry's other leg names where the money sits (the operator's cash
drawer, a clearing channel: ``card``, ``transfer``, ``wechat:<merchant>``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import pg_array
from cloud.reports import postings as pt
from cloud.reports.period import Period
from cloud.reports.scope import Scope
from cloud.reports.table import N_, Column, Table, chart_of, totals

_ROWS = f"""
WITH {pt.BOUNDS}, {pt.HOME},
w AS (
  SELECT b.site_name, b.timezone, p.amount, e.effective_at, e.kind = 'reversal' AS reversal,
         coalesce(e.reverses, e.id) AS orig
  FROM home h JOIN bounds b ON b.site_id = h.site_id
  JOIN posting p ON p.ledger_account_id = h.wallet_id
  JOIN journal_entry e ON e.id = p.entry_id
  LEFT JOIN journal_entry o ON o.id = e.reverses
  WHERE e.effective_at >= b.t0 AND e.effective_at < b.t1 AND coalesce(o.kind, e.kind) = 'topup'
)
SELECT w.site_name AS site, ol.name AS outlet,
       op.display_name || ' (' || op.username || ')' AS operator,
       cs.method, src.code AS source,
       CAST(w.effective_at AT TIME ZONE w.timezone AS date) AS day,
       count(*) FILTER (WHERE NOT w.reversal) AS sales,
       count(*) FILTER (WHERE w.reversal) AS reversals,
       coalesce(-sum(w.amount) FILTER (WHERE NOT w.reversal), 0.00) AS gross,
       coalesce(sum(w.amount) FILTER (WHERE w.reversal), 0.00) AS reversed
FROM w
LEFT JOIN counter_sale cs ON cs.entry_id = w.orig
LEFT JOIN outlet ol ON ol.id = cs.outlet_id
LEFT JOIN operator op ON op.id = cs.operator_id
LEFT JOIN LATERAL (
  SELECT a.code FROM posting q JOIN ledger_account a ON a.id = q.ledger_account_id
  WHERE q.entry_id = w.orig AND a.kind <> 'wallet' ORDER BY a.code LIMIT 1
) src ON true
GROUP BY 1, 2, 3, 4, 5, 6
"""


@dataclass(frozen=True)
class Line:
    site: str
    outlet: str
    operator: str
    method: str
    channel: str
    day: date
    sales: int
    reversals: int
    gross: Decimal
    reversed: Decimal

    @property
    def net(self) -> Decimal:
        return self.gross - self.reversed


def channel_of(source: str | None) -> tuple[str, str]:
    """(method, channel) of a top-up not sold at the counter, from where its money sits."""
    code = source or ""
    if code.startswith("cash:"):
        return "cash", "cash"
    if code.startswith("clearing:"):
        channel = code.removeprefix("clearing:")
        return channel.split(":", 1)[0], channel
    return "other", code or "other"


def line_of(r: Any) -> Line:
    method, channel = channel_of(r.source)
    return Line(
        r.site, r.outlet or "", r.operator or "", r.method or method, channel, r.day,
        r.sales, r.reversals, r.gross, r.reversed,
    )  # fmt: skip


async def lines(conn: AsyncConnection, scope: Scope, period: Period) -> list[Line]:
    params = {"sites": pg_array(scope.ids), "first": period.first, "end": period.end}
    return [line_of(r) for r in await conn.execute(sa.text(_ROWS), params)]


GROUPS = ("outlet", "operator", "method", "channel", "site")
GROUP_WORDS = {
    "outlet": N_("per outlet"),
    "operator": N_("per operator"),
    "method": N_("per method"),
    "channel": N_("per channel"),
    "site": N_("per site"),
}
KEY_COLUMNS = {
    "site": (Column("site", N_("Site")),),
    "outlet": (Column("site", N_("Site")), Column("outlet", N_("Outlet"), "label")),
    "operator": (Column("site", N_("Site")), Column("operator", N_("Operator"), "label")),
    "method": (Column("method", N_("Payment method"), "label"),),
    "channel": (Column("channel", N_("Payment channel"), "label"),),
    "day": (Column("period", N_("Day")),),
    "month": (Column("period", N_("Month")),),
    "year": (Column("period", N_("Year")),),
}
FIGURES = (
    Column("sales", N_("Number of sales"), "int"),
    Column("reversals", N_("Number of reversals"), "int"),
    Column("gross", N_("Taken"), "money"),
    Column("reversed", N_("Amount reversed"), "money"),
    Column("net", N_("Net collected"), "money"),
)

#: Hook for the finance close (cloud/finance/: over/short, deposits): each addition gives
#: its columns and, per (site, operator) key, their figures; the report appends them to
#: its rows when grouped per operator. Nothing is registered yet.
Addition = Callable[
    [AsyncConnection, Scope, Period],
    Awaitable[tuple[tuple[Column, ...], dict[tuple[str, str], dict[str, Any]]]],
]
ADDITIONS: list[Addition] = []


def bucket(day: date, by: str) -> str:
    if by == "month":
        return f"{day:%Y-%m}"
    if by == "year":
        return f"{day:%Y}"
    return day.isoformat()


def shape(found: Sequence[Line], by: str) -> Table:
    """The rows grouped by ``by`` (a GROUPS member, or day / month / year)."""
    columns = KEY_COLUMNS[by] + FIGURES
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for ln in found:
        keys = {
            "site": ln.site,
            "outlet": ln.outlet,
            "operator": ln.operator,
            "method": ln.method,
            "channel": ln.channel,
            "period": bucket(ln.day, by),
        }
        row_key = tuple(keys[c.key] for c in KEY_COLUMNS[by])
        row = groups.setdefault(
            row_key,
            {
                **{c.key: keys[c.key] for c in KEY_COLUMNS[by]},
                "sales": 0,
                "reversals": 0,
                "gross": Decimal("0.00"),
                "reversed": Decimal("0.00"),
                "net": Decimal("0.00"),
            },
        )
        row["sales"] += ln.sales
        row["reversals"] += ln.reversals
        row["gross"] += ln.gross
        row["reversed"] += ln.reversed
        row["net"] += ln.net
    rows = [groups[k] for k in sorted(groups)]
    category = "period" if by in ("day", "month", "year") else KEY_COLUMNS[by][-1].key
    kind = "line" if by == "day" else ("pie" if by in ("method", "channel") else "bar")
    chart = chart_of(kind, rows[:400], category, [FIGURES[-1]])
    return Table(columns, rows, totals(columns, rows), chart)


async def report(conn: AsyncConnection, scope: Scope, period: Period, by: str) -> Table:
    table = shape(await lines(conn, scope, period), by)
    if by != "operator" or not ADDITIONS:
        return table
    columns = table.columns
    for add in ADDITIONS:
        extra, figures = await add(conn, scope, period)
        columns += extra
        for row in table.rows:
            row.update(figures.get((row["site"], row["operator"]), {}))
    return Table(columns, table.rows, totals(columns, table.rows), table.chart)
