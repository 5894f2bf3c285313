"""What a service point's page lists beside its control: its lifecycle (every meter bound to
it, 装表 to 拆表/换表, with the registers at each end), the work orders opened about it and
the notifications sent about it or its account. Read only, narrowed by scope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import NotFound
from cloud.registry.scope import sites_of


@dataclass(frozen=True)
class BoundMeter:
    gateway: str
    meter: str  # the meter's number, or its name on the gateway
    profile: str
    channel: int
    installed_at: datetime
    install_register: Decimal | None
    removed_at: datetime | None
    removal_register: Decimal | None


@dataclass(frozen=True)
class WorkOrderLine:
    id: uuid.UUID
    kind: str
    status: str
    created_at: datetime
    summary: str


@dataclass(frozen=True)
class NotificationLine:
    created_at: datetime
    template: str
    channel: str | None
    status: str
    address: str | None
    sent_at: datetime | None


@dataclass(frozen=True)
class PointRecord:
    point_id: uuid.UUID
    account_number: str
    bindings: list[BoundMeter]  # newest first
    work_orders: list[WorkOrderLine]
    notifications: list[NotificationLine]


_POINT = """
SELECT sp.id, sp.site_id, sp.account_id, a.number
FROM service_point sp JOIN account a ON a.id = sp.account_id WHERE sp.id = :p
"""
_BINDINGS = """
SELECT g.code AS gateway, coalesce(d.serial, d.key) AS meter, d.profile, ch.number AS channel,
       b.installed_at, b.install_register, b.removed_at, b.removal_register
FROM binding b JOIN channel ch ON ch.id = b.channel_id JOIN device d ON d.id = ch.device_id
JOIN gateway g ON g.id = d.gateway_id
WHERE b.service_point_id = :p ORDER BY b.installed_at DESC
"""
_WORK_ORDERS = """
SELECT id, kind, status, created_at, detail FROM work_order
WHERE service_point_id = :p ORDER BY created_at DESC LIMIT :lim
"""
_NOTIFICATIONS = """
SELECT created_at, template, channel, status, address, sent_at FROM notification
WHERE service_point_id = :p OR (service_point_id IS NULL AND account_id = :a)
ORDER BY created_at DESC LIMIT :lim
"""


def _summary(detail: dict[str, object]) -> str:
    for key in ("message", "detail", "reason", "summary"):
        value = detail.get(key)
        if isinstance(value, str) and value:
            return value[:200]
    return ""


async def point_record(
    db: Database, who: Principal, point_id: uuid.UUID, limit: int = 50
) -> PointRecord:
    """NotFound for a point of another tenant or beyond the scope."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        p = (await conn.execute(sa.text(_POINT), {"p": point_id})).first()
        sites = await sites_of(conn, who)
        if p is None or (sites is not None and p.site_id not in sites):
            raise NotFound(f"service point {point_id} not found")
        bindings = (await conn.execute(sa.text(_BINDINGS), {"p": point_id})).all()
        orders = (await conn.execute(sa.text(_WORK_ORDERS), {"p": point_id, "lim": limit})).all()
        sent = (
            await conn.execute(
                sa.text(_NOTIFICATIONS), {"p": point_id, "a": p.account_id, "lim": limit}
            )
        ).all()
    return PointRecord(
        point_id,
        p.number,
        [BoundMeter(*b) for b in bindings],
        [WorkOrderLine(o.id, o.kind, o.status, o.created_at, _summary(o.detail)) for o in orders],
        [NotificationLine(*n) for n in sent],
    )
