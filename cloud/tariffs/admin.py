"""Tariff management: create tariffs, add versions, assign them to service points, and read
them as an operator's scope sees them. Each write is one transaction and one audit event
over :mod:`cloud.tariffs.rules`.

Scope: a tariff of a site is seen and changed by operators whose scope covers the site
(another one is not found); a tariff of the whole group (no site) is seen by every operator
and assigned by any to the points in their scope, but changed only by one scoped to the
whole group.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.auth import Principal
from cloud.db import Database, pg_array
from cloud.errors import Conflict, Forbidden, Invalid, NotFound
from cloud.registry.scope import require_site, sites_of
from cloud.tariffs import rules


@dataclass(frozen=True)
class NewTariff:
    name: str
    utility: str
    site_id: uuid.UUID | None
    version: rules.VersionDraft


@dataclass(frozen=True)
class VersionView:
    id: uuid.UUID
    effective_from: datetime
    kind: str
    spec: dict[str, Any]
    monthly_fee: Decimal
    margin_reason: str | None
    created_by: str
    created_at: datetime | None


@dataclass(frozen=True)
class TariffView:
    id: uuid.UUID
    name: str
    utility: str
    site_id: uuid.UUID | None
    active: bool
    versions: tuple[VersionView, ...]  # ascending by effective date
    current: VersionView | None  # in force at the time asked
    scheduled: tuple[VersionView, ...]  # starting after it


def _spec(kind: str, spec: dict[str, Any] | None, unit_price: Decimal | None) -> dict[str, Any]:
    if kind == "flat" and not (spec or {}).get("unit_price") and unit_price is not None:
        return {"unit_price": str(unit_price)}
    return dict(spec or {})


def _view(row: Any, versions: Sequence[VersionView], now: datetime) -> TariffView:
    past = [v for v in versions if v.effective_from <= now]
    return TariffView(
        id=row.id,
        name=row.name,
        utility=row.utility,
        site_id=row.site_id,
        active=row.active,
        versions=tuple(versions),
        current=past[-1] if past else None,
        scheduled=tuple(v for v in versions if v.effective_from > now),
    )


_TARIFFS = (
    "SELECT id, name, utility, site_id, active FROM tariff "
    "WHERE (CAST(:sites AS uuid[]) IS NULL OR site_id IS NULL OR site_id = ANY(CAST(:sites AS "
    "uuid[]))) AND (CAST(:id AS uuid) IS NULL OR id = CAST(:id AS uuid)) "
    "AND (CAST(:site AS uuid) IS NULL OR site_id IS NULL OR site_id = CAST(:site AS uuid)) "
)


async def _load(
    conn: AsyncConnection,
    who: Principal,
    now: datetime,
    tariff_id: uuid.UUID | None = None,
    site_id: uuid.UUID | None = None,
) -> list[TariffView]:
    sites = await sites_of(conn, who)
    rows = (
        await conn.execute(
            sa.text(_TARIFFS + "ORDER BY utility, name, id"),
            {
                "sites": None if sites is None else pg_array(sites),
                "id": tariff_id,
                "site": site_id,
            },
        )
    ).all()
    if not rows:
        return []
    found = await conn.execute(
        sa.text(
            "SELECT id, tariff_id, effective_from, kind, unit_price, spec, monthly_fee, "
            "margin_reason, created_by, created_at FROM tariff_version "
            "WHERE tariff_id = ANY(CAST(:ids AS uuid[])) ORDER BY effective_from"
        ),
        {"ids": pg_array(r.id for r in rows)},
    )
    versions: dict[uuid.UUID, list[VersionView]] = {r.id: [] for r in rows}
    for v in found:
        versions[v.tariff_id].append(
            VersionView(
                v.id,
                v.effective_from,
                v.kind,
                _spec(v.kind, v.spec, v.unit_price),
                v.monthly_fee,
                v.margin_reason,
                v.created_by,
                v.created_at,
            )
        )
    return [_view(r, versions[r.id], now) for r in rows]


async def list_tariffs(db: Database, who: Principal, now: datetime) -> list[TariffView]:
    """The tariffs the operator's scope sees, each with its versions."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        return await _load(conn, who, now)


async def get_tariff(
    db: Database, who: Principal, tariff_id: uuid.UUID, now: datetime
) -> TariffView:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        found = await _load(conn, who, now, tariff_id)
    if not found:
        raise NotFound(f"tariff {tariff_id} not found")
    return found[0]


async def tariffs_at_site(
    conn: AsyncConnection, who: Principal, site_id: uuid.UUID, now: datetime
) -> list[TariffView]:
    """The active tariffs that apply at a site (its own and the group's)."""
    return [t for t in await _load(conn, who, now, site_id=site_id) if t.active]


async def _ceilings(conn: AsyncConnection, site_id: uuid.UUID | None) -> list[rules.Ceiling]:
    """The catalogue prices a tariff's versions must respect: its site's, or those of every
    site of the group for a tariff of the whole group."""
    rows = await conn.execute(
        sa.text(
            "SELECT name, catalogue_price, price_margin FROM site WHERE catalogue_price IS NOT "
            "NULL AND (CAST(:s AS uuid) IS NULL OR id = CAST(:s AS uuid))"
        ),
        {"s": site_id},
    )
    return [rules.Ceiling(r.name, r.catalogue_price, r.price_margin) for r in rows]


