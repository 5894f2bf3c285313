"""Collection in the field (DESIGN §15): a cash sale to an account on the worker's books,
made by the counter's own service, so the money lands in the worker's own cash drawer and
the receipt is the counter's (PDF, ESC/POS for a thermal printer). The phone's key makes
it idempotent: sent twice, it is sold once and the same receipt is answered."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.errors import Invalid, NotFound
from cloud.field.books import book_points
from cloud.payments.counter import SaleReceipt, SaleRequest, sell_credit


async def collect(
    db: Database,
    who: Principal,
    account_number: str,
    amount: Decimal,
    key: str,
    now: datetime,
    timing: CommandTiming,
) -> SaleReceipt:
    """Sell ``amount`` of credit in cash to an account with a point on the worker's books."""
    who.require("field.work")
    if not key or len(key) > 100:
        raise Invalid("a field sale needs the phone's one-time key")
    async with db.tenant(who.tenant_id) as conn:
        allowed = await book_points(conn, who)
        points = set(
            await conn.scalars(
                sa.text(
                    "SELECT sp.id FROM service_point sp JOIN account a ON a.id = sp.account_id "
                    "WHERE a.number = :n"
                ),
                {"n": account_number},
            )
        )
    if not points & allowed:  # (as for another group's: the worker is not told it exists)
        raise NotFound(f"account {account_number} not found")
    return await sell_credit(
        db, who, SaleRequest(account_number, amount, "cash"), f"field:{key}", now, timing
    )
