"""The installer's "test this meter": a read-now command to one registered meter through its
gateway (queued like any command; the dispatcher sends it, the gateway reads the meter at
once and answers), then the answer: the command's state and the reading it brought."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud import audit
from cloud.auth import Principal
from cloud.control.service import NOTIFY_CHANNEL, CommandTiming
from cloud.db import Database
from cloud.errors import NotFound
from cloud.registry.scope import sites_of
from contract.mqtt import CommandAction


@dataclass(frozen=True)
class MeterTest:
    id: uuid.UUID
    device: str
    channel: int
    state: str  # queued | sent | acked | failed | expired
    detail: str
    created_at: datetime
    reading_at: datetime | None  # the newest reading since the test was asked
    total: Decimal | None
    supply_on: bool | None

    @property
    def done(self) -> bool:
        return self.state not in ("queued", "sent")


_CHANNEL = """
SELECT ch.id AS channel_id, d.gateway_id, g.site_id,
  (SELECT b.service_point_id FROM binding b WHERE b.channel_id = ch.id AND b.removed_at IS NULL)
    AS point
FROM gateway g JOIN device d ON d.gateway_id = g.id JOIN channel ch ON ch.device_id = d.id
WHERE g.code = :g AND d.key = :k AND ch.number = :n
"""


async def ask(
    db: Database, who: Principal, gateway: str, key: str, channel: int, now: datetime,
    timing: CommandTiming,
) -> uuid.UUID:  # fmt: skip
    """Queue a read-now for the meter; NotFound for one not registered or beyond the scope."""
    who.require("meter.install")
    async with db.tenant(who.tenant_id) as conn:
        row = (
            await conn.execute(sa.text(_CHANNEL), {"g": gateway, "k": key, "n": channel})
        ).first()
        scope = await sites_of(conn, who)
        if row is None or (scope is not None and row.site_id not in scope):
            raise NotFound(f"no meter {key} channel {channel} on gateway {gateway}")
        command_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO device_command (id, tenant_id, gateway_id, channel_id, "
                "service_point_id, action, params, state, reason, created_at, deadline, "
                "attempts, result, origin) VALUES (:id, :t, :g, :c, :p, :a, '{}'::jsonb, "
                "'queued', 'meter test', :now, :deadline, 0, '{}'::jsonb, :o)"
            ),
            {"id": command_id, "t": who.tenant_id, "g": row.gateway_id, "c": row.channel_id,
             "p": row.point, "a": CommandAction.READ_NOW.value, "now": now,
             "deadline": now + timing.deadline, "o": f"operator:{who.actor}"},
        )  # fmt: skip
        await conn.execute(
            sa.text("SELECT pg_notify(:ch, :t)"), {"ch": NOTIFY_CHANNEL, "t": str(who.tenant_id)}
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "meter.test", f"{gateway}/{key}/{channel}", now
        )
    return command_id


_ANSWER = """
SELECT c.id, d.key, ch.number, c.state, c.result, c.created_at, g.site_id,
  r.measured_at, r.total, r.supply_on
FROM device_command c JOIN gateway g ON g.id = c.gateway_id
JOIN channel ch ON ch.id = c.channel_id JOIN device d ON d.id = ch.device_id
LEFT JOIN LATERAL (
  SELECT measured_at, total, supply_on FROM reading
  WHERE channel_id = c.channel_id AND received_at >= c.created_at - interval '1 second'
  ORDER BY measured_at DESC LIMIT 1) r ON true
WHERE c.id = :id AND c.action = 'read_now' AND g.code = :g
"""


async def answer(db: Database, who: Principal, gateway: str, test_id: uuid.UUID) -> MeterTest:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        r = (await conn.execute(sa.text(_ANSWER), {"id": test_id, "g": gateway})).first()
        scope = await sites_of(conn, who)
    if r is None or (scope is not None and r.site_id not in scope):
        raise NotFound(f"no meter test {test_id}")
    detail = str((r.result or {}).get("detail", ""))
    return MeterTest(
        r.id, r.key, r.number, r.state, detail, r.created_at, r.measured_at, r.total,
        r.supply_on,
    )  # fmt: skip