async def _writable(conn: AsyncConnection, who: Principal, site_id: uuid.UUID | None) -> None:
    if site_id is None:
        if who.scope != "tenant":
            raise Forbidden("a tariff of the whole group is changed only by a group operator")
        return
    if await conn.scalar(sa.text("SELECT 1 FROM site WHERE id = :s"), {"s": site_id}) is None:
        raise NotFound(f"site {site_id} not found")
    await require_site(conn, who, site_id)


def _accept(
    utility: str,
    draft: rules.VersionDraft,
    now: datetime,
    existing: Sequence[datetime],
    ceilings: Sequence[rules.Ceiling],
) -> rules.AcceptedVersion:
    try:
        return rules.accept_version(utility, draft, now, existing, ceilings)
    except rules.RuleError as exc:
        raise Invalid(str(exc)) from exc


_INSERT_VERSION = sa.text(
    "INSERT INTO tariff_version (id, tenant_id, tariff_id, effective_from, kind, unit_price, "
    "spec, monthly_fee, created_by, created_at, margin_reason) VALUES (:id, :t, :tariff, :ef, "
    ":kind, :up, CAST(:spec AS jsonb), :fee, :by, :now, :mr)"
)


async def _insert_version(
    conn: AsyncConnection,
    who: Principal,
    tariff_id: uuid.UUID,
    v: rules.AcceptedVersion,
    now: datetime,
) -> uuid.UUID:
    version_id = uuid.uuid4()
    await conn.execute(
        _INSERT_VERSION,
        {
            "id": version_id,
            "t": who.tenant_id,
            "tariff": tariff_id,
            "ef": v.effective_from,
            "kind": v.kind,
            "up": v.unit_price,
            "spec": json.dumps(v.spec),
            "fee": v.monthly_fee,
            "by": who.actor,
            "now": now,
            "mr": v.margin_reason,
        },
    )
    return version_id


def _detail(v: rules.AcceptedVersion) -> dict[str, str]:
    detail = {
        "effective_from": v.effective_from.isoformat(),
        "kind": v.kind,
        "highest_price": str(v.highest_price),
        "monthly_fee": str(v.monthly_fee),
    }
    if v.margin_reason:
        detail["margin_reason"] = v.margin_reason
    return detail


async def create_tariff(db: Database, who: Principal, new: NewTariff, now: datetime) -> uuid.UUID:
    """A tariff with its first version (which starts now or later)."""
    who.require("tariff.edit")
    name = new.name.strip()
    if not name:
        raise Invalid("name must not be blank")
    async with db.tenant(who.tenant_id) as conn:
        await _writable(conn, who, new.site_id)
        taken = await conn.scalar(
            sa.text(
                "SELECT 1 FROM tariff WHERE name = :n AND site_id IS NOT DISTINCT FROM :s "
                "AND utility = :u"
            ),
            {"n": name, "s": new.site_id, "u": new.utility},
        )
        if taken:
            raise Conflict(f"a {new.utility} tariff named {name} already exists")
        version = _accept(new.utility, new.version, now, (), await _ceilings(conn, new.site_id))
        tariff_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO tariff (id, tenant_id, name, utility, site_id, active) "
                "VALUES (:id, :t, :n, :u, :s, true)"
            ),
            {"id": tariff_id, "t": who.tenant_id, "n": name, "u": new.utility, "s": new.site_id},
        )
        await _insert_version(conn, who, tariff_id, version, now)
        detail = {"name": name, "utility": new.utility, **_detail(version)}
        if new.site_id:
            detail["site_id"] = str(new.site_id)
        await audit.record(
            conn, who.tenant_id, who.actor, "tariff.create", f"tariff:{tariff_id}", now, detail
        )
    return tariff_id


