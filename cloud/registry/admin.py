"""Registry administration (DESIGN §3, §12): sites and their settings, buildings,
premises, outlets, roles, operators and cross-outlet grants.

Each function checks the permission, narrows to the operator's scope (something outside
it is NotFound, as another tenant's would be), checks the rules in ``admin_core`` and
writes in one transaction with one audit event. A scoped administrator hands on only
what they hold: no permission they lack, no scope wider than theirs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.auth import Principal, hash_password, revoke_sessions
from cloud.db import Database
from cloud.errors import Conflict, Forbidden, Invalid, NotFound
from cloud.registry import admin_core as core
from cloud.registry.scope import require_site, sites_of


def _tenant_wide(who: Principal, what: str) -> None:
    if who.scope != "tenant":
        raise Forbidden(f"only a tenant-wide operator can {what}")


def _ids(sites: list[uuid.UUID] | None) -> dict[str, Any]:
    """Parameters for ``(:all OR site_id = ANY(:sites))``."""
    return {"all": sites is None, "sites": sites or []}


async def _visible_site(conn: AsyncConnection, who: Principal, site_id: uuid.UUID) -> None:
    if not await conn.scalar(sa.text("SELECT 1 FROM site WHERE id = :s"), {"s": site_id}):
        raise NotFound(f"site {site_id} not found")
    await require_site(conn, who, site_id)


# --- sites ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteRow:
    id: uuid.UUID
    settings: core.SiteSettings


_SITE_COLS = ", ".join(core.SITE_FIELDS)


def _site_row(row: sa.Row[Any]) -> SiteRow:
    m = row._mapping
    return SiteRow(m["id"], core.SiteSettings(**{f: m[f] for f in core.SITE_FIELDS}))


async def create_site(
    db: Database, who: Principal, settings: core.SiteSettings, now: datetime
) -> SiteRow:
    who.require("registry.edit")
    _tenant_wide(who, "add a site")
    checked = core.site(settings)
    site_id = uuid.uuid4()
    async with db.tenant(who.tenant_id) as conn:
        await conn.execute(
            sa.text(
                f"INSERT INTO site (id, tenant_id, {_SITE_COLS}) VALUES (:id, :t, "
                + ", ".join(f":{f}" for f in core.SITE_FIELDS)
                + ")"
            ),
            {"id": site_id, "t": who.tenant_id, **asdict(checked)},
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "site.created", str(site_id), now, _detail(checked)
        )
    return SiteRow(site_id, checked)


def _detail(settings: core.SiteSettings, only: set[str] | None = None) -> dict[str, str]:
    return {
        f.name: str(getattr(settings, f.name))
        for f in fields(settings)
        if only is None or f.name in only
    }


async def list_sites(db: Database, who: Principal) -> list[SiteRow]:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        rows = await conn.execute(
            sa.text(
                f"SELECT id, {_SITE_COLS} FROM site WHERE (:all OR id = ANY(:sites)) "
                "ORDER BY name, id"
            ),
            _ids(sites),
        )
        return [_site_row(r) for r in rows]


async def _load_site(
    conn: AsyncConnection, who: Principal, site_id: uuid.UUID, lock: bool = False
) -> SiteRow:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT id, {_SITE_COLS} FROM site WHERE id = :s" + (" FOR UPDATE" if lock else "")
            ),
            {"s": site_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"site {site_id} not found")
    await require_site(conn, who, site_id)
    return _site_row(row)


async def get_site(db: Database, who: Principal, site_id: uuid.UUID) -> SiteRow:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        return await _load_site(conn, who, site_id)


async def update_site(
    db: Database, who: Principal, site_id: uuid.UUID, changes: Mapping[str, Any], now: datetime
) -> SiteRow:
    """Change some of a site's settings (the others kept); checked whole after merging."""
    who.require("registry.edit")
    if not changes:
        raise Invalid("nothing to change")
    async with db.tenant(who.tenant_id) as conn:
        current = await _load_site(conn, who, site_id, lock=True)
        merged = core.site_change(current.settings, changes)
        await conn.execute(
            sa.text(
                "UPDATE site SET "
                + ", ".join(f"{f} = :{f}" for f in core.SITE_FIELDS)
                + " WHERE id = :id"
            ),
            {"id": site_id, **asdict(merged)},
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "site.updated",
            str(site_id),
            now,
            _detail(merged, set(changes)),
        )
    return SiteRow(site_id, merged)


