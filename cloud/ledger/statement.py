"""An account's statement (对账单): every journal line on its wallet, oldest first, with its
cause (the entry's kind and reason, who made it), the running balance after it, and the
receipt or WeChat order that paid it; the usage rated but not yet journaled closes it, so
the last running balance is the live balance. Read only, narrowed by scope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import NotFound
from cloud.registry.scope import sites_of


@dataclass(frozen=True)
class StatementLine:
    entry_id: uuid.UUID
    effective_at: datetime
    kind: str
    reason: str
    actor: str
    amount: Decimal  # on the customer's side: + credit (top-up), - debit (usage)
    balance: Decimal  # running, after this line
    receipt_no: str | None  # the counter sale that made it (or whose reversal it is)
    order_no: str | None  # the WeChat payment order that made it


@dataclass(frozen=True)
class Statement:
    account_id: uuid.UUID
    number: str
    customer: str
    timezone: str
    lines: list[StatementLine]  # oldest first
    unposted: Decimal  # usage rated, not yet in the journal (negative)
    balance: Decimal  # the live balance

    @property
    def ties(self) -> bool:
        last = self.lines[-1].balance if self.lines else Decimal("0.00")
        return last + self.unposted == self.balance


_ACCOUNT = """
SELECT a.id, a.number, a.wallet_id, c.name AS customer, la.balance, la.unposted,
  (SELECT s.timezone FROM service_point sp JOIN site s ON s.id = sp.site_id
    WHERE sp.account_id = a.id ORDER BY sp.name LIMIT 1) AS timezone,
  ARRAY(SELECT DISTINCT sp.site_id FROM service_point sp WHERE sp.account_id = a.id) AS sites
FROM account a JOIN customer c ON c.id = a.customer_id
JOIN ledger_account la ON la.id = a.wallet_id WHERE a.number = :n
"""
# The wallet is on the credit side: a credit (negative posting) raises the balance.
_LINES = """
SELECT e.id, e.effective_at, e.created_at, e.kind, e.reason, e.actor, -p.amount AS amount,
  sum(-p.amount) OVER (ORDER BY e.effective_at, e.created_at, e.id) AS running,
  coalesce(cs.receipt_no, rv.receipt_no) AS receipt_no, po.out_trade_no AS order_no
FROM posting p JOIN journal_entry e ON e.id = p.entry_id
LEFT JOIN counter_sale cs ON cs.entry_id = e.id
LEFT JOIN counter_sale rv ON rv.reversal_entry_id = e.id
LEFT JOIN payment_order po ON po.entry_id = e.id
WHERE p.ledger_account_id = :w
ORDER BY e.effective_at, e.created_at, e.id
"""


async def account_statement(db: Database, who: Principal, number: str) -> Statement:
    """NotFound for an account of another tenant or with no point in the scope."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        a = (await conn.execute(sa.text(_ACCOUNT), {"n": number})).first()
        sites = await sites_of(conn, who)
        if a is None or (sites is not None and not set(a.sites) & set(sites)):
            raise NotFound(f"account {number} not found")
        rows = (await conn.execute(sa.text(_LINES), {"w": a.wallet_id})).all()
    lines = [
        StatementLine(
            r.id, r.effective_at, r.kind, r.reason, r.actor, r.amount, r.running,
            r.receipt_no, r.order_no,
        )
        for r in rows
    ]  # fmt: skip
    return Statement(
        a.id, a.number, a.customer, a.timezone or "Asia/Shanghai", lines, a.unposted, a.balance
    )
