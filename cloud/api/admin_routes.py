"""REST API v1 for registry administration: sites and their settings, buildings,
premises, outlets, roles, operators and cross-outlet grants (cloud.registry.admin).

Reading needs ``registry.view``, changing the registry ``registry.edit``; roles, operators
and grants ``operator.manage``. Anything outside the operator's scope answers 404."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import OperatorDep, ServicesDep
from cloud.api.fields import (
    LINE,
    ClockTime,
    Flag,
    GrantTime,
    Key,
    NewPassword,
    Reason,
    Username,
    Whole,
    Words,
    Written,
)
from cloud.api.problems import problems
from cloud.auth import PERMISSIONS
from cloud.registry import admin
from cloud.registry import admin_core as core

router = APIRouter(prefix="/api/v1", tags=["administration"], responses=problems(401, 403))

Name = Annotated[Words, Field(max_length=100)]
#: (the bounds of cloud.registry.admin_core's settings)
Hysteresis = Annotated[Decimal, Written(places=2, at_most=1000, example="1.00")]
CataloguePrice = Annotated[Decimal, Written(digits=8, places=4, above_zero=True, example="1.2000")]
Margin = Annotated[Decimal, Written(places=4, at_most=1, example="0.15")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Patch(BaseModel):
    """Changes: only the fields sent change, and at least one is sent."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})


def _now() -> datetime:
    return datetime.now(UTC)


# --- sites ---------------------------------------------------------------------------


class SiteIn(_In):
    name: Name
    timezone: Key = "Asia/Shanghai"
    business_day_cutoff: ClockTime = time(0)
    friendly_night_start: ClockTime | None = time(22)
    friendly_night_end: ClockTime | None = time(8)
    friendly_weekends: Flag = True
    friendly_holidays: Flag = True
    notice_minutes: Annotated[int, Whole(ge=0, le=core.NOTICE_MAX)] = 0
    alarm_hysteresis: Hysteresis = Decimal("1.00")
    catalogue_price: CataloguePrice | None = None
    price_margin: Margin = Decimal("0.15")
    reading_max_age_days: Annotated[int, Whole(ge=1, le=core.READING_AGE_MAX)] = Field(
        default=365,
        description="readings measured longer ago are kept in quarantine, not rated",
    )


class SitePatch(_Patch):
    """Only the settings sent change (send null to clear the friendly night or the price)."""

    name: Name | None = None
    timezone: Key | None = None
    business_day_cutoff: ClockTime | None = None
    friendly_night_start: ClockTime | None = None
    friendly_night_end: ClockTime | None = None
    friendly_weekends: Flag | None = None
    friendly_holidays: Flag | None = None
    notice_minutes: Annotated[int, Whole(ge=0, le=core.NOTICE_MAX)] | None = None
    alarm_hysteresis: Hysteresis | None = None
    catalogue_price: CataloguePrice | None = None
    price_margin: Margin | None = None
    reading_max_age_days: Annotated[int, Whole(ge=1, le=core.READING_AGE_MAX)] | None = None


_NULLABLE = {"friendly_night_start", "friendly_night_end", "catalogue_price"}


class SiteOut(BaseModel):
    id: uuid.UUID
    name: str
    timezone: str
    business_day_cutoff: ClockTime
    friendly_night_start: ClockTime | None
    friendly_night_end: ClockTime | None
    friendly_weekends: bool
    friendly_holidays: bool
    notice_minutes: int
    alarm_hysteresis: Decimal
    catalogue_price: Decimal | None
    price_margin: Decimal
    reading_max_age_days: int


def _site(row: admin.SiteRow) -> SiteOut:
    return SiteOut(id=row.id, **asdict(row.settings))


@router.post("/sites", response_model=SiteOut, status_code=201)
async def create_site(body: SiteIn, svc: ServicesDep, who: OperatorDep) -> SiteOut:
    """A new site (tenant-wide operators only). Money and prices are strings."""
    settings = core.SiteSettings(**body.model_dump())
    return _site(await admin.create_site(svc.db, who, settings, _now()))


