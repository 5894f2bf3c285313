"""催费 reminders: staff send the accounts of an arrears selection a reminder through the
notification outbox (SMS or WeChat, as each customer prefers), one message per account
and sending, recorded per customer as any notification (DESIGN §8, issue 16 item 4)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from cloud import audit
from cloud.auth import Principal
from cloud.db import Database
from cloud.dunning.arrears import ArrearsQuery, every_arrears
from cloud.errors import Invalid
from cloud.notify import outbox

#: At most this many accounts in one sending (a selection from the list's pages).
REMIND_MAX = 2_000


@dataclass(frozen=True)
class Reminded:
    sent: int  # reminders written to the outbox
    repeated: int  # already reminded by this sending (a resent form)
    not_owing: int  # chosen but no longer in arrears (paid meanwhile): nothing sent


async def remind(
    db: Database,
    who: Principal,
    account_ids: tuple[uuid.UUID, ...],
    batch: str,
    now: datetime,
) -> Reminded:
    """Queue an arrears reminder to each chosen account still in arrears, with what it owes
    now. ``batch`` names the sending (the form's one-time key): sending it again writes
    nothing new. Accounts beyond the operator's scope are not found, as in the list."""
    who.require("dunning.send")
    if not account_ids:
        raise Invalid("choose at least one account to remind")
    if len(account_ids) > REMIND_MAX:
        raise Invalid(f"at most {REMIND_MAX} accounts in one sending")
    owing = await every_arrears(db, who, ArrearsQuery(account_ids=account_ids), now, REMIND_MAX)
    sent = 0
    async with db.tenant(who.tenant_id) as conn:
        for row in owing:
            sent += await outbox.arrears_reminder(
                conn, who.tenant_id, row.account_id, row.owed, row.days, batch, now
            )
        if not sent:  # a resent form: nothing new to record
            return Reminded(0, len(owing), len(set(account_ids)) - len(owing))
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "dunning.remind",
            f"batch:{batch}",
            now,
            {
                "accounts": ",".join(r.account_number for r in owing),
                "sent": str(sent),
            },
        )
    return Reminded(sent, len(owing) - sent, len(set(account_ids)) - len(owing))


@dataclass(frozen=True)
class SentReminder:
    account: str
    customer: str
    channel: str | None
    address: str | None
    status: str
    reason: str | None
    created_at: datetime
    status_at: datetime | None


async def sending(db: Database, who: Principal, batch: str) -> list[SentReminder]:
    """What became of one sending's reminders, account by account."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT a.number, c.name, n.channel, n.address, n.status, n.reason, "
                "n.created_at, n.status_at FROM notification n "
                "JOIN account a ON a.id = n.account_id JOIN customer c ON c.id = n.customer_id "
                "WHERE n.cause_kind = 'arrears_reminder' AND n.cause_key = :k ORDER BY a.number"
            ),
            {"k": f"remind:{batch}"},
        )
        return [SentReminder(*r) for r in rows]
