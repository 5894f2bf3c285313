"""Arrears (欠费) for dunning (催费, DESIGN §15): the open accounts whose wallet is below
zero, where they are (site, building, floor, premises), what they owe and since when.

Every figure is the ledger's: what an account owes is its wallet's live balance (postings
plus usage rated and not yet journaled), and the day it fell into arrears is the last time
its journaled balance went from zero or above to below zero (today, when only usage not yet
journaled has taken it below). The list is the operator's sites only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import Invalid
from cloud.registry.scope import sites_of

PAGE_MAX = 500


@dataclass(frozen=True)
class ArrearsQuery:
    site_id: uuid.UUID | None = None
    building_id: uuid.UUID | None = None
    floor: str | None = None
    q: str | None = None  # part of the account number, the customer's name or a premises
    min_days: int = 0  # only those in arrears at least this many days
    account_ids: tuple[uuid.UUID, ...] | None = None  # a selection (dunning notices)
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class ArrearsRow:
    account_id: uuid.UUID
    account_number: str
    customer_id: uuid.UUID
    customer: str
    phone: str | None
    site_id: uuid.UUID
    site: str
    timezone: str
    premises: str  # "A栋 1层 101", several joined by "、"
    points: str  # the supplies' names
    owed: Decimal  # positive: what the account owes
    since: datetime  # when it fell into arrears
    days: int  # whole days in arrears, at the time asked


@dataclass(frozen=True)
class ArrearsPage:
    total: int
    total_owed: Decimal
    items: list[ArrearsRow]


# The accounts in arrears, filtered by where their live supplies are. ``since``: the first
# journal entry after the last one that left the wallet at zero or above.
_ARREARS = """
WITH owing AS (
  SELECT a.id AS account_id, a.number AS account_number, a.wallet_id, c.id AS customer_id,
         c.name AS customer, c.phone, -la.balance AS owed,
         min(CAST(sp.site_id AS text)) AS site_key
  FROM account a
  JOIN ledger_account la ON la.id = a.wallet_id
  JOIN customer c ON c.id = a.customer_id
  JOIN service_point sp ON sp.account_id = a.id AND sp.removed_at IS NULL
  LEFT JOIN premises p ON p.id = sp.premises_id
  WHERE a.status = 'active' AND la.balance < 0
    AND (CAST(:sites AS uuid[]) IS NULL OR sp.site_id = ANY(CAST(:sites AS uuid[])))
    AND (CAST(:site AS uuid) IS NULL OR sp.site_id = :site)
    AND (CAST(:building AS uuid) IS NULL OR p.building_id = :building)
    AND (CAST(:floor AS text) IS NULL OR p.floor = :floor)
    AND (CAST(:ids AS uuid[]) IS NULL OR a.id = ANY(CAST(:ids AS uuid[])))
  GROUP BY a.id, a.number, a.wallet_id, c.id, c.name, c.phone, la.balance
),
moves AS (
  SELECT p.ledger_account_id AS wallet_id, je.effective_at AS at,
         sum(-p.amount) OVER (
           PARTITION BY p.ledger_account_id ORDER BY je.effective_at, je.id
           ROWS UNBOUNDED PRECEDING
         ) AS running
  FROM posting p JOIN journal_entry je ON je.id = p.entry_id
  WHERE p.ledger_account_id IN (SELECT wallet_id FROM owing)
),
fell AS (
  SELECT m.wallet_id,
         min(m.at) FILTER (WHERE m.at > coalesce(ok.last_ok, '-infinity')) AS since
  FROM moves m
  LEFT JOIN (
    SELECT wallet_id, max(at) AS last_ok FROM moves WHERE running >= 0 GROUP BY wallet_id
  ) ok ON ok.wallet_id = m.wallet_id
  WHERE m.running < 0
  GROUP BY m.wallet_id
),
placed AS (
  SELECT o.*, coalesce(f.since, :now) AS since,
         (SELECT string_agg(DISTINCT b.name || ' ' || pr.floor || '层 ' || pr.number, '、')
            FROM service_point sp JOIN premises pr ON pr.id = sp.premises_id
            JOIN building b ON b.id = pr.building_id
           WHERE sp.account_id = o.account_id AND sp.removed_at IS NULL) AS premises,
         (SELECT string_agg(sp.name, '、' ORDER BY sp.name) FROM service_point sp
           WHERE sp.account_id = o.account_id AND sp.removed_at IS NULL) AS points
  FROM owing o LEFT JOIN fell f ON f.wallet_id = o.wallet_id
)
SELECT x.account_id, x.account_number, x.customer_id, x.customer, x.phone,
       s.id AS site_id, s.name AS site, s.timezone, coalesce(x.premises, '') AS premises,
       coalesce(x.points, '') AS points, x.owed, x.since,
       count(*) OVER () AS total, sum(x.owed) OVER () AS total_owed
FROM placed x JOIN site s ON s.id = CAST(x.site_key AS uuid)
WHERE x.since <= :cutoff
  AND (CAST(:q AS text) IS NULL OR x.account_number ILIKE :q OR x.customer ILIKE :q
       OR coalesce(x.premises, '') ILIKE :q)
ORDER BY x.owed DESC, x.account_number
LIMIT :limit OFFSET :offset
"""


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _days(since: datetime, now: datetime) -> int:
    return max(0, (now - since).days)


async def list_arrears(
    db: Database, who: Principal, query: ArrearsQuery, now: datetime
) -> ArrearsPage:
    """One page of the accounts in arrears within the operator's sites, largest first."""
    who.require("registry.view")
    if not 1 <= query.limit <= PAGE_MAX or query.offset < 0:
        raise Invalid(f"limit is 1 to {PAGE_MAX} and offset at least 0")
    if not 0 <= query.min_days <= 36_500:
        raise Invalid("days in arrears is 0 to 36500")
    params: dict[str, Any] = {
        "site": query.site_id,
        "building": query.building_id,
        "floor": query.floor or None,
        "q": _like(query.q) if query.q else None,
        "ids": list(query.account_ids) if query.account_ids is not None else None,
        "now": now,
        "cutoff": now - timedelta(days=query.min_days),
        "limit": query.limit,
        "offset": query.offset,
    }
    async with db.tenant(who.tenant_id) as conn:
        params["sites"] = await sites_of(conn, who)
        rows = (await conn.execute(sa.text(_ARREARS), params)).all()
    if not rows:
        return ArrearsPage(0, Decimal("0.00"), [])
    items = [
        ArrearsRow(
            account_id=r.account_id,
            account_number=r.account_number,
            customer_id=r.customer_id,
            customer=r.customer,
            phone=r.phone,
            site_id=r.site_id,
            site=r.site,
            timezone=r.timezone,
            premises=r.premises,
            points=r.points,
            owed=r.owed,
            since=r.since,
            days=_days(r.since, now),
        )
        for r in rows
    ]
    return ArrearsPage(int(rows[0].total), rows[0].total_owed, items)


async def every_arrears(
    db: Database, who: Principal, query: ArrearsQuery, now: datetime, limit: int
) -> list[ArrearsRow]:
    """Every row the query finds, up to ``limit`` (exports and notices)."""
    rows: list[ArrearsRow] = []
    while len(rows) < limit:
        step = min(PAGE_MAX, limit - len(rows))
        page = await list_arrears(
            db,
            who,
            replace(query, limit=step, offset=len(rows)),
            now,
        )
        rows += page.items
        if len(page.items) < step:
            break
    return rows
