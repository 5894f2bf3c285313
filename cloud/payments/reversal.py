"""Reversal of a counter sale (冲正), the shell around :func:`core.check_reversal`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud import audit
from cloud.auth import Principal
from cloud.control.service import CommandTiming, evaluate
from cloud.db import Database
from cloud.errors import Conflict, NotFound
from cloud.ledger import service as ledger
from cloud.payments import core
from cloud.registry.scope import require_site


@dataclass(frozen=True)
class Reversal:
    receipt_no: str
    account_number: str
    amount: Decimal
    entry_id: uuid.UUID  # the mirroring journal entry
    balance_after: Decimal
    reversed_at: datetime
    commands: int  # control commands queued after it (a cut, a cancelled recharge)


_SALE = sa.text(
    "SELECT s.id, s.receipt_no, s.account_id, s.amount, s.entry_id, s.operator_id, "
    "s.created_at, s.business_day, s.reversed_at, a.number, a.wallet_id, "
    "st.id AS site_id, st.timezone, st.business_day_cutoff "
    "FROM counter_sale s JOIN account a ON a.id = s.account_id "
    "LEFT JOIN outlet o ON o.id = s.outlet_id "
    "LEFT JOIN site st ON st.id = coalesce(o.site_id, (SELECT sp.site_id FROM service_point sp "
    "WHERE sp.account_id = s.account_id ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1)) "
    "WHERE s.receipt_no = :r FOR UPDATE OF s"
)
_RECHARGE = sa.text(
    "SELECT id, state FROM device_command WHERE action = 'recharge' "
    "AND params->>'cause' = :cause ORDER BY created_at DESC LIMIT 1 FOR UPDATE"
)


async def reverse_sale(
    db: Database,
    who: Principal,
    receipt_no: str,
    reason: str,
    now: datetime,
    timing: CommandTiming,
) -> Reversal:
    """Reverse a sale of today's business day: a journal entry mirroring the sale's, the
    sale marked reversed, one audit event, then control decides the account's points again
    on the lower balance (it may cut supply, subject to the policy). A recharge still
    queued for a meter is cancelled with it."""
    who.require("sale.reverse")
    async with db.tenant(who.tenant_id) as conn:
        sale = (await conn.execute(_SALE, {"r": receipt_no})).first()
        if sale is None:
            raise NotFound(f"sale {receipt_no} not found")
        if sale.site_id is not None and sale.operator_id != who.operator_id:
            await require_site(conn, who, sale.site_id)  # (own sales: also under a grant)
        tz = sale.timezone or "UTC"
        cutoff = sale.business_day_cutoff or datetime.min.time()
        sale_day = sale.business_day or core.business_day(sale.created_at, tz, cutoff)
        handed_over = bool(
            await conn.scalar(
                sa.text(
                    "SELECT 1 FROM cash_handover WHERE operator_id = :op AND business_day = :d"
                ),
                {"op": sale.operator_id, "d": sale_day},
            )
        )
        recharge = (await conn.execute(_RECHARGE, {"cause": f"sale:{receipt_no}"})).first()
        core.check_reversal(
            core.ReversalFacts(
                receipt_no=receipt_no,
                permitted="sale.reverse" in who.permissions,
                reason=reason,
                reversed_at=sale.reversed_at,
                sale_day=sale_day,
                today=core.business_day(now, tz, cutoff),
                handed_over=handed_over,
                recharge_state=None if recharge is None else recharge.state,
            )
        )
        reason = reason.strip()
        posted = await ledger.reverse(
            conn,
            who.tenant_id,
            sale.entry_id,
            who.actor,
            f"reversal of {receipt_no}: {reason}",
            now,
        )
        if not posted.created:
            raise Conflict(f"sale {receipt_no} is already reversed")
        if recharge is not None and recharge.state == "queued":
            await conn.execute(
                sa.text(
                    "UPDATE device_command SET state = 'superseded', finished_at = :now, "
                    "result = jsonb_build_object('reason', CAST(:why AS text)) WHERE id = :id"
                ),
                {"id": recharge.id, "now": now, "why": f"sale {receipt_no} reversed"},
            )
        await conn.execute(
            sa.text(
                "UPDATE counter_sale SET reversed_at = :now, reversed_by = :by, "
                "reversal_reason = :why, reversal_entry_id = :e WHERE id = :id"
            ),
            {"now": now, "by": who.actor, "why": reason, "e": posted.entry_id, "id": sale.id},
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "sale.reverse",
            f"account:{sale.number}",
            now,
            {"receipt": receipt_no, "amount": str(sale.amount), "reason": reason},
        )
        balance = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE id = :w"), {"w": sale.wallet_id}
        )
        points = list(
            await conn.scalars(
                sa.text(
                    "SELECT id FROM service_point WHERE account_id = :a AND NOT common_area "
                    "AND removed_at IS NULL"
                ),
                {"a": sale.account_id},
            )
        )
        commands = 0
        if points:
            outcome = await evaluate(
                conn,
                who.tenant_id,
                points,
                now,
                timing,
                balances={sale.wallet_id: balance},
                actor=who.actor,
            )
            commands = outcome.commands
        return Reversal(
            receipt_no, sale.number, sale.amount, posted.entry_id, balance, now, commands
        )
