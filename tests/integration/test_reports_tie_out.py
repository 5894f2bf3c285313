"""Every report ties out to the ledger (issue 18, acceptance): random sequences of counter
sales, reversals, WeChat payments, refunds (paid out or given back), usage, transfers and
cancellations (消户 refunds in cash) over several days and two sites, against the real
database. A model kept beside the run says what each account's balance did and when;
every report's figures, for every scope and period, equal it, closing = opening +
movements, and each period's opening is the previous one's closing."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cloud.auth import PERMISSIONS, Principal
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.errors import DomainError
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.payments.reversal import reverse_sale
from cloud.registry.service import Seeded, seed_group
from cloud.reports import arrears, collections, finance, liability, revenue
from cloud.reports.period import Period
from cloud.reports.scope import Scope, resolve
from tests.conftest import group_spec

ZONE = ZoneInfo("Asia/Shanghai")
ACCOUNTS = 4  # m1, m2 at the first site; m3, m4 at the second
AMOUNTS = st.integers(min_value=1, max_value=20_000).map(lambda f: Decimal(f) / 100)
WHEN = st.tuples(st.integers(1, 4), st.integers(0, 23 * 60))  # days ago, minute of day
WHO = st.integers(0, ACCOUNTS - 1)
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("sale"), WHO, AMOUNTS, st.sampled_from(["cash", "card", "transfer"]), WHEN
        ),
        st.tuples(st.just("reverse"), st.integers(0, 20)),
        st.tuples(st.just("wechat"), WHO, AMOUNTS, WHEN),
        st.tuples(st.just("refund"), WHO, AMOUNTS, st.booleans(), WHEN),
        st.tuples(st.just("usage"), WHO, AMOUNTS, WHEN),
        st.tuples(st.just("transfer"), WHO, WHO, AMOUNTS, WHEN),
        st.tuples(st.just("cancel"), WHO, WHEN),
    ),
    min_size=1,
    max_size=24,
)
MERCHANT = "wechat:1900000109"


@dataclass(frozen=True)
class Move:
    at: datetime
    account: int
    column: str  # finance movement
    effect: Decimal  # on the balance
    method: str = ""  # a top-up's
    reversal: bool = False


class World:
    def __init__(self, db: Database, g: Seeded, site2: uuid.UUID, outlet2: uuid.UUID) -> None:
        self.db, self.g, self.site2, self.outlet2 = db, g, site2, outlet2
        self.who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
        self.keys = [f"m{i + 1}" for i in range(ACCOUNTS)]
        self.moves: list[Move] = []
        self.sales: list[tuple[str, int, Decimal, str, datetime]] = []
        self.today = datetime.now(UTC).astimezone(ZONE).date()
        self.n = 0

    def site_of(self, i: int) -> int:
        return 0 if i < 2 else 1

    def at(self, when: tuple[int, int]) -> datetime:
        day = self.today - timedelta(days=when[0])
        local = datetime(day.year, day.month, day.day, tzinfo=ZONE) + timedelta(minutes=when[1])
        return local.astimezone(UTC)

    def balance(self, i: int, before: datetime) -> Decimal:
        return sum((m.effect for m in self.moves if m.account == i and m.at < before), Decimal(0))

    async def wallet(self, i: int) -> ledger.AccountRef:
        async with self.db.tenant(self.g.tenant_id) as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT id, number FROM account WHERE number = :n"),
                    {"n": self.g.accounts[self.keys[i]]},
                )
            ).one()
        return ledger.wallet(row.id, row.number)

    async def entry(
        self, key: str, kind: ledger.EntryKind, at: datetime, legs: tuple[ledger.Leg, ...]
    ) -> None:
        async with self.db.tenant(self.g.tenant_id) as conn:
            draft = ledger.EntryDraft(key, kind, "test", at, legs)
            assert (await post(conn, self.g.tenant_id, draft)).created

    async def run(self, op: tuple[object, ...]) -> None:
        self.n += 1
        n, name = self.n, op[0]
        if name == "sale":
            _, i, amount, method, when = op
            assert isinstance(i, int) and isinstance(amount, Decimal) and isinstance(method, str)
            at = self.at(when)  # type: ignore[arg-type]
            outlet = self.g.outlet_id if self.site_of(i) == 0 else self.outlet2
            req = SaleRequest(self.g.accounts[self.keys[i]], amount, method, outlet)
            receipt = await sell_credit(
                self.db, self.who, req, f"k{n}-{uuid.uuid4().hex}", at, CommandTiming()
            )
            self.sales.append((receipt.receipt_no, i, amount, method, at))
            self.moves.append(Move(at, i, "topups", amount, method))
        elif name == "reverse":
            _, idx = op
            assert isinstance(idx, int)
            if not self.sales:
                return
            receipt_no, i, amount, method, at = self.sales.pop(idx % len(self.sales))
            later = at + timedelta(minutes=1)
            try:
                await reverse_sale(
                    self.db, self.who, receipt_no, "typed wrong", later, CommandTiming()
                )
            except DomainError:
                event("a reversal refused")
                return  # the sale's business day closed in that minute: nothing moved
            self.moves.append(Move(later, i, "topups", -amount, method, reversal=True))
            event("a sale reversed")
        elif name == "wechat":
            _, i, amount, when = op
            assert isinstance(i, int) and isinstance(amount, Decimal)
            at = self.at(when)  # type: ignore[arg-type]
            legs = ledger.topup(await self.wallet(i), ledger.clearing(MERCHANT), amount)
            await self.entry(f"pay:T{n}", ledger.EntryKind.TOPUP, at, legs)
            self.moves.append(Move(at, i, "topups", amount, "wechat"))
        elif name == "refund":
            _, i, amount, back, when = op
            assert isinstance(i, int) and isinstance(amount, Decimal)
            at = self.at(when)  # type: ignore[arg-type]
            wallet = await self.wallet(i)
            kind = ledger.EntryKind.REFUND
            await self.entry(
                f"refund:RF{n}", kind, at, ledger.transfer(wallet, ledger.refunds_payable(), amount)
            )
            self.moves.append(Move(at, i, "refunds", -amount))
            later = at + timedelta(minutes=5)
            if back:  # WeChat refused it: the money returns to the wallet
                legs = ledger.transfer(ledger.refunds_payable(), wallet, amount)
                await self.entry(f"refund-back:RF{n}", kind, later, legs)
                self.moves.append(Move(later, i, "refunds", amount))
            else:  # paid out: off the wallet already, nothing more on it
                legs = ledger.transfer(ledger.refunds_payable(), ledger.clearing(MERCHANT), amount)
                await self.entry(f"refund-paid:RF{n}", kind, later, legs)
        elif name == "usage":
            _, i, amount, when = op
            assert isinstance(i, int) and isinstance(amount, Decimal)
            at = self.at(when)  # type: ignore[arg-type]
            point = self.g.points[self.keys[i]]
            legs = ledger.usage(await self.wallet(i), ledger.revenue("electricity"), amount)
            await self.entry(
                f"usage:{point}:{at.isoformat()}/{n}", ledger.EntryKind.USAGE, at, legs
            )
            self.moves.append(Move(at, i, "usage", -amount))
        elif name == "transfer":
            _, a, b, amount, when = op
            assert isinstance(a, int) and isinstance(b, int) and isinstance(amount, Decimal)
            if a == b:
                return
            at = self.at(when)  # type: ignore[arg-type]
            legs = ledger.transfer(await self.wallet(a), await self.wallet(b), amount)
            await self.entry(f"transfer:t{n}:{a}", ledger.EntryKind.TRANSFER, at, legs)
            self.moves += [Move(at, a, "transfers", -amount), Move(at, b, "transfers", amount)]
        elif name == "cancel":  # 消户: what the wallet holds then is refunded in cash
            _, i, when = op
            assert isinstance(i, int)
            at = self.at(when)  # type: ignore[arg-type]
            held = self.balance(i, at + timedelta(microseconds=1))
            if held <= 0:
                return
            drawer = ledger.cash_drawer(self.g.operator_id, "admin")
            legs = ledger.transfer(await self.wallet(i), drawer, held)
            await self.entry(f"refund:close:{n}", ledger.EntryKind.REFUND, at, legs)
            self.moves.append(Move(at, i, "refunds", -held))


def bounds(p: Period) -> tuple[datetime, datetime]:
    def start(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=ZONE).astimezone(UTC)

    return start(p.first), start(p.end)


def expected(w: World, p: Period, sites: set[int]) -> dict[int, dict[str, Decimal]]:
    t0, t1 = bounds(p)
    out: dict[int, dict[str, Decimal]] = {}
    for i in range(ACCOUNTS):
        if w.site_of(i) not in sites:
            continue
        row = defaultdict(Decimal)
        for m in w.moves:
            if m.account != i or m.at >= t1:
                continue
            if m.at < t0:
                row["opening"] += m.effect
            else:
                row[m.column] += -m.effect if m.column in ("usage", "refunds") else m.effect
            row["closing"] += m.effect
        out[i] = row
    return out


async def check(w: World, p: Period, scope: Scope, sites: set[int]) -> None:
    want = expected(w, p, sites)
    numbers = {w.g.accounts[w.keys[i]]: i for i in want}
    t0, t1 = bounds(p)
    async with w.db.tenant(w.g.tenant_id) as conn:
        table = await finance.report(conn, scope, p, "account")
        rows = {r["account"]: r for r in table.rows}
        assert set(rows) <= set(numbers)
        for number, i in numbers.items():
            if number not in rows:  # opened after the period, nothing moved before its end
                assert not any(want[i].values()), (number, want[i])
                continue
            r = rows[number]
            for col in (
                "opening",
                "topups",
                "usage",
                "refunds",
                "transfers",
                "adjustments",
                "closing",
            ):
                assert r[col] == want[i][col], (number, col, r[col], want[i][col])
            assert r["closing"] == (
                r["opening"]
                + r["topups"]
                - r["usage"]
                - r["refunds"]
                + r["transfers"]
                + r["adjustments"]
            )
        site_table = await finance.report(conn, scope, p, "site")
        for col in ("opening", "topups", "usage", "closing"):
            assert site_table.totals[col] == sum((x[col] for x in want.values()), Decimal(0))
        points = await finance.report(conn, scope, p, "point")
        assert points.totals["usage"] == sum((x["usage"] for x in want.values()), Decimal(0))
        earlier = await finance.report(conn, scope, p.previous(), "account")
        before = {r["account"]: r["closing"] for r in earlier.rows}
        for number, r in rows.items():
            assert r["opening"] == before.get(number, Decimal(0))  # opening = previous closing

        moved = [
            m
            for m in w.moves
            if m.column == "topups" and t0 <= m.at < t1 and w.site_of(m.account) in sites
        ]
        net = sum((m.effect for m in moved), Decimal(0))
        for by in ("outlet", "operator", "method", "channel", "site"):
            got = await collections.report(conn, scope, p, by)
            assert got.totals["net"] == net, by
            assert got.totals["sales"] == sum(1 for m in moved if not m.reversal)
            assert got.totals["reversals"] == sum(1 for m in moved if m.reversal)
        per_method = {
            r["method"]: r["net"] for r in (await collections.report(conn, scope, p, "method")).rows
        }
        for method in {m.method for m in moved}:
            assert per_method[method] == sum(
                (m.effect for m in moved if m.method == method), Decimal(0)
            )
        per_day = {
            r["period"]: r["net"] for r in (await collections.report(conn, scope, p, "day")).rows
        }
        for day, value in per_day.items():
            assert value == sum(
                (m.effect for m in moved if m.at.astimezone(ZONE).date().isoformat() == day),
                Decimal(0),
            )
        rev = await revenue.report(conn, scope, p)
        assert rev.totals.get("revenue", Decimal(0)) == sum(
            (x["usage"] for x in want.values()), Decimal(0)
        )
        owed = await liability.report(conn, scope, p)
        assert owed.totals["liability"] == sum((x["closing"] for x in want.values()), Decimal(0))
        received = sum(
            (
                m.effect
                for m in w.moves
                if m.column == "topups" and m.at < t1 and w.site_of(m.account) in sites
            ),
            Decimal(0),
        )
        assert owed.totals["received"] == received
        debt = await arrears.report(conn, scope, p)
        assert debt.totals.get("arrears", Decimal(0)) == sum(
            (-x["closing"] for x in want.values() if x["closing"] < 0), Decimal(0)
        )


async def _scenario(db_url: str, ops: list[tuple[object, ...]]) -> None:
    db = Database.connect(db_url, None, "prepay_app")
    try:
        g = await seed_group(db, group_spec(meters=ACCOUNTS))
        site2, outlet2 = uuid.uuid4(), uuid.uuid4()
        async with db.tenant(g.tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO site (id, tenant_id, name, timezone) "
                    "VALUES (:id, :t, 'East Park', 'Asia/Shanghai')"
                ),
                {"id": site2, "t": g.tenant_id},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO outlet (id, tenant_id, site_id, name) "
                    "VALUES (:id, :t, :s, 'East Office')"
                ),
                {"id": outlet2, "t": g.tenant_id, "s": site2},
            )
            await conn.execute(
                sa.text("UPDATE service_point SET site_id = :s WHERE id = ANY(:p)"),
                {"s": site2, "p": [g.points["m3"], g.points["m4"]]},
            )
            seeded = await conn.scalar(
                sa.text("SELECT min(effective_at) FROM journal_entry WHERE kind = 'adjustment'")
            )
        w = World(db, g, site2, outlet2)
        w.moves += [Move(seeded, i, "adjustments", Decimal("10.00")) for i in range(ACCOUNTS)]
        for op in ops:
            await w.run(op)
        async with db.tenant(g.tenant_id) as conn:
            every = await resolve(conn, w.who, "")
            first = await resolve(conn, w.who, str(g.site_id))
            second = await resolve(conn, w.who, str(site2))
        today = w.today
        periods = [
            Period(today - timedelta(days=4), today),
            Period(today - timedelta(days=2), today - timedelta(days=2)),
            Period(today - timedelta(days=3), today - timedelta(days=1)),
        ]
        for p in periods:
            await check(w, p, every, {0, 1})
            await check(w, p, first, {0})
            await check(w, p, second, {1})
    finally:
        await db.dispose()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_every_report_ties_out_to_the_ledger(db_url: str, ops: list[tuple[object, ...]]) -> None:
    asyncio.run(_scenario(db_url, ops))


async def test_arrears_are_aged_from_the_last_time_the_balance_went_below_zero(
    db: Database,
) -> None:
    """Opening ¥10 (today); 40 days ago usage of ¥15 took it below zero, 35 days ago a
    top-up of ¥20 above, 20 days ago usage of ¥30 below again: ¥15 owed, for 20 days."""
    g = await seed_group(db, group_spec())
    who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
    now = datetime.now(UTC)
    async with db.tenant(g.tenant_id) as conn:
        acct = (await conn.execute(sa.text("SELECT id, number FROM account"))).one()
        wallet = ledger.wallet(acct.id, acct.number)
        revenue_ = ledger.revenue("electricity")
        for n, (days, legs, kind) in enumerate(
            [
                (40, ledger.usage(wallet, revenue_, Decimal("15.00")), ledger.EntryKind.USAGE),
                (35, ledger.topup(wallet, ledger.clearing(MERCHANT), Decimal("20.00")),
                 ledger.EntryKind.TOPUP),
                (20, ledger.usage(wallet, revenue_, Decimal("30.00")), ledger.EntryKind.USAGE),
            ]
        ):  # fmt: skip
            draft = ledger.EntryDraft(f"age:{n}", kind, "test", now - timedelta(days=days), legs)
            await post(conn, g.tenant_id, draft)
        scope = await resolve(conn, who, "")
        today = scope.today()
        table = await arrears.report(conn, scope, Period(today, today))
    (row,) = table.rows
    assert row["arrears"] == Decimal("15.00")
    assert row["days"] in (20, 21)  # the local date of "20 days ago" may be the day before
    assert row["age"] == "up to 30 days"
    assert table.chart is not None and table.chart.series[0].values[0] == Decimal("15.00")
