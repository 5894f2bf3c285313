"""Which points share which common meter (公摊), and by what: configured by an operator,
previewed for a month, posted for a month (one entry per meter and period: posting again
changes nothing), and posted monthly by ``prepay worker`` for the month just ended in the
site's zone."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.aio import raise_if_cancelled
from cloud.auth import Principal
from cloud.common_area.core import AllocationError, Basis
from cloud.common_area.service import Allocation, allocate_common_area
from cloud.db import Database
from cloud.errors import Invalid, NotFound
from cloud.registry.scope import sites_of

log = logging.getLogger(__name__)
PERMISSION = "tariff.edit"  # sharing a meter's charge out is a price decision


@dataclass(frozen=True)
class Group:
    id: uuid.UUID
    common_point_id: uuid.UUID
    common_name: str
    site_id: uuid.UUID
    timezone: str
    basis: Basis
    monthly: bool
    last_month: str | None
    members: tuple[uuid.UUID, ...]


def month_span(month: str, zone: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` as (start, end) in UTC, local midnights. ValueError for anything else."""
    first = date.fromisoformat(f"{month}-01")
    if not 2000 <= first.year < 2100 or len(month) != 7:
        raise ValueError(month)
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    tz = ZoneInfo(zone)
    return (
        datetime.combine(first, time(), tz).astimezone(UTC),
        datetime.combine(nxt, time(), tz).astimezone(UTC),
    )


def previous_month(now: datetime, zone: str) -> str:
    local = now.astimezone(ZoneInfo(zone)).date().replace(day=1) - timedelta(days=1)
    return f"{local:%Y-%m}"


_GROUPS = """
SELECT g.id, g.common_point_id, sp.name AS common_name, sp.site_id, s.timezone, g.basis,
  g.monthly, g.last_month,
  ARRAY(SELECT m.service_point_id FROM common_area_member m WHERE m.group_id = g.id
        ORDER BY m.service_point_id) AS members
FROM common_area_group g JOIN service_point sp ON sp.id = g.common_point_id
JOIN site s ON s.id = sp.site_id
WHERE (CAST(:id AS uuid) IS NULL OR g.id = :id)
ORDER BY s.name, sp.name
"""


def _group(r: sa.Row) -> Group:  # type: ignore[type-arg]
    return Group(
        r.id, r.common_point_id, r.common_name, r.site_id, r.timezone, Basis(r.basis),
        r.monthly, r.last_month, tuple(r.members),
    )  # fmt: skip


async def groups(db: Database, who: Principal) -> list[Group]:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        scope = await sites_of(conn, who)
        rows = (await conn.execute(sa.text(_GROUPS), {"id": None})).all()
    return [_group(r) for r in rows if scope is None or r.site_id in scope]


async def group(db: Database, who: Principal, group_id: uuid.UUID) -> Group:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        return await _one(conn, who, group_id)


async def _one(conn: AsyncConnection, who: Principal, group_id: uuid.UUID) -> Group:
    r = (await conn.execute(sa.text(_GROUPS), {"id": group_id})).first()
    scope = await sites_of(conn, who)
    if r is None or (scope is not None and r.site_id not in scope):
        raise NotFound(f"common-area group {group_id} not found")
    return _group(r)


