"""Refunds to the WeChat payment a top-up came from (DESIGN §7): a stable ``out_refund_no``,
never more than the order paid less what was refunded before, and never more than the
wallet holds. The money leaves the wallet into refunds payable when the refund is asked
for (``refund:<no>``) and leaves refunds payable for the merchant's clearing account when
WeChat says it succeeded (``refund-paid:<no>``); a refund WeChat closes comes back to the
wallet. Control runs again after the wallet moves (a refund may cut, as the policy says)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.control.service import evaluate
from cloud.errors import Conflict, Invalid, NotFound
from cloud.ledger import core as ledger
from cloud.ledger.service import balance_of, post
from cloud.notify import outbox
from cloud.payments.wechat import rules
from cloud.payments.wechat.merchant import Merchant, PayUnavailable, answer, clearing_channel
from cloud.payments.wechat.orders import (
    ACTOR,
    NotificationRefused,
    WeChatPayments,
    _json_body,
    tenant_of,
)

log = logging.getLogger(__name__)
FINAL = ("success", "closed", "abnormal", "failed")
OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*]{6,32}$")  # WeChat's rule


@dataclass(frozen=True)
class RefundView:
    out_refund_no: str
    out_trade_no: str
    amount: Decimal
    status: str
    replayed: bool = False


async def _rerun_control(
    pay: WeChatPayments,
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    now: datetime,
) -> None:
    """The wallet moved: decide the account's points again (evaluate reads the balance)."""
    points = list(
        await conn.scalars(
            sa.text(
                "SELECT id FROM service_point WHERE account_id = :a AND NOT common_area "
                "AND removed_at IS NULL"
            ),
            {"a": account_id},
        )
    )
    if points:
        await evaluate(conn, tenant_id, points, now, pay.timing, actor=ACTOR)


async def request_refund(
    pay: WeChatPayments,
    tenant_id: uuid.UUID,
    out_trade_no: str,
    amount: Decimal,
    reason: str,
    actor: str,
    out_refund_no: str,
) -> RefundView:
    """Refund ``amount`` of the paid order to the payer. The same ``out_refund_no`` again
    returns the refund already asked for (and asks WeChat again if it never answered)."""
    if not reason.strip():
        raise Invalid("a refund needs a reason")
    if not OUT_REFUND_NO.match(out_refund_no):
        raise Invalid("out_refund_no is 6 to 32 letters, digits or _-|*")
    now = pay.clock()
    rules.fen(amount)
    if amount <= 0:
        raise Invalid("amount must be greater than zero")
    async with pay.db.tenant(tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT o.id, o.out_trade_no, o.amount, o.amount_fen, o.refunded, o.status, "
                    "o.mode, o.mchid, o.sub_mchid, o.account_id, a.number, a.wallet_id "
                    "FROM payment_order o JOIN account a ON a.id = o.account_id "
                    "WHERE o.out_trade_no = :no FOR UPDATE OF o"
                ),
                {"no": out_trade_no},
            )
        ).first()
        if row is None:
            raise NotFound(f"order {out_trade_no} not found")
        known = (
            await conn.execute(
                sa.text(
                    "SELECT amount, status, order_id FROM payment_refund WHERE out_refund_no = :r"
                ),
                {"r": out_refund_no},
            )
        ).first()
        if known is not None:
            if known.order_id != row.id or known.amount != amount:
                raise Conflict(f"refund {out_refund_no} was asked for a different amount or order")
            replay = RefundView(out_refund_no, out_trade_no, amount, known.status, True)
        else:
            replay = None
            if row.status != "paid":
                raise Conflict(f"order {out_trade_no} was not paid")
            if amount > row.amount - row.refunded:
                raise Invalid(
                    f"at most {row.amount - row.refunded:.2f} of this payment can still be refunded"
                )
            wallet = ledger.wallet(row.account_id, row.number)
            if amount > await balance_of(conn, wallet.code):
                raise Conflict("the wallet holds less than the refund")
            await _record(conn, tenant_id, row, amount, reason, actor, out_refund_no, now)
            await _rerun_control(pay, conn, tenant_id, row.account_id, now)
    if replay is not None and replay.status != "requested":
        return replay
    merchant = await pay.merchant(tenant_id)
    status = await _ask(
        pay, merchant, tenant_id, out_refund_no, out_trade_no, amount, row.amount_fen, reason
    )
    return RefundView(out_refund_no, out_trade_no, amount, status, replay is not None)


