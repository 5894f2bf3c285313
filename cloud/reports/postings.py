"""What every report is read from: the postings on wallets (and on the accounts money is
received into), each attributed without any counter kept on the side.

- A wallet belongs to its account, and an account to its *home site*: the site of its
  first service point (a live one before a removed one), the rule the counter sells by
  (``cloud.payments.counter``); an account without points is at the group's first site.
- A posting's *movement* is what its entry did, by kind; a reversal counts as the kind of
  the entry it reverses (a reversed sale lowers the top-ups, never shows as something else).
- A period is whole local days in each site's zone: [first 00:00, last+1 00:00), by the
  entries' ``effective_at``.

Balances are shown on the wallet's normal (credit) side: the negated sum of postings.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

TOPUPS = "topups"
USAGE = "usage"
REFUNDS = "refunds"
TRANSFERS = "transfers"
ADJUSTMENTS = "adjustments"

#: journal entry kind → the movement column it counts in (anything else: adjustments,
#: which then holds balances brought over from a legacy system and write-offs)
MOVEMENT_OF_KIND: dict[str, str] = {
    "topup": TOPUPS,
    "usage": USAGE,
    "fixed_charge": USAGE,
    "common_area": USAGE,
    "refund": REFUNDS,
    "transfer": TRANSFERS,
}
MOVEMENTS = (TOPUPS, USAGE, REFUNDS, TRANSFERS, ADJUSTMENTS)
#: movements shown as positive amounts that lower the balance
OUTGOING = frozenset({USAGE, REFUNDS})


def movement(kind: str) -> str:
    return MOVEMENT_OF_KIND.get(kind, ADJUSTMENTS)


def movement_case(kind_sql: str) -> str:
    """The SQL CASE naming the movement of an entry of kind ``kind_sql``."""
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in MOVEMENT_OF_KIND.items())
    return f"CASE {kind_sql} {whens} ELSE '{ADJUSTMENTS}' END"


def closing_of(opening: Decimal, moves: dict[str, Decimal]) -> Decimal:
    """closing = opening + top-ups − usage − refunds + transfers + adjustments (usage and
    refunds as the positive amounts the report shows)."""
    out = opening
    for m in MOVEMENTS:
        value = moves.get(m, Decimal(0))
        out += -value if m in OUTGOING else value
    return out


#: sites of the report: their zones' bounds of [:first, :end) as UTC instants
BOUNDS = """
bounds AS (
  SELECT s.id AS site_id, s.name AS site_name, s.timezone,
         (CAST(:first AS date)::timestamp AT TIME ZONE s.timezone) AS t0,
         (CAST(:end AS date)::timestamp AT TIME ZONE s.timezone) AS t1
  FROM site s WHERE s.id = ANY(CAST(:sites AS uuid[]))
)"""

#: every account with its home site and the premises of its first point
HOME = """
home AS MATERIALIZED (
  SELECT a.id, a.number, a.wallet_id, a.customer_id, a.status, a.opened_at, a.closed_at,
         coalesce(f.site_id, (SELECT id FROM site ORDER BY id LIMIT 1)) AS site_id,
         f.premises_id
  FROM account a
  LEFT JOIN LATERAL (
    SELECT sp.site_id, sp.premises_id FROM service_point sp WHERE sp.account_id = a.id
    ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1
  ) f ON true
)"""

#: the postings on the wallets of the sites' accounts up to each site's period end, with
#: the movement and the entry kind that decide them (a reversal's: its original's)
WALLET_POSTINGS = f"""
wp AS (
  SELECT h.id AS account_id, h.site_id, p.amount, e.effective_at, b.t0, b.t1,
         coalesce(o.kind, e.kind) AS kind,
         coalesce(o.idempotency_key, e.idempotency_key) AS cause,
         {movement_case("coalesce(o.kind, e.kind)")} AS movement
  FROM home h JOIN bounds b ON b.site_id = h.site_id
  JOIN posting p ON p.ledger_account_id = h.wallet_id
  JOIN journal_entry e ON e.id = p.entry_id
  LEFT JOIN LATERAL (
    SELECT x.kind, x.idempotency_key FROM journal_entry x WHERE x.id = e.reverses
  ) o ON e.reverses IS NOT NULL
  WHERE e.effective_at < b.t1
)"""

#: the same postings, lean for a report over every wallet: an entry's own kind and key,
#: or (the rare reversals) its original's, without joining every entry to another
WALLET_MOVES = """
w AS MATERIALIZED (
  SELECT h.id AS account_id, h.wallet_id, b.t0, b.t1
  FROM home h JOIN bounds b ON b.site_id = h.site_id
),
x AS (
  SELECT p.ledger_account_id AS wallet_id, e.kind, e.effective_at, p.amount,
         e.idempotency_key AS cause
  FROM posting p JOIN journal_entry e ON e.id = p.entry_id
  WHERE e.reverses IS NULL
  UNION ALL
  SELECT p.ledger_account_id, o.kind, e.effective_at, p.amount, o.idempotency_key
  FROM journal_entry e JOIN journal_entry o ON o.id = e.reverses
  JOIN posting p ON p.entry_id = e.id
  WHERE e.reverses IS NOT NULL
)"""


async def tune(conn: AsyncConnection) -> None:
    """This transaction's settings for a report's aggregation over every wallet: no JIT
    (compiling costs more than it saves at a group's size) and memory enough to hash the
    groups instead of sorting them on disk."""
    await conn.execute(sa.text("SET LOCAL jit = off"))
    await conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))
