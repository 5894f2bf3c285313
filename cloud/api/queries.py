"""Read models for the API and console."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import NotFound
from cloud.registry.scope import selling_sites, sites_of


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
       coalesce(g.online, false) AS gateway_online, s.timezone AS site_timezone
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


_IN_SCOPE = "(:all OR sp.site_id = ANY(:sites))"


async def _scope(conn: AsyncConnection, who: Principal | None) -> dict[str, object]:
    """Parameters of ``_IN_SCOPE``: every site without ``who`` or for a tenant-wide one."""
    sites = None if who is None else await sites_of(conn, who)
    return {"all": sites is None, "sites": sites or []}


async def service_points(
    db: Database, tenant_id: uuid.UUID, who: Principal | None = None
) -> list[PointRow]:
    """The tenant's points, narrowed to ``who``'s sites when given."""
    async with db.tenant(tenant_id) as conn:
        params = await _scope(conn, who)
        rows = await conn.execute(sa.text(_POINTS.format(where="WHERE " + _IN_SCOPE)), params)
        return [PointRow(**r._mapping) for r in rows]


async def service_point(
    db: Database, tenant_id: uuid.UUID, point_id: uuid.UUID, who: Principal | None = None
) -> PointRow:
    """NotFound for a point of another tenant or outside ``who``'s sites."""
    async with db.tenant(tenant_id) as conn:
        params = await _scope(conn, who) | {"p": point_id}
        row = (
            await conn.execute(
                sa.text(_POINTS.format(where=f"WHERE sp.id = :p AND {_IN_SCOPE}")), params
            )
        ).first()
    if row is None:
        raise NotFound(f"service point {point_id} not found")
    return PointRow(**row._mapping)


async def account_balance(
    db: Database,
    tenant_id: uuid.UUID,
    number: str,
    who: Principal | None = None,
    *,
    selling_at: datetime | None = None,
) -> Decimal:
    """NotFound too for an account none of whose points is in ``who``'s sites (with
    ``selling_at``: nor at the site of an outlet a grant in force then lets them sell at)."""
    async with db.tenant(tenant_id) as conn:
        if who is not None and selling_at is not None:
            sites = await selling_sites(conn, who, selling_at)
            params: dict[str, object] = {"all": sites is None, "sites": sites or [], "n": number}
        else:
            params = await _scope(conn, who) | {"n": number}
        value = await conn.scalar(
            sa.text(
                "SELECT la.balance FROM account a JOIN ledger_account la ON la.id = a.wallet_id "
                "WHERE a.number = :n AND (:all OR EXISTS (SELECT 1 FROM service_point sp "
                f"WHERE sp.account_id = a.id AND {_IN_SCOPE}))"
            ),
            params,
        )
    if value is None:
        raise NotFound(f"account {number} not found")
    assert isinstance(value, Decimal)
    return value


async def require_point(db: Database, who: Principal, point_id: uuid.UUID) -> None:
    """NotFound for a point outside the operator's scope (or not theirs at all)."""
    async with db.tenant(who.tenant_id) as conn:
        params = await _scope(conn, who) | {"p": point_id}
        found = await conn.scalar(
            sa.text(f"SELECT 1 FROM service_point sp WHERE sp.id = :p AND {_IN_SCOPE}"), params
        )
    if not found:
        raise NotFound(f"service point {point_id} not found")


async def require_site(db: Database, who: Principal, site_id: uuid.UUID) -> None:
    """NotFound for a site outside the operator's scope (or not theirs at all)."""
    async with db.tenant(who.tenant_id) as conn:
        params = await _scope(conn, who) | {"p": site_id}
        found = await conn.scalar(
            sa.text("SELECT 1 FROM site WHERE id = :p AND (:all OR id = ANY(:sites))"),
            params,
        )
    if not found:
        raise NotFound(f"site {site_id} not found")


async def require_gateway(db: Database, who: Principal, code: str) -> None:
    """NotFound for a gateway at a site outside the operator's scope."""
    async with db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        site = await conn.scalar(
            sa.text("SELECT site_id FROM gateway WHERE code = :c"), {"c": code}
        )
    if site is not None and sites is not None and site not in sites:
        raise NotFound(f"no gateway {code}")  # as the service answers for an unknown one
