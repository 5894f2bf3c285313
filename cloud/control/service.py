"""Device twin and command queue: turn a policy decision into at most one live command."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.control.policy import Decision, SupplyState
from cloud.db import pg_array, pg_text_array
from contract.mqtt import AckStatus, CommandAction

NOTIFY_CHANNEL = "prepay_command"
OPEN_STATES = ("queued", "sent")
ACTION_FOR: dict[SupplyState, CommandAction] = {
    SupplyState.OFF: CommandAction.TRIP,
    SupplyState.ON: CommandAction.CLOSE,
}


@dataclass(frozen=True)
class CommandTiming:
    deadline: timedelta = timedelta(minutes=5)
    retry: timedelta = timedelta(seconds=5)


async def steer_supply(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    channel_id: uuid.UUID,
    decision: Decision,
    now: datetime,
    timing: CommandTiming,
) -> uuid.UUID | None:
    """Record the desired state in the channel's twin and enqueue a command when the device
    must change. Returns the new command's id, if one was queued."""
    await conn.execute(
        sa.text(
            "INSERT INTO supply_twin (channel_id, tenant_id, desired_reason) VALUES (:c, :t, '') "
            "ON CONFLICT (channel_id) DO NOTHING"
        ),
        {"c": channel_id, "t": tenant_id},
    )
    twin = (
        await conn.execute(
            sa.text("SELECT desired, reported FROM supply_twin WHERE channel_id = :c FOR UPDATE"),
            {"c": channel_id},
        )
    ).one()
    want = decision.supply.value
    if twin.desired != want:
        await conn.execute(
            sa.text(
                "UPDATE supply_twin SET desired = :d, desired_at = :now, desired_reason = :r "
                "WHERE channel_id = :c"
            ),
            {"d": want, "now": now, "r": decision.reason, "c": channel_id},
        )
        return await _enqueue(conn, tenant_id, channel_id, decision, now, timing)
    if twin.reported == want:
        return None
    # Desired unchanged but not reached: re-issue only when nothing is in flight and the
    # last attempt finished more than one retry interval ago (a gateway back from offline
    # converges to the current desired state, never to stale commands).
    recent = await conn.scalar(
        sa.text(
            "SELECT 1 FROM device_command WHERE channel_id = :c AND "
            "(state IN ('queued', 'sent') OR finished_at > :since) LIMIT 1"
        ),
        {"c": channel_id, "since": now - timing.retry},
    )
    if recent:
        return None
    return await _enqueue(conn, tenant_id, channel_id, decision, now, timing)


async def _enqueue(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    channel_id: uuid.UUID,
    decision: Decision,
    now: datetime,
    timing: CommandTiming,
) -> uuid.UUID:
    command_id = uuid.uuid4()
    await conn.execute(
        sa.text(
            "INSERT INTO device_command (id, tenant_id, gateway_id, channel_id, action, params, "
            "state, reason, created_at, deadline, attempts, result) "
            "SELECT :id, :t, d.gateway_id, ch.id, :action, '{}'::jsonb, 'queued', :reason, :now, "
            ":deadline, 0, '{}'::jsonb FROM channel ch JOIN device d ON d.id = ch.device_id "
            "WHERE ch.id = :c"
        ),
        {
            "id": command_id,
            "t": tenant_id,
            "action": ACTION_FOR[decision.supply].value,
            "reason": decision.reason,
            "now": now,
            "deadline": now + timing.deadline,
            "c": channel_id,
        },
    )
    # Whatever was in flight for this channel is now stale: the newest decision wins.
    await conn.execute(
        sa.text(
            "UPDATE device_command SET state = 'superseded', superseded_by = :id, "
            "finished_at = :now WHERE channel_id = :c AND state IN ('queued', 'sent') "
            "AND id <> :id"
        ),
        {"id": command_id, "now": now, "c": channel_id},
    )
    await conn.execute(
        sa.text("SELECT pg_notify(:ch, :t)"), {"ch": NOTIFY_CHANNEL, "t": str(tenant_id)}
    )
    return command_id


async def record_reported(
    conn: AsyncConnection, channel_id: uuid.UUID, supply: SupplyState, at: datetime
) -> None:
    """The device's own word on its supply state; older news never overwrites newer."""
    await conn.execute(
        sa.text(
            "UPDATE supply_twin SET reported = :s, reported_at = :at WHERE channel_id = :c "
            "AND (reported_at IS NULL OR reported_at <= :at)"
        ),
        {"s": supply.value, "at": at, "c": channel_id},
    )


async def record_reported_many(
    conn: AsyncConnection, latest: dict[uuid.UUID, tuple[datetime, SupplyState]]
) -> None:
    """:func:`record_reported` for a batch of channels in one statement (in channel order)."""
    if not latest:
        return
    channels = sorted(latest)
    await conn.execute(
        sa.text(
            "INSERT INTO supply_twin (channel_id, tenant_id, desired_reason, reported, "
            "reported_at) SELECT v.c, ch.tenant_id, '', v.s, v.at FROM unnest("
            "CAST(:c AS uuid[]), CAST(:s AS text[]), CAST(:at AS timestamptz[])) AS v(c, s, at) "
            "JOIN channel ch ON ch.id = v.c ORDER BY v.c "
            "ON CONFLICT (channel_id) DO UPDATE SET reported = excluded.reported, "
            "reported_at = excluded.reported_at WHERE supply_twin.reported_at IS NULL "
            "OR supply_twin.reported_at <= excluded.reported_at"
        ),
        {
            "c": pg_array(channels),
            "s": pg_text_array(latest[c][1].value for c in channels),
            "at": pg_array(latest[c][0] for c in channels),
        },
    )


_FINAL = {
    AckStatus.OK: "acked",
    AckStatus.FAILED: "failed",
    AckStatus.EXPIRED: "expired",
    AckStatus.INVALID: "failed",
}


async def apply_ack(
    conn: AsyncConnection,
    command_id: uuid.UUID,
    status: AckStatus,
    result: dict[str, str],
    reported: SupplyState | None,
    at: datetime,
) -> bool:
    """Close an open command with the gateway's answer. A duplicate or late ack (for a command
    already acked, superseded or expired) changes nothing and returns False."""
    row = (
        await conn.execute(
            sa.text(
                "UPDATE device_command SET state = :s, finished_at = :at, result = "
                "CAST(:r AS jsonb) WHERE id = :id AND state IN ('queued', 'sent') "
                "RETURNING channel_id"
            ),
            {"s": _FINAL[status], "at": at, "r": _json(result), "id": command_id},
        )
    ).first()
    changed = row is not None
    if reported is not None:
        # The meter's answer is news about its state even when the command was already
        # closed (a late ack of a superseded trip); record_reported keeps the newest.
        channel_id = (
            row.channel_id
            if row is not None
            else await conn.scalar(
                sa.text("SELECT channel_id FROM device_command WHERE id = :id"), {"id": command_id}
            )
        )
        if isinstance(channel_id, uuid.UUID):
            await record_reported(conn, channel_id, reported, at)
    return changed


def _json(d: dict[str, str]) -> str:
    return json.dumps(d, ensure_ascii=False)