async def _record(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    row: Any,
    amount: Decimal,
    reason: str,
    actor: str,
    out_refund_no: str,
    now: datetime,
) -> None:
    """The refund in our books (the order ``row`` locked): the wallet owes it to the payer
    (refunds payable) from now on, whatever WeChat answers; the order's refunded grows."""
    wallet = ledger.wallet(row.account_id, row.number)
    posted = await post(
        conn,
        tenant_id,
        ledger.EntryDraft(
            idempotency_key=f"refund:{out_refund_no}",
            kind=ledger.EntryKind.REFUND,
            actor=actor,
            effective_at=now,
            legs=ledger.transfer(wallet, ledger.refunds_payable(), amount),
            reason=f"refund to WeChat Pay {row.out_trade_no}: {reason}",
        ),
    )
    await conn.execute(
        sa.text(
            "INSERT INTO payment_refund (id, tenant_id, order_id, out_refund_no, amount, "
            "reason, status, requested_at, requested_by, entry_id) VALUES "
            "(gen_random_uuid(), :t, :o, :r, :amt, :why, 'requested', :now, :by, :e)"
        ),
        {
            "t": tenant_id,
            "o": row.id,
            "r": out_refund_no,
            "amt": amount,
            "why": reason,
            "now": now,
            "by": actor,
            "e": posted.entry_id,
        },
    )
    await conn.execute(
        sa.text("UPDATE payment_order SET refunded = refunded + :amt WHERE id = :id"),
        {"amt": amount, "id": row.id},
    )
    await audit.record(
        conn,
        tenant_id,
        actor,
        "payment.refund",
        f"account:{row.number}",
        now,
        {
            "out_trade_no": row.out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": str(amount),
            "reason": reason,
        },
    )


@dataclass(frozen=True)
class ClosingRefund:
    out_refund_no: str
    out_trade_no: str
    amount: Decimal


async def refund_closing(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    amount: Decimal,
    reason: str,
    actor: str,
    key: str,
    now: datetime,
) -> list[ClosingRefund]:
    """消户 refunding to WeChat: up to ``amount`` of the closing account's wallet goes back
    to the WeChat payments it came from, newest first, each at most what it has left, in
    the closing's own transaction (``conn``); parts are ``<key>-<n>``. WeChat is asked
    after the commit (:func:`ask_closing`; the refund sweep asks again if that fails)."""
    if not re.fullmatch(r"[0-9A-Za-z_]{4,28}", key):
        raise Invalid("the refund key is 4 to 28 letters, digits or _")
    rows = (
        await conn.execute(
            sa.text(
                "SELECT o.id, o.out_trade_no, o.amount, o.refunded, o.account_id, a.number "
                "FROM payment_order o JOIN account a ON a.id = o.account_id "
                "WHERE o.account_id = :a AND o.status = 'paid' AND o.refunded < o.amount "
                "ORDER BY o.paid_at DESC, o.out_trade_no DESC FOR UPDATE OF o"
            ),
            {"a": account_id},
        )
    ).all()
    out: list[ClosingRefund] = []
    remaining = amount
    for n, row in enumerate(rows, start=1):
        if remaining <= 0:
            break
        part = min(remaining, row.amount - row.refunded)
        no = f"{key}-{n}"
        await _record(conn, tenant_id, row, part, reason, actor, no, now)
        out.append(ClosingRefund(no, row.out_trade_no, part))
        remaining -= part
    return out


async def ask_closing(
    pay: WeChatPayments, tenant_id: uuid.UUID, parts: list[ClosingRefund], reason: str
) -> list[RefundView]:
    """Ask WeChat for the refunds a closing recorded (safe to repeat)."""
    return [
        await request_refund(
            pay, tenant_id, p.out_trade_no, p.amount, reason, ACTOR, p.out_refund_no
        )
        for p in parts
    ]


