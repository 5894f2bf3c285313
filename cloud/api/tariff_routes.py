"""REST API v1 for tariffs: list, create, add versions, assign to service points, and each
site's printable price notice (电价公示). Writes need ``tariff.edit``, reads
``registry.view``; prices and fees are strings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import OperatorDep, ServicesDep
from cloud.api.fields import Flag, Reason, TariffStart, Words, Written
from cloud.api.problems import problems
from cloud.documents.price_notice import price_notice_pdf
from cloud.tariffs import admin
from cloud.tariffs.rules import VersionDraft

router = APIRouter(prefix="/api/v1", responses=problems(401, 403))

#: Above zero (cloud.tariffs.rules), NUMERIC(12, 4).
Price = Annotated[Decimal, Written(digits=8, places=4, above_zero=True, example="1.2000")]
Register = Annotated[Decimal, Written(digits=13, places=3, above_zero=True, example="200")]
Name = Annotated[Words, Field(max_length=100)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlatIn(_In):
    kind: Literal["flat"]
    unit_price: Price


class BlockIn(_In):
    up_to: Register | None = Field(description="cumulative consumption in the cycle; null: open")
    price: Price


class TieredIn(_In):
    kind: Literal["tiered"]
    cycle: Literal["month", "year"] = "month"
    blocks: list[BlockIn] = Field(min_length=1, max_length=10)


class WindowIn(_In):
    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["08:00"])]
    period: Literal["sharp", "peak", "flat", "valley"]


class TouIn(_In):
    kind: Literal["tou"]
    prices: dict[Literal["sharp", "peak", "flat", "valley"], Price]
    windows: list[WindowIn] = Field(min_length=1, max_length=48)


Plan = Annotated[FlatIn | TieredIn | TouIn, Field(discriminator="kind")]


class VersionIn(_In):
    effective_from: TariffStart | None = Field(
        None,
        description="now or later (60 s of clock skew allowed), at most 5 years ahead; null: now",
    )
    plan: Plan
    monthly_fee: Annotated[Decimal, Written(digits=10, places=2, example="0.00")] = Decimal(0)
    margin_reason: Reason | None = Field(
        None, description="why a price above the site's catalogue price plus margin is right"
    )

    def draft(self) -> VersionDraft:
        spec = self.plan.model_dump(mode="json", exclude={"kind"})
        return VersionDraft(
            self.plan.kind, spec, self.monthly_fee, self.effective_from, self.margin_reason
        )


class TariffIn(_In):
    name: Name
    utility: Literal["electricity", "water"]
    site_id: uuid.UUID | None = Field(None, description="null: every site of the group")
    version: VersionIn


class TariffPatch(_In):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: Name | None = None
    active: Flag | None = Field(None, description="false: no longer assignable nor on notices")


class AssignIn(_In):
    service_point_ids: list[uuid.UUID] = Field(min_length=1, max_length=5000)


class VersionOut(BaseModel):
    id: uuid.UUID
    effective_from: datetime
    kind: str
    plan: dict[str, Any]
    monthly_fee: str
    margin_reason: str | None
    created_by: str
    created_at: datetime | None


class TariffOut(BaseModel):
    id: uuid.UUID
    name: str
    utility: str
    site_id: uuid.UUID | None
    active: bool
    current: VersionOut | None = Field(description="the version in force now")
    scheduled: list[VersionOut] = Field(description="versions starting later")


class TariffDetailOut(TariffOut):
    versions: list[VersionOut]


class AssignOut(BaseModel):
    tariff_id: uuid.UUID
    service_point_ids: list[uuid.UUID]
    changed: int


def _version(v: admin.VersionView) -> VersionOut:
    return VersionOut(
        id=v.id,
        effective_from=v.effective_from,
        kind=v.kind,
        plan={"kind": v.kind, **v.spec},
        monthly_fee=str(v.monthly_fee),
        margin_reason=v.margin_reason,
        created_by=v.created_by,
        created_at=v.created_at,
    )


def _tariff(t: admin.TariffView) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "utility": t.utility,
        "site_id": t.site_id,
        "active": t.active,
        "current": _version(t.current) if t.current else None,
        "scheduled": [_version(v) for v in t.scheduled],
    }


def _detail(t: admin.TariffView) -> TariffDetailOut:
    return TariffDetailOut(**_tariff(t), versions=[_version(v) for v in t.versions])


@router.get("/tariffs", response_model=list[TariffOut])
async def list_tariffs(svc: ServicesDep, who: OperatorDep) -> list[TariffOut]:
    """The tariffs the operator's scope sees, with the version in force and later ones."""
    who.require("registry.view")
    found = await admin.list_tariffs(svc.db, who, datetime.now(UTC))
    return [TariffOut(**_tariff(t)) for t in found]