# --- buildings and premises ----------------------------------------------------------


@dataclass(frozen=True)
class BuildingRow:
    id: uuid.UUID
    site_id: uuid.UUID
    name: str


async def create_building(
    db: Database, who: Principal, site_id: uuid.UUID, name: str, now: datetime
) -> BuildingRow:
    who.require("registry.edit")
    checked = core.name(name, "building name")
    async with db.tenant(who.tenant_id) as conn:
        await _visible_site(conn, who, site_id)
        building_id = await conn.scalar(
            sa.text(
                "INSERT INTO building (id, tenant_id, site_id, name) VALUES (:id, :t, :s, :n) "
                "ON CONFLICT (site_id, name) DO NOTHING RETURNING id"
            ),
            {"id": uuid.uuid4(), "t": who.tenant_id, "s": site_id, "n": checked},
        )
        if building_id is None:
            raise Conflict(f"building {checked!r} already exists at this site")
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "building.created",
            str(building_id),
            now,
            {"site_id": str(site_id), "name": checked},
        )
    return BuildingRow(building_id, site_id, checked)


async def list_buildings(db: Database, who: Principal, site_id: uuid.UUID) -> list[BuildingRow]:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        await _visible_site(conn, who, site_id)
        rows = await conn.execute(
            sa.text("SELECT id, site_id, name FROM building WHERE site_id = :s ORDER BY name"),
            {"s": site_id},
        )
        return [BuildingRow(**r._mapping) for r in rows]


@dataclass(frozen=True)
class PremisesRow:
    id: uuid.UUID
    site_id: uuid.UUID
    building_id: uuid.UUID
    building: str
    floor: str
    number: str
    kind: str
    floor_area: Decimal | None


@dataclass(frozen=True)
class PremisesPage:
    total: int
    items: list[PremisesRow]


_PREMISES = """
SELECT p.id, p.site_id, p.building_id, b.name AS building, p.floor, p.number, p.kind,
       p.floor_area
FROM premises p JOIN building b ON b.id = p.building_id
"""
PAGE_MAX = 500


async def create_premises(
    db: Database, who: Principal, building_id: uuid.UUID, draft: core.PremisesDraft, now: datetime
) -> PremisesRow:
    who.require("registry.edit")
    checked = core.premises(draft)
    async with db.tenant(who.tenant_id) as conn:
        building = (
            await conn.execute(
                sa.text("SELECT site_id, name FROM building WHERE id = :b"), {"b": building_id}
            )
        ).first()
        if building is None:
            raise NotFound(f"building {building_id} not found")
        try:
            await require_site(conn, who, building.site_id)
        except NotFound:
            raise NotFound(f"building {building_id} not found") from None
        premises_id = await conn.scalar(
            sa.text(
                "INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number, kind, "
                "floor_area) VALUES (:id, :t, :s, :b, :floor, :number, :kind, :floor_area) "
                "ON CONFLICT (building_id, number) DO NOTHING RETURNING id"
            ),
            {
                "id": uuid.uuid4(),
                "t": who.tenant_id,
                "s": building.site_id,
                "b": building_id,
                **asdict(checked),
            },
        )
        if premises_id is None:
            raise Conflict(f"premises {checked.number} already exists in {building.name}")
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "premises.created",
            str(premises_id),
            now,
            {k: str(v) for k, v in asdict(checked).items()} | {"building_id": str(building_id)},
        )
    return PremisesRow(premises_id, building.site_id, building_id, building.name, **asdict(checked))


