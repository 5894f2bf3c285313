"""The ledger against the real database: random sequences of top-ups, usage, reversals and
replays keep every invariant; concurrent sessions never lose an update; `prepay check`
covers one tenant or all and exits non-zero on a breach."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.check import check
from cloud.cli import main as prepay
from cloud.db import Database
from cloud.ledger import core as ledger
from cloud.ledger.core import LedgerError
from cloud.ledger.service import balance_of, post, reverse
from cloud.registry.service import Seeded, seed_group
from tests.conftest import group_spec

NOW = datetime(2026, 11, 20, tzinfo=UTC)
AMOUNTS = st.integers(min_value=1, max_value=50_000).map(lambda f: Decimal(f) / 100)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), AMOUNTS),
        st.tuples(st.just("usage"), AMOUNTS),
        st.tuples(st.just("refund"), AMOUNTS),
        st.tuples(st.just("reverse"), st.integers(0, 30)),
        st.tuples(st.just("replay"), st.integers(0, 30)),
    ),
    min_size=1,
    max_size=25,
)


async def _wallet(db: Database, group: Seeded) -> ledger.AccountRef:
    async with db.tenant(group.tenant_id) as conn:
        acct = (await conn.execute(sa.text("SELECT id, number FROM account"))).one()
    return ledger.wallet(acct.id, acct.number)


async def _scenario(db_url: str, ops: list[tuple[str, object]]) -> None:
    db = Database.connect(db_url, None, "prepay_app")
    try:
        group = await seed_group(db, group_spec())
        wallet = await _wallet(db, group)
        expected = Decimal("10.00")
        posted: list[tuple[ledger.EntryDraft, uuid.UUID, Decimal]] = []  # draft, id, effect
        reversed_ids: set[uuid.UUID] = set()
        for n, (op, arg) in enumerate(ops):
            async with db.tenant(group.tenant_id) as conn:
                if op in ("topup", "usage", "refund"):
                    assert isinstance(arg, Decimal)
                    legs, kind, effect = {
                        "topup": (
                            ledger.topup(wallet, ledger.clearing("wechat"), arg),
                            ledger.EntryKind.TOPUP,
                            arg,
                        ),
                        "usage": (
                            ledger.usage(wallet, ledger.revenue("electricity"), arg),
                            ledger.EntryKind.USAGE,
                            -arg,
                        ),
                        "refund": (
                            ledger.transfer(wallet, ledger.refunds_payable(), arg),
                            ledger.EntryKind.REFUND,
                            -arg,
                        ),
                    }[op]
                    draft = ledger.EntryDraft(f"{op}:{n}", kind, "test", NOW, legs)
                    res = await post(conn, group.tenant_id, draft)
                    assert res.created
                    posted.append((draft, res.entry_id, effect))
                    expected += effect
                elif posted:
                    assert isinstance(arg, int)
                    draft, entry_id, effect = posted[arg % len(posted)]
                    if op == "replay":
                        res = await post(conn, group.tenant_id, draft)
                        assert not res.created and res.entry_id == entry_id
                    else:
                        res = await reverse(conn, group.tenant_id, entry_id, "test", "wrong", NOW)
                        assert res.created == (entry_id not in reversed_ids)
                        if res.created:
                            expected -= effect
                            reversed_ids.add(entry_id)
        async with db.tenant(group.tenant_id) as conn:
            assert await balance_of(conn, wallet.code) == expected
        report = await check(db, [group.tenant_id])
        assert report.ok, report.breaches
    finally:
        await db.dispose()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_random_topups_usage_reversals_and_replays_keep_every_invariant(
    db_url: str, ops: list[tuple[str, object]]
) -> None:
    asyncio.run(_scenario(db_url, ops))


async def test_two_sessions_spending_one_wallet_never_lose_an_update(
    db: Database, group: Seeded
) -> None:
    wallet = await _wallet(db, group)

    async def spend(session: str) -> None:
        for i in range(40):
            async with db.tenant(group.tenant_id) as conn:
                await post(
                    conn,
                    group.tenant_id,
                    ledger.EntryDraft(
                        f"spend:{session}:{i}",
                        ledger.EntryKind.USAGE,
                        session,
                        NOW,
                        ledger.usage(wallet, ledger.revenue("electricity"), Decimal("0.07")),
                    ),
                )
                await asyncio.sleep(0)  # hold the row lock across a yield

    await asyncio.gather(spend("a"), spend("b"))
    async with db.tenant(group.tenant_id) as conn:
        assert await balance_of(conn, wallet.code) == Decimal("10.00") - 80 * Decimal("0.07")
        assert await balance_of(conn, "revenue:electricity") == 80 * Decimal("0.07")
    assert (await check(db, [group.tenant_id])).ok


async def test_a_reversal_is_linked_mirrors_the_original_and_cannot_repeat(
    db: Database, group: Seeded
) -> None:
    wallet = await _wallet(db, group)
    async with db.tenant(group.tenant_id) as conn:
        sale = await post(
            conn,
            group.tenant_id,
            ledger.EntryDraft(
                "pay:X1",
                ledger.EntryKind.TOPUP,
                "wechat",
                NOW,
                ledger.topup(wallet, ledger.clearing("wechat"), Decimal("30.00")),
            ),
        )
        undo = await reverse(conn, group.tenant_id, sale.entry_id, "op:alice", "duplicate", NOW)
        again = await reverse(conn, group.tenant_id, sale.entry_id, "op:bob", "again", NOW)
        row = (
            await conn.execute(
                sa.text("SELECT kind, actor, reason, reverses FROM journal_entry WHERE id = :e"),
                {"e": undo.entry_id},
            )
        ).one()
        assert await balance_of(conn, wallet.code) == Decimal("10.00")
        with pytest.raises(LedgerError, match="not reversed"):
            await reverse(conn, group.tenant_id, undo.entry_id, "op:alice", "x", NOW)
    assert undo.created and not again.created and again.entry_id == undo.entry_id
    assert tuple(row) == ("reversal", "op:alice", "duplicate", sale.entry_id)
    assert (await check(db, [group.tenant_id])).ok


async def test_check_finds_a_wallet_whose_unposted_usage_disagrees_with_rating(
    db: Database, group: Seeded
) -> None:
    async with db.owner.begin() as conn:  # corruption behind the application's back
        await conn.execute(
            sa.text(
                "UPDATE ledger_account SET unposted = unposted - 1, balance = balance - 1 "
                "WHERE tenant_id = :t AND kind = 'wallet'"
            ),
            {"t": group.tenant_id},
        )
    report = await check(db, [group.tenant_id])
    assert [b[1] for b in report.breaches] == ["unposted_mismatch"]


async def test_prepay_check_runs_over_one_tenant_or_all_and_fails_on_a_breach(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = group_spec()
    healthy = await seed_group(db, spec)
    monkeypatch.setenv("PREPAY_DATABASE_URL", db_url)
    rc = await asyncio.to_thread(prepay, ["check", "--tenant", spec.slug])
    assert rc == 0 and "checked 1 tenant(s)" in capsys.readouterr().out
    broken = await seed_group(db, group_spec())
    async with db.owner.begin() as conn:
        await conn.execute(
            sa.text("UPDATE ledger_account SET balance = balance + 1 WHERE tenant_id = :t"),
            {"t": broken.tenant_id},
        )
    rc = await asyncio.to_thread(prepay, ["check"])
    out = capsys.readouterr().out
    assert rc == 1 and f"tenant {broken.tenant_id}" in out
    assert f"tenant {healthy.tenant_id}" not in out