@router.get("/tariffs/{tariff_id}", response_model=TariffDetailOut, responses=problems(404))
async def get_tariff(tariff_id: uuid.UUID, svc: ServicesDep, who: OperatorDep) -> TariffDetailOut:
    who.require("registry.view")
    return _detail(await admin.get_tariff(svc.db, who, tariff_id, datetime.now(UTC)))


@router.post(
    "/tariffs", response_model=TariffDetailOut, status_code=201, responses=problems(404, 409)
)
async def create_tariff(body: TariffIn, svc: ServicesDep, who: OperatorDep) -> TariffDetailOut:
    """A tariff and its first version. 422 for a start in the past or a price above the
    site's catalogue price plus margin without ``margin_reason``."""
    who.require("tariff.edit")
    now = datetime.now(UTC)
    new = admin.NewTariff(body.name, body.utility, body.site_id, body.version.draft())
    tariff_id = await admin.create_tariff(svc.db, who, new, now)
    return _detail(await admin.get_tariff(svc.db, who, tariff_id, now))


@router.patch("/tariffs/{tariff_id}", response_model=TariffDetailOut, responses=problems(404, 409))
async def update_tariff(
    tariff_id: uuid.UUID, body: TariffPatch, svc: ServicesDep, who: OperatorDep
) -> TariffDetailOut:
    """Rename or (de)activate a tariff; its prices change only by a new version. A tariff
    service points are on is not deactivated (422)."""
    who.require("tariff.edit")
    now = datetime.now(UTC)
    await admin.update_tariff(svc.db, who, tariff_id, now, body.name, body.active)
    return _detail(await admin.get_tariff(svc.db, who, tariff_id, now))


@router.post(
    "/tariffs/{tariff_id}/versions",
    response_model=TariffDetailOut,
    status_code=201,
    responses=problems(404, 409),
)
async def add_version(
    tariff_id: uuid.UUID, body: VersionIn, svc: ServicesDep, who: OperatorDep
) -> TariffDetailOut:
    """A new version from now or later; what was rated stays as it was."""
    who.require("tariff.edit")
    now = datetime.now(UTC)
    await admin.add_version(svc.db, who, tariff_id, body.draft(), now)
    return _detail(await admin.get_tariff(svc.db, who, tariff_id, now))


@router.post("/tariffs/{tariff_id}/assign", response_model=AssignOut, responses=problems(404, 409))
async def assign_tariff(
    tariff_id: uuid.UUID, body: AssignIn, svc: ServicesDep, who: OperatorDep
) -> AssignOut:
    """Put one or many service points on the tariff, all or none (readings rated from now
    on are priced by it)."""
    who.require("tariff.edit")
    done = await admin.assign_tariff(
        svc.db, who, tariff_id, body.service_point_ids, datetime.now(UTC)
    )
    return AssignOut(
        tariff_id=done.tariff_id, service_point_ids=list(done.points), changed=done.changed
    )


@router.get(
    "/sites/{site_id}/price-notice.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **problems(404)},
)
async def price_notice(site_id: uuid.UUID, svc: ServicesDep, who: OperatorDep) -> Response:
    """The site's price notice (电价公示): an A4 PDF of every tariff in force and scheduled."""
    who.require("registry.view")
    pdf = await price_notice_pdf(svc.db, who, site_id, datetime.now(UTC))
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="price-notice-{site_id}.pdf"'},
    )