@dataclass(frozen=True)
class PremisesQuery:
    site_id: uuid.UUID | None = None
    building_id: uuid.UUID | None = None
    floor: str | None = None
    q: str | None = None  # part of the number or of the building's name
    limit: int = 50
    offset: int = 0


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_premises(db: Database, who: Principal, query: PremisesQuery) -> PremisesPage:
    who.require("registry.view")
    if not 1 <= query.limit <= PAGE_MAX or query.offset < 0:
        raise Invalid(f"limit is 1 to {PAGE_MAX} and offset at least 0")
    async with db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        where = ["(:all OR p.site_id = ANY(:sites))"]
        params: dict[str, Any] = _ids(sites) | {"limit": query.limit, "offset": query.offset}
        if query.site_id is not None:
            where.append("p.site_id = :site")
            params["site"] = query.site_id
        if query.building_id is not None:
            where.append("p.building_id = :building")
            params["building"] = query.building_id
        if query.floor is not None:
            where.append("p.floor = :floor")
            params["floor"] = query.floor
        if query.q:
            where.append("(p.number ILIKE :q OR b.name ILIKE :q)")
            params["q"] = _like(query.q)
        cond = " WHERE " + " AND ".join(where)
        total = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM premises p JOIN building b ON b.id = p.building_id" + cond
            ),
            params,
        )
        rows = await conn.execute(
            sa.text(
                _PREMISES + cond + " ORDER BY b.name, p.floor, p.number, p.id "
                "LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        return PremisesPage(int(total or 0), [PremisesRow(**r._mapping) for r in rows])


PREMISES_FIELDS = ("floor", "number", "kind", "floor_area")


async def get_premises(db: Database, who: Principal, premises_id: uuid.UUID) -> PremisesRow:
    """One premises, at a site the operator sees (NotFound otherwise)."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        row = (
            await conn.execute(sa.text(_PREMISES + " WHERE p.id = :p"), {"p": premises_id})
        ).first()
        if row is None:
            raise NotFound(f"premises {premises_id} not found")
        found = PremisesRow(**row._mapping)
        try:
            await require_site(conn, who, found.site_id)
        except NotFound:
            raise NotFound(f"premises {premises_id} not found") from None
    return found


async def update_premises(
    db: Database, who: Principal, premises_id: uuid.UUID, changes: Mapping[str, Any], now: datetime
) -> PremisesRow:
    who.require("registry.edit")
    unknown = set(changes) - set(PREMISES_FIELDS)
    if unknown:
        raise Invalid(f"unknown premises field(s): {', '.join(sorted(unknown))}")
    if not changes:
        raise Invalid("nothing to change")
    async with db.tenant(who.tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(_PREMISES + " WHERE p.id = :p FOR UPDATE OF p"), {"p": premises_id}
            )
        ).first()
        if row is None:
            raise NotFound(f"premises {premises_id} not found")
        current = PremisesRow(**row._mapping)
        try:
            await require_site(conn, who, current.site_id)
        except NotFound:
            raise NotFound(f"premises {premises_id} not found") from None
        draft = core.PremisesDraft(current.floor, current.number, current.kind, current.floor_area)
        checked = core.premises(replace(draft, **dict(changes)))
        if checked.number != current.number and await conn.scalar(
            sa.text("SELECT 1 FROM premises WHERE building_id = :b AND number = :n"),
            {"b": current.building_id, "n": checked.number},
        ):
            raise Conflict(f"premises {checked.number} already exists in {current.building}")
        await conn.execute(
            sa.text(
                "UPDATE premises SET floor = :floor, number = :number, kind = :kind, "
                "floor_area = :floor_area WHERE id = :id"
            ),
            {"id": premises_id, **asdict(checked)},
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "premises.updated",
            str(premises_id),
            now,
            {k: str(getattr(checked, k)) for k in changes},
        )
    return replace(current, **asdict(checked))


# --- outlets -------------------------------------------------------------------------


@dataclass(frozen=True)
class OutletRow:
    id: uuid.UUID
    site_id: uuid.UUID
    name: str


async def create_outlet(
    db: Database, who: Principal, site_id: uuid.UUID, name: str, now: datetime
) -> OutletRow:
    who.require("registry.edit")
    if who.scope == "outlet":
        raise Forbidden("an operator scoped to outlets cannot add outlets")
    checked = core.name(name, "outlet name")
    async with db.tenant(who.tenant_id) as conn:
        await _visible_site(conn, who, site_id)
        if await conn.scalar(
            sa.text("SELECT 1 FROM outlet WHERE site_id = :s AND name = :n"),
            {"s": site_id, "n": checked},
        ):
            raise Conflict(f"outlet {checked!r} already exists at this site")
        outlet_id = uuid.uuid4()
        await conn.execute(
            sa.text("INSERT INTO outlet (id, tenant_id, site_id, name) VALUES (:id, :t, :s, :n)"),
            {"id": outlet_id, "t": who.tenant_id, "s": site_id, "n": checked},
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "outlet.created",
            str(outlet_id),
            now,
            {"site_id": str(site_id), "name": checked},
        )
    return OutletRow(outlet_id, site_id, checked)


async def list_outlets(
    db: Database, who: Principal, site_id: uuid.UUID | None = None
) -> list[OutletRow]:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        rows = await conn.execute(
            sa.text(
                "SELECT o.id, o.site_id, o.name FROM outlet o JOIN site s ON s.id = o.site_id "
                "WHERE (:all OR o.site_id = ANY(:sites)) "
                "AND (CAST(:site AS uuid) IS NULL OR o.site_id = :site) "
                "ORDER BY s.name, o.name, o.id"
            ),
            _ids(sites) | {"site": site_id},
        )
        return [OutletRow(**r._mapping) for r in rows]


# --- roles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleRow:
    id: uuid.UUID
    name: str
    permissions: tuple[str, ...]


async def create_role(
    db: Database, who: Principal, name: str, permissions: list[str], now: datetime
) -> RoleRow:
    """Roles are the tenant's: only a tenant-wide operator makes them, with permissions
    they hold themselves."""
    who.require("operator.manage")
    _tenant_wide(who, "manage roles")
    checked = core.name(name, "role name")
    perms = core.permissions(permissions)
    core.delegation(
        who.permissions, core.Reach("tenant", None, None), perms, core.Reach("tenant", None, None)
    )
    async with db.tenant(who.tenant_id) as conn:
        role_id = await conn.scalar(
            sa.text(
                "INSERT INTO role (id, tenant_id, name, permissions) VALUES (:id, :t, :n, :p) "
                "ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id"
            ),
            {"id": uuid.uuid4(), "t": who.tenant_id, "n": checked, "p": list(perms)},
        )
        if role_id is None:
            raise Conflict(f"role {checked!r} already exists")
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "role.created",
            str(role_id),
            now,
            {"name": checked, "permissions": " ".join(perms)},
        )
    return RoleRow(role_id, checked, perms)


async def list_roles(db: Database, who: Principal) -> list[RoleRow]:
    who.require("operator.manage")
    async with db.tenant(who.tenant_id) as conn:
        rows = await conn.execute(sa.text("SELECT id, name, permissions FROM role ORDER BY name"))
        return [RoleRow(r.id, r.name, core.permissions(r.permissions)) for r in rows]


async def update_role(
    db: Database,
    who: Principal,
    role_id: uuid.UUID,
    name: str | None,
    permissions: list[str] | None,
    now: datetime,
) -> RoleRow:
    who.require("operator.manage")
    _tenant_wide(who, "manage roles")
    if name is None and permissions is None:
        raise Invalid("nothing to change")
    async with db.tenant(who.tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text("SELECT id, name, permissions FROM role WHERE id = :r FOR UPDATE"),
                {"r": role_id},
            )
        ).first()
        if row is None:
            raise NotFound(f"role {role_id} not found")
        new_name = row.name if name is None else core.name(name, "role name")
        perms = core.permissions(row.permissions if permissions is None else permissions)
        # neither the role as it is nor as it becomes may hold what the editor lacks
        tenant = core.Reach("tenant", None, None)
        core.delegation(who.permissions, tenant, set(row.permissions) | set(perms), tenant)
        if new_name != row.name and await conn.scalar(
            sa.text("SELECT 1 FROM role WHERE name = :n"), {"n": new_name}
        ):
            raise Conflict(f"role {new_name!r} already exists")
        await conn.execute(
            sa.text("UPDATE role SET name = :n, permissions = :p WHERE id = :r"),
            {"n": new_name, "p": list(perms), "r": role_id},
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "role.updated",
            str(role_id),
            now,
            {"name": new_name, "permissions": " ".join(perms)},
        )
    return RoleRow(role_id, new_name, perms)


# --- operators -----------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorRow:
    id: uuid.UUID
    username: str
    display_name: str
    role_id: uuid.UUID
    role: str
    active: bool
    scope: str
    scope_ids: tuple[uuid.UUID, ...]
    password_changed_at: datetime | None


@dataclass(frozen=True)
class OperatorDraft:
    username: str
    display_name: str
    password: str
    role_id: uuid.UUID
    scope: str = "tenant"
    scope_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class OperatorChange:
    """A PATCH: None leaves a field as it is (scope and scope_ids go together)."""

    display_name: str | None = None
    role_id: uuid.UUID | None = None
    scope: str | None = None
    scope_ids: tuple[uuid.UUID, ...] | None = None
    active: bool | None = None


_OPERATORS = """
SELECT o.id, o.username, o.display_name, o.role_id, r.name AS role, o.active, o.scope,
       o.scope_ids, o.password_changed_at, r.permissions
FROM operator o JOIN role r ON r.id = o.role_id
"""


@dataclass(frozen=True)
class _Registry:
    """What the tenant has, for checking scopes: its sites and its outlets' sites."""

    sites: frozenset[uuid.UUID]
    outlet_sites: dict[uuid.UUID, uuid.UUID]

    def reach(self, scope: str, ids: tuple[uuid.UUID, ...] | list[uuid.UUID]) -> core.Reach:
        return core.reach(scope, ids, self.outlet_sites)


async def _registry(conn: AsyncConnection) -> _Registry:
    sites = frozenset(await conn.scalars(sa.text("SELECT id FROM site")))
    outlets = await conn.execute(sa.text("SELECT id, site_id FROM outlet"))
    return _Registry(sites, {r.id: r.site_id for r in outlets})


def _operator_row(row: sa.Row[Any]) -> OperatorRow:
    m = dict(row._mapping)
    m.pop("permissions")
    m["scope_ids"] = tuple(m["scope_ids"])
    return OperatorRow(**m)


async def _role_permissions(conn: AsyncConnection, role_id: uuid.UUID) -> list[str]:
    perms = await conn.scalar(sa.text("SELECT permissions FROM role WHERE id = :r"), {"r": role_id})
    if perms is None:
        raise Invalid(f"no such role: {role_id}")
    return list(perms)


async def _manageable(
    conn: AsyncConnection, who: Principal, reg: _Registry, operator_id: uuid.UUID
) -> sa.Row[Any]:
    """The operator's row if the actor may manage them: NotFound outside the actor's scope,
    Forbidden when they hold a permission the actor lacks."""
    row = (
        await conn.execute(
            sa.text(_OPERATORS + " WHERE o.id = :o FOR UPDATE OF o"), {"o": operator_id}
        )
    ).first()
    actor = reg.reach(who.scope, list(who.scope_ids))
    if row is None or not core.covers(actor, reg.reach(row.scope, row.scope_ids)):
        raise NotFound(f"operator {operator_id} not found")
    beyond = sorted(set(row.permissions) - who.permissions)
    if beyond:
        raise Forbidden(
            f"operator {row.username} holds permissions you do not: {', '.join(beyond)}"
        )
    return row


async def create_operator(
    db: Database, who: Principal, draft: OperatorDraft, now: datetime
) -> OperatorRow:
    who.require("operator.manage")
    user = core.username(draft.username)
    display = core.name(draft.display_name, "display name")
    secret = core.password(draft.password)
    async with db.tenant(who.tenant_id) as conn:
        reg = await _registry(conn)
        scope, ids = core.scope(draft.scope, draft.scope_ids, reg.sites, reg.outlet_sites)
        perms = await _role_permissions(conn, draft.role_id)
        core.delegation(
            who.permissions, reg.reach(who.scope, list(who.scope_ids)), perms, reg.reach(scope, ids)
        )
        operator_id = await conn.scalar(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active, scope, scope_ids, password_changed_at) VALUES "
                "(:id, :t, :u, :d, :h, :r, true, :scope, :ids, :now) "
                "ON CONFLICT (tenant_id, username) DO NOTHING RETURNING id"
            ),
            {
                "id": uuid.uuid4(),
                "t": who.tenant_id,
                "u": user,
                "d": display,
                "h": hash_password(secret),
                "r": draft.role_id,
                "scope": scope,
                "ids": list(ids),
                "now": now,
            },
        )
        if operator_id is None:
            raise Conflict(f"username {user!r} is taken")
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "operator.created",
            str(operator_id),
            now,
            {
                "username": user,
                "role_id": str(draft.role_id),
                "scope": scope,
                "scope_ids": " ".join(map(str, ids)),
            },
        )
        row = (
            await conn.execute(sa.text(_OPERATORS + " WHERE o.id = :o"), {"o": operator_id})
        ).one()
    return _operator_row(row)


