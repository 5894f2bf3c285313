"""Which sites a report covers: those of the operator's scope (finance at HQ: every site of
the group; a site's staff: their site), narrowed to one site when asked. A site outside
the scope is not found, as one of another group is."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.auth import Principal
from cloud.errors import NotFound
from cloud.registry.scope import sites_of

PERMISSION = "registry.view"


@dataclass(frozen=True)
class SiteRef:
    id: uuid.UUID
    name: str
    timezone: str


@dataclass(frozen=True)
class Scope:
    sites: tuple[SiteRef, ...]  # the sites reported, by name
    visible: tuple[SiteRef, ...]  # every site the operator may pick
    chosen: uuid.UUID | None

    @property
    def ids(self) -> list[uuid.UUID]:
        return [s.id for s in self.sites]

    def today(self, now: datetime | None = None) -> date:
        """The latest local date among the sites (a period may end on it)."""
        now = now or datetime.now(UTC)
        zones = {s.timezone for s in self.sites} or {"Asia/Shanghai"}
        return max(now.astimezone(ZoneInfo(z)).date() for z in zones)

    @property
    def zone(self) -> str:
        """The zone times are shown in: the sites', when they share one."""
        zones = {s.timezone for s in self.sites}
        return zones.pop() if len(zones) == 1 else "Asia/Shanghai"


async def resolve(conn: AsyncConnection, who: Principal, site: str = "") -> Scope:
    who.require(PERMISSION)
    allowed = await sites_of(conn, who)
    rows = await conn.execute(sa.text("SELECT id, name, timezone FROM site ORDER BY name, id"))
    visible = tuple(
        SiteRef(r.id, r.name, r.timezone) for r in rows if allowed is None or r.id in allowed
    )
    site = site.strip()
    if not site:
        return Scope(visible, visible, None)
    try:
        wanted = uuid.UUID(site)
    except ValueError:
        raise NotFound(f"site {site!r} not found") from None
    chosen = tuple(s for s in visible if s.id == wanted)
    if not chosen:
        raise NotFound(f"site {site} not found")
    return Scope(chosen, visible, wanted)
