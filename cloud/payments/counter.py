"""Counter sales: an operator takes cash or card at an outlet and credits a wallet."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.auth import Principal
from cloud.control.service import CommandTiming, after_topup
from cloud.db import Database, next_number
from cloud.errors import Conflict, NotFound
from cloud.ledger import core as ledger
from cloud.ledger.service import balance_of, post


@dataclass(frozen=True)
class SaleRequest:
    account_number: str
    amount: Decimal
    method: str  # cash | card
    outlet_id: uuid.UUID | None = None

    def fingerprint(self) -> str:
        doc = [self.account_number, str(self.amount), self.method, str(self.outlet_id)]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


@dataclass(frozen=True)
class SaleReceipt:
    sale_id: uuid.UUID
    receipt_no: str
    account_number: str
    amount: Decimal
    method: str
    balance_after: Decimal
    created_at: datetime
    replayed: bool
    commands: int = 0


async def sell_credit(
    db: Database,
    who: Principal,
    req: SaleRequest,
    idempotency_key: str,
    now: datetime,
    timing: CommandTiming,
) -> SaleReceipt:
    """Credit a wallet once per idempotency key; a replay returns the original receipt."""
    who.require("sale.create")
    async with db.tenant(who.tenant_id) as conn:
        acct = (
            await conn.execute(
                sa.text("SELECT id, number FROM account WHERE number = :n"),
                {"n": req.account_number},
            )
        ).first()
        if acct is None:
            raise NotFound(f"account {req.account_number} not found")
        if req.outlet_id is not None and not await conn.scalar(
            sa.text("SELECT 1 FROM outlet WHERE id = :o"), {"o": req.outlet_id}
        ):
            raise NotFound(f"outlet {req.outlet_id} not found")
        wallet = ledger.wallet(acct.id, acct.number)
        source = (
            ledger.cash_drawer(who.operator_id, who.username)
            if req.method == "cash"
            else ledger.clearing("card")
        )
        posted = await post(
            conn,
            who.tenant_id,
            ledger.EntryDraft(
                idempotency_key=f"sale:{idempotency_key}",
                kind=ledger.EntryKind.TOPUP,
                actor=who.actor,
                effective_at=now,
                legs=ledger.topup(wallet, source, req.amount),
                reason=f"counter sale ({req.method})",
            ),
        )
        if not posted.created:
            return await _replay(conn, idempotency_key, req)
        receipt_no = f"R{await next_number(conn, who.tenant_id, 'receipt'):08d}"
        sale_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO counter_sale (id, tenant_id, idempotency_key, request_fingerprint, "
                "receipt_no, account_id, outlet_id, operator_id, method, amount, entry_id, "
                "created_at) VALUES (:id, :t, :k, :fp, :r, :a, :o, :op, :m, :amt, :e, :now)"
            ),
            {
                "id": sale_id,
                "t": who.tenant_id,
                "k": idempotency_key,
                "fp": req.fingerprint(),
                "r": receipt_no,
                "a": acct.id,
                "o": req.outlet_id,
                "op": who.operator_id,
                "m": req.method,
                "amt": req.amount,
                "e": posted.entry_id,
                "now": now,
            },
        )
        balance = await balance_of(conn, wallet.code)
        commands = await after_topup(
            conn, who.tenant_id, acct.id, req.amount, f"sale:{receipt_no}", now, timing, who.actor
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "sale.create",
            f"account:{acct.number}",
            now,
            {"amount": str(req.amount), "receipt": receipt_no},
        )
        return SaleReceipt(
            sale_id, receipt_no, acct.number, req.amount, req.method, balance, now, False, commands
        )


async def _replay(conn: AsyncConnection, key: str, req: SaleRequest) -> SaleReceipt:
    row = (
        await conn.execute(
            sa.text(
                "SELECT s.id, s.receipt_no, s.amount, s.method, s.created_at, "
                "s.request_fingerprint, a.number, a.wallet_id FROM counter_sale s "
                "JOIN account a ON a.id = s.account_id WHERE s.idempotency_key = :k"
            ),
            {"k": key},
        )
    ).one()
    if row.request_fingerprint != req.fingerprint():
        raise Conflict(f"idempotency key {key!r} was already used for a different sale")
    balance = await conn.scalar(
        sa.text("SELECT balance FROM ledger_account WHERE id = :w"), {"w": row.wallet_id}
    )
    return SaleReceipt(
        row.id, row.receipt_no, row.number, row.amount, row.method, balance, row.created_at, True
    )