async def list_operators(db: Database, who: Principal) -> list[OperatorRow]:
    """The operators within the actor's scope (a site administrator sees those of their
    sites, not the tenant-wide ones)."""
    who.require("operator.manage")
    async with db.tenant(who.tenant_id) as conn:
        reg = await _registry(conn)
        rows = await conn.execute(sa.text(_OPERATORS + " ORDER BY o.username"))
        actor = reg.reach(who.scope, list(who.scope_ids))
        return [
            _operator_row(r) for r in rows if core.covers(actor, reg.reach(r.scope, r.scope_ids))
        ]


async def update_operator(
    db: Database, who: Principal, operator_id: uuid.UUID, change: OperatorChange, now: datetime
) -> OperatorRow:
    """Change role, scope, display name or active; deactivating revokes their sessions."""
    who.require("operator.manage")
    if change == OperatorChange():
        raise Invalid("nothing to change")
    if (change.scope is None) != (change.scope_ids is None) and change.scope != "tenant":
        raise Invalid("scope and scope_ids change together")
    if change.active is False and operator_id == who.operator_id:
        raise Invalid("you cannot deactivate yourself")
    async with db.tenant(who.tenant_id) as conn:
        reg = await _registry(conn)
        row = await _manageable(conn, who, reg, operator_id)
        display = (
            row.display_name
            if change.display_name is None
            else core.name(change.display_name, "display name")
        )
        role_id = row.role_id if change.role_id is None else change.role_id
        perms = await _role_permissions(conn, role_id)
        scope, ids = (
            (row.scope, tuple(row.scope_ids))
            if change.scope is None
            else core.scope(change.scope, change.scope_ids or (), reg.sites, reg.outlet_sites)
        )
        core.delegation(
            who.permissions, reg.reach(who.scope, list(who.scope_ids)), perms, reg.reach(scope, ids)
        )
        active = row.active if change.active is None else change.active
        await conn.execute(
            sa.text(
                "UPDATE operator SET display_name = :d, role_id = :r, scope = :scope, "
                "scope_ids = :ids, active = :a WHERE id = :o"
            ),
            {
                "d": display,
                "r": role_id,
                "scope": scope,
                "ids": list(ids),
                "a": active,
                "o": operator_id,
            },
        )
        detail = {k: str(v) for k, v in asdict(change).items() if v is not None}
        if row.active and not active:
            detail["sessions_revoked"] = str(await revoke_sessions(conn, operator_id, now))
        await audit.record(
            conn, who.tenant_id, who.actor, "operator.updated", str(operator_id), now, detail
        )
        fresh = (
            await conn.execute(sa.text(_OPERATORS + " WHERE o.id = :o"), {"o": operator_id})
        ).one()
    return _operator_row(fresh)


