"""Cash handover (DESIGN §14): an operator's cash for a business day handed to finance.
Once recorded, that day's sales of the operator can no longer be reversed. The finance
work (declared amounts, differences, deposits) builds on this."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud import audit
from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import Conflict, NotFound


@dataclass(frozen=True)
class Handover:
    id: uuid.UUID
    operator_id: uuid.UUID
    business_day: date
    amount: Decimal  # the day's cash sales of the operator, less those reversed
    handed_at: datetime
    received_by: str


async def record_handover(
    db: Database, who: Principal, operator_id: uuid.UUID, business_day: date, now: datetime
) -> Handover:
    """Record that ``operator_id`` handed over the cash of ``business_day`` (once)."""
    who.require("finance.reconcile")
    async with db.tenant(who.tenant_id) as conn:
        username = await conn.scalar(
            sa.text("SELECT username FROM operator WHERE id = :o"), {"o": operator_id}
        )
        if username is None:
            raise NotFound(f"operator {operator_id} not found")
        amount = await conn.scalar(
            sa.text(
                "SELECT coalesce(sum(amount), 0) FROM counter_sale WHERE operator_id = :o "
                "AND business_day = :d AND method = 'cash' AND reversed_at IS NULL"
            ),
            {"o": operator_id, "d": business_day},
        )
        handover_id = uuid.uuid4()
        inserted = await conn.scalar(
            sa.text(
                "INSERT INTO cash_handover (id, tenant_id, operator_id, business_day, amount, "
                "handed_at, received_by) VALUES (:id, :t, :o, :d, :amt, :now, :by) "
                "ON CONFLICT (tenant_id, operator_id, business_day) DO NOTHING RETURNING id"
            ),
            {
                "id": handover_id,
                "t": who.tenant_id,
                "o": operator_id,
                "d": business_day,
                "amt": amount,
                "now": now,
                "by": who.actor,
            },
        )
        if inserted is None:
            raise Conflict(
                f"the cash of {username} for {business_day.isoformat()} was already handed over"
            )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "cash.handover",
            f"operator:{username}",
            now,
            {"business_day": business_day.isoformat(), "amount": str(amount)},
        )
        return Handover(handover_id, operator_id, business_day, amount, now, who.actor)
