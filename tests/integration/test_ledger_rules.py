"""The database itself enforces the ledger's rules, whatever the application does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.check import check
from cloud.db import Database
from cloud.ledger import core as ledger
from cloud.ledger.service import balance_of, post
from cloud.registry.service import Seeded


async def _wallet(db: Database, group: Seeded) -> ledger.AccountRef:
    async with db.tenant(group.tenant_id) as conn:
        acct = (await conn.execute(sa.text("SELECT id, number FROM account"))).one()
    return ledger.wallet(acct.id, acct.number)


async def test_unbalanced_entry_is_refused_at_commit(db: Database, group: Seeded) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="unbalanced"):
        async with db.tenant(group.tenant_id) as conn:
            acc = await conn.scalar(sa.text("SELECT id FROM ledger_account LIMIT 1"))
            entry = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO journal_entry (id, tenant_id, idempotency_key, kind, actor, "
                    "reason, effective_at) VALUES (:e, :t, 'bad', 'adjustment', 'x', '', now())"
                ),
                {"e": entry, "t": group.tenant_id},
            )
            for amount in ("5.00", "-4.99"):
                await conn.execute(
                    sa.text(
                        "INSERT INTO posting (id, tenant_id, entry_id, ledger_account_id, amount)"
                        " VALUES (gen_random_uuid(), :t, :e, :a, :m)"
                    ),
                    {"t": group.tenant_id, "e": entry, "a": acc, "m": Decimal(amount)},
                )


async def test_journal_is_append_only(db: Database, group: Seeded) -> None:
    with pytest.raises(sa.exc.DBAPIError, match=r"permission denied|append-only"):
        async with db.tenant(group.tenant_id) as conn:
            await conn.execute(sa.text("UPDATE posting SET amount = amount * 2"))


async def test_replayed_key_posts_once_and_check_holds(db: Database, group: Seeded) -> None:
    wallet = await _wallet(db, group)
    draft = ledger.EntryDraft(
        idempotency_key="pay:T123",
        kind=ledger.EntryKind.TOPUP,
        actor="test",
        effective_at=datetime.now(UTC),
        legs=ledger.topup(wallet, ledger.clearing("wechat"), Decimal("12.34")),
    )
    async with db.tenant(group.tenant_id) as conn:
        first = await post(conn, group.tenant_id, draft)
    async with db.tenant(group.tenant_id) as conn:
        second = await post(conn, group.tenant_id, draft)
        balance = await balance_of(conn, wallet.code)
    assert first.created and not second.created and first.entry_id == second.entry_id
    assert balance == Decimal("22.34")  # 10.00 opening + 12.34 once
    report = await check(db, [group.tenant_id])
    assert report.ok, report.breaches


async def test_check_reports_a_tampered_cached_balance(db: Database, group: Seeded) -> None:
    async with db.owner.begin() as conn:  # simulate corruption behind the app's back
        await conn.execute(
            sa.text(
                "UPDATE ledger_account SET balance = balance + 1 WHERE tenant_id = :t "
                "AND kind = 'wallet'"
            ),
            {"t": group.tenant_id},
        )
    report = await check(db, [group.tenant_id])
    assert [b[1] for b in report.breaches] == ["cached_balance_mismatch"]
