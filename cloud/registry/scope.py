"""What an operator's scope covers (DESIGN §3): the whole tenant, some sites, or some
outlets (and the sites those outlets are at). Every route that lists or touches a site's
things narrows by ``sites_of``; every sale asks ``outlet_permit`` where it may be made —
an outlet in the operator's scope, or another one under a live cross-outlet grant.

A grant (异地售电) widens the scope for selling only: while it is in force, the site of
the granted outlet joins ``selling_sites`` — the accounts the counter finds and opens to
sell to — and nothing else (not settings, not 开户 or 消户, not the site's other lists)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.auth import Principal
from cloud.errors import Forbidden, NotFound


async def sites_of(conn: AsyncConnection, who: Principal) -> list[uuid.UUID] | None:
    """The site ids the operator may see, or None for every site of the tenant."""
    if who.scope == "tenant":
        return None
    ids = list(who.scope_ids)
    if who.scope == "site":
        return ids
    rows = await conn.scalars(
        sa.text("SELECT DISTINCT site_id FROM outlet WHERE id = ANY(:ids)"), {"ids": ids}
    )
    return list(rows)


_GRANTED_SITES = """
SELECT DISTINCT o.site_id FROM outlet_grant g JOIN outlet o ON o.id = g.outlet_id
WHERE g.operator_id = :op AND g.revoked_at IS NULL AND g.starts_at <= :now AND g.ends_at > :now
"""


async def selling_sites(
    conn: AsyncConnection, who: Principal, now: datetime
) -> list[uuid.UUID] | None:
    """The sites whose accounts the operator may look up to sell to at ``now``: those of
    their scope and those of the outlets a grant in force lets them sell at (None: every
    site of the tenant)."""
    sites = await sites_of(conn, who)
    if sites is None:
        return None
    granted = await conn.scalars(sa.text(_GRANTED_SITES), {"op": who.operator_id, "now": now})
    return sites + [s for s in granted if s not in sites]


async def require_site(conn: AsyncConnection, who: Principal, site_id: uuid.UUID) -> None:
    """NotFound for a site outside the scope (as for one of another tenant: a scoped
    operator is not told what exists beyond it)."""
    sites = await sites_of(conn, who)
    if sites is not None and site_id not in sites:
        raise NotFound(f"site {site_id} not found")


@dataclass(frozen=True)
class OutletPermit:
    outlet_id: uuid.UUID
    site_id: uuid.UUID
    grant_id: uuid.UUID | None  # set when the sale is made under a cross-outlet grant


_GRANT = """
SELECT id FROM outlet_grant
WHERE operator_id = :op AND outlet_id = :o AND revoked_at IS NULL
  AND starts_at <= :now AND ends_at > :now
ORDER BY ends_at DESC LIMIT 1
"""


async def outlet_permit(
    conn: AsyncConnection, who: Principal, outlet_id: uuid.UUID, now: datetime
) -> OutletPermit:
    """Where a sale may be made: an outlet the scope covers, or one under a live grant.
    NotFound for an unknown outlet, Forbidden for one outside the scope without a grant."""
    site_id = await conn.scalar(
        sa.text("SELECT site_id FROM outlet WHERE id = :o"), {"o": outlet_id}
    )
    if site_id is None:
        raise NotFound(f"outlet {outlet_id} not found")
    covered = (
        who.scope == "tenant"
        or (who.scope == "site" and site_id in who.scope_ids)
        or (who.scope == "outlet" and outlet_id in who.scope_ids)
    )
    if covered:
        return OutletPermit(outlet_id, site_id, None)
    grant = await conn.scalar(sa.text(_GRANT), {"op": who.operator_id, "o": outlet_id, "now": now})
    if grant is None:
        raise Forbidden("this outlet is outside your scope and no grant for it is in force")
    return OutletPermit(outlet_id, site_id, grant)
