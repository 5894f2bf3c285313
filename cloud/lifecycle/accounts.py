"""The counter's account search and the account page (read only, narrowed by scope)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.auth import Principal
from cloud.db import Database, pg_array
from cloud.errors import NotFound
from cloud.registry.scope import selling_sites, sites_of


@dataclass(frozen=True)
class AccountHit:
    number: str
    status: str
    customer: str
    phone: str | None
    balance: Decimal
    premises: tuple[str, ...]


@dataclass(frozen=True)
class SearchPage:
    total: int
    items: list[AccountHit]


# Candidate accounts of each kind of match, each by an index (account number, customer
# phone; name, premises and meter by a scan of tables one row per customer / premises /
# device), then the page. ``:q`` NULL lists every account.
_HITS = """
  SELECT id FROM account WHERE number = :q
  UNION SELECT a.id FROM account a JOIN customer c ON c.id = a.customer_id
    WHERE c.phone = :q OR c.name ILIKE :like OR c.id_number = :q
  UNION SELECT sp.account_id FROM service_point sp JOIN premises p ON p.id = sp.premises_id
    JOIN building b ON b.id = p.building_id
    WHERE b.name || '-' || p.floor || '-' || p.number ILIKE :like
  UNION SELECT sp.account_id FROM meter JOIN channel ch ON ch.device_id = meter.id
    JOIN binding bi ON bi.channel_id = ch.id AND bi.removed_at IS NULL
    JOIN service_point sp ON sp.id = bi.service_point_id
"""
# The meters matched first (a scan of one small row per device), then their bindings: left
# to itself the planner walks every binding to the device.
_METERS = (
    "meter AS MATERIALIZED (SELECT id FROM device WHERE serial = :q OR address = :q OR key = :q), "
)
_SEARCH = """
WITH {meters}hit AS ({hits}), scoped AS (
  SELECT a.id, a.number, a.status, c.name, c.phone, la.balance
  FROM hit JOIN account a ON a.id = hit.id JOIN customer c ON c.id = a.customer_id
  JOIN ledger_account la ON la.id = a.wallet_id
  WHERE CAST(:site AS uuid) IS NULL AND CAST(:sites AS uuid[]) IS NULL
     OR EXISTS (SELECT 1 FROM service_point sp WHERE sp.account_id = a.id
                AND (CAST(:site AS uuid) IS NULL OR sp.site_id = :site)
                AND (CAST(:sites AS uuid[]) IS NULL OR sp.site_id = ANY(CAST(:sites AS uuid[]))))
)
SELECT s.*, count(*) OVER () AS total,
  (SELECT array_agg(DISTINCT b.name || '-' || p.floor || '-' || p.number)
   FROM service_point sp JOIN premises p ON p.id = sp.premises_id
   JOIN building b ON b.id = p.building_id WHERE sp.account_id = s.id) AS premises
FROM scoped s ORDER BY s.number LIMIT :lim OFFSET :off
"""
SEARCH = _SEARCH.format(meters=_METERS, hits=_HITS)
LIST = _SEARCH.format(meters="", hits="SELECT id FROM account")


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_accounts(
    db: Database,
    who: Principal,
    q: str | None,
    site_id: uuid.UUID | None = None,
    limit: int = 20,
    offset: int = 0,
    *,
    selling_at: datetime | None = None,
) -> SearchPage:
    """Accounts by number, customer name (substring), phone, ID number, premises
    ("A栋-2-201": building, floor, number; substring) or meter (serial, address or key).
    ``selling_at``: the counter's search, which also finds the accounts of the sites that
    cross-outlet grants in force then let the operator sell at."""
    who.require("registry.view")
    q = (q or "").strip() or None
    async with db.tenant(who.tenant_id) as conn:
        sites = await _sites(conn, who, selling_at)
        if site_id is not None and sites is not None and site_id not in sites:
            raise NotFound(f"site {site_id} not found")
        rows = (
            await conn.execute(
                sa.text(SEARCH if q else LIST),
                {
                    "q": q,
                    "like": _like(q) if q else "",
                    "site": site_id,
                    "sites": None if sites is None else pg_array(sites),
                    "lim": limit,
                    "off": offset,
                },
            )
        ).all()
    total = int(rows[0].total) if rows else 0
    return SearchPage(
        total,
        [
            AccountHit(r.number, r.status, r.name, r.phone, r.balance, tuple(r.premises or ()))
            for r in rows
        ],
    )


@dataclass(frozen=True)
class MeterView:
    gateway: str
    gateway_online: bool
    device_key: str
    serial: str | None
    address: str
    profile: str
    channel: int
    installed_at: datetime
    install_register: Decimal | None


@dataclass(frozen=True)
class PointView:
    id: uuid.UUID
    name: str
    utility: str
    control_mode: str
    tariff: str
    premises: str | None
    removed_at: datetime | None
    meter: MeterView | None
    last_register: Decimal | None
    last_reading_at: datetime | None
    supply_desired: str | None
    supply_reported: str | None


@dataclass(frozen=True)
class SaleView:
    receipt_no: str
    amount: Decimal
    method: str
    created_at: datetime
    reversed: bool


@dataclass(frozen=True)
class AccountPage:
    number: str
    status: str
    opened_at: datetime
    closed_at: datetime | None
    customer_id: uuid.UUID
    customer: str
    phone: str | None
    id_number: str | None
    balance: Decimal
    points: list[PointView]
    sales: list[SaleView]


_PAGE_POINTS = """
SELECT sp.id, sp.name, sp.utility, sp.control_mode, sp.site_id, sp.removed_at, t.name AS tariff,
  b2.name || '-' || p.floor || '-' || p.number AS premises,
  g.code AS gateway, g.online, d.key, d.serial, d.address, d.profile, ch.number AS channel,
  bi.installed_at, bi.install_register, tw.desired, tw.reported, lr.measured_at, lr.total
