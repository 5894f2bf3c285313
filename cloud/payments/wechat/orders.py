"""Payment orders and their money (DESIGN §7): an order for a bound account, WeChat's
notification verified, decrypted, matched and credited exactly once (``pay:<out_trade_no>``)
under the order's lock, the silent order found by query, the expired one closed.

Crediting is one transaction: the order row locked, the journal entry (the wallet against
the merchant's WeChat clearing account), the order marked paid, control re-run (a top-up
restores at once), the tenant told. A duplicate finds the order credited and changes
nothing; a paid order we had already closed is still credited (the money was taken)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.control.service import CommandTiming, after_topup
from cloud.db import Database
from cloud.errors import Conflict, Invalid, Malformed, NotFound
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.notify import outbox
from cloud.payments.wechat import rules
from cloud.payments.wechat.merchant import (
    Clients,
    Merchant,
    PayUnavailable,
    answer,
    clearing_channel,
    load_merchant,
)
from cloud.payments.wechat.secrets import SecretBox
from cloud.payments.wechat.settings import PaySettings
from miniapp_api.identity import AppUser, bound_account

log = logging.getLogger(__name__)
ACTOR = "wechatpay"


@dataclass(frozen=True)
class OrderView:
    out_trade_no: str
    account_number: str
    amount: Decimal
    status: str  # created | paid | closed
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    balance: Decimal | None = None  # the wallet's, once paid
    pay: dict[str, str] | None = None  # wx.requestPayment's parameters (a new order)


@dataclass(frozen=True)
class Outcome:
    """What a notification did: ``credited`` (first time), ``duplicate``, ``ignored``
    (a state that moves no money, e.g. NOTPAY) or ``refused`` (an exception opened)."""

    result: str
    out_trade_no: str
    reason: str = ""


MERCHANT_TTL_S = 60.0
SETTLE_BATCH = 64  # settlements of one property group in one transaction, at most
SETTLED_KEPT = 100_000  # credited orders remembered per process (duplicates answered at once)


_Item = tuple[dict[str, Any], str]  # (WeChat's transaction, how we heard of it)


class Settler:
    """Settlements of one property group run in batches, one transaction each: whatever
    arrives while a batch runs forms the next one (group commit, as PostgreSQL does it for
    WAL). A batch that fails is run again one settlement per transaction, so one bad
    payment fails alone."""

    def __init__(
        self,
        run: Callable[[uuid.UUID, list[_Item]], Awaitable[list[Outcome]]],
        size: int = SETTLE_BATCH,
    ) -> None:
        self._run = run
        self._size = size
        self._waiting: dict[uuid.UUID, list[tuple[_Item, asyncio.Future[Outcome]]]] = {}
        self._draining: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def submit(self, tenant_id: uuid.UUID, resource: dict[str, Any], via: str) -> Outcome:
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant_id, []).append(((resource, via), done))
        if tenant_id not in self._draining:
            self._draining[tenant_id] = asyncio.create_task(self._drain(tenant_id))
        return await done

    async def _drain(self, tenant_id: uuid.UUID) -> None:
        try:
            while waiting := self._waiting.get(tenant_id):
                batch, self._waiting[tenant_id] = waiting[: self._size], waiting[self._size :]
                await self._one(tenant_id, batch)
        finally:
            self._waiting.pop(tenant_id, None)
            del self._draining[tenant_id]

    async def _one(
        self, tenant_id: uuid.UUID, batch: list[tuple[_Item, asyncio.Future[Outcome]]]
    ) -> None:
        try:
            outcomes = await self._run(tenant_id, [item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("a batch of %d settlements failed (%s); one by one", len(batch), exc)
            for single in batch:
                await self._one(tenant_id, [single])
            return
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if not done.done():
                done.set_result(outcome)


def tenant_of(tenant: str) -> uuid.UUID:
    """The property group a notify URL names (``/pay/notify/{tenant_id}``)."""
    try:
        return uuid.UUID(tenant)
    except ValueError:
        raise NotFound("no such property group") from None


class NotificationRefused(Exception):
    """A notification that is not ours to credit (4xx): bad signature, stale, a probe, or
    a transaction that does not match its order (then an exception is open for finance)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.status = status