async def _ask(
    pay: WeChatPayments,
    merchant: Merchant,
    tenant_id: uuid.UUID,
    out_refund_no: str,
    out_trade_no: str,
    amount: Decimal,
    total_fen: int,
    reason: str,
) -> str:
    """Ask WeChat for the refund (safe to repeat: out_refund_no is stable)."""
    client = await pay.clients.of(merchant)
    try:
        code, message = await pay._call(
            client.refund(
                out_refund_no=out_refund_no,
                amount={"refund": rules.fen(amount), "total": total_fen, "currency": "CNY"},
                out_trade_no=out_trade_no,
                reason=reason[:80],
                notify_url=pay.clients.refund_notify_url(tenant_id),
                sub_mchid=merchant.settings.sub_mchid,
            )
        )
    except PayUnavailable:
        log.warning("refund %s not asked yet: WeChat Pay unreachable", out_refund_no)
        return "requested"  # the sweep asks again
    body = answer(code, message)
    if code in (200, 201):
        return await record_state(pay, tenant_id, body)
    if 400 <= code < 500 and body.get("code") not in ("SYSTEM_ERROR", "FREQUENCY_LIMITED"):
        return await _give_back(pay, tenant_id, out_refund_no, "failed", body)
    return "requested"


async def record_state(pay: WeChatPayments, tenant_id: uuid.UUID, refund: dict[str, Any]) -> str:
    """Move a refund to the state WeChat reports (an answer, a query or a notification),
    posting what that state means once."""
    out_refund_no = str(refund.get("out_refund_no", ""))
    status = str(refund.get("status") or refund.get("refund_status") or "").lower()
    if status == "success":
        return await _paid(pay, tenant_id, out_refund_no, refund)
    if status == "closed":
        return await _give_back(pay, tenant_id, out_refund_no, "closed", refund)
    if status == "abnormal":
        async with pay.db.tenant(tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "UPDATE payment_refund SET status = 'abnormal', answer = CAST(:a AS jsonb) "
                    "WHERE out_refund_no = :r AND status IN ('requested', 'processing')"
                ),
                {"a": json.dumps(refund, ensure_ascii=False), "r": out_refund_no},
            )
            from cloud.payments.wechat.orders import _exception

            await _exception(conn, tenant_id, "refund_abnormal", out_refund_no, refund, pay.clock())
        return "abnormal"
    async with pay.db.tenant(tenant_id) as conn:
        await conn.execute(
            sa.text(
                "UPDATE payment_refund SET status = 'processing', refund_id = coalesce(:id, "
                "refund_id), answer = CAST(:a AS jsonb) WHERE out_refund_no = :r AND status = "
                "'requested'"
            ),
            {
                "id": refund.get("refund_id"),
                "a": json.dumps(refund, ensure_ascii=False),
                "r": out_refund_no,
            },
        )
    return "processing"


_LOCK_REFUND = sa.text(
    "SELECT r.id, r.amount, r.status, r.order_id, o.out_trade_no, o.mode, o.mchid, "
    "o.sub_mchid, o.account_id, a.number, a.wallet_id FROM payment_refund r "
    "JOIN payment_order o ON o.id = r.order_id JOIN account a ON a.id = o.account_id "
    "WHERE r.out_refund_no = :r FOR UPDATE OF r"
)


async def _paid(
    pay: WeChatPayments, tenant_id: uuid.UUID, out_refund_no: str, refund: dict[str, Any]
) -> str:
    now = pay.clock()
    async with pay.db.tenant(tenant_id) as conn:
        row = (await conn.execute(_LOCK_REFUND, {"r": out_refund_no})).first()
        if row is None:
            raise NotificationRefused(f"no refund {out_refund_no}", 400)
        if row.status in FINAL:
            return str(row.status)
        posted = await post(
            conn,
            tenant_id,
            ledger.EntryDraft(
                idempotency_key=f"refund-paid:{out_refund_no}",
                kind=ledger.EntryKind.REFUND,
                actor=ACTOR,
                effective_at=now,
                legs=ledger.transfer(
                    ledger.refunds_payable(),
                    ledger.clearing(clearing_channel(row.mode, row.mchid, row.sub_mchid)),
                    row.amount,
                ),
                reason=f"refund {out_refund_no} paid to WeChat Pay {row.out_trade_no}",
            ),
        )
        await conn.execute(
            sa.text(
                "UPDATE payment_refund SET status = 'success', settled_at = :now, refund_id = "
                "coalesce(:id, refund_id), paid_entry_id = :e, answer = CAST(:a AS jsonb) "
                "WHERE id = :rid"
            ),
            {
                "now": now,
                "id": refund.get("refund_id"),
                "e": posted.entry_id,
                "a": json.dumps(refund, ensure_ascii=False),
                "rid": row.id,
            },
        )
        await outbox.refund_paid(
            conn, tenant_id, row.account_id, row.amount, f"refund:{out_refund_no}", now
        )
    return "success"