async def reset_password(
    db: Database, who: Principal, operator_id: uuid.UUID, password: str, now: datetime
) -> int:
    """An administrator sets another operator's password; that operator's sessions are
    revoked. Returns how many were."""
    who.require("operator.manage")
    secret = core.password(password)
    async with db.tenant(who.tenant_id) as conn:
        reg = await _registry(conn)
        row = await _manageable(conn, who, reg, operator_id)
        await conn.execute(
            sa.text(
                "UPDATE operator SET password_hash = :h, password_changed_at = :now WHERE id = :o"
            ),
            {"h": hash_password(secret), "now": now, "o": operator_id},
        )
        revoked = await revoke_sessions(conn, operator_id, now)
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "operator.password_reset",
            str(operator_id),
            now,
            {"username": row.username, "sessions_revoked": str(revoked)},
        )
    return revoked


# --- cross-outlet grants -------------------------------------------------------------


@dataclass(frozen=True)
class GrantRow:
    id: uuid.UUID
    operator_id: uuid.UUID
    username: str
    outlet_id: uuid.UUID
    outlet: str
    site_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    reason: str
    granted_by: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None


_GRANTS = """
SELECT g.id, g.operator_id, op.username, g.outlet_id, o.name AS outlet, o.site_id,
       g.starts_at, g.ends_at, g.reason, g.granted_by, g.created_at, g.revoked_at, g.revoked_by
FROM outlet_grant g JOIN operator op ON op.id = g.operator_id JOIN outlet o ON o.id = g.outlet_id
"""


