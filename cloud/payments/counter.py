"""Counter sales: an operator takes cash, card or a bank transfer at an outlet and credits a
wallet (DESIGN §7)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.auth import Principal
from cloud.control.service import CommandTiming, after_topup
from cloud.db import Database, next_number
from cloud.errors import Conflict, Invalid, NotFound
from cloud.ledger import core as ledger
from cloud.ledger.service import balance_of, post
from cloud.notify import outbox
from cloud.payments import core
from cloud.registry.scope import outlet_permit, require_site


@dataclass(frozen=True)
class SaleRequest:
    account_number: str
    amount: Decimal
    method: str  # cash | card | transfer
    outlet_id: uuid.UUID | None = None  # required of an operator scoped to outlets

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
    outlet_id: uuid.UUID | None = None
    grant_id: uuid.UUID | None = None  # the cross-outlet grant the sale was made under
    business_day: date | None = None


_SITE_OF_ACCOUNT = sa.text(
    "SELECT s.id, s.timezone, s.business_day_cutoff FROM site s WHERE s.id = coalesce("
    "(SELECT sp.site_id FROM service_point sp WHERE sp.account_id = :a "
    "ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1), "
    "(SELECT id FROM site ORDER BY id LIMIT 1))"
)


async def sell_credit(
    db: Database,
    who: Principal,
    req: SaleRequest,
    idempotency_key: str,
    now: datetime,
    timing: CommandTiming,
) -> SaleReceipt:
    """Credit a wallet once per idempotency key; a replay returns the original receipt.

    The money sits in the operator's cash drawer (cash) or the channel's clearing account
    (card, transfer). The outlet must be in the operator's scope or under a live
    cross-outlet grant (then the sale records the grant); an operator scoped to outlets
    names it. The sale belongs to the business day of ``now`` at the outlet's site (the
    account's site when no outlet is named)."""
    who.require("sale.create")
    async with db.tenant(who.tenant_id) as conn:
        return await sell_in(conn, who, req, idempotency_key, now, timing)


async def sell_in(
    conn: AsyncConnection,
    who: Principal,
    req: SaleRequest,
    idempotency_key: str,
    now: datetime,
    timing: CommandTiming,
) -> SaleReceipt:
    """:func:`sell_credit` in the caller's transaction (开户's first sale: a refused sale
    opens nothing)."""
    who.require("sale.create")
    source = core.source_account(req.method, who.operator_id, who.username)
    if await conn.scalar(
        sa.text("SELECT 1 FROM counter_sale WHERE idempotency_key = :k"),
        {"k": idempotency_key},
    ):
        return await replay(conn, idempotency_key, req)
    acct = (
        await conn.execute(
            sa.text("SELECT id, number, status FROM account WHERE number = :n"),
            {"n": req.account_number},
        )
    ).first()
    if acct is None:
        raise NotFound(f"account {req.account_number} not found")
    if req.outlet_id is None and who.scope == "outlet":
        raise Invalid("choose the outlet the sale is made at")
    grant_id = None
    site: sa.Row[Any] | None
    if req.outlet_id is not None:
        permit = await outlet_permit(conn, who, req.outlet_id, now)
        grant_id = permit.grant_id
        # the account, too, must be the operator's: at a site of their scope, or at the
        # site of the outlet a grant lets them sell at (an outlet alone proves nothing)
        home = (await conn.execute(_SITE_OF_ACCOUNT, {"a": acct.id})).first()
        if home is not None and home.id != permit.site_id:
            try:
                await require_site(conn, who, home.id)
            except NotFound:
                raise NotFound(f"account {req.account_number} not found") from None
        site = (
            await conn.execute(
                sa.text("SELECT id, timezone, business_day_cutoff FROM site WHERE id = :s"),
                {"s": permit.site_id},
            )
        ).one()
    else:
        site = (await conn.execute(_SITE_OF_ACCOUNT, {"a": acct.id})).first()
        if site is not None:
            await require_site(conn, who, site.id)
    if acct.status == "closed":
        raise Conflict(f"account {acct.number} is closed")
    day = (
        core.business_day(now, site.timezone, site.business_day_cutoff)
        if site is not None
        else now.date()
    )
    wallet = ledger.wallet(acct.id, acct.number)
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
    if not posted.created:  # a concurrent request with the same key got there first
        return await replay(conn, idempotency_key, req)
    receipt_no = f"R{await next_number(conn, who.tenant_id, 'receipt'):08d}"
    sale_id = uuid.uuid4()
    balance = await balance_of(conn, wallet.code)
    await conn.execute(
        sa.text(
            "INSERT INTO counter_sale (id, tenant_id, idempotency_key, request_fingerprint, "
            "receipt_no, account_id, outlet_id, operator_id, method, amount, entry_id, "
            "created_at, grant_id, business_day, balance_after) VALUES (:id, :t, :k, :fp, "
            ":r, :a, :o, :op, :m, :amt, :e, :now, :g, :day, :bal)"
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
            "g": grant_id,
            "day": day,
            "bal": balance,
        },
    )
    commands = await after_topup(
        conn, who.tenant_id, acct.id, req.amount, f"sale:{receipt_no}", now, timing, who.actor
    )
    await outbox.topup_received(conn, who.tenant_id, acct.id, req.amount, f"sale:{receipt_no}", now)
    detail = {"amount": str(req.amount), "receipt": receipt_no, "method": req.method}
    if grant_id is not None:
        detail["grant"] = str(grant_id)
    await audit.record(
        conn, who.tenant_id, who.actor, "sale.create", f"account:{acct.number}", now, detail
    )
    return SaleReceipt(
        sale_id,
        receipt_no,
        acct.number,
        req.amount,
        req.method,
        balance,
        now,
        False,
        commands,
        req.outlet_id,
        grant_id,
        day,
    )


async def replay(conn: AsyncConnection, key: str, req: SaleRequest) -> SaleReceipt:
    """The sale made under ``key`` (Conflict if it was made for a different request)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT s.id, s.receipt_no, s.amount, s.method, s.created_at, s.outlet_id, "
                "s.grant_id, s.business_day, s.balance_after, s.request_fingerprint, "
                "a.number, a.wallet_id FROM counter_sale s "
                "JOIN account a ON a.id = s.account_id WHERE s.idempotency_key = :k"
            ),
            {"k": key},
        )
    ).one()
    if row.request_fingerprint != req.fingerprint():
        raise Conflict(f"idempotency key {key!r} was already used for a different sale")
    balance = row.balance_after
    if balance is None:  # a sale from before balances were kept with it
        balance = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE id = :w"), {"w": row.wallet_id}
        )
    return SaleReceipt(
        row.id,
        row.receipt_no,
        row.number,
        row.amount,
        row.method,
        balance,
        row.created_at,
        True,
        0,
        row.outlet_id,
        row.grant_id,
        row.business_day,
    )
