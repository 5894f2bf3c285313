"""The audit trail: who did what to which target, appended in the caller's transaction."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


async def record(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    actor: str,
    action: str,
    target: str,
    now: datetime,
    detail: dict[str, str] | None = None,
) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO audit_event (id, tenant_id, actor, action, target, detail, at) "
            "VALUES (:id, :t, :a, :ac, :tg, CAST(:d AS jsonb), :now)"
        ),
        {
            "id": uuid.uuid4(),
            "t": tenant_id,
            "a": actor,
            "ac": action,
            "tg": target,
            "d": json.dumps(detail or {}),
            "now": now,
        },
    )