async def _give_back(
    pay: WeChatPayments,
    tenant_id: uuid.UUID,
    out_refund_no: str,
    status: str,
    answer_: dict[str, Any],
) -> str:
    """A refund that will not be paid: its money returns to the wallet."""
    now = pay.clock()
    async with pay.db.tenant(tenant_id) as conn:
        row = (await conn.execute(_LOCK_REFUND, {"r": out_refund_no})).first()
        if row is None or row.status in FINAL:
            return str(row.status) if row is not None else status
        wallet = ledger.wallet(row.account_id, row.number)
        await post(
            conn,
            tenant_id,
            ledger.EntryDraft(
                idempotency_key=f"refund-back:{out_refund_no}",
                kind=ledger.EntryKind.REFUND,
                actor=ACTOR,
                effective_at=now,
                legs=ledger.transfer(ledger.refunds_payable(), wallet, row.amount),
                reason=f"refund {out_refund_no} {status}: back to the wallet",
            ),
        )
        await conn.execute(
            sa.text(
                "UPDATE payment_refund SET status = :s, settled_at = :now, answer = CAST(:a AS "
                "jsonb) WHERE id = :rid"
            ),
            {"s": status, "now": now, "a": json.dumps(answer_, ensure_ascii=False), "rid": row.id},
        )
        await conn.execute(
            sa.text("UPDATE payment_order SET refunded = refunded - :amt WHERE id = :o"),
            {"amt": row.amount, "o": row.order_id},
        )
        await _rerun_control(pay, conn, tenant_id, row.account_id, now)
    return status


async def refund_notified(
    pay: WeChatPayments, tenant: str, headers: dict[str, str], body: bytes
) -> str:
    """WeChat's refund notification (REFUND.SUCCESS / REFUND.CLOSED / REFUND.ABNORMAL),
    verified as a payment notification is."""
    now = pay.clock()
    headers = {k.lower(): v for k, v in headers.items()}
    try:
        rules.check_headers(headers, now)
    except rules.Refused as exc:
        raise NotificationRefused(str(exc), exc.status) from None
    _json_body(body)
    tenant_id = tenant_of(tenant)
    resource = await pay.verified(tenant_id, headers, body)
    return await record_state(pay, tenant_id, resource)


async def sweep_refunds(pay: WeChatPayments, limit: int = 100) -> int:
    """Ask again for refunds WeChat never answered; query those still processing."""
    moved = 0
    for tenant_id in await pay.db.tenant_ids():
        async with pay.db.tenant(tenant_id) as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        "SELECT r.out_refund_no, r.status, r.amount, r.reason, o.out_trade_no, "
                        "o.amount_fen FROM payment_refund r JOIN payment_order o ON o.id = "
                        "r.order_id WHERE r.status IN ('requested', 'processing') "
                        "ORDER BY r.requested_at LIMIT :lim"
                    ),
                    {"lim": limit},
                )
            ).all()
        if not rows:
            continue
        try:
            merchant = await pay.merchant(tenant_id)
        except (Invalid, NotFound) as exc:  # one group's broken settings stop no other
            log.error("refunds of tenant %s not asked again: %s", tenant_id, exc)
            continue
        client = await pay.clients.of(merchant)
        for r in rows:
            try:
                if r.status == "requested":
                    status = await _ask(
                        pay,
                        merchant,
                        tenant_id,
                        r.out_refund_no,
                        r.out_trade_no,
                        r.amount,
                        r.amount_fen,
                        r.reason,
                    )
                else:
                    code, message = await pay._call(
                        client.query_refund(r.out_refund_no, sub_mchid=merchant.settings.sub_mchid)
                    )
                    if code != 200:
                        continue
                    status = await record_state(pay, tenant_id, answer(code, message))
            except (PayUnavailable, NotificationRefused) as exc:
                log.warning("refund %s not settled: %s", r.out_refund_no, exc)
                continue
            moved += status != r.status
    return moved