def _outlet_reach(reg: _Registry, outlet_id: uuid.UUID) -> core.Reach:
    return core.Reach("outlet", frozenset({reg.outlet_sites[outlet_id]}), frozenset({outlet_id}))


async def grant_outlet(
    db: Database, who: Principal, operator_id: uuid.UUID, draft: core.GrantDraft, now: datetime
) -> GrantRow:
    """Let an operator sell at another outlet for a while (异地售电)."""
    who.require("operator.manage")
    async with db.tenant(who.tenant_id) as conn:
        reg = await _registry(conn)
        row = await _manageable(conn, who, reg, operator_id)
        actor = reg.reach(who.scope, list(who.scope_ids))
        if draft.outlet_id not in reg.outlet_sites or not core.covers(
            actor, _outlet_reach(reg, draft.outlet_id)
        ):
            raise NotFound(f"outlet {draft.outlet_id} not found")
        checked = core.grant(
            draft, now, reg.reach(row.scope, row.scope_ids), reg.outlet_sites[draft.outlet_id]
        )
        grant_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO outlet_grant (id, tenant_id, operator_id, outlet_id, starts_at, "
                "ends_at, reason, granted_by, created_at) VALUES "
                "(:id, :t, :op, :o, :s, :e, :r, :by, :now)"
            ),
            {
                "id": grant_id,
                "t": who.tenant_id,
                "op": operator_id,
                "o": checked.outlet_id,
                "s": checked.starts_at,
                "e": checked.ends_at,
                "r": checked.reason,
                "by": who.actor,
                "now": now,
            },
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "outlet_grant.created",
            str(grant_id),
            now,
            {
                "operator": row.username,
                "outlet_id": str(checked.outlet_id),
                "starts_at": checked.starts_at.isoformat(),
                "ends_at": checked.ends_at.isoformat(),
                "reason": checked.reason,
            },
        )
        return GrantRow(
            **(await conn.execute(sa.text(_GRANTS + " WHERE g.id = :g"), {"g": grant_id}))
            .one()
            ._mapping
        )


