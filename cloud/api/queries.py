"""Read models for the API and console."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud.db import Database
from cloud.errors import NotFound


@dataclass(frozen=True)
class PointRow:
    id: uuid.UUID
    name: str
    account_number: str
    balance: Decimal
    desired: str | None
    reported: str | None
    reported_at: datetime | None
    last_total: Decimal | None
    last_reading_at: datetime | None
    gateway_online: bool
    site_timezone: str = "Asia/Shanghai"  # times are shown in the site's zone


_POINTS = """
SELECT sp.id, sp.name, a.number AS account_number, la.balance, tw.desired, tw.reported,
       tw.reported_at, r.total AS last_total, r.measured_at AS last_reading_at,
       g.online AS gateway_online, s.timezone AS site_timezone
FROM service_point sp
JOIN site s ON s.id = sp.site_id
JOIN account a ON a.id = sp.account_id
JOIN ledger_account la ON la.id = a.wallet_id
LEFT JOIN binding b ON b.service_point_id = sp.id AND b.removed_at IS NULL
LEFT JOIN channel ch ON ch.id = b.channel_id
LEFT JOIN device d ON d.id = ch.device_id
LEFT JOIN gateway g ON g.id = d.gateway_id
LEFT JOIN supply_twin tw ON tw.channel_id = b.channel_id
LEFT JOIN LATERAL (
  SELECT total, measured_at FROM reading WHERE channel_id = b.channel_id
  ORDER BY measured_at DESC LIMIT 1) r ON true
{where}
ORDER BY sp.name
"""


async def service_points(db: Database, tenant_id: uuid.UUID) -> list[PointRow]:
    async with db.tenant(tenant_id) as conn:
        rows = await conn.execute(sa.text(_POINTS.format(where="")))
        return [PointRow(**r._mapping) for r in rows]


async def service_point(db: Database, tenant_id: uuid.UUID, point_id: uuid.UUID) -> PointRow:
    async with db.tenant(tenant_id) as conn:
        row = (
            await conn.execute(sa.text(_POINTS.format(where="WHERE sp.id = :p")), {"p": point_id})
        ).first()
    if row is None:
        raise NotFound(f"service point {point_id} not found")
    return PointRow(**row._mapping)


async def account_balance(db: Database, tenant_id: uuid.UUID, number: str) -> Decimal:
    async with db.tenant(tenant_id) as conn:
        value = await conn.scalar(
            sa.text(
                "SELECT la.balance FROM account a JOIN ledger_account la ON la.id = a.wallet_id "
                "WHERE a.number = :n"
            ),
            {"n": number},
        )
    if value is None:
        raise NotFound(f"account {number} not found")
    assert isinstance(value, Decimal)
    return value