FROM service_point sp JOIN tariff t ON t.id = sp.tariff_id
LEFT JOIN premises p ON p.id = sp.premises_id LEFT JOIN building b2 ON b2.id = p.building_id
LEFT JOIN binding bi ON bi.service_point_id = sp.id AND bi.removed_at IS NULL
LEFT JOIN channel ch ON ch.id = bi.channel_id LEFT JOIN device d ON d.id = ch.device_id
LEFT JOIN gateway g ON g.id = d.gateway_id LEFT JOIN supply_twin tw ON tw.channel_id = ch.id
LEFT JOIN LATERAL (SELECT r.measured_at, r.total FROM reading r WHERE r.channel_id = ch.id
  AND r.total IS NOT NULL ORDER BY r.measured_at DESC LIMIT 1) lr ON true
WHERE sp.account_id = :a ORDER BY sp.removed_at NULLS FIRST, sp.utility, sp.name
"""


async def _sites(
    conn: AsyncConnection, who: Principal, selling_at: datetime | None
) -> list[uuid.UUID] | None:
    if selling_at is None:
        return await sites_of(conn, who)
    return await selling_sites(conn, who, selling_at)


async def account_page(
    db: Database, who: Principal, number: str, *, selling_at: datetime | None = None
) -> AccountPage:
    """What the account page shows: customer, status, points with their meters, last
    readings and supply state, the live balance and the recent sales. ``selling_at``: the
    counter's page, which also opens an account of a site a grant in force lets the
    operator sell at."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        a = (
            await conn.execute(
                sa.text(
                    "SELECT a.id, a.number, a.status, a.opened_at, a.closed_at, c.id AS cid, "
                    "c.name, c.phone, c.id_number, la.balance FROM account a "
                    "JOIN customer c ON c.id = a.customer_id "
                    "JOIN ledger_account la ON la.id = a.wallet_id WHERE a.number = :n"
                ),
                {"n": number},
            )
        ).first()
        if a is None:
            raise NotFound(f"account {number} not found")
        rows = (await conn.execute(sa.text(_PAGE_POINTS), {"a": a.id})).all()
        sites = await _sites(conn, who, selling_at)
        if sites is not None and not any(r.site_id in sites for r in rows):
            raise NotFound(f"account {number} not found")
        sales = (
            await conn.execute(
                sa.text(
                    "SELECT receipt_no, amount, method, created_at, reversed_at IS NOT NULL AS rev "
                    "FROM counter_sale WHERE account_id = :a ORDER BY created_at DESC LIMIT 10"
                ),
                {"a": a.id},
            )
        ).all()
    points = [
        PointView(
            r.id,
            r.name,
            r.utility,
            r.control_mode,
            r.tariff,
            r.premises,
            r.removed_at,
            MeterView(
                r.gateway,
                r.online,
                r.key,
                r.serial,
                r.address,
                r.profile,
                r.channel,
                r.installed_at,
                r.install_register,
            )
            if r.key is not None
            else None,
            r.total,
            r.measured_at,
            r.desired,
            r.reported,
        )
        for r in rows
    ]
    return AccountPage(
        a.number,
        a.status,
        a.opened_at,
        a.closed_at,
        a.cid,
        a.name,
        a.phone,
        a.id_number,
        a.balance,
        points,
        [SaleView(s.receipt_no, s.amount, s.method, s.created_at, s.rev) for s in sales],
    )
