"""Opening a work order inside the caller's transaction (the event and its work order
commit together). Rating opens its anomalies in bulk with its own statement."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.notify import outbox

_INSERT = sa.text(
    "INSERT INTO work_order (id, tenant_id, kind, service_point_id, channel_id, detail, "
    "status, created_at) VALUES (:id, :t, :k, :p, :c, CAST(:d AS jsonb), 'open', :now)"
)


async def open_work_order(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    kind: str,
    point_id: uuid.UUID | None,
    channel_id: uuid.UUID | None,
    now: datetime,
    detail: dict[str, str],
) -> uuid.UUID:
    """Open a work order of ``kind`` for a point (or a channel), its new id."""
    order_id = uuid.uuid4()
    await conn.execute(
        _INSERT,
        {
            "id": order_id,
            "t": tenant_id,
            "k": kind,
            "p": point_id,
            "c": channel_id,
            "d": json.dumps(detail, ensure_ascii=False),
            "now": now,
        },
    )
    if kind == "recharge_failed" and point_id is not None:
        await outbox.recharge_failed(conn, tenant_id, point_id, detail, now)
    return order_id