@router.get("/sites", response_model=list[SiteOut])
async def list_sites(svc: ServicesDep, who: OperatorDep) -> list[SiteOut]:
    return [_site(s) for s in await admin.list_sites(svc.db, who)]


@router.get("/sites/{site_id}", response_model=SiteOut, responses=problems(404))
async def get_site(site_id: uuid.UUID, svc: ServicesDep, who: OperatorDep) -> SiteOut:
    return _site(await admin.get_site(svc.db, who, site_id))


@router.patch("/sites/{site_id}", response_model=SiteOut, responses=problems(404))
async def update_site(
    site_id: uuid.UUID, body: SitePatch, svc: ServicesDep, who: OperatorDep
) -> SiteOut:
    changes: dict[str, Any] = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k in _NULLABLE
    }
    return _site(await admin.update_site(svc.db, who, site_id, changes, _now()))


# --- buildings and premises ----------------------------------------------------------


class BuildingIn(_In):
    name: Name


class BuildingOut(BaseModel):
    id: uuid.UUID
    site_id: uuid.UUID
    name: str


@router.post(
    "/sites/{site_id}/buildings",
    response_model=BuildingOut,
    status_code=201,
    responses=problems(404, 409),
)
async def create_building(
    site_id: uuid.UUID, body: BuildingIn, svc: ServicesDep, who: OperatorDep
) -> BuildingOut:
    row = await admin.create_building(svc.db, who, site_id, body.name, _now())
    return BuildingOut(**asdict(row))


@router.get("/sites/{site_id}/buildings", response_model=list[BuildingOut], responses=problems(404))
async def list_buildings(
    site_id: uuid.UUID, svc: ServicesDep, who: OperatorDep
) -> list[BuildingOut]:
    return [BuildingOut(**asdict(b)) for b in await admin.list_buildings(svc.db, who, site_id)]


Kind = Literal["shop", "flat", "office", "unit"]
#: m², > 0, 2 decimals (cloud.registry.admin_core.AREA_MAX)
Area = Annotated[Decimal, Written(places=2, above_zero=True, at_most=1_000_000, example="36.50")]


class PremisesIn(_In):
    floor: Annotated[Key, Field(max_length=20)]
    number: Annotated[Key, Field(max_length=40)]
    kind: Kind = "shop"
    floor_area: Area | None = None


class PremisesPatch(_Patch):
    floor: Annotated[Key, Field(max_length=20)] | None = None
    number: Annotated[Key, Field(max_length=40)] | None = None
    kind: Kind | None = None
    floor_area: Area | None = None


class PremisesOut(BaseModel):
    id: uuid.UUID
    site_id: uuid.UUID
    building_id: uuid.UUID
    building: str
    floor: str
    number: str
    kind: str
    floor_area: Decimal | None


class PremisesPageOut(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[PremisesOut]


@router.post(
    "/buildings/{building_id}/premises",
    response_model=PremisesOut,
    status_code=201,
    responses=problems(404, 409),
)
async def create_premises(
    building_id: uuid.UUID, body: PremisesIn, svc: ServicesDep, who: OperatorDep
) -> PremisesOut:
    draft = core.PremisesDraft(**body.model_dump())
    row = await admin.create_premises(svc.db, who, building_id, draft, _now())
    return PremisesOut(**asdict(row))


@router.get("/premises", response_model=PremisesPageOut, responses=problems(404))
async def search_premises(
    svc: ServicesDep,
    who: OperatorDep,
    site_id: uuid.UUID | None = None,
    building_id: uuid.UUID | None = None,
    floor: Annotated[str | None, Query(max_length=20, pattern=LINE)] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=100, pattern=LINE, description="part of the number or the building's name"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=admin.PAGE_MAX)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> PremisesPageOut:
    query = admin.PremisesQuery(site_id, building_id, floor, q, limit, offset)
    page = await admin.search_premises(svc.db, who, query)
    return PremisesPageOut(
        total=page.total,
        limit=limit,
        offset=offset,
        items=[PremisesOut(**asdict(p)) for p in page.items],
    )


@router.patch("/premises/{premises_id}", response_model=PremisesOut, responses=problems(404, 409))
async def update_premises(
    premises_id: uuid.UUID, body: PremisesPatch, svc: ServicesDep, who: OperatorDep
) -> PremisesOut:
    changes = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k == "floor_area"
    }
    row = await admin.update_premises(svc.db, who, premises_id, changes, _now())
    return PremisesOut(**asdict(row))


