"""Posting entries: idempotent by key, balances cached in the same transaction under a lock.

Everything here is set-based: a batch of entries is one INSERT of entries, one of postings,
one locking SELECT and one UPDATE of balances, whatever the batch's size. Accounts are
locked in id order, so concurrent batches never deadlock on each other.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import pg_array, pg_text_array
from cloud.ledger.core import (
    AccountKind,
    AccountRef,
    EntryDraft,
    EntryKind,
    LedgerError,
    Leg,
    Side,
    live_deltas,
    reversal,
)

_ENSURE_ACCOUNT = sa.text(
    "INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, balance, unposted) "
    "VALUES (:id, :t, :code, :kind, :name, :side, 0, 0) "
    "ON CONFLICT (tenant_id, code) DO NOTHING"
)
_INSERT_ENTRIES = sa.text(
    "INSERT INTO journal_entry "
    "(id, tenant_id, idempotency_key, kind, actor, reason, effective_at, reverses) "
    "SELECT id, :t, key, kind, actor, reason, eff, rev FROM unnest("
    "CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:kinds AS text[]), "
    "CAST(:actors AS text[]), CAST(:reasons AS text[]), CAST(:effs AS timestamptz[]), "
    "CAST(:revs AS uuid[])) AS v(id, key, kind, actor, reason, eff, rev) "
    "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id"
)
_INSERT_POSTINGS = sa.text(
    "INSERT INTO posting (id, tenant_id, entry_id, ledger_account_id, amount) "
    "SELECT gen_random_uuid(), :t, e, a, m FROM unnest("
    "CAST(:entries AS uuid[]), CAST(:accounts AS uuid[]), CAST(:amounts AS numeric[])) "
    "AS v(e, a, m)"
)
_DELTAS = "unnest(CAST(:ids AS uuid[]), CAST(:b AS numeric[]), CAST(:u AS numeric[]))"


@lru_cache
def _moves(live_from: str | None) -> sa.TextClause:
    """The statement that locks (in id order) and moves balances by ``:ids``/``:b``/``:u``
    (and by the (account, balance change, unposted change) rows of ``live_from``), returning
    the balances of ``:ids``. The update joins the locked rows, so it runs after the lock
    and moves only what is locked (each row's latest version, as an UPDATE does).

    NO KEY UPDATE, the lock an UPDATE of the balance takes anyway: a plain FOR UPDATE would
    conflict with the KEY SHARE locks that inserting postings (a foreign key) takes, and two
    sessions posting to the same wallet would deadlock."""
    source = f"SELECT * FROM {_DELTAS}"
    if live_from is not None:
        source = (
            f"SELECT a, sum(b), sum(u) FROM ({source} UNION ALL "
            f"SELECT a, b, u FROM ({live_from}) AS x(a, b, u)) AS y(a, b, u) GROUP BY a"
        )
    return sa.text(
        f"WITH v(id, b, u) AS MATERIALIZED ({source}), "
        "locked AS (SELECT id FROM ledger_account WHERE id IN (SELECT id FROM v) "
        "ORDER BY id FOR NO KEY UPDATE), "
        "moved AS (UPDATE ledger_account a SET balance = a.balance + v.b, "
        "unposted = a.unposted + v.u FROM v JOIN locked USING (id) WHERE a.id = v.id "
        "RETURNING a.id, a.balance) "
        "SELECT id, balance FROM moved WHERE id = ANY(CAST(:ids AS uuid[]))"
    )


class EntryNotFound(LedgerError):
    pass


@dataclass(frozen=True)
class Posted:
    entry_id: uuid.UUID
    created: bool  # False: the idempotency key was already applied; nothing changed


@dataclass(frozen=True)
class Batch:
    posted: list[Posted]
    balances: dict[uuid.UUID, Decimal]  # live balance after the batch, of every account it moved


async def ensure_accounts(
    conn: AsyncConnection, tenant_id: uuid.UUID, refs: Sequence[AccountRef]
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
        sa.text(
            "SELECT code, id, normal_side FROM ledger_account WHERE code = ANY(CAST(:c AS text[]))"
        ),
        {"c": pg_text_array(codes)},
    )
    return {r.code: (r.id, Side(r.normal_side)) for r in rows}


async def post(conn: AsyncConnection, tenant_id: uuid.UUID, draft: EntryDraft) -> Posted:
    """Post ``draft`` once. A replay of its idempotency key returns the original entry."""
    return (await post_many(conn, tenant_id, [draft])).posted[0]


async def post_many(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    drafts: Sequence[EntryDraft],
    live: Mapping[AccountRef, Decimal] | None = None,
    known: Mapping[str, tuple[uuid.UUID, Side]] | None = None,
    live_from: str | None = None,
) -> Batch:
    """Post each draft once (replayed keys change nothing) and, in the same locked update,
    move ``live`` amounts (rated usage not yet journaled) into accounts' live balances and
    their ``unposted``. ``known`` spares the lookup of accounts the caller already has.
    ``live_from``: a query of further (account id, balance change, unposted change) rows
    (usage rated and windows posted set-based in SQL), whose balances are not returned.
    Returns one :class:`Posted` per draft, in order, and the moved accounts' balances."""
    live = live or {}
    keys = [d.idempotency_key for d in drafts]
    if len(set(keys)) != len(keys):
        raise LedgerError("a batch names the same idempotency key twice")
    ids = [uuid.uuid4() for _ in drafts]
    created: set[uuid.UUID] = set()
    if drafts:
        rows = await conn.execute(
            _INSERT_ENTRIES,
            {
                "t": tenant_id,
                "ids": pg_array(ids),
                "keys": keys,
                "kinds": pg_text_array(d.kind.value for d in drafts),
                "actors": pg_text_array(d.actor for d in drafts),
                "reasons": pg_text_array(d.reason for d in drafts),
                "effs": pg_array(d.effective_at for d in drafts),
                "revs": pg_array(d.reverses for d in drafts),
            },
        )
        created = {r[0] for r in rows}
    fresh = [(i, d) for i, d in zip(ids, drafts, strict=True) if i in created]
    refs = [leg.account for _, d in fresh for leg in d.legs] + list(live)
    if not refs and live_from is None:
        return Batch(await _results(conn, ids, drafts, created), {})
    accounts = dict(known or {})
    if any(r.code not in accounts for r in refs):
        accounts.update(await ensure_accounts(conn, tenant_id, refs))
    if fresh:
        legs = [(i, leg) for i, d in fresh for leg in d.legs]
        await conn.execute(
            _INSERT_POSTINGS,
            {
                "t": tenant_id,
                "entries": pg_array(i for i, _ in legs),
                "accounts": pg_array(accounts[leg.account.code][0] for _, leg in legs),
                "amounts": pg_array(leg.amount for _, leg in legs),
            },
        )
    deltas: dict[uuid.UUID, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for _, d in fresh:
        for code, (b, u) in live_deltas(d.legs, d.settles).items():
            acc = deltas[accounts[code][0]]
            acc[0] += b
            acc[1] += u
    for ref, amount in live.items():
        acc = deltas[accounts[ref.code][0]]
        acc[0] += amount
        acc[1] += amount
    balances = await apply_deltas(conn, {k: (v[0], v[1]) for k, v in deltas.items()}, live_from)
    return Batch(await _results(conn, ids, drafts, created), balances)


async def _results(
    conn: AsyncConnection,
    ids: list[uuid.UUID],
    drafts: Sequence[EntryDraft],
    created: set[uuid.UUID],
) -> list[Posted]:
    replayed = [d.idempotency_key for i, d in zip(ids, drafts, strict=True) if i not in created]
    existing: dict[str, uuid.UUID] = {}
    if replayed:
        rows = await conn.execute(
            sa.text(
                "SELECT idempotency_key, id FROM journal_entry "
                "WHERE idempotency_key = ANY(CAST(:k AS text[]))"
            ),
            {"k": pg_text_array(replayed)},
        )
        existing = {r[0]: r[1] for r in rows}
    return [
        Posted(i, True) if i in created else Posted(existing[d.idempotency_key], False)
        for i, d in zip(ids, drafts, strict=True)
    ]


async def apply_deltas(
    conn: AsyncConnection,
    deltas: Mapping[uuid.UUID, tuple[Decimal, Decimal]],
    live_from: str | None = None,
) -> dict[uuid.UUID, Decimal]:
    """Move cached (live balance, unposted) by ``deltas`` and by the rows ``live_from``
    selects, locking accounts in id order; return the new live balances of the accounts in
    ``deltas``."""
    moving = sorted((k for k, (b, u) in deltas.items() if b != 0 or u != 0), key=attrgetter("int"))
    if not moving and live_from is None:
        return {}
    params = {
        "ids": pg_array(moving),
        "b": pg_array(deltas[k][0] for k in moving),
        "u": pg_array(deltas[k][1] for k in moving),
    }
    return {r[0]: r[1] for r in await conn.execute(_moves(live_from), params)}


async def reverse(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    entry_id: uuid.UUID,
    actor: str,
    reason: str,
    at: datetime,
) -> Posted:
    """Post the mirror of ``entry_id``, linked to it; reversing twice is a no-op."""
    kind = await conn.scalar(
        sa.text("SELECT kind FROM journal_entry WHERE id = :e"), {"e": entry_id}
    )
    if kind is None:
        raise EntryNotFound(f"journal entry {entry_id} not found")
    rows = await conn.execute(
        sa.text(
            "SELECT a.code, a.kind, a.name, p.amount FROM posting p "
            "JOIN ledger_account a ON a.id = p.ledger_account_id WHERE p.entry_id = :e "
            "ORDER BY p.amount DESC"
        ),
        {"e": entry_id},
    )
    legs = tuple(Leg(AccountRef(r.code, AccountKind(r.kind), r.name), r.amount) for r in rows)
    draft = reversal(entry_id, EntryKind(kind), legs, actor, reason, at)
    return await post(conn, tenant_id, draft)


async def balance_of(conn: AsyncConnection, code: str) -> Decimal:
    """The live balance: posted entries plus usage rated but not yet posted."""
    value = await conn.scalar(
        sa.text("SELECT balance FROM ledger_account WHERE code = :c"), {"c": code}
    )
    return value if isinstance(value, Decimal) else Decimal("0.00")