async def list_grants(
    db: Database, who: Principal, operator_id: uuid.UUID | None = None
) -> list[GrantRow]:
    """Grants at the outlets of the actor's sites, newest first."""
    who.require("operator.manage")
    async with db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        rows = await conn.execute(
            sa.text(
                _GRANTS + " WHERE (:all OR o.site_id = ANY(:sites)) "
                "AND (CAST(:op AS uuid) IS NULL OR g.operator_id = :op) "
                "ORDER BY g.created_at DESC, g.id"
            ),
            _ids(sites) | {"op": operator_id},
        )
        return [GrantRow(**r._mapping) for r in rows]


async def revoke_grant(
    db: Database, who: Principal, grant_id: uuid.UUID, now: datetime
) -> GrantRow:
    who.require("operator.manage")
    async with db.tenant(who.tenant_id) as conn:
        reg = await _registry(conn)
        row = (
            await conn.execute(
                sa.text(_GRANTS + " WHERE g.id = :g FOR UPDATE OF g"), {"g": grant_id}
            )
        ).first()
        actor = reg.reach(who.scope, list(who.scope_ids))
        if row is None or not core.covers(actor, _outlet_reach(reg, row.outlet_id)):
            raise NotFound(f"grant {grant_id} not found")
        if row.revoked_at is not None:
            raise Conflict(f"grant {grant_id} was already revoked")
        await conn.execute(
            sa.text("UPDATE outlet_grant SET revoked_at = :now, revoked_by = :by WHERE id = :g"),
            {"now": now, "by": who.actor, "g": grant_id},
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "outlet_grant.revoked",
            str(grant_id),
            now,
            {"operator": row.username, "outlet_id": str(row.outlet_id)},
        )
        return replace(GrantRow(**row._mapping), revoked_at=now, revoked_by=who.actor)