def _facts(row: Any) -> rules.OrderFacts:
    return rules.OrderFacts(
        out_trade_no=row.out_trade_no,
        mode=row.mode,
        mchid=row.mchid,
        sub_mchid=row.sub_mchid,
        appid=row.appid,
        sub_appid=row.sub_appid,
        amount_fen=row.amount_fen,
    )


def _parse_time(text: str | None, default: datetime) -> datetime:
    if not text:
        return default
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return default
    return value if value.tzinfo is not None else default


_SITE_LIMITS = sa.text(
    "SELECT s.id, s.topup_min, s.topup_max FROM service_point sp JOIN site s ON s.id = "
    "sp.site_id WHERE sp.account_id = :a ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1"
)
_ORDER_COLUMNS = (
    "o.id, o.tenant_id, o.out_trade_no, o.account_id, o.amount, o.amount_fen, o.mode, "
    "o.mchid, o.sub_mchid, o.appid, o.sub_appid, o.status, o.created_at, o.expires_at, "
    "o.paid_at, o.entry_id, o.closed_at, o.refunded, o.transaction_id, a.number, a.status "
    "AS account_status"
)


class WeChatPayments:
    """The payment service of the tenant app and the worker."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        settings: PaySettings,
        timing: CommandTiming,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.box = box
        self.settings = settings
        self.timing = timing
        self.clock = clock
        self.clients = Clients(settings.base_url, settings.public_base_url, settings.timeout_s)
        # the merchants notifications are verified with, kept MERCHANT_TTL_S (a notification
        # that does not verify with a kept merchant is tried again with the stored one)
        self._kept: dict[uuid.UUID, tuple[Merchant, float]] = {}
        self._settler = Settler(self._settle_batch)
        # orders this process has seen credited (committed): WeChat's duplicates of their
        # notification are answered without a transaction (most of a storm is duplicates)
        self._settled: OrderedDict[tuple[uuid.UUID, str], None] = OrderedDict()

    async def close(self) -> None:
        await self.clients.close()

    async def merchant(self, tenant_id: uuid.UUID) -> Merchant:
        async with self.db.tenant(tenant_id) as conn:
            return await load_merchant(conn, self.box, tenant_id)

    # --- orders -------------------------------------------------------------------------

    async def create_order(
        self, user: AppUser, number: str, amount: Decimal, client_ip: str = "127.0.0.1"
    ) -> OrderView:
        """An order to top up ``number`` (bound by ``user``) by ``amount``: the site's limits
        checked, ``out_trade_no`` from the database, 15 minutes to pay; with the signed
        parameters of ``wx.requestPayment`` (a user who logged in by phone, outside
        WeChat, gets WeChat's H5 payment page instead: ``pay["h5_url"]``)."""
        now = self.clock()
        expires = now + timedelta(minutes=self.settings.order_minutes)
        async with self.db.tenant(user.tenant_id) as conn:
            account = await bound_account(conn, user, number)
            if account.status == "closed":
                raise Conflict(f"account {number} is closed")
            merchant = await load_merchant(conn, self.box, user.tenant_id)
            site = (await conn.execute(_SITE_LIMITS, {"a": account.account_id})).first()
            minimum = site.topup_min if site is not None else Decimal("1.00")
            maximum = site.topup_max if site is not None else Decimal("5000.00")
            amount_fen = rules.check_topup(amount, minimum, maximum)
            openid = await conn.scalar(
                sa.text("SELECT openid FROM app_user WHERE id = :u AND appid = :app"),
                {"u": user.user_id, "app": merchant.login_appid},
            )
            serial = await conn.scalar(sa.text("SELECT nextval('payment_order_serial')"))
            out_trade_no = f"PC{now.strftime('%Y%m%d')}{serial:012d}"
            s = merchant.settings
            order_id = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO payment_order (id, tenant_id, out_trade_no, account_id, "
                    "user_id, site_id, amount, amount_fen, mode, mchid, sub_mchid, appid, "
                    "sub_appid, openid, status, created_at, expires_at) VALUES (:id, :t, :no, "
                    ":a, :u, :site, :amt, :fen, :mode, :mchid, :sub, :appid, :subapp, :openid, "
                    "'created', :now, :exp)"
                ),
                {
                    "id": order_id,
                    "t": user.tenant_id,
                    "no": out_trade_no,
                    "a": account.account_id,
                    "u": user.user_id,
                    "site": site.id if site is not None else None,
                    "amt": amount,
                    "fen": amount_fen,
                    "mode": merchant.mode,
                    "mchid": s.mchid,
                    "sub": s.sub_mchid,
                    "appid": s.appid,
                    "subapp": s.sub_appid,
                    "openid": openid,
                    "now": now,
                    "exp": expires,
                },
            )
        # the order exists before WeChat hears of it: a notification always finds it
        pay = await self._prepay(
            merchant, out_trade_no, number, amount_fen, expires, openid, client_ip
        )
        async with self.db.tenant(user.tenant_id) as conn:
            await conn.execute(
                sa.text("UPDATE payment_order SET prepay_id = :p WHERE id = :id"),
                {"p": pay.get("prepay_id"), "id": order_id},
            )
        return OrderView(out_trade_no, number, amount, "created", now, expires, None, None, pay)

    async def _prepay(
        self,
        merchant: Merchant,
        out_trade_no: str,
        number: str,
        amount_fen: int,
        expires: datetime,
        openid: str | None,
        client_ip: str,
    ) -> dict[str, str]:
        from wechatpayv3.async_.type import WeChatPayType

        client = await self.clients.of(merchant)
        s = merchant.settings
        common: dict[str, Any] = {
            "description": f"预付费充值 {number}",
            "out_trade_no": out_trade_no,
            "amount": {"total": amount_fen, "currency": "CNY"},
            "time_expire": expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "attach": number,
        }
        if merchant.partner:
            common["sub_mchid"] = s.sub_mchid
            if s.sub_appid:
                common["sub_appid"] = s.sub_appid
        if openid:
            payer = (
                {"sub_openid": openid}
                if merchant.partner and s.sub_appid
                else ({"sp_openid": openid} if merchant.partner else {"openid": openid})
            )
            code, message = await self._call(
                client.pay(**common, payer=payer, pay_type=WeChatPayType.JSAPI)
            )
        else:
            scene = {"payer_client_ip": client_ip, "h5_info": {"type": "Wap"}}
            code, message = await self._call(
                client.pay(**common, scene_info=scene, pay_type=WeChatPayType.H5)
            )
        body = answer(code, message)
        if code not in (200, 201):
            log.warning("WeChat Pay refused order %s: %s %s", out_trade_no, code, body.get("code"))
            raise PayUnavailable(f"WeChat Pay refused the order ({body.get('code', code)})")
        if openid:
            prepay_id = str(body.get("prepay_id", ""))
            stamp, nonce = str(int(time.time())), secrets.token_hex(16)
            package = f"prepay_id={prepay_id}"
            app = merchant.login_appid
            sign = client.sign([app, stamp, nonce, package])
            return {
                "prepay_id": prepay_id,
                "appId": app,
                "timeStamp": stamp,
                "nonceStr": nonce,
                "package": package,
                "signType": "RSA",
                "paySign": sign,
            }
        return {"h5_url": str(body.get("h5_url", ""))}

    @staticmethod
    async def _call(awaitable: Any) -> tuple[int, Any]:
        try:
            code, message = await awaitable
        except Exception as exc:  # httpx errors, and wechatpayv3's own bare Exceptions
            raise PayUnavailable(f"WeChat Pay could not be reached: {type(exc).__name__}") from exc
        return int(code), message

    async def order(self, user: AppUser, out_trade_no: str) -> OrderView:
        """One of the user's own orders (NotFound for anyone else's)."""
        async with self.db.tenant(user.tenant_id) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        f"SELECT {_ORDER_COLUMNS}, a.wallet_id FROM payment_order o "
                        "JOIN account a ON a.id = o.account_id "
                        "WHERE o.out_trade_no = :no AND o.user_id = :u"
                    ),
                    {"no": out_trade_no, "u": user.user_id},
                )
            ).first()
            if row is None:
                raise NotFound(f"order {out_trade_no} not found")
            balance = None
            if row.status == "paid":
                balance = await conn.scalar(
                    sa.text("SELECT balance FROM ledger_account WHERE id = :w"),
                    {"w": row.wallet_id},
                )
        return OrderView(
            row.out_trade_no,
            row.number,
            row.amount,
            row.status,
            row.created_at,
            row.expires_at,
            row.paid_at,
            balance,
        )

    # --- notifications ------------------------------------------------------------------

    async def notified(self, tenant: str, headers: dict[str, str], body: bytes) -> Outcome:
        """WeChat's payment notification for ``tenant``'s merchant: verified (signature
        over ``timestamp\\nnonce\\nbody\\n`` with the key ``Wechatpay-Serial`` names, a
        timestamp within five minutes, no probe), decrypted, matched and credited once.
        Raises NotificationRefused (4xx: credits nothing) or Malformed (400)."""
        now = self.clock()
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            rules.check_headers(headers, now)
        except rules.Refused as exc:
            raise NotificationRefused(str(exc), exc.status) from None
        doc = _json_body(body)
        tenant_id = tenant_of(tenant)
        resource = await self.verified(tenant_id, headers, body)
        if (
            doc.get("event_type") != "TRANSACTION.SUCCESS"
            or resource.get("trade_state") != "SUCCESS"
        ):
            return Outcome(
                "ignored", str(resource.get("out_trade_no", "")), str(doc.get("event_type"))
            )
        return await self.settle(tenant_id, resource, "notify")

    async def verified(
        self, tenant_id: uuid.UUID, headers: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        """The notification's decrypted resource, verified with the merchant's keys: those
        kept from an earlier notification, and when they do not verify it (the merchant's
        settings may have changed since), the stored ones. An unknown tenant is NotFound."""
        kept = self._kept.get(tenant_id)
        if kept is not None and time.monotonic() - kept[1] < MERCHANT_TTL_S:
            with contextlib.suppress(NotificationRefused):
                return await self._verify(kept[0], headers, body)
        merchant = await self.merchant(tenant_id)
        self._kept[tenant_id] = (merchant, time.monotonic())
        return await self._verify(merchant, headers, body)

    async def _verify(
        self, merchant: Merchant, headers: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        client = await self.clients.of(merchant)
        try:
            data = client.callback(headers, body.decode("utf-8"))
        except Exception as exc:  # wechatpayv3 raises bare Exceptions on odd input
            raise NotificationRefused(f"notification not verified: {exc}") from None
        if not data or not isinstance(data.get("resource"), dict):
            raise NotificationRefused("signature or resource does not verify")
        resource: dict[str, Any] = data["resource"]
        return resource

    async def settle(self, tenant_id: uuid.UUID, resource: dict[str, Any], via: str) -> Outcome:
        """Credit the order WeChat says was paid (a notification's or a query's
        transaction), once, under the order's lock; a mismatch opens an exception and
        raises NotificationRefused. Settlements arriving together for one property group
        share one transaction (``Settler``): the group's clearing account is in every one
        of them, and its row lock is taken once per batch instead of once per payment."""
        key = (tenant_id, str(resource.get("out_trade_no", "")))
        if key in self._settled:
            return Outcome("duplicate", key[1])
        outcome = await self._settler.submit(tenant_id, resource, via)
        if outcome.result in ("credited", "duplicate"):  # committed: final
            self._settled[key] = None
            if len(self._settled) > SETTLED_KEPT:
                self._settled.popitem(last=False)
        if outcome.result == "refused":
            log.warning("payment %s refused: %s", outcome.out_trade_no, outcome.reason)
            raise NotificationRefused(outcome.reason, 400)
        return outcome

    async def _settle_batch(
        self, tenant_id: uuid.UUID, batch: list[tuple[dict[str, Any], str]]
    ) -> list[Outcome]:
        now = self.clock()
        async with self.db.tenant(tenant_id) as conn:
            if len(batch) > 1:
                # the batch's orders locked first, in one order: two processes' batches
                # sharing orders (WeChat's duplicates) then never wait on each other in a
                # cycle (an order here, the group's clearing account there)
                nos = sorted({str(r.get("out_trade_no", "")) for r, _ in batch})
                await conn.execute(
                    sa.text(
                        "SELECT id FROM payment_order WHERE out_trade_no = ANY(CAST(:nos AS "
                        "text[])) ORDER BY out_trade_no FOR UPDATE"
                    ),
                    {"nos": nos},
                )
            return [await self._settle_in(conn, tenant_id, r, via, now) for r, via in batch]

    async def _settle_in(
        self,
        conn: AsyncConnection,
        tenant_id: uuid.UUID,
        resource: dict[str, Any],
        via: str,
        now: datetime,
    ) -> Outcome:
        paid = rules.paid_of(resource)
        row = (
            await conn.execute(
                sa.text(
                    f"SELECT {_ORDER_COLUMNS} FROM payment_order o JOIN account a ON "
                    "a.id = o.account_id WHERE o.out_trade_no = :no FOR UPDATE OF o"
                ),
                {"no": paid.out_trade_no},
            )
        ).first()
        if row is None:
            await _exception(conn, tenant_id, "unknown_order", paid.out_trade_no, resource, now)
            return Outcome("refused", paid.out_trade_no, "no such order")
        if row.entry_id is not None:
            return Outcome("duplicate", row.out_trade_no)
        if wrong := rules.mismatches(_facts(row), resource):
            detail = {"differs": wrong, "transaction": resource, "amount_fen": row.amount_fen}
            await _exception(conn, tenant_id, "mismatch", row.out_trade_no, detail, now)
            return Outcome(
                "refused", row.out_trade_no, "does not match the order: " + ", ".join(wrong)
            )
        await self._credit(conn, tenant_id, row, paid, via, now)
        return Outcome("credited", row.out_trade_no)

    async def _credit(
        self,
        conn: AsyncConnection,
        tenant_id: uuid.UUID,
        row: Any,
        paid: rules.Paid,
        via: str,
        now: datetime,
    ) -> None:
        code = clearing_channel(row.mode, row.mchid, row.sub_mchid)
        wallet = ledger.wallet(row.account_id, row.number)
        posted = await post(
            conn,
            tenant_id,
            ledger.EntryDraft(
                idempotency_key=f"pay:{row.out_trade_no}",
                kind=ledger.EntryKind.TOPUP,
                actor=ACTOR,
                effective_at=now,
                legs=ledger.topup(wallet, ledger.clearing(code), row.amount),
                reason=f"WeChat Pay {row.out_trade_no}",
            ),
        )
        paid_at = _parse_time(paid.success_time, now)
        await conn.execute(
            sa.text(
                "UPDATE payment_order SET status = 'paid', paid_at = :at, transaction_id = :tx, "
                "credited_via = :via, entry_id = :e WHERE id = :id"
            ),
            {
                "at": paid_at,
                "tx": paid.transaction_id,
                "via": via,
                "e": posted.entry_id,
                "id": row.id,
            },
        )
        if not posted.created:  # (the lock makes this unreachable; the key makes it safe)
            return
        if row.account_status == "closed":  # money taken for a closed account: finance refunds
            await _exception(
                conn, tenant_id, "closed_account", row.out_trade_no, {"account": row.number}, now
            )
        cause = f"pay:{row.out_trade_no}"
        await after_topup(
            conn, tenant_id, row.account_id, row.amount, cause, now, self.timing, ACTOR
        )
        await outbox.topup_received(conn, tenant_id, row.account_id, row.amount, cause, now)
        detail = {"amount": str(row.amount), "out_trade_no": row.out_trade_no, "via": via}
        if paid.transaction_id:
            detail["transaction_id"] = paid.transaction_id
        await audit.record(
            conn, tenant_id, ACTOR, "payment.credit", f"account:{row.number}", now, detail
        )

    # --- the worker's job: silent orders queried, expired ones closed -------------------

    async def sweep(self, limit: int = 200) -> dict[str, int]:
        """Query every order without a notification from ``query_after_s`` on (at most once
        per ``query_every_s``), credit the paid ones, close the expired unpaid ones."""
        counts = {"queried": 0, "credited": 0, "closed": 0, "failed": 0}
        for tenant_id in await self.db.tenant_ids():
            now = self.clock()
            async with self.db.tenant(tenant_id) as conn:
                has = await conn.scalar(
                    sa.text("SELECT 1 FROM merchant WHERE tenant_id = :t"), {"t": tenant_id}
                )
                if not has:
                    continue
                rows = (
                    await conn.execute(
                        sa.text(
                            "UPDATE payment_order SET queried_at = :now WHERE id IN (SELECT id "
                            "FROM payment_order WHERE status = 'created' AND created_at <= :due "
                            "AND (queried_at IS NULL OR queried_at <= :again) ORDER BY created_at "
                            "LIMIT :lim FOR UPDATE SKIP LOCKED) RETURNING out_trade_no, expires_at"
                        ),
                        {
                            "now": now,
                            "due": now - timedelta(seconds=self.settings.query_after_s),
                            "again": now - timedelta(seconds=self.settings.query_every_s),
                            "lim": limit,
                        },
                    )
                ).all()
            if not rows:
                continue
            try:
                merchant = await self.merchant(tenant_id)
            except (Invalid, NotFound) as exc:  # one group's broken settings stop no other
                counts["failed"] += len(rows)
                log.error("orders of tenant %s not queried: %s", tenant_id, exc)
                continue
            for r in rows:
                counts["queried"] += 1
                try:
                    done = await self._query_one(
                        tenant_id, merchant, r.out_trade_no, r.expires_at <= now
                    )
                except (PayUnavailable, NotificationRefused) as exc:
                    counts["failed"] += 1
                    log.warning("order %s query failed: %s", r.out_trade_no, exc)
                    continue
                if done in counts:
                    counts[done] += 1
        return counts

    async def _query(self, merchant: Merchant, out_trade_no: str) -> dict[str, Any]:
        client = await self.clients.of(merchant)
        s = merchant.settings
        code, message = await self._call(
            client.query(out_trade_no=out_trade_no, sub_mchid=s.sub_mchid)
        )
        body = answer(code, message)
        if code == 404:
            return {"out_trade_no": out_trade_no, "trade_state": "NOTEXIST"}
        if code != 200:
            raise PayUnavailable(f"query answered {code} {body.get('code', '')}")
        return body

    async def _query_one(
        self, tenant_id: uuid.UUID, merchant: Merchant, out_trade_no: str, expired: bool
    ) -> str:
        found = await self._query(merchant, out_trade_no)
        state = found.get("trade_state")
        if state == "SUCCESS":
            return (
                "credited"
                if (await self.settle(tenant_id, found, "query")).result == "credited"
                else "queried"
            )
        if state in ("CLOSED", "REVOKED", "PAYERROR", "NOTEXIST"):
            await self._mark_closed(tenant_id, out_trade_no)
            return "closed"
        if not expired:
            return "queried"
        client = await self.clients.of(merchant)
        code, message = await self._call(
            client.close(out_trade_no=out_trade_no, sub_mchid=merchant.settings.sub_mchid)
        )
        if code == 204:
            await self._mark_closed(tenant_id, out_trade_no)
            return "closed"
        if answer(code, message).get("code") == "ORDERPAID":  # paid just now
            again = await self._query(merchant, out_trade_no)
            if again.get("trade_state") == "SUCCESS":
                await self.settle(tenant_id, again, "query")
                return "credited"
        raise PayUnavailable(f"close answered {code}")

    async def _mark_closed(self, tenant_id: uuid.UUID, out_trade_no: str) -> None:
        async with self.db.tenant(tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "UPDATE payment_order SET status = 'closed', closed_at = :now "
                    "WHERE out_trade_no = :no AND status = 'created'"
                ),
                {"now": self.clock(), "no": out_trade_no},
            )


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("resource"), dict):
        log.warning("malformed payment notification: %r", body[:4096])
        raise Malformed("the notification body is not a WeChat Pay notification")
    return doc


async def _exception(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    kind: str,
    out_trade_no: str,
    detail: dict[str, Any],
    now: datetime,
) -> None:
    """Open an exception for finance (once per kind and order)."""
    await conn.execute(
        sa.text(
            "INSERT INTO payment_exception (id, tenant_id, kind, out_trade_no, detail, created_at) "
            "VALUES (gen_random_uuid(), :t, :k, :no, CAST(:d AS jsonb), :now) "
            "ON CONFLICT ON CONSTRAINT payment_exception_once DO NOTHING"
        ),
        {
            "t": tenant_id,
            "k": kind,
            "no": out_trade_no[:64] or "?",
            "d": json.dumps(detail, ensure_ascii=False, default=str),
            "now": now,
        },
    )