async def save_group(
    db: Database,
    who: Principal,
    common_point: uuid.UUID,
    members: Sequence[uuid.UUID],
    basis: Basis,
    now: datetime,
    monthly: bool = True,
) -> uuid.UUID:
    """Create or replace the common meter's group. The common meter is then tracked, not
    charged to its own account (``service_point.common_area``). Refused: no member, the
    meter among its members, points of another site, or by floor area a member without it."""
    who.require(PERMISSION)
    chosen = sorted(set(members), key=str)
    if not chosen:
        raise Invalid("choose at least one point to share the common meter")
    if common_point in chosen:
        raise Invalid("the common meter cannot share its own charge")
    async with db.tenant(who.tenant_id) as conn:
        scope = await sites_of(conn, who)
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT id, site_id, floor_area, common_area FROM service_point "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": [common_point, *chosen]},
            )
        ).all()
        found = {r.id: r for r in rows}
        meter = found.get(common_point)
        if meter is None or (scope is not None and meter.site_id not in scope):
            raise NotFound(f"service point {common_point} not found")
        if len(found) != len(chosen) + 1:
            raise NotFound("a member point was not found")
        if any(found[m].site_id != meter.site_id for m in chosen):
            raise Invalid("the points sharing a common meter are at its site")
        if any(found[m].common_area for m in chosen):
            raise Invalid("a common meter cannot share another common meter's charge")
        if basis is Basis.AREA and any(found[m].floor_area is None for m in chosen):
            raise Invalid("a member point has no floor area")
        group_id = await conn.scalar(
            sa.text(
                "INSERT INTO common_area_group (id, tenant_id, common_point_id, basis, monthly, "
                "created_by, created_at, updated_at) VALUES (:id, :t, :p, :b, :m, :by, :now, :now) "
                "ON CONFLICT (tenant_id, common_point_id) DO UPDATE SET basis = EXCLUDED.basis, "
                "monthly = EXCLUDED.monthly, updated_at = EXCLUDED.updated_at RETURNING id"
            ),
            {"id": uuid.uuid4(), "t": who.tenant_id, "p": common_point, "b": basis.value,
             "m": monthly, "by": who.actor, "now": now},
        )  # fmt: skip
        await conn.execute(
            sa.text("DELETE FROM common_area_member WHERE group_id = :g"), {"g": group_id}
        )
        await conn.execute(
            sa.text(
                "INSERT INTO common_area_member (group_id, service_point_id, tenant_id) "
                "SELECT :g, unnest(CAST(:ids AS uuid[])), :t"
            ),
            {"g": group_id, "ids": chosen, "t": who.tenant_id},
        )
        await conn.execute(
            sa.text(
                "UPDATE service_point SET common_area = true WHERE id = :p AND NOT common_area"
            ),
            {"p": common_point},
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "common_area.configured", str(common_point), now,
            {"basis": basis.value, "members": ",".join(map(str, chosen)), "monthly": str(monthly)},
        )  # fmt: skip
    return uuid.UUID(str(group_id))


async def allocate_month(
    db: Database, who: Principal, group_id: uuid.UUID, month: str, now: datetime,
    *, dry_run: bool,
) -> Allocation:  # fmt: skip
    """Preview (``dry_run``) or post the group's allocation for a local month that has
    ended. AllocationError (the service's words) when it cannot be shared."""
    who.require("registry.view" if dry_run else PERMISSION)
    g = await group(db, who, group_id)
    start, end = month_span(month, g.timezone)
    if end > now:
        raise Invalid("a month is shared out once it has ended")
    done = await allocate_common_area(
        db, who.tenant_id, g.common_point_id, g.members, g.basis, start, end, who.actor,
        dry_run=dry_run,
    )  # fmt: skip
    if not dry_run:
        await _posted(db, who.tenant_id, g, month, who.actor, now)
    return done


async def _posted(
    db: Database, tenant_id: uuid.UUID, g: Group, month: str, actor: str, now: datetime
) -> None:
    async with db.tenant(tenant_id) as conn:
        await conn.execute(
            sa.text(
                "UPDATE common_area_group SET last_month = :m WHERE id = :g "
                "AND (last_month IS NULL OR last_month < :m)"
            ),
            {"m": month, "g": g.id},
        )
        await audit.record(
            conn, tenant_id, actor, "common_area.posted", str(g.common_point_id), now,
            {"month": month},
        )  # fmt: skip


async def allocate_due(db: Database, now: datetime) -> int:
    """Every tenant's monthly groups not posted for the month just ended: post it. Returns
    how many were posted; a group that cannot be shared is logged and tried next time."""
    posted = 0
    for tenant_id in await db.tenant_ids():
        async with db.tenant(tenant_id) as conn:
            rows = (await conn.execute(sa.text(_GROUPS), {"id": None})).all()
        for r in rows:
            g = _group(r)
            month = previous_month(now, g.timezone)
            if not g.monthly or (g.last_month is not None and g.last_month >= month):
                continue
            start, end = month_span(month, g.timezone)
            try:
                await allocate_common_area(
                    db, tenant_id, g.common_point_id, g.members, g.basis, start, end,
                    "worker:common_area",
                )  # fmt: skip
            except AllocationError as exc:
                log.warning("公摊 %s for %s not posted: %s", g.id, month, exc)
                continue
            await _posted(db, tenant_id, g, month, "worker:common_area", now)
            posted += 1
    return posted


async def allocate_forever(
    db: Database, clock: Callable[[], datetime], every: timedelta = timedelta(hours=1)
) -> None:
    """The job `prepay worker` runs: each month's 公摊 posted within ``every`` of its end."""
    while True:
        try:
            await allocate_due(db, clock())
        except Exception:
            raise_if_cancelled()
            log.exception("common-area allocation failed; retrying in %s", every)
        await asyncio.sleep(every.total_seconds())
