"""REST API v1 for operators and finance (JSON; money as strings)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cloud.api import queries
from cloud.api.deps import OperatorDep, ServicesDep, session_token
from cloud.api.fields import (
    Flag,
    Key,
    NewPassword,
    Password,
    PathKey,
    Reason,
    Until,
    Whole,
    Written,
)
from cloud.api.problems import problems
from cloud.control.operator import (
    ControlAction,
    ControlRequest,
    PointResult,
    control_view,
    operate_point,
    operate_site,
)
from cloud.documents.receipt import draw_ahead
from cloud.errors import DomainError
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.registry.commissioning import exchange_claim, issue_claim, revoke_credential
from cloud.registry.gateway_config import push_config
from contract.mqtt import CONFIG_PUSHABLE, Topics

router = APIRouter(prefix="/api/v1")

Amount = Annotated[Decimal, Written(digits=10, places=2, above_zero=True, example="50.00")]


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Key
    username: Key
    password: Password


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth2 token type, not a secret


class SaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: Annotated[Key, Field(max_length=20, description="account number")]
    amount: Amount
    method: Literal["cash", "card", "transfer"] = "cash"
    outlet_id: Annotated[
        uuid.UUID | None,
        Field(description="where the sale is made; required of an operator scoped to outlets"),
    ] = None


class SaleOut(BaseModel):
    id: uuid.UUID
    receipt_no: str
    account: str
    amount: str
    method: str
    balance_after: str
    created_at: datetime
    replayed: bool
    outlet_id: uuid.UUID | None = None
    grant_id: uuid.UUID | None = Field(
        default=None, description="the cross-outlet grant (异地售电) the sale was made under"
    )
    business_day: date | None = None


class PointOut(BaseModel):
    id: uuid.UUID
    name: str
    account: str
    balance: str
    supply_desired: str | None
    supply_reported: str | None
    supply_reported_at: datetime | None
    last_register: str | None
    last_reading_at: datetime | None
    gateway_online: bool


class BalanceOut(BaseModel):
    account: str
    balance: str


def _point(p: queries.PointRow) -> PointOut:
    return PointOut(
        id=p.id,
        name=p.name,
        account=p.account_number,
        balance=str(p.balance),
        supply_desired=p.desired,
        supply_reported=p.reported,
        supply_reported_at=p.reported_at,
        last_register=None if p.last_total is None else str(p.last_total),
        last_reading_at=p.last_reading_at,
        gateway_online=p.gateway_online,
    )


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses=problems(401, 429, why={401: "unknown property group, user or password"}),
)
async def login(body: LoginIn, request: Request, svc: ServicesDep) -> TokenOut:
    """A bearer token. 20 failed logins of one user in a minute lock that login for 15
    minutes (100 from one client address lock the address); X-Forwarded-For is not
    trusted, the address is the connection's."""
    address = request.client.host if request.client else None
    token = await svc.sessions.login(body.tenant, body.username, body.password, address)
    return TokenOut(access_token=token)


@router.post("/auth/logout", status_code=204, responses=problems(401))
async def logout(request: Request, svc: ServicesDep, who: OperatorDep) -> Response:
    """End this session: its token is refused from now on."""
    await svc.sessions.logout(session_token(request) or "")
    return Response(status_code=204)


class PasswordIn(BaseModel):
    current_password: Password
    new_password: NewPassword


@router.post(
    "/me/password",
    status_code=204,
    responses=problems(401),
)
async def change_password(body: PasswordIn, svc: ServicesDep, who: OperatorDep) -> Response:
    """Change one's own password; every session of the operator ends (log in again)."""
    await svc.sessions.change_password(who, body.current_password, body.new_password)
    return Response(status_code=204)


@router.get("/service-points", response_model=list[PointOut], responses=problems(401, 403))
async def list_points(svc: ServicesDep, who: OperatorDep) -> list[PointOut]:
    who.require("registry.view")
    return [_point(p) for p in await queries.service_points(svc.db, who.tenant_id, who)]


@router.get(
    "/service-points/{point_id}", response_model=PointOut, responses=problems(401, 403, 404)
)
async def get_point(point_id: uuid.UUID, svc: ServicesDep, who: OperatorDep) -> PointOut:
    who.require("registry.view")
    return _point(await queries.service_point(svc.db, who.tenant_id, point_id, who))


