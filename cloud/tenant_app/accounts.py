"""A tenant's accounts as the app shows them: binding (by the number and the phone on file,
or an SMS code to that phone), and for each bound account its live balance, supply per
point, the days of credit left, usage per day and month, top-ups, alert preferences and
subscribe-message acceptances. Every query is the user's bound accounts only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import Database
from cloud.documents.receipt import PaymentFacts, fields_pdf, payment_fields, receipt_fields
from cloud.errors import Invalid, NotFound
from cloud.notify.outbox import ALL_KINDS
from cloud.payments.sales import sale_of_account
from cloud.payments.wechat import rules
from cloud.tenant_app.login import TenantLogin, phone_of
from miniapp_api.identity import AppUser, BoundAccount, bound_account, bound_accounts
from notifications.rules import BadPhone, e164

DAYS_OF_HISTORY = 14  # the estimate of days left looks this far back
CHANNELS = ("sms", "wechat")


@dataclass(frozen=True)
class PointState:
    name: str
    utility: str
    premises: str | None
    supply: str | None  # on | off | None (not reported yet)
    pending: bool  # a supply command is on its way (desired differs from reported)
    alarm_level: int
    emergency: bool
    keep_power: bool
    reason: str


@dataclass(frozen=True)
class AccountSummary:
    number: str
    customer: str
    status: str
    balance: Decimal
    days_left: Decimal | None
    points: list[PointState]
    topup_min: Decimal
    topup_max: Decimal
    quick_amounts: list[Decimal]
    timezone: str


@dataclass(frozen=True)
class UsageRow:
    period: str  # 2026-12-03 or 2026-12
    used: Decimal  # kWh or m³, every point of the account together
    spent: Decimal  # usage charged to the wallet


@dataclass(frozen=True)
class TopUp:
    at: datetime
    amount: Decimal
    channel: str  # wechat | cash | card | transfer
    reference: str  # out_trade_no or receipt number
    status: str  # paid | reversed | refunded


@dataclass(frozen=True)
class Preferences:
    channels: list[str]
    muted: list[str]
    language: str


def masked(phone: str) -> str:
    digits = phone[-11:] if len(phone) >= 11 else phone
    return digits[:3] + "****" + digits[-4:] if len(digits) >= 7 else "****"


_PAYMENT = """
SELECT o.out_trade_no, o.transaction_id, o.paid_at, o.amount, o.refunded,
       t.name AS group_name, st.name AS site_name,
       coalesce(st.timezone, 'Asia/Shanghai') AS timezone, a.number AS account_number,
       c.name AS customer,
       (SELECT b.name || ' ' || p.floor || ' ' || p.number FROM service_point sp
          JOIN premises p ON p.id = sp.premises_id JOIN building b ON b.id = p.building_id
         WHERE sp.account_id = a.id ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1)
         AS premises
FROM payment_order o
JOIN account a ON a.id = o.account_id
JOIN customer c ON c.id = a.customer_id
JOIN tenant t ON t.id = o.tenant_id
LEFT JOIN site st ON st.id = (SELECT sp.site_id FROM service_point sp
  WHERE sp.account_id = a.id ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1)