async def _locked_tariff(
    conn: AsyncConnection, who: Principal, tariff_id: uuid.UUID, change: bool = True
) -> Any:
    """The tariff's row, locked; NotFound outside the scope, Forbidden for a group tariff
    the operator may not ``change`` (assigning one to points in scope is no change to it)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT id, name, utility, site_id, active FROM tariff WHERE id = :id FOR UPDATE"
            ),
            {"id": tariff_id},
        )
    ).first()
    sites = await sites_of(conn, who)
    if row is None or (row.site_id is not None and sites is not None and row.site_id not in sites):
        raise NotFound(f"tariff {tariff_id} not found")
    if change:
        await _writable(conn, who, row.site_id)
    return row


async def _starts(conn: AsyncConnection, tariff_id: uuid.UUID) -> list[datetime]:
    return list(
        await conn.scalars(
            sa.text("SELECT effective_from FROM tariff_version WHERE tariff_id = :id"),
            {"id": tariff_id},
        )
    )


async def add_version(
    db: Database, who: Principal, tariff_id: uuid.UUID, draft: rules.VersionDraft, now: datetime
) -> uuid.UUID:
    """A new version of a tariff, from now or a later date: what was rated stays as it was."""
    who.require("tariff.edit")
    async with db.tenant(who.tenant_id) as conn:
        tariff = await _locked_tariff(conn, who, tariff_id)
        version = _accept(
            tariff.utility,
            draft,
            now,
            await _starts(conn, tariff_id),
            await _ceilings(conn, tariff.site_id),
        )
        version_id = await _insert_version(conn, who, tariff_id, version, now)
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "tariff.version",
            f"tariff:{tariff_id}",
            now,
            {"version_id": str(version_id), **_detail(version)},
        )
    return version_id


@dataclass(frozen=True)
class Assigned:
    tariff_id: uuid.UUID
    points: tuple[uuid.UUID, ...]
    changed: int  # those that were on another tariff


async def assign_tariff(
    db: Database,
    who: Principal,
    tariff_id: uuid.UUID,
    point_ids: Sequence[uuid.UUID],
    now: datetime,
) -> Assigned:
    """Put service points on a tariff, all or none. Readings rated from now on are priced
    by it; what was rated before stays as it was (rating only moves a point's mark on)."""
    who.require("tariff.edit")
    ids = sorted(set(point_ids), key=lambda i: i.int)
    async with db.tenant(who.tenant_id) as conn:
        tariff = await _locked_tariff(conn, who, tariff_id, change=False)
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT id, name, utility, site_id, removed_at IS NOT NULL AS removed, "
                    "tariff_id FROM service_point WHERE id = ANY(CAST(:ids AS uuid[])) "
                    "ORDER BY id FOR UPDATE"
                ),
                {"ids": pg_array(ids)},
            )
        ).all()
        sites = await sites_of(conn, who)
        seen = {r.id: r for r in rows if sites is None or r.site_id in sites}
        missing = [i for i in ids if i not in seen]
        if missing:
            raise NotFound(f"service point {missing[0]} not found")
        facts = rules.TariffFacts(
            tariff.name,
            tariff.utility,
            tariff.site_id,
            tariff.active,
            tuple(await _starts(conn, tariff_id)),
        )
        points = [
            rules.PointFacts(r.id, r.name, r.utility, r.site_id, r.removed) for r in seen.values()
        ]
        try:
            rules.check_assignment(facts, points, now)
        except rules.RuleError as exc:
            raise Invalid(str(exc)) from exc
        moving = [r.id for r in seen.values() if r.tariff_id != tariff_id]
        if moving:
            await conn.execute(
                sa.text(
                    "UPDATE service_point SET tariff_id = :t WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"t": tariff_id, "ids": pg_array(moving)},
            )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "tariff.assign",
            f"tariff:{tariff_id}",
            now,
            {
                "points": ",".join(str(i) for i in ids),
                "changed": ",".join(str(i) for i in moving),
                "previous": ",".join(sorted({str(seen[i].tariff_id) for i in moving})),
            },
        )
    return Assigned(tariff_id, tuple(ids), len(moving))


async def update_tariff(
    db: Database,
    who: Principal,
    tariff_id: uuid.UUID,
    now: datetime,
    name: str | None = None,
    active: bool | None = None,
) -> None:
    """Rename a tariff or (de)activate it. Its prices change only by a new version; a tariff
    points are on is not deactivated (move them to another first)."""
    who.require("tariff.edit")
    async with db.tenant(who.tenant_id) as conn:
        tariff = await _locked_tariff(conn, who, tariff_id)
        detail: dict[str, str] = {}
        if name is not None and name.strip() != tariff.name:
            name = name.strip()
            if not name:
                raise Invalid("name must not be blank")
            taken = await conn.scalar(
                sa.text(
                    "SELECT 1 FROM tariff WHERE name = :n AND site_id IS NOT DISTINCT FROM :s "
                    "AND utility = :u AND id <> :id"
                ),
                {"n": name, "s": tariff.site_id, "u": tariff.utility, "id": tariff_id},
            )
            if taken:
                raise Conflict(f"a {tariff.utility} tariff named {name} already exists")
            detail.update(previous_name=tariff.name, name=name)
        if active is not None and active != tariff.active:
            if not active:
                used = int(
                    await conn.scalar(
                        sa.text(
                            "SELECT count(*) FROM service_point WHERE tariff_id = :t "
                            "AND removed_at IS NULL"
                        ),
                        {"t": tariff_id},
                    )
                    or 0
                )
                if used:
                    raise Invalid(
                        f"tariff {tariff.name} is used by {used} service point(s): assign them "
                        "another tariff first"
                    )
            detail["active"] = str(active).lower()
        if not detail:
            return
        await conn.execute(
            sa.text(
                "UPDATE tariff SET name = coalesce(:n, name), active = coalesce(:a, active) "
                "WHERE id = :id"
            ),
            {"n": detail.get("name"), "a": active if "active" in detail else None, "id": tariff_id},
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "tariff.update", f"tariff:{tariff_id}", now, detail
        )
