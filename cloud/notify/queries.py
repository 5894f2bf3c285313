"""What the console shows of notifications (issue 16, item 5): a customer's messages with
their delivery status, and the delivery overview per day and channel. Plain reads under
the tenant's row-level security; the pages are the console's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from notifications import templates


@dataclass(frozen=True)
class CustomerNotification:
    id: uuid.UUID
    kind: str  # the cause: low_balance_1, supply_cut, topup_received…
    title_msgid: str  # the template's short title (msgid; translate it where shown)
    channel: str | None
    status: str  # queued | sending | sent | delivered | undelivered | failed | skipped
    reason: str | None  # why it waits, was skipped or failed
    address: str | None
    segments: int | None
    attempts: int
    point: str | None
    account: str | None
    created_at: datetime
    sent_at: datetime | None
    status_at: datetime | None
    error: dict[str, Any] | None


async def customer_notifications(
    conn: AsyncConnection,
    customer_id: uuid.UUID,
    limit: int = 50,
    offset: int = 0,
    kind: str | None = None,
) -> tuple[int, list[CustomerNotification]]:
    """A customer's notifications (of one kind, or all), newest first, and how many."""
    only = "AND (CAST(:k AS text) IS NULL OR n.cause_kind = :k)"
    total = await conn.scalar(
        sa.text(f"SELECT count(*) FROM notification n WHERE n.customer_id = :c {only}"),
        {"c": customer_id, "k": kind},
    )
    rows = await conn.execute(
        sa.text(
            "SELECT n.id, n.cause_kind, n.template, n.channel, n.status, n.reason, n.address, "
            "n.segments, n.attempts, n.variables->>'point' AS point, a.number AS account, "
            "n.created_at, n.sent_at, n.status_at, n.error FROM notification n "
            "LEFT JOIN account a ON a.id = n.account_id WHERE n.customer_id = :c "
            f"{only} "
            "ORDER BY n.created_at DESC, n.id LIMIT :l OFFSET :o"
        ),
        {"c": customer_id, "l": limit, "o": offset, "k": kind},
    )
    items = [
        CustomerNotification(
            r.id,
            r.cause_kind,
            t.title if (t := templates.TEMPLATES.get(r.template)) else r.template,
            r.channel,
            r.status,
            r.reason,
            r.address,
            r.segments,
            r.attempts,
            r.point,
            r.account,
            r.created_at,
            r.sent_at,
            r.status_at,
            r.error,
        )
        for r in rows
    ]
    return int(total or 0), items


@dataclass(frozen=True)
class DeliveryDay:
    day: date  # in the zone asked for
    channel: str
    queued: int  # still waiting (quiet hours, retries) or being sent
    sent: int  # accepted by the provider, no final status yet
    delivered: int
    failed: int  # failed or undelivered
    skipped: int
    segments: int  # what the SMS cost, in segments (accepted messages)


async def delivery_overview(
    conn: AsyncConnection, since: date, until: date, timezone: str = "Asia/Shanghai"
) -> list[DeliveryDay]:
    """Per local day (of ``created_at`` in ``timezone``) and channel, ``since`` to
    ``until`` inclusive: how many messages are waiting, sent, delivered, failed and
    skipped, and the segments of those the provider accepted."""
    rows = await conn.execute(
        sa.text(
            "SELECT (n.created_at AT TIME ZONE :tz)::date AS day, "
            "coalesce(n.channel, 'none') AS channel, "
            "count(*) FILTER (WHERE status IN ('queued', 'sending')) AS queued, "
            "count(*) FILTER (WHERE status = 'sent') AS sent, "
            "count(*) FILTER (WHERE status = 'delivered') AS delivered, "
            "count(*) FILTER (WHERE status IN ('failed', 'undelivered')) AS failed, "
            "count(*) FILTER (WHERE status = 'skipped') AS skipped, "
            "coalesce(sum(segments) FILTER (WHERE provider_id IS NOT NULL), 0) AS segments "
            "FROM notification n "
            "WHERE n.created_at >= (CAST(:since AS date)::timestamp AT TIME ZONE :tz) "
            "AND n.created_at < ((CAST(:until AS date) + 1)::timestamp AT TIME ZONE :tz) "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        {"tz": timezone, "since": since, "until": until},
    )
    return [
        DeliveryDay(
            r.day,
            r.channel,
            r.queued,
            r.sent,
            r.delivered,
            r.failed,
            r.skipped,
            int(r.segments),
        )
        for r in rows
    ]


def template_texts() -> list[tuple[str, str, str, str]]:
    """Every template in both languages: (kind, title msgid, English text, Chinese
    text), for the console's template page."""
    zh = templates.translations("zh_CN")
    return [(kind, t.title, t.text, zh.gettext(t.text)) for kind, t in templates.TEMPLATES.items()]