WHERE o.account_id = :a AND o.out_trade_no = :r AND o.entry_id IS NOT NULL
"""


class TenantAccounts:
    def __init__(
        self,
        db: Database,
        login: TenantLogin,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.login = login
        self.clock = clock

    # --- binding --------------------------------------------------------------------------

    async def _account_phone(
        self, conn: AsyncConnection, number: str
    ) -> tuple[uuid.UUID, str, str]:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT a.id, a.status, c.phone FROM account a JOIN customer c ON "
                    "c.id = a.customer_id WHERE a.number = :n"
                ),
                {"n": number},
            )
        ).first()
        if row is None or row.status == "closed":
            raise NotFound("no open account with this number and phone")
        try:
            phone = e164(row.phone)
        except BadPhone:
            raise NotFound("no open account with this number and phone") from None
        return row.id, row.status, phone

    async def send_bind_code(self, user: AppUser, number: str) -> str:
        """Send a code to the phone on file of account ``number``: the phone, masked."""
        async with self.db.tenant(user.tenant_id) as conn:
            _, _, phone = await self._account_phone(conn, number)
        await self.login.code_to(user.tenant_id, phone)
        return masked(phone)

    async def bind(
        self, user: AppUser, number: str, phone: str | None = None, code: str | None = None
    ) -> BoundAccount:
        """Bind account ``number``: ``phone`` must be the customer's phone on file, or
        ``code`` the one just sent to it. Binding again is no change."""
        if (phone is None) == (code is None):
            raise Invalid("give the phone on file or the code sent to it")
        now = self.clock()
        async with self.db.tenant(user.tenant_id) as conn:
            account_id, _, on_file = await self._account_phone(conn, number)
            if phone is not None:
                if phone_of(phone) != on_file:
                    raise NotFound("no open account with this number and phone")
            else:
                assert code is not None
                await self.login.check_code(conn, user.tenant_id, on_file, code)
            await conn.execute(
                sa.text(
                    "INSERT INTO account_binding (id, tenant_id, user_id, account_id, bound_at) "
                    "VALUES (gen_random_uuid(), :t, :u, :a, :now) ON CONFLICT (user_id, "
                    "account_id) WHERE unbound_at IS NULL DO NOTHING"
                ),
                {"t": user.tenant_id, "u": user.user_id, "a": account_id, "now": now},
            )
            return await bound_account(conn, user, number)

    async def unbind(self, user: AppUser, number: str) -> None:
        async with self.db.tenant(user.tenant_id) as conn:
            account = await bound_account(conn, user, number)
            await conn.execute(
                sa.text(
                    "UPDATE account_binding SET unbound_at = :now, unbound_by = 'user' "
                    "WHERE user_id = :u AND account_id = :a AND unbound_at IS NULL"
                ),
                {"now": self.clock(), "u": user.user_id, "a": account.account_id},
            )

    async def accounts(self, user: AppUser) -> list[AccountSummary]:
        async with self.db.tenant(user.tenant_id) as conn:
            return [await self._summary(conn, a) for a in await bound_accounts(conn, user)]

    # --- what a tenant sees of an account -------------------------------------------------

    async def summary(self, user: AppUser, number: str) -> AccountSummary:
        async with self.db.tenant(user.tenant_id) as conn:
            return await self._summary(conn, await bound_account(conn, user, number))

    async def _summary(self, conn: AsyncConnection, account: BoundAccount) -> AccountSummary:
        now = self.clock()
        head = (
            await conn.execute(
                sa.text(
                    "SELECT c.name, la.balance, a.wallet_id FROM account a JOIN customer c ON "
                    "c.id = a.customer_id JOIN ledger_account la ON la.id = a.wallet_id "
                    "WHERE a.id = :a"
                ),
                {"a": account.account_id},
            )
        ).one()
        points = (
            await conn.execute(
                sa.text(
                    "SELECT sp.name, sp.utility, b2.name || '-' || p.floor || '-' || p.number "
                    "AS premises, tw.reported, tw.desired, coalesce(cs.alarm_level, 0) AS "
                    "alarm_level, coalesce(cs.emergency, false) AS emergency, "
                    "cs.keep_power_until > :now AS keep_power, coalesce(cs.reason, '') AS "
                    "reason, cs.supply, st.topup_min, st.topup_max, st.quick_amounts, "
                    "st.timezone FROM service_point sp JOIN site st ON st.id = sp.site_id "
                    "LEFT JOIN premises p ON p.id = sp.premises_id LEFT JOIN building b2 ON "
                    "b2.id = p.building_id LEFT JOIN control_state cs ON cs.service_point_id "
                    "= sp.id LEFT JOIN binding b ON b.service_point_id = sp.id AND "
                    "b.removed_at IS NULL LEFT JOIN supply_twin tw ON tw.channel_id = "
                    "b.channel_id WHERE sp.account_id = :a AND sp.removed_at IS NULL AND NOT "
                    "sp.common_area ORDER BY sp.utility, sp.name"
                ),
                {"a": account.account_id, "now": now},
            )
        ).all()
        spent = await conn.scalar(
            sa.text(
                "SELECT coalesce(sum(po.amount), 0) FROM posting po JOIN journal_entry je ON "
                "je.id = po.entry_id WHERE po.ledger_account_id = :w AND je.kind IN "
                "('usage', 'fixed_charge', 'common_area') AND je.effective_at > :since "
                "AND po.amount > 0"
            ),
            {"w": head.wallet_id, "since": now - timedelta(days=DAYS_OF_HISTORY)},
        )
        first = points[0] if points else None
        return AccountSummary(
            number=account.number,
            customer=head.name,
            status=account.status,
            balance=head.balance,
            days_left=rules.days_left(head.balance, Decimal(spent or 0), DAYS_OF_HISTORY),
            points=[
                PointState(
                    name=r.name,
                    utility=r.utility,
                    premises=r.premises,
                    supply=r.reported or r.supply,
                    pending=r.desired is not None and r.desired != r.reported,
                    alarm_level=int(r.alarm_level),
                    emergency=bool(r.emergency),
                    keep_power=bool(r.keep_power),
                    reason=r.reason,
                )
                for r in points
            ],
            topup_min=first.topup_min if first else Decimal("10.00"),
            topup_max=first.topup_max if first else Decimal("5000.00"),
            quick_amounts=list(first.quick_amounts) if first else [],
            timezone=first.timezone if first else "Asia/Shanghai",
        )

    async def usage(self, user: AppUser, number: str, period: str) -> list[UsageRow]:
        """Usage per day (the last 30 days) or per month (the last 12), in the site's zone:
        what the meters counted and what it cost."""
        if period not in ("day", "month"):
            raise Invalid("period is day or month")
        now = self.clock()
        async with self.db.tenant(user.tenant_id) as conn:
            account = await bound_account(conn, user, number)
            tz = await conn.scalar(
                sa.text(
                    "SELECT coalesce((SELECT s.timezone FROM service_point sp JOIN site s ON "
                    "s.id = sp.site_id WHERE sp.account_id = :a LIMIT 1), 'Asia/Shanghai')"
                ),
                {"a": account.account_id},
            )
            zone = ZoneInfo(str(tz))
            local_today = now.astimezone(zone).date()
            if period == "day":
                start_day = local_today - timedelta(days=29)
            else:
                start_day = (local_today.replace(day=1) - timedelta(days=335)).replace(day=1)
            since = datetime.combine(start_day, datetime.min.time(), zone)
            fmt = "YYYY-MM-DD" if period == "day" else "YYYY-MM"
            used = await conn.execute(
                sa.text(
                    "SELECT to_char(measured_at AT TIME ZONE :tz, :fmt) AS k, sum(d) AS used FROM "
                    "(SELECT r.measured_at, r.total - lag(r.total) OVER (PARTITION BY "
                    "r.channel_id ORDER BY r.measured_at) AS d FROM binding b JOIN reading r ON "
                    "r.channel_id = b.channel_id AND r.measured_at >= b.installed_at AND "
                    "(b.removed_at IS NULL OR r.measured_at < b.removed_at) JOIN service_point "
                    "sp ON sp.id = b.service_point_id WHERE sp.account_id = :a AND NOT "
                    "sp.common_area AND r.measured_at >= :since - interval '1 day') x WHERE "
                    "measured_at >= :since AND d > 0 GROUP BY k"
                ),
                {"tz": str(tz), "fmt": fmt, "a": account.account_id, "since": since},
            )
            by_used = {r.k: Decimal(r.used) for r in used}
            spent = await conn.execute(
                sa.text(
                    "SELECT to_char(je.effective_at AT TIME ZONE :tz, :fmt) AS k, sum(po.amount) "
                    "AS spent FROM account a JOIN posting po ON po.ledger_account_id = "
                    "a.wallet_id JOIN journal_entry je ON je.id = po.entry_id WHERE a.id = :a "
                    "AND je.kind IN ('usage', 'fixed_charge', 'common_area') AND "
                    "je.effective_at >= :since GROUP BY k"
                ),
                {"tz": str(tz), "fmt": fmt, "a": account.account_id, "since": since},
            )
            by_spent = {r.k: Decimal(r.spent) for r in spent}
        return [
            UsageRow(k, by_used.get(k, Decimal(0)), by_spent.get(k, Decimal("0.00")))
            for k in _periods(start_day, local_today, period)
        ]

    async def topups(self, user: AppUser, number: str, limit: int = 50) -> list[TopUp]:
        """The account's top-ups, newest first: WeChat payments and counter sales."""
        async with self.db.tenant(user.tenant_id) as conn:
            account = await bound_account(conn, user, number)
            rows = await conn.execute(
                sa.text(
                    "SELECT paid_at AS at, amount, 'wechat' AS channel, out_trade_no AS ref, "
                    "CASE WHEN refunded >= amount THEN 'refunded' ELSE 'paid' END AS status "
                    "FROM payment_order WHERE account_id = :a AND entry_id IS NOT NULL "
                    "UNION ALL SELECT created_at, amount, method, receipt_no, CASE WHEN "
                    "reversed_at IS NULL THEN 'paid' ELSE 'reversed' END FROM counter_sale "
                    "WHERE account_id = :a ORDER BY at DESC LIMIT :lim"
                ),
                {"a": account.account_id, "lim": limit},
            )
            return [TopUp(r.at, r.amount, r.channel, r.ref, r.status) for r in rows]

    async def receipt(self, user: AppUser, number: str, reference: str) -> bytes:
        """The PDF receipt of one of the account's top-ups: a WeChat payment (its
        ``out_trade_no``) or a counter sale (its receipt number); NotFound otherwise."""
        async with self.db.tenant(user.tenant_id) as conn:
            account = await bound_account(conn, user, number)
            sale = await sale_of_account(conn, account.account_id, reference)
            if sale is not None:
                fields = receipt_fields(sale)
            else:
                row = (
                    await conn.execute(sa.text(_PAYMENT), {"a": account.account_id, "r": reference})
                ).first()
                if row is None:
                    raise NotFound("no such top-up on this account")
                fields = payment_fields(PaymentFacts(**row._mapping))
        return await asyncio.to_thread(fields_pdf, fields)

    # --- alerts ---------------------------------------------------------------------------

    async def preferences(self, user: AppUser, number: str) -> Preferences:
        async with self.db.tenant(user.tenant_id) as conn:
            account = await bound_account(conn, user, number)
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT channels, muted, language FROM notify_preference "
                        "WHERE customer_id = :c"
                    ),
                    {"c": account.customer_id},
                )
            ).first()
        if row is None:
            return Preferences(["sms"], [], "zh_CN")
        return Preferences(list(row.channels), list(row.muted), row.language)

    async def set_preferences(
        self, user: AppUser, number: str, channels: list[str], muted: list[str], language: str
    ) -> Preferences:
        if (
            not channels
            or any(c not in CHANNELS for c in channels)
            or len(set(channels)) != len(channels)
        ):
            raise Invalid("channels are sms and/or wechat, each once, at least one")
        unknown = [k for k in muted if k not in ALL_KINDS]
        if unknown:
            raise Invalid(f"unknown alert kinds: {', '.join(unknown)}")
        if "supply_cut" in muted:
            raise Invalid("the supply-cut notice cannot be muted")
        if language not in ("zh_CN", "en"):
            raise Invalid("language is zh_CN or en")
        async with self.db.tenant(user.tenant_id) as conn:
            account = await bound_account(conn, user, number)
            await conn.execute(
                sa.text(
                    "INSERT INTO notify_preference (tenant_id, customer_id, channels, muted, "
                    "language, updated_at) VALUES (:t, :c, :ch, :m, :lang, :now) ON CONFLICT "
                    "(customer_id) DO UPDATE SET channels = EXCLUDED.channels, muted = "
                    "EXCLUDED.muted, language = EXCLUDED.language, updated_at = EXCLUDED.updated_at"
                ),
                {
                    "t": user.tenant_id,
                    "c": account.customer_id,
                    "ch": channels,
                    "m": sorted(set(muted)),
                    "lang": language,
                    "now": self.clock(),
                },
            )
        return Preferences(channels, sorted(set(muted)), language)

    async def accept(self, user: AppUser, template_ids: list[str]) -> dict[str, int]:
        """``wx.requestSubscribeMessage`` accepted: one more message allowed per template."""
        if not template_ids or len(template_ids) > 20:
            raise Invalid("one to twenty template ids")
        now = self.clock()
        out: dict[str, int] = {}
        async with self.db.tenant(user.tenant_id) as conn:
            for template in template_ids:
                out[template] = int(
                    await conn.scalar(
                        sa.text(
                            "INSERT INTO subscribe_acceptance (tenant_id, user_id, template_id, "
                            "remaining, updated_at) VALUES (:t, :u, :tpl, 1, :now) ON CONFLICT "
                            "(user_id, template_id) DO UPDATE SET remaining = "
                            "subscribe_acceptance.remaining + 1, updated_at = :now "
                            "RETURNING remaining"
                        ),
                        {"t": user.tenant_id, "u": user.user_id, "tpl": template, "now": now},
                    )
                    or 0
                )
        return out

    async def acceptances(self, user: AppUser) -> dict[str, int]:
        async with self.db.tenant(user.tenant_id) as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT template_id, remaining FROM subscribe_acceptance WHERE user_id = :u "
                    "ORDER BY template_id"
                ),
                {"u": user.user_id},
            )
            return {r.template_id: int(r.remaining) for r in rows}


def _periods(first: date, last: date, period: str) -> list[str]:
    out: list[str] = []
    day = first
    while day <= last:
        key = day.isoformat() if period == "day" else day.strftime("%Y-%m")
        if not out or out[-1] != key:
            out.append(key)
        day += timedelta(days=1)
    return out
