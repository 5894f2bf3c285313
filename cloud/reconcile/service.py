"""Reconciliation runs (DESIGN §14): a merchant's trade bill of one day fetched with
``wechatpayv3`` (tradebill → download_url → download), its SHA1 checked against
``hash_value`` (a wrong hash is refused and tried again later: the state says so), read,
matched against our payment orders and refunds, and every difference stored once as an
exception. Resolving one: credit a missed payment through the normal settle path (the
same ``pay:<out_trade_no>`` key: exactly once), credit and refund it to the payer, or write
it off with a reason (``finance.write_off``; the difference posted between the merchant's
clearing account and adjustments). Every resolution is audited."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.api.fields import has_control
from cloud.auth import Principal
from cloud.errors import Conflict, Forbidden, Invalid, NotFound
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.payments.wechat.merchant import Merchant, PayUnavailable, answer, load_merchant
from cloud.payments.wechat.orders import NotificationRefused, WeChatPayments
from cloud.payments.wechat.refunds import request_refund
from cloud.reconcile import bill as bills
from cloud.reconcile.match import Difference, OurOrder, OurRefund, match

log = logging.getLogger(__name__)

DAYS_BACK = 90  # WeChat keeps trade bills for three months
BILL_READY = time(10, 0)  # WeChat's bill of a day is ready the next morning (China time)
FIRST_RETRY = timedelta(minutes=15)
LAST_RETRY = timedelta(hours=6)
STALE_PENDING = timedelta(minutes=10)  # a run left pending (the worker stopped) is due again
REASON_MAX = 500
ACTIONS = ("credit", "refund", "write_off")
VIEW = "finance.reconcile"
WRITE_OFF = "finance.write_off"


@dataclass(frozen=True)
class RunView:
    id: uuid.UUID
    mchid: str
    bill_date: date
    state: str
    attempts: int
    next_try_at: datetime | None
    error: str | None
    lines: int
    paid_total: Decimal
    refund_total: Decimal
    fee_total: Decimal
    open: int
    found: int
    created_at: datetime
    matched_at: datetime | None


@dataclass(frozen=True)
class ExceptionView:
    id: uuid.UUID
    run_id: uuid.UUID
    kind: str
    ref: str
    out_trade_no: str | None
    out_refund_no: str | None
    line_no: int | None
    ours: Decimal | None
    theirs: Decimal | None
    clearing_delta: Decimal
    detail: dict[str, Any]
    created_at: datetime
    resolution: str | None
    reason: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    entry_id: uuid.UUID | None = None  # the credit or the write-off's journal entry

    @property
    def creditable(self) -> bool:
        """A payment WeChat took for an order of ours we never credited."""
        return self.kind == "theirs_only" and self.detail.get("ours") in ("created", "closed")

    @property
    def actions(self) -> tuple[str, ...]:
        if self.resolution is not None:
            return ()
        return ("credit", "refund", "write_off") if self.creditable else ("write_off",)


def china_day(moment: datetime) -> date:
    return moment.astimezone(bills.CST).date()


def check_day(day: date, now: datetime) -> None:
    """A bill day WeChat can give: from yesterday (China time) back 90 days."""
    today = china_day(now)
    if day >= today:
        raise Invalid("a day's trade bill is ready the next morning: choose yesterday or before")
    if day < today - timedelta(days=DAYS_BACK):
        raise Invalid("WeChat Pay keeps trade bills for 90 days: choose a later day")


def retry_after(attempts: int) -> timedelta:
    """15 minutes after the first failure, doubling, at most six hours."""
    delay: timedelta = FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 10)
    return min(delay, LAST_RETRY)


def _fen(value: Decimal) -> int:
    return int(value * 100)


def _yuan(fen: int | None) -> Decimal | None:
    return None if fen is None else (Decimal(fen) / 100).quantize(Decimal("0.01"))


def _tenant_wide(who: Principal) -> None:
    who.require(VIEW)
    if who.scope != "tenant":
        raise Forbidden(
            "reconciliation covers the whole property group: a tenant-wide scope is needed"
        )


_RUN_COLUMNS = (
    "r.id, r.mchid, r.bill_date, r.state, r.attempts, r.next_try_at, r.error, r.lines, "
    "r.paid_total, r.refund_total, r.fee_total, r.created_at, r.matched_at, "
    "(SELECT count(*) FROM recon_exception e WHERE e.run_id = r.id AND e.resolution IS NULL) "
    "AS open, (SELECT count(*) FROM recon_exception e WHERE e.run_id = r.id AND "
    "(e.resolution IS NULL OR e.resolution <> 'cleared')) AS found"
)


def _run_view(row: Any) -> RunView:
    return RunView(
        row.id, row.mchid, row.bill_date, row.state, row.attempts, row.next_try_at, row.error,
        row.lines, row.paid_total, row.refund_total, row.fee_total, int(row.open),
        int(row.found), row.created_at, row.matched_at,
    )  # fmt: skip


def _exception_view(row: Any) -> ExceptionView:
    return ExceptionView(
        row.id, row.run_id, row.kind, row.ref, row.out_trade_no, row.out_refund_no,
        row.line_no, row.ours, row.theirs, row.clearing_delta, dict(row.detail),
        row.created_at, row.resolution, row.reason, row.resolved_by, row.resolved_at,
        row.entry_id,
    )  # fmt: skip


class Reconciler:
    """Runs and resolutions; the worker, the CLI and the console call the same methods."""

    def __init__(self, pay: WeChatPayments, clock: Callable[[], datetime] | None = None) -> None:
        self.pay = pay
        self.db = pay.db
        self.clock = clock or pay.clock

    # --- a run --------------------------------------------------------------------------

    async def reconcile(self, tenant_id: uuid.UUID, day: date, actor: str) -> RunView:
        """Fetch, check and match ``day``'s bill of the tenant's merchant (again, when it
        was done before: exceptions found before are kept, those gone are cleared)."""
        now = self.clock()
        check_day(day, now)
        async with self.db.tenant(tenant_id) as conn:
            merchant = await load_merchant(conn, self.pay.box, tenant_id)
            run_id = await self._open_run(conn, tenant_id, merchant, day, actor, now)
        try:
            data, hash_value = await self._fetch(merchant, day)
        except (PayUnavailable, bills.BillError) as exc:
            return await self._not_done(tenant_id, run_id, "failed", str(exc), None)
        if data is not None and not bills.hash_ok(data, "SHA1", hash_value):
            why = f"the file's SHA1 {bills.digest(data)} is not WeChat's hash_value {hash_value}"
            log.warning("trade bill of %s refused: %s", day, why)
            return await self._not_done(tenant_id, run_id, "refused", why, hash_value)
        try:
            bill = bills.parse(data.decode("utf-8")) if data is not None else bills.Bill()
        except (UnicodeDecodeError, bills.BillError) as exc:
            why = f"unreadable bill: {exc}"
            return await self._not_done(tenant_id, run_id, "failed", why, hash_value)
        return await self._match(tenant_id, run_id, merchant, day, bill, hash_value)

    async def _open_run(
        self,
        conn: AsyncConnection,
        tenant_id: uuid.UUID,
        merchant: Merchant,
        day: date,
        actor: str,
        now: datetime,
    ) -> uuid.UUID:
        s = merchant.settings
        run_id = await conn.scalar(
            sa.text(
                "INSERT INTO recon_run (id, tenant_id, mchid, clearing, bill_date, state, "
                "next_try_at, requested_by, created_at) VALUES (gen_random_uuid(), :t, :m, :c, "
                ":d, 'pending', :due, :by, :now) ON CONFLICT ON CONSTRAINT recon_run_once DO "
                "UPDATE SET next_try_at = EXCLUDED.next_try_at, requested_by = EXCLUDED."
                "requested_by, state = CASE WHEN recon_run.state = 'matched' THEN 'matched' "
                "ELSE 'pending' END RETURNING id"
            ),
            {
                "t": tenant_id,
                "m": s.sub_mchid or s.mchid,
                "c": merchant.clearing_code,
                "d": day,
                "due": now + STALE_PENDING,
                "by": actor,
                "now": now,
            },
        )
        assert isinstance(run_id, uuid.UUID)
        return run_id

    async def _fetch(self, merchant: Merchant, day: date) -> tuple[bytes | None, str]:
        """The bill's file (decompressed) and WeChat's hash of it; None: no bill that day."""
        client = await self.pay.clients.of(merchant)
        code, message = await self.pay._call(
            client.trade_bill(
                bill_date=day.isoformat(),
                bill_type="ALL",
                tar_type="GZIP",
                sub_mchid=merchant.settings.sub_mchid,
            )
        )
        body = answer(code, message)
        if code == 400 and body.get("code") == "NO_STATEMENT_EXIST":
            return None, ""
        url, hash_value = body.get("download_url"), body.get("hash_value")
        if code != 200 or not isinstance(url, str) or not isinstance(hash_value, str):
            raise PayUnavailable(f"WeChat Pay gave no trade bill: {code} {body.get('code', '')}")
        if str(body.get("hash_type", "SHA1")).upper() != "SHA1":
            raise PayUnavailable(f"unknown hash type {body.get('hash_type')!r}")
        code, content = await self.pay._call(client.download_bill(url))
        if code != 200:
            raise PayUnavailable(f"the bill's download answered {code}")
        raw = content.encode() if isinstance(content, str) else bytes(content)
        return bills.unpack(raw), hash_value

    async def _not_done(
        self, tenant_id: uuid.UUID, run_id: uuid.UUID, state: str, why: str, hash_value: str | None
    ) -> RunView:
        now = self.clock()
        async with self.db.tenant(tenant_id) as conn:
            attempts = await conn.scalar(
                sa.text(
                    "UPDATE recon_run SET attempts = attempts + 1, error = :e, hash_value = "
                    "coalesce(:h, hash_value), fetched_at = :now, state = CASE WHEN state = "
                    "'matched' THEN 'matched' ELSE :s END WHERE id = :r RETURNING attempts"
                ),
                {
                    "s": state,
                    "e": why[:2000],
                    "h": (hash_value or "")[:64] or None,
                    "now": now,
                    "r": run_id,
                },
            )
            await conn.execute(
                sa.text("UPDATE recon_run SET next_try_at = :due WHERE id = :r"),
                {"due": now + retry_after(int(attempts or 1)), "r": run_id},
            )
            return await self._run(conn, run_id)

    async def _match(
        self,
        tenant_id: uuid.UUID,
        run_id: uuid.UUID,
        merchant: Merchant,
        day: date,
        bill: bills.Bill,
        hash_value: str,
    ) -> RunView:
        now = self.clock()
        start = datetime.combine(day, time(0), bills.CST)
        span = {"start": start, "end": start + timedelta(days=1)}
        receiver = merchant.settings.sub_mchid or merchant.settings.mchid
        async with self.db.tenant(tenant_id) as conn:
            await conn.execute(
                sa.text("SELECT 1 FROM recon_run WHERE id = :r FOR UPDATE"), {"r": run_id}
            )
            orders = await _our_orders(conn, bill, receiver, span)
            refunds = await _our_refunds(conn, bill, receiver, span)
            found = match(bill, orders, refunds)
            await _store(conn, tenant_id, run_id, found, now)
            await conn.execute(
                sa.text(
                    "UPDATE recon_run SET state = 'matched', error = NULL, next_try_at = NULL, "
                    "hash_value = :h, lines = :n, paid_total = :paid, refund_total = :back, "
                    "fee_total = :fee, fetched_at = :now, matched_at = :now, attempts = "
                    "attempts + 1 WHERE id = :r"
                ),
                {
                    "h": hash_value[:64] or None,
                    "n": bill.lines,
                    "paid": _yuan(bill.settle_fen),
                    "back": _yuan(bill.refund_fen),
                    "fee": bill.fee,
                    "now": now,
                    "r": run_id,
                },
            )
            return await self._run(conn, run_id)

    async def _run(self, conn: AsyncConnection, run_id: uuid.UUID) -> RunView:
        row = (
            await conn.execute(
                sa.text(f"SELECT {_RUN_COLUMNS} FROM recon_run r WHERE r.id = :r"), {"r": run_id}
            )
        ).first()
        if row is None:
            raise NotFound("reconciliation run not found")
        return _run_view(row)

    # --- the worker ---------------------------------------------------------------------

    async def morning(self, tenants: list[uuid.UUID] | None = None) -> dict[str, int]:
        """Yesterday's bill of every merchant (from 10:00 China time), and the runs due
        again (refused, failed, or left pending) within the last 90 days; ``tenants``:
        only those property groups'."""
        now = self.clock()
        today = china_day(now)
        counts = {"matched": 0, "refused": 0, "failed": 0}
        for tenant_id in tenants if tenants is not None else await self.db.tenant_ids():
            async with self.db.tenant(tenant_id) as conn:
                receiver = await conn.scalar(
                    sa.text("SELECT coalesce(sub_mchid, mchid) FROM merchant WHERE tenant_id = :t"),
                    {"t": tenant_id},
                )
                if receiver is None:
                    continue
                days = list(
                    await conn.scalars(
                        sa.text(
                            "SELECT bill_date FROM recon_run WHERE mchid = :m AND state <> "
                            "'matched' AND next_try_at <= :now AND bill_date >= :oldest "
                            "ORDER BY bill_date"
                        ),
                        {"m": receiver, "now": now, "oldest": today - timedelta(days=DAYS_BACK)},
                    )
                )
                yesterday = today - timedelta(days=1)
                if now.astimezone(bills.CST).time() >= BILL_READY and yesterday not in days:
                    done = await conn.scalar(
                        sa.text("SELECT 1 FROM recon_run WHERE mchid = :m AND bill_date = :d"),
                        {"m": receiver, "d": yesterday},
                    )
                    if not done:
                        days.append(yesterday)
            for day in days:
                try:
                    run = await self.reconcile(tenant_id, day, "worker:reconcile")
                except (NotFound, Invalid) as exc:  # the merchant went away meanwhile
                    log.warning("reconciliation of %s skipped: %s", day, exc)
                    continue
                counts[run.state] = counts.get(run.state, 0) + 1
        return counts

    # --- what finance reads -------------------------------------------------------------

    async def runs(self, who: Principal, limit: int = 100) -> list[RunView]:
        _tenant_wide(who)
        async with self.db.tenant(who.tenant_id) as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        f"SELECT {_RUN_COLUMNS} FROM recon_run r "
                        "ORDER BY r.bill_date DESC, r.mchid LIMIT :lim"
                    ),
                    {"lim": limit},
                )
            ).all()
        return [_run_view(r) for r in rows]

    async def run_detail(
        self, who: Principal, run_id: uuid.UUID
    ) -> tuple[RunView, list[ExceptionView]]:
        _tenant_wide(who)
        async with self.db.tenant(who.tenant_id) as conn:
            run = await self._run(conn, run_id)
            rows = (
                await conn.execute(
                    sa.text(
                        "SELECT * FROM recon_exception WHERE run_id = :r "
                        "ORDER BY resolution IS NOT NULL, kind, line_no NULLS LAST, ref"
                    ),
                    {"r": run_id},
                )
            ).all()
        return run, [_exception_view(r) for r in rows]

    # --- resolutions --------------------------------------------------------------------

    async def resolve(
        self, who: Principal, exception_id: uuid.UUID, action: str, reason: str
    ) -> ExceptionView:
        """Resolve an open exception: ``credit`` (a payment we never credited, through the
        normal settle path, once), ``refund`` (credit it, then refund it to the payer) or
        ``write_off`` (with a reason and ``finance.write_off``)."""
        _tenant_wide(who)
        if action not in ACTIONS:
            raise Invalid("choose credit, refund or write off")
        reason = reason.strip()
        if action == "write_off":
            who.require(WRITE_OFF)
        if action != "credit" and not reason:
            raise Invalid("give a reason")
        if len(reason) > REASON_MAX or has_control(reason, lines=True):
            raise Invalid("the reason is at most 500 characters, without control characters")
        tenant_id = who.tenant_id
        async with self.db.tenant(tenant_id) as conn:
            found = await _exception(conn, exception_id)
        if found.resolution is not None:
            raise Conflict("this exception is already resolved")
        if action == "write_off":
            return await self._write_off(who, exception_id, reason)
        if not found.creditable or found.out_trade_no is None:
            raise Conflict("only a payment WeChat took for one of our orders can be credited")
        entry_id = await self._credit(tenant_id, found.out_trade_no)
        if action == "refund":
            amount = _yuan(_fen(found.theirs or Decimal(0)))
            assert amount is not None
            await request_refund(
                self.pay, tenant_id, found.out_trade_no, amount, reason, who.actor,
                f"RC{exception_id.hex[:24]}",
            )  # fmt: skip
        resolution = "credited" if action == "credit" else "refunded"
        return await self._mark(who, found, resolution, reason, entry_id)

    async def _credit(self, tenant_id: uuid.UUID, out_trade_no: str) -> uuid.UUID | None:
        """Ask WeChat for the transaction and settle it as a notification would."""
        merchant = await self.pay.merchant(tenant_id)
        transaction = await self.pay._query(merchant, out_trade_no)
        if transaction.get("trade_state") not in ("SUCCESS", "REFUND"):
            raise Conflict(
                f"WeChat Pay says order {out_trade_no} is {transaction.get('trade_state')}: "
                "nothing to credit"
            )
        transaction = {**transaction, "trade_state": "SUCCESS"}
        try:
            await self.pay.settle(tenant_id, transaction, "recon")
        except NotificationRefused as exc:
            raise Conflict(f"order {out_trade_no} cannot be credited: {exc}") from None
        async with self.db.tenant(tenant_id) as conn:
            entry = await conn.scalar(
                sa.text("SELECT entry_id FROM payment_order WHERE out_trade_no = :no"),
                {"no": out_trade_no},
            )
        return entry if isinstance(entry, uuid.UUID) else None

    async def _mark(
        self,
        who: Principal,
        found: ExceptionView,
        resolution: str,
        reason: str,
        entry_id: uuid.UUID | None,
    ) -> ExceptionView:
        now = self.clock()
        async with self.db.tenant(who.tenant_id) as conn:
            done = await conn.scalar(
                sa.text(
                    "UPDATE recon_exception SET resolution = :res, reason = :why, resolved_by "
                    "= :by, resolved_at = :now, entry_id = :e WHERE id = :id AND resolution IS "
                    "NULL RETURNING id"
                ),
                {
                    "res": resolution,
                    "why": reason or None,
                    "by": who.actor,
                    "now": now,
                    "e": entry_id,
                    "id": found.id,
                },
            )
            if done is None:  # resolved meanwhile (the credit itself happened once)
                raise Conflict("this exception is already resolved")
            await audit.record(
                conn, who.tenant_id, who.actor, f"recon.{resolution}",
                f"recon_exception:{found.id}", now, _audit_detail(found, reason),
            )  # fmt: skip
            return await _exception(conn, found.id)

    async def _write_off(
        self, who: Principal, exception_id: uuid.UUID, reason: str
    ) -> ExceptionView:
        now = self.clock()
        async with self.db.tenant(who.tenant_id) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT e.*, r.clearing, r.bill_date FROM recon_exception e JOIN "
                        "recon_run r ON r.id = e.run_id WHERE e.id = :id FOR UPDATE OF e"
                    ),
                    {"id": exception_id},
                )
            ).first()
            if row is None:
                raise NotFound("exception not found")
            if row.resolution is not None:
                raise Conflict("this exception is already resolved")
            entry_id = None
            delta: Decimal = row.clearing_delta
            if delta:
                clearing = ledger.clearing(row.clearing)
                legs = (
                    ledger.transfer(clearing, ledger.adjustments(), delta)
                    if delta > 0
                    else ledger.transfer(ledger.adjustments(), clearing, -delta)
                )
                posted = await post(
                    conn,
                    who.tenant_id,
                    ledger.EntryDraft(
                        idempotency_key=f"recon-write-off:{exception_id}",
                        kind=ledger.EntryKind.ADJUSTMENT,
                        actor=who.actor,
                        effective_at=now,
                        legs=legs,
                        reason=f"reconciliation {row.bill_date} {row.kind} {row.ref}: {reason}",
                    ),
                )
                entry_id = posted.entry_id
            await conn.execute(
                sa.text(
                    "UPDATE recon_exception SET resolution = 'written_off', reason = :why, "
                    "resolved_by = :by, resolved_at = :now, entry_id = :e WHERE id = :id"
                ),
                {"why": reason, "by": who.actor, "now": now, "e": entry_id, "id": exception_id},
            )
            found = _exception_view(row)
            await audit.record(
                conn, who.tenant_id, who.actor, "recon.written_off",
                f"recon_exception:{exception_id}", now, _audit_detail(found, reason),
            )  # fmt: skip
            return await _exception(conn, exception_id)