@router.get(
    "/accounts/{number}/balance", response_model=BalanceOut, responses=problems(401, 403, 404)
)
async def get_balance(number: PathKey, svc: ServicesDep, who: OperatorDep) -> BalanceOut:
    who.require("registry.view")
    balance = await queries.account_balance(
        svc.db, who.tenant_id, number, who, selling_at=datetime.now(UTC)
    )
    return BalanceOut(account=number, balance=str(balance))


@router.post(
    "/sales", response_model=SaleOut, status_code=201, responses=problems(401, 403, 404, 409)
)
async def create_sale(
    body: SaleIn,
    response: Response,
    svc: ServicesDep,
    who: OperatorDep,
    idempotency_key: Annotated[
        str,
        Header(alias="Idempotency-Key", min_length=8, max_length=100, pattern=r"^[\x21-\x7e]+$"),
    ],
) -> SaleOut:
    """Sell credit at the counter (cash, card or bank transfer). Re-sending the same
    Idempotency-Key returns the original sale (200) and credits nothing; reusing it for a
    different sale is a 409. The outlet must be in the operator's scope or under a live
    cross-outlet grant (403 otherwise); the sale then names the grant."""
    receipt = await sell_credit(
        svc.db,
        who,
        SaleRequest(body.account, body.amount, body.method, body.outlet_id),
        idempotency_key,
        datetime.now(UTC),
        svc.timing,
    )
    if receipt.replayed:
        response.status_code = 200
    elif svc.draw_receipts_ahead:
        draw_ahead(svc.db, who, receipt.receipt_no)
    return SaleOut(
        id=receipt.sale_id,
        receipt_no=receipt.receipt_no,
        account=receipt.account_number,
        amount=str(receipt.amount),
        method=receipt.method,
        balance_after=str(receipt.balance_after),
        created_at=receipt.created_at,
        replayed=receipt.replayed,
        outlet_id=receipt.outlet_id,
        grant_id=receipt.grant_id,
        business_day=receipt.business_day,
    )


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_minutes: Annotated[int, Whole(ge=1, le=7 * 24 * 60)] = 24 * 60


class ClaimOut(BaseModel):
    code: str = Field(description="shown once; give it to the installer")
    site_id: uuid.UUID
    expires_at: datetime


class CommissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claim: Annotated[Key, Field(min_length=4, max_length=40)]
    name: Annotated[Key, Field(max_length=100)] | None = None


class CommissionOut(BaseModel):
    gateway: str
    mqtt_url: str
    mqtt_prefix: str
    username: str
    password: str


class RevokedOut(BaseModel):
    gateway: str
    revoked: int


@router.post(
    "/sites/{site_id}/claim-codes",
    response_model=ClaimOut,
    status_code=201,
    responses=problems(401, 403, 404),
)
async def create_claim_code(
    site_id: uuid.UUID, body: ClaimIn, svc: ServicesDep, who: OperatorDep
) -> ClaimOut:
    """A one-time code an installer exchanges for a new gateway at this site."""
    await queries.require_site(svc.db, who, site_id)
    claim = await issue_claim(
        svc.db, who, site_id, datetime.now(UTC), timedelta(minutes=body.ttl_minutes)
    )
    return ClaimOut(code=claim.code, site_id=claim.site_id, expires_at=claim.expires_at)


@router.post(
    "/gateways/commission",
    response_model=CommissionOut,
    status_code=201,
    responses=problems(403, why={403: "claim code refused: unknown, already used or expired"}),
)
async def commission_gateway(body: CommissionIn, svc: ServicesDep) -> CommissionOut:
    """Exchange a claim code (no login: the code is the authority) for the gateway's id and
    its own MQTT credentials. The password is returned once and kept only as a hash."""
    ident = await exchange_claim(svc.db, body.claim, datetime.now(UTC), body.name)
    return CommissionOut(
        gateway=ident.gateway,
        mqtt_url=svc.broker_url,
        mqtt_prefix=svc.mqtt_prefix,
        username=ident.username,
        password=ident.password,
    )