# --- a new property group ------------------------------------------------------------


async def create_group(
    db: Database, slug: str, name: str, admin: str, password: str, now: datetime
) -> uuid.UUID:
    """Platform operator (``prepay tenant create``): the tenant, an "administrator" role
    with every permission and its first operator, scoped to the whole tenant. Ledger
    accounts are made on first use, so a sale and ``prepay check`` work from here."""
    from cloud.auth import INSTALLER_PERMISSIONS, PERMISSIONS
    from cloud.registry.service import create_tenant

    checked_slug = core.slug(slug)
    checked_name = core.name(name, "property group name")
    user = core.username(admin)
    secret = core.password(password)
    tenant_id = await create_tenant(db, checked_slug, checked_name)
    async with db.tenant(tenant_id) as conn:
        role_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO role (id, tenant_id, name, permissions) "
                "VALUES (:id, :t, 'administrator', :p)"
            ),
            {"id": role_id, "t": tenant_id, "p": list(PERMISSIONS)},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO role (id, tenant_id, name, permissions) "
                "VALUES (:id, :t, 'installer', :p)"
            ),
            {"id": uuid.uuid4(), "t": tenant_id, "p": list(INSTALLER_PERMISSIONS)},
        )
        operator_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active, scope, scope_ids, password_changed_at) VALUES "
                "(:id, :t, :u, 'Administrator', :h, :r, true, 'tenant', '{}', :now)"
            ),
            {
                "id": operator_id,
                "t": tenant_id,
                "u": user,
                "h": hash_password(secret),
                "r": role_id,
                "now": now,
            },
        )
        await audit.record(
            conn,
            tenant_id,
            "platform",
            "tenant.created",
            checked_slug,
            now,
            {"name": checked_name, "admin": user},
        )
    return tenant_id