def _audit_detail(found: ExceptionView, reason: str) -> dict[str, str]:
    detail = {"kind": found.kind, "ref": found.ref, "clearing_delta": str(found.clearing_delta)}
    if found.out_trade_no:
        detail["out_trade_no"] = found.out_trade_no
    if reason:
        detail["reason"] = reason
    return detail


async def _exception(conn: AsyncConnection, exception_id: uuid.UUID) -> ExceptionView:
    row = (
        await conn.execute(
            sa.text("SELECT * FROM recon_exception WHERE id = :id"), {"id": exception_id}
        )
    ).first()
    if row is None:
        raise NotFound("exception not found")
    return _exception_view(row)


async def _our_orders(
    conn: AsyncConnection, bill: bills.Bill, receiver: str, span: dict[str, datetime]
) -> dict[str, OurOrder]:
    named = sorted({r.out_trade_no for r in bill.rows if not r.is_refund})
    rows = await conn.execute(
        sa.text(
            "SELECT out_trade_no, status, amount_fen, paid_at >= :start AND paid_at < :end "
            "AS on_day FROM payment_order WHERE out_trade_no = ANY(:nos) OR (status = 'paid' "
            "AND paid_at >= :start AND paid_at < :end AND coalesce(sub_mchid, mchid) = :m)"
        ),
        {**span, "nos": named, "m": receiver},
    )
    return {
        r.out_trade_no: OurOrder(r.out_trade_no, r.status, r.amount_fen, bool(r.on_day))
        for r in rows
    }


