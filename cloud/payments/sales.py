"""Counter sales as the counter and finance read them: one sale with where, by whom and
under which grant it was made and whether it was reversed; pages of sales."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.auth import Principal
from cloud.db import Database, pg_array
from cloud.errors import Forbidden, NotFound
from cloud.registry.scope import sites_of

VIEWERS = ("sale.create", "sale.reverse", "finance.reconcile")


@dataclass(frozen=True)
class GrantView:
    id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    reason: str
    granted_by: str


@dataclass(frozen=True)
class SaleView:
    id: uuid.UUID
    receipt_no: str
    group_name: str
    site_name: str | None
    timezone: str
    outlet_id: uuid.UUID | None
    outlet_name: str | None
    operator: str  # username
    operator_name: str  # display name
    account_number: str
    customer: str
    premises: str | None  # building floor number, of the account's first point
    amount: Decimal
    method: str
    balance_after: Decimal | None
    created_at: datetime
    business_day: date | None
    grant: GrantView | None
    reversed_at: datetime | None
    reversed_by: str | None
    reversal_reason: str | None
    reversal_entry_id: uuid.UUID | None


@dataclass(frozen=True)
class SalePage:
    items: list[SaleView]
    total: int
    limit: int
    offset: int


_SELECT = """
SELECT s.id, s.receipt_no, t.name AS group_name, st.name AS site_name,
       coalesce(st.timezone, 'Asia/Shanghai') AS timezone, s.outlet_id,
       o.name AS outlet_name, op.username, op.display_name, a.number, c.name AS customer,
       (SELECT b.name || ' ' || p.floor || ' ' || p.number FROM service_point sp
          JOIN premises p ON p.id = sp.premises_id JOIN building b ON b.id = p.building_id
         WHERE sp.account_id = a.id ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1)
         AS premises,
       s.amount, s.method, s.balance_after, s.created_at, s.business_day, s.grant_id,
       g.starts_at AS grant_starts, g.ends_at AS grant_ends, g.reason AS grant_reason,
       g.granted_by, s.reversed_at, s.reversed_by, s.reversal_reason, s.reversal_entry_id,
       st.id AS site_id, s.operator_id
FROM counter_sale s
JOIN account a ON a.id = s.account_id
JOIN customer c ON c.id = a.customer_id
JOIN operator op ON op.id = s.operator_id
JOIN tenant t ON t.id = s.tenant_id
LEFT JOIN outlet o ON o.id = s.outlet_id
LEFT JOIN outlet_grant g ON g.id = s.grant_id
LEFT JOIN site st ON st.id = coalesce(o.site_id, (SELECT sp.site_id FROM service_point sp
  WHERE sp.account_id = s.account_id ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1))
"""
# what a scoped operator sees: sales at (or for accounts at) the sites of the scope, and
# the sales the operator made (under a grant, elsewhere)
_IN_SCOPE = (
    "(CAST(:sites AS uuid[]) IS NULL OR st.id = ANY(CAST(:sites AS uuid[])) OR s.operator_id = :me)"
)


def require_viewer(who: Principal) -> None:
    if not any(p in who.permissions for p in VIEWERS):
        raise Forbidden("permission 'sale.create' or 'finance.reconcile' required")


def _view(r: Any) -> SaleView:
    grant = (
        GrantView(r.grant_id, r.grant_starts, r.grant_ends, r.grant_reason, r.granted_by)
        if r.grant_id is not None
        else None
    )
    return SaleView(
        id=r.id,
        receipt_no=r.receipt_no,
        group_name=r.group_name,
        site_name=r.site_name,
        timezone=r.timezone,
        outlet_id=r.outlet_id,
        outlet_name=r.outlet_name,
        operator=r.username,
        operator_name=r.display_name,
        account_number=r.number,
        customer=r.customer,
        premises=r.premises,
        amount=r.amount,
        method=r.method,
        balance_after=r.balance_after,
        created_at=r.created_at,
        business_day=r.business_day,
        grant=grant,
        reversed_at=r.reversed_at,
        reversed_by=r.reversed_by,
        reversal_reason=r.reversal_reason,
        reversal_entry_id=r.reversal_entry_id,
    )


async def _scope(conn: AsyncConnection, who: Principal) -> dict[str, Any]:
    sites = await sites_of(conn, who)
    return {"sites": None if sites is None else pg_array(sites), "me": who.operator_id}


async def get_sale(db: Database, who: Principal, receipt_no: str) -> SaleView:
    """One sale; NotFound for another group's or one outside the operator's scope."""
    require_viewer(who)
    async with db.tenant(who.tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(f"{_SELECT} WHERE s.receipt_no = :r AND {_IN_SCOPE}"),
                {"r": receipt_no, **await _scope(conn, who)},
            )
        ).first()
    if row is None:
        raise NotFound(f"sale {receipt_no} not found")
    return _view(row)


async def sale_of_account(
    conn: AsyncConnection, account_id: uuid.UUID, receipt_no: str
) -> SaleView | None:
    """The account's own sale ``receipt_no`` (``conn`` under the tenant), for its tenant."""
    row = (
        await conn.execute(
            sa.text(f"{_SELECT} WHERE s.receipt_no = :r AND s.account_id = :a"),
            {"r": receipt_no, "a": account_id},
        )
    ).first()
    return _view(row) if row is not None else None


async def list_sales(
    db: Database,
    who: Principal,
    account: str | None = None,
    operator: str | None = None,
    business_day: date | None = None,
    limit: int = 50,
    offset: int = 0,
) -> SalePage:
    """Sales newest first, filtered by account number, operator username and business day."""
    require_viewer(who)
    where = [_IN_SCOPE]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if account is not None:
        where.append("a.number = :acct")
        params["acct"] = account
    if operator is not None:
        where.append("op.username = :opname")
        params["opname"] = operator
    if business_day is not None:
        where.append("s.business_day = :day")
        params["day"] = business_day
    cond = " AND ".join(where)
    async with db.tenant(who.tenant_id) as conn:
        params.update(await _scope(conn, who))
        rows = (
            await conn.execute(
                sa.text(
                    f"{_SELECT} WHERE {cond} ORDER BY s.created_at DESC, s.receipt_no DESC "
                    "LIMIT :limit OFFSET :offset"
                ),
                params,
            )
        ).all()
        total = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM counter_sale s JOIN account a ON a.id = s.account_id "
                "JOIN operator op ON op.id = s.operator_id LEFT JOIN outlet o ON o.id = "
                "s.outlet_id LEFT JOIN site st ON st.id = coalesce(o.site_id, (SELECT "
                "sp.site_id FROM service_point sp WHERE sp.account_id = s.account_id "
                f"ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1)) WHERE {cond}"
            ),
            params,
        )
    return SalePage([_view(r) for r in rows], int(total or 0), limit, offset)
