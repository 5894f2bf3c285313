"""One-time form keys (DESIGN §16): a form that creates something carries a key made when
the page was drawn; the first submission claims it and does the work, a second one (a
double click, a re-sent POST) finds it claimed and is sent to the first one's result.
A form that moves money uses its key as the sale's idempotency key instead."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.db import Database


def new_key() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Claim:
    first: bool  # this submission does the work
    result: str | None  # for a repeat: where the first one's result is (None: still running)


async def claim(db: Database, who: Principal, key: str, now: datetime) -> Claim:
    async with db.tenant(who.tenant_id) as conn:
        inserted = await conn.scalar(
            sa.text(
                "INSERT INTO form_key (tenant_id, key, operator_id, created_at) "
                "VALUES (:t, :k, :o, :now) ON CONFLICT DO NOTHING RETURNING key"
            ),
            {"t": who.tenant_id, "k": key[:64], "o": who.operator_id, "now": now},
        )
        if inserted is not None:
            return Claim(True, None)
        result = await conn.scalar(
            sa.text("SELECT result FROM form_key WHERE key = :k"), {"k": key[:64]}
        )
    return Claim(False, result)


async def finish(db: Database, who: Principal, key: str, result: str) -> None:
    async with db.tenant(who.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE form_key SET result = :r WHERE key = :k"),
            {"r": result, "k": key[:64]},
        )


async def release(db: Database, who: Principal, key: str) -> None:
    """The work was refused (bad input): the key may be used again once it is corrected."""
    async with db.tenant(who.tenant_id) as conn:
        await conn.execute(sa.text("DELETE FROM form_key WHERE key = :k"), {"k": key[:64]})