# --- outlets -------------------------------------------------------------------------


class OutletIn(_In):
    name: Name


class OutletOut(BaseModel):
    id: uuid.UUID
    site_id: uuid.UUID
    name: str


@router.post(
    "/sites/{site_id}/outlets",
    response_model=OutletOut,
    status_code=201,
    responses=problems(404, 409),
)
async def create_outlet(
    site_id: uuid.UUID, body: OutletIn, svc: ServicesDep, who: OperatorDep
) -> OutletOut:
    return OutletOut(**asdict(await admin.create_outlet(svc.db, who, site_id, body.name, _now())))


@router.get("/outlets", response_model=list[OutletOut], responses=problems(404))
async def list_outlets(
    svc: ServicesDep, who: OperatorDep, site_id: uuid.UUID | None = None
) -> list[OutletOut]:
    return [OutletOut(**asdict(o)) for o in await admin.list_outlets(svc.db, who, site_id)]


# --- roles ---------------------------------------------------------------------------

Permission = Literal[PERMISSIONS]  # type: ignore[valid-type]


class RoleIn(_In):
    name: Name
    permissions: Annotated[list[Permission], Field(max_length=100)]


class RolePatch(_Patch):
    name: Name | None = None
    permissions: Annotated[list[Permission], Field(max_length=100)] | None = None


class RoleOut(BaseModel):
    id: uuid.UUID
    name: str
    permissions: list[str]


def _role(r: admin.RoleRow) -> RoleOut:
    return RoleOut(id=r.id, name=r.name, permissions=list(r.permissions))


@router.post("/roles", response_model=RoleOut, status_code=201, responses=problems(409))
async def create_role(body: RoleIn, svc: ServicesDep, who: OperatorDep) -> RoleOut:
    return _role(await admin.create_role(svc.db, who, body.name, body.permissions, _now()))


@router.get("/roles", response_model=list[RoleOut])
async def list_roles(svc: ServicesDep, who: OperatorDep) -> list[RoleOut]:
    return [_role(r) for r in await admin.list_roles(svc.db, who)]


@router.patch("/roles/{role_id}", response_model=RoleOut, responses=problems(404, 409))
async def update_role(
    role_id: uuid.UUID, body: RolePatch, svc: ServicesDep, who: OperatorDep
) -> RoleOut:
    row = await admin.update_role(svc.db, who, role_id, body.name, body.permissions, _now())
    return _role(row)


# --- operators -----------------------------------------------------------------------

Scope = Literal["tenant", "site", "outlet"]
ScopeIds = Annotated[list[uuid.UUID], Field(max_length=200)]


class OperatorIn(_In):
    username: Username
    display_name: Name
    password: NewPassword
    role_id: uuid.UUID
    scope: Scope = "tenant"
    scope_ids: ScopeIds = Field(default_factory=list)


class OperatorPatch(_Patch):
    display_name: Name | None = None
    role_id: uuid.UUID | None = None
    scope: Scope | None = None
    scope_ids: ScopeIds | None = None
    active: Flag | None = None


class OperatorOut(BaseModel):
    id: uuid.UUID
    username: str
    display_name: str
    role_id: uuid.UUID
    role: str
    active: bool
    scope: str
    scope_ids: list[uuid.UUID]
    password_changed_at: datetime | None


