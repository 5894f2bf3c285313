"""Posting entries: idempotent by key, balances cached in the same transaction under a lock."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.ledger.core import AccountRef, EntryDraft, Leg, Side, balance_delta

_ENSURE_ACCOUNT = sa.text(
    "INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, balance) "
    "VALUES (:id, :t, :code, :kind, :name, :side, 0) "
    "ON CONFLICT (tenant_id, code) DO NOTHING"
)


@dataclass(frozen=True)
class Posted:
    entry_id: uuid.UUID
    created: bool  # False: the idempotency key was already applied; nothing changed


async def ensure_accounts(
    conn: AsyncConnection, tenant_id: uuid.UUID, refs: list[AccountRef]
) -> dict[str, tuple[uuid.UUID, Side]]:
    """Create missing ledger accounts; return code → (id, normal side)."""
    codes = sorted({r.code for r in refs})
    found = await _lookup(conn, codes)
    missing = [r for r in {r.code: r for r in refs}.values() if r.code not in found]
    if missing:
        await conn.execute(
            _ENSURE_ACCOUNT,
            [
                {
                    "id": uuid.uuid4(),
                    "t": tenant_id,
                    "code": r.code,
                    "kind": r.kind.value,
                    "name": r.name,
                    "side": r.normal_side.value,
                }
                for r in missing
            ],
        )
        found = await _lookup(conn, codes)
    return found


async def _lookup(conn: AsyncConnection, codes: list[str]) -> dict[str, tuple[uuid.UUID, Side]]:
    rows = await conn.execute(
        sa.text("SELECT code, id, normal_side FROM ledger_account WHERE code = ANY(:c)"),
        {"c": codes},
    )
    return {r.code: (r.id, Side(r.normal_side)) for r in rows}


async def post(conn: AsyncConnection, tenant_id: uuid.UUID, draft: EntryDraft) -> Posted:
    """Post ``draft`` once. A replay of its idempotency key returns the original entry."""
    entry_id = uuid.uuid4()
    inserted = await conn.scalar(
        sa.text(
            "INSERT INTO journal_entry "
            "(id, tenant_id, idempotency_key, kind, actor, reason, effective_at, reverses) "
            "VALUES (:id, :t, :key, :kind, :actor, :reason, :eff, :rev) "
            "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id"
        ),
        {
            "id": entry_id,
            "t": tenant_id,
            "key": draft.idempotency_key,
            "kind": draft.kind.value,
            "actor": draft.actor,
            "reason": draft.reason,
            "eff": draft.effective_at,
            "rev": draft.reverses,
        },
    )
    if inserted is None:
        existing = await conn.scalar(
            sa.text("SELECT id FROM journal_entry WHERE idempotency_key = :k"),
            {"k": draft.idempotency_key},
        )
        assert isinstance(existing, uuid.UUID)
        return Posted(existing, created=False)

    accounts = await ensure_accounts(conn, tenant_id, [leg.account for leg in draft.legs])
    await conn.execute(
        sa.text(
            "INSERT INTO posting (id, tenant_id, entry_id, ledger_account_id, amount) "
            "VALUES (:id, :t, :e, :a, :amt)"
        ),
        [
            {
                "id": uuid.uuid4(),
                "t": tenant_id,
                "e": entry_id,
                "a": accounts[leg.account.code][0],
                "amt": leg.amount,
            }
            for leg in draft.legs
        ],
    )
    await apply_balances(conn, accounts, draft.legs)
    return Posted(entry_id, created=True)


async def apply_balances(
    conn: AsyncConnection, accounts: dict[str, tuple[uuid.UUID, Side]], legs: tuple[Leg, ...]
) -> None:
    """Update cached balances, locking accounts in id order so concurrent posts never deadlock."""
    deltas: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
    for leg in legs:
        acc_id, side = accounts[leg.account.code]
        deltas[acc_id] += balance_delta(side, leg.amount)
    for acc_id in sorted(deltas):
        if deltas[acc_id] != 0:
            await conn.execute(
                sa.text("UPDATE ledger_account SET balance = balance + :d WHERE id = :id"),
                {"d": deltas[acc_id], "id": acc_id},
            )


async def balance_of(conn: AsyncConnection, code: str) -> Decimal:
    value = await conn.scalar(
        sa.text("SELECT balance FROM ledger_account WHERE code = :c"), {"c": code}
    )
    return value if isinstance(value, Decimal) else Decimal("0.00")