@router.post(
    "/gateways/{code}/revoke-credential",
    response_model=RevokedOut,
    responses=problems(401, 403, 404, 409),
)
async def revoke_gateway_credential(
    code: PathKey, svc: ServicesDep, who: OperatorDep
) -> RevokedOut:
    await queries.require_gateway(svc.db, who, code)
    n = await revoke_credential(svc.db, who, code, datetime.now(UTC))
    return RevokedOut(gateway=code, revoked=n)


class ConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(
        description="poll_interval_s, publish_batch, heartbeat_s, buses, profiles",
        # an empty config changes nothing; a gateway takes only these from the cloud
        json_schema_extra={
            "minProperties": 1,
            "propertyNames": {"enum": list[JsonValue](sorted(CONFIG_PUSHABLE))},
        },
    )


class ConfigOut(BaseModel):
    gateway: str
    version: int
    id: uuid.UUID


@router.post(
    "/gateways/{code}/config",
    response_model=ConfigOut,
    status_code=202,
    responses=problems(
        400, 401, 403, 404, why={400: "this API has no broker connection configured"}
    ),
)
async def push_gateway_config(
    code: PathKey, body: ConfigIn, svc: ServicesDep, who: OperatorDep
) -> ConfigOut:
    """Push a new config version (retained). 202: the gateway applies it when it gets it and
    reports the version it runs; a config it refuses is reported with the reason."""
    if not svc.cloud_mqtt_url:
        raise DomainError("this API has no broker connection configured (MQTT_URL)")
    await queries.require_gateway(svc.db, who, code)
    pushed = await push_config(
        svc.db,
        who,
        code,
        body.config,
        datetime.now(UTC),
        svc.cloud_mqtt_url,
        Topics(svc.mqtt_prefix),
    )
    return ConfigOut(gateway=pushed.gateway, version=pushed.version, id=pushed.push_id)


class ControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: ControlAction
    reason: Reason
    override: Flag = Field(
        default=False, description="trip a point that is not in arrears (say why in reason)"
    )
    until: Until | None = Field(
        default=None, description="when keep-power or the override ends (at most 366 days ahead)"
    )


class ControlOut(BaseModel):
    point_id: uuid.UUID
    name: str
    done: bool
    message: str
    balance: str
    in_arrears: bool
    supply: str


def _control_out(r: PointResult) -> ControlOut:
    return ControlOut(
        point_id=r.point_id,
        name=r.name,
        done=r.done,
        message=r.message,
        balance=str(r.balance),
        in_arrears=r.in_arrears,
        supply=r.supply,
    )


@router.get("/service-points/{point_id}/control", responses=problems(401, 403, 404))
async def get_point_control(
    point_id: uuid.UUID, svc: ServicesDep, who: OperatorDep
) -> dict[str, Any]:
    """The pre-disconnection check and the device twin: live balance and arrears, what the
    policy decides now and why, keep-power, overrides, desired vs reported supply, recent
    commands and control events."""
    await queries.require_point(svc.db, who, point_id)
    return await control_view(svc.db, who, point_id, datetime.now(UTC))


@router.post(
    "/service-points/{point_id}/control",
    response_model=ControlOut,
    responses=problems(401, 403, 404, 409),
)
async def control_point(
    point_id: uuid.UUID, body: ControlIn, svc: ServicesDep, who: OperatorDep
) -> ControlOut:
    """Trip, restore, keep-power on/off. A trip of a point that is not in arrears is refused
    (409, with the live balance) unless ``override`` is set; a trip under keep-power is
    refused too."""
    await queries.require_point(svc.db, who, point_id)
    req = ControlRequest(body.action, body.reason, body.override, body.until)
    result = await operate_point(svc.db, who, point_id, req, datetime.now(UTC), svc.timing)
    return _control_out(result)


@router.post(
    "/sites/{site_id}/control", response_model=list[ControlOut], responses=problems(401, 403, 404)
)
async def control_site(
    site_id: uuid.UUID, body: ControlIn, svc: ServicesDep, who: OperatorDep
) -> list[ControlOut]:
    """The same for every point of a site (a building); each point is checked on its own and
    refusals are listed with ``done: false``."""
    await queries.require_site(svc.db, who, site_id)
    req = ControlRequest(body.action, body.reason, body.override, body.until)
    results = await operate_site(svc.db, who, site_id, req, datetime.now(UTC), svc.timing)
    return [_control_out(r) for r in results]