class PasswordIn(_In):
    password: NewPassword


class PasswordOut(BaseModel):
    operator_id: uuid.UUID
    sessions_revoked: int


def _operator(row: admin.OperatorRow) -> OperatorOut:
    return OperatorOut(**(asdict(row) | {"scope_ids": list(row.scope_ids)}))


@router.post(
    "/operators", response_model=OperatorOut, status_code=201, responses=problems(404, 409)
)
async def create_operator(body: OperatorIn, svc: ServicesDep, who: OperatorDep) -> OperatorOut:
    """A new operator: a password of at least 8 characters, a role whose permissions you
    hold, a scope within yours."""
    draft = admin.OperatorDraft(
        body.username,
        body.display_name,
        body.password,
        body.role_id,
        body.scope,
        tuple(body.scope_ids),
    )
    return _operator(await admin.create_operator(svc.db, who, draft, _now()))


@router.get("/operators", response_model=list[OperatorOut])
async def list_operators(svc: ServicesDep, who: OperatorDep) -> list[OperatorOut]:
    return [_operator(o) for o in await admin.list_operators(svc.db, who)]


@router.patch("/operators/{operator_id}", response_model=OperatorOut, responses=problems(404, 409))
async def update_operator(
    operator_id: uuid.UUID, body: OperatorPatch, svc: ServicesDep, who: OperatorDep
) -> OperatorOut:
    """Role, scope (with its ids), display name, active. Deactivating revokes sessions."""
    change = admin.OperatorChange(
        body.display_name,
        body.role_id,
        body.scope,
        None if body.scope_ids is None else tuple(body.scope_ids),
        body.active,
    )
    return _operator(await admin.update_operator(svc.db, who, operator_id, change, _now()))


@router.post(
    "/operators/{operator_id}/password", response_model=PasswordOut, responses=problems(404)
)
async def reset_password(
    operator_id: uuid.UUID, body: PasswordIn, svc: ServicesDep, who: OperatorDep
) -> PasswordOut:
    """Set another operator's password; their sessions are revoked."""
    n = await admin.reset_password(svc.db, who, operator_id, body.password, _now())
    return PasswordOut(operator_id=operator_id, sessions_revoked=n)


# --- cross-outlet grants -------------------------------------------------------------


class GrantIn(_In):
    outlet_id: uuid.UUID
    starts_at: GrantTime
    ends_at: GrantTime = Field(description="at most 31 days after starts_at")
    reason: Reason


class GrantOut(BaseModel):
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


@router.post(
    "/operators/{operator_id}/outlet-grants",
    response_model=GrantOut,
    status_code=201,
    responses=problems(404, 409),
)
async def grant_outlet(
    operator_id: uuid.UUID, body: GrantIn, svc: ServicesDep, who: OperatorDep
) -> GrantOut:
    """Let the operator sell at an outlet outside their scope for up to 31 days."""
    draft = core.GrantDraft(body.outlet_id, body.starts_at, body.ends_at, body.reason)
    return GrantOut(**asdict(await admin.grant_outlet(svc.db, who, operator_id, draft, _now())))


@router.get("/outlet-grants", response_model=list[GrantOut], responses=problems(404))
async def list_grants(
    svc: ServicesDep, who: OperatorDep, operator_id: uuid.UUID | None = None
) -> list[GrantOut]:
    return [GrantOut(**asdict(g)) for g in await admin.list_grants(svc.db, who, operator_id)]


@router.post(
    "/outlet-grants/{grant_id}/revoke", response_model=GrantOut, responses=problems(404, 409)
)
async def revoke_grant(grant_id: uuid.UUID, svc: ServicesDep, who: OperatorDep) -> GrantOut:
    return GrantOut(**asdict(await admin.revoke_grant(svc.db, who, grant_id, _now())))