async def _our_refunds(
    conn: AsyncConnection, bill: bills.Bill, receiver: str, span: dict[str, datetime]
) -> dict[str, OurRefund]:
    named = sorted({r.out_refund_no for r in bill.rows if r.out_refund_no is not None})
    rows = await conn.execute(
        sa.text(
            "SELECT r.out_refund_no, o.out_trade_no, r.amount, r.status, r.status = 'success' "
            "AND r.settled_at >= :start AND r.settled_at < :end AS on_day FROM payment_refund r "
            "JOIN payment_order o ON o.id = r.order_id WHERE r.out_refund_no = ANY(:nos) OR "
            "(r.status = 'success' AND r.settled_at >= :start AND r.settled_at < :end AND "
            "coalesce(o.sub_mchid, o.mchid) = :m)"
        ),
        {**span, "nos": named, "m": receiver},
    )
    return {
        r.out_refund_no: OurRefund(
            r.out_refund_no, r.out_trade_no, _fen(r.amount), r.status, bool(r.on_day)
        )
        for r in rows
    }


async def _store(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    run_id: uuid.UUID,
    found: list[Difference],
    now: datetime,
) -> None:
    """Each difference once (a run again finds the same ones: kept as they are); open
    exceptions the bill no longer shows are cleared."""
    if found:
        await conn.execute(
            sa.text(
                "INSERT INTO recon_exception (id, tenant_id, run_id, kind, ref, out_trade_no, "
                "out_refund_no, line_no, ours, theirs, clearing_delta, detail, created_at) "
                "VALUES (gen_random_uuid(), :t, :r, :kind, :ref, :no, :rno, :line, :ours, "
                ":theirs, :delta, CAST(:detail AS jsonb), :now) "
                "ON CONFLICT ON CONSTRAINT recon_exception_once DO NOTHING"
            ),
            [
                {
                    "t": tenant_id,
                    "r": run_id,
                    "kind": d.kind,
                    "ref": d.ref[:80],
                    "no": d.out_trade_no[:64] if d.out_trade_no else None,
                    "rno": d.out_refund_no[:64] if d.out_refund_no else None,
                    "line": d.line_no,
                    "ours": _yuan(d.ours_fen),
                    "theirs": _yuan(d.theirs_fen),
                    "delta": _yuan(d.clearing_delta_fen),
                    "detail": json.dumps(d.detail, ensure_ascii=False),
                    "now": now,
                }
                for d in found
            ],
        )
    await conn.execute(
        sa.text(
            "UPDATE recon_exception SET resolution = 'cleared', resolved_at = :now, "
            "resolved_by = 'reconcile', reason = 'not in the latest bill' WHERE run_id = :r "
            "AND resolution IS NULL AND NOT (kind || ' ' || ref = ANY(:keys))"
        ),
        {"now": now, "r": run_id, "keys": [f"{d.kind} {d.ref[:80]}" for d in found]},
    )
