"""REST API v1 of the account lifecycle (DESIGN §12): customers, 开户, the counter's
search and account page, 装表, 换表, 拆表, 消户, 过户. Money and registers as strings."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.api.deps import OperatorDep, ServicesDep
from cloud.api.fields import Flag, Key, PathKey, Reason, Whole, Words, Written
from cloud.api.problems import problems
from cloud.lifecycle import accounts, service
from cloud.lifecycle.core import Settlement
from cloud.money import FEN

router = APIRouter(prefix="/api/v1", tags=["lifecycle"], responses=problems(401, 403))


def _yuan(amount: Decimal) -> str:
    return str(amount.quantize(FEN))


Amount = Annotated[Decimal, Written(digits=10, places=2, above_zero=True, example="50.00")]
Register = Annotated[Decimal, Written(digits=13, places=3, example="1234.5")]
Name = Annotated[Words, Field(max_length=120)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerIn(_In):
    name: Name
    phone: Annotated[Key, Field(max_length=32)] | None = None
    id_number: Annotated[Key, Field(max_length=32)] | None = None

    def data(self) -> service.CustomerData:
        return service.CustomerData(self.name, self.phone, self.id_number)


class CustomerPatch(_In):
    """Only the fields sent change; a name cannot be cleared, a phone or ID number can."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: Name = Field(None, description="not null: a customer keeps a name")  # type: ignore[assignment]
    phone: Annotated[Key, Field(max_length=32)] | None = None
    id_number: Annotated[Key, Field(max_length=32)] | None = None


class CustomerOut(BaseModel):
    id: uuid.UUID
    name: str
    phone: str | None
    id_number: str | None
    accounts: list[str]


def _customer(c: service.CustomerView) -> CustomerOut:
    return CustomerOut(
        id=c.id, name=c.name, phone=c.phone, id_number=c.id_number, accounts=list(c.accounts)
    )


@router.post("/customers", response_model=CustomerOut, status_code=201, responses=problems(409))
async def create_customer(body: CustomerIn, svc: ServicesDep, who: OperatorDep) -> CustomerOut:
    return _customer(await service.create_customer(svc.db, who, body.data(), datetime.now(UTC)))


@router.get("/customers", response_model=list[CustomerOut])
async def find_customers(
    svc: ServicesDep,
    who: OperatorDep,
    q: Annotated[Key | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[CustomerOut]:
    return [_customer(c) for c in await service.find_customers(svc.db, who, q, limit)]


@router.patch("/customers/{customer_id}", response_model=CustomerOut, responses=problems(404, 409))
async def update_customer(
    customer_id: uuid.UUID, body: CustomerPatch, svc: ServicesDep, who: OperatorDep
) -> CustomerOut:
    changes = body.model_dump(exclude_unset=True)
    return _customer(
        await service.update_customer(svc.db, who, customer_id, changes, datetime.now(UTC))
    )


class PointIn(_In):
    utility: Literal["electricity", "water"]
    tariff_id: uuid.UUID
    name: Name | None = None
    control_mode: Literal["cloud", "meter"] = "cloud"


class FirstSaleIn(_In):
    amount: Amount
    method: Literal["cash", "card", "transfer"] = "cash"
    outlet_id: uuid.UUID
    idempotency_key: Key


class OpenIn(_In):
    customer_id: uuid.UUID | None = None
    customer: CustomerIn | None = None
    premises_id: uuid.UUID
    points: Annotated[list[PointIn], Field(min_length=1, max_length=8)]
    first_sale: FirstSaleIn | None = None

    @model_validator(mode="after")
    def _one_customer(self) -> OpenIn:
        if (self.customer_id is None) == (self.customer is None):
            raise ValueError("give either customer_id or customer")
        return self


class SaleOut(BaseModel):
    receipt_no: str
    amount: str
    method: str
    balance_after: str


class OpenedOut(BaseModel):
    account: str
    customer_id: uuid.UUID
    points: list[uuid.UUID]
    sale: SaleOut | None


@router.post("/accounts", response_model=OpenedOut, status_code=201, responses=problems(404, 409))
async def open_account(body: OpenIn, svc: ServicesDep, who: OperatorDep) -> OpenedOut:
    """开户: a new or existing customer, an account, its points at a premises and an
    optional first sale, all in one transaction (a refused sale opens nothing)."""
    fs = body.first_sale
    req = service.OpenRequest(
        premises_id=body.premises_id,
        points=tuple(
            service.PointOrder(p.utility, p.tariff_id, p.name, p.control_mode) for p in body.points
        ),
        customer_id=body.customer_id,
        customer=body.customer.data() if body.customer else None,
        first_sale=service.FirstSale(fs.amount, fs.method, fs.outlet_id, fs.idempotency_key)
        if fs
        else None,
    )
    out = await service.open_account(svc.db, who, req, datetime.now(UTC), svc.timing)
    sale = (
        SaleOut(
            receipt_no=out.sale.receipt_no,
            amount=str(out.sale.amount),
            method=out.sale.method,
            balance_after=str(out.sale.balance_after),
        )
        if out.sale
        else None
    )
    return OpenedOut(
        account=out.account_number, customer_id=out.customer_id, points=list(out.points), sale=sale
    )


class AccountHitOut(BaseModel):
    number: str
    status: str
    customer: str
    phone: str | None
    balance: str
    premises: list[str]


class SearchOut(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AccountHitOut]


@router.get("/accounts", response_model=SearchOut, responses=problems(404))
async def search_accounts(
    svc: ServicesDep,
    who: OperatorDep,
    q: Annotated[Key | None, Query(max_length=64)] = None,
    site_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SearchOut:
    """The counter's search: account number, customer name, phone, premises or meter;
    also the accounts of the site of an outlet a cross-outlet grant in force lets the
    operator sell at."""
    page = await accounts.search_accounts(
        svc.db, who, q, site_id, limit, offset, selling_at=datetime.now(UTC)
    )
    return SearchOut(
        total=page.total,
        limit=limit,
        offset=offset,
        items=[
            AccountHitOut(
                number=h.number,
                status=h.status,
                customer=h.customer,
                phone=h.phone,
                balance=str(h.balance),
                premises=list(h.premises),
            )
            for h in page.items
        ],
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@router.get("/accounts/{number}", responses=problems(404))
async def account_page(number: PathKey, svc: ServicesDep, who: OperatorDep) -> dict[str, Any]:
    """The account page: customer, status, points (meter, last reading, supply state),
    live balance and recent sales."""
    page = await accounts.account_page(svc.db, who, number)
    doc: dict[str, Any] = _plain(asdict(page))
    return doc


class DeviceIn(_In):
    gateway_code: Key
    key: Key
    channel: Annotated[int, Whole(ge=1, le=64)] = 1
    profile: Key | None = None
    bus: Key | None = None
    address: Key | None = None
    serial: Key | None = None


class SnippetIn(_In):
    gateway_code: Key
    snippet: Annotated[str, Field(min_length=1, max_length=20_000)]
    key: Key
    channel: Annotated[int, Whole(ge=1, le=64)] = 1


class InstallIn(_In):
    device: DeviceIn | None = None
    scan: SnippetIn | None = None
    install_register: Register | None = None
    read: Flag = False

    @model_validator(mode="after")
    def _one_source(self) -> InstallIn:
        if (self.device is None) == (self.scan is None):
            raise ValueError("give either device or scan")
        if self.read == (self.install_register is not None):
            raise ValueError("give install_register, or read: true, not both")
        return self

    def spec(self) -> service.DeviceSpec:
        if self.scan is not None:
            s = self.scan
            return service.device_from_snippet(s.gateway_code, s.snippet, s.key, s.channel)
        assert self.device is not None
        return service.DeviceSpec(**self.device.model_dump())


class InstalledOut(BaseModel):
    point_id: uuid.UUID
    channel_id: uuid.UUID
    device_id: uuid.UUID
    install_register: str
    history: int


@router.post(
    "/service-points/{point_id}/install",
    response_model=InstalledOut,
    status_code=201,
    responses=problems(404, 409),
)
async def install(
    point_id: uuid.UUID, body: InstallIn, svc: ServicesDep, who: OperatorDep
) -> InstalledOut:
    """装表: register the device (by hand, from a scan snippet, or the one the gateway's
    config already has) and bind its channel at the register typed or read."""
    who.require("meter.install")
    req = service.InstallRequest(body.spec(), body.install_register, body.read)
    out = await service.install(svc.db, who, point_id, req, datetime.now(UTC), svc.timing)
    return InstalledOut(
        point_id=out.point_id,
        channel_id=out.channel_id,
        device_id=out.device_id,
        install_register=str(out.install_register),
        history=out.history,
    )


class SwapIn(_In):
    device: DeviceIn
    final_register: Register
    initial_register: Register


class SwappedOut(BaseModel):
    point_id: uuid.UUID
    channel_id: uuid.UUID
    charged: str
    credit_moved: str


@router.post(
    "/service-points/{point_id}/swap", response_model=SwappedOut, responses=problems(404, 409)
)
async def swap(point_id: uuid.UUID, body: SwapIn, svc: ServicesDep, who: OperatorDep) -> SwappedOut:
    """换表: old meter's final reading rated, the new one's initial reading the base."""
    req = service.SwapRequest(
        service.DeviceSpec(**body.device.model_dump()), body.final_register, body.initial_register
    )
    out = await service.swap(svc.db, who, point_id, req, datetime.now(UTC), svc.timing)
    return SwappedOut(
        point_id=out.point_id,
        channel_id=out.channel_id,
        charged=_yuan(out.charged),
        credit_moved=_yuan(out.credit_moved),
    )


class RemoveIn(_In):
    final_register: Register | None = None


class RemovedOut(BaseModel):
    point_id: uuid.UUID
    final_register: str | None
    charged: str


@router.post(
    "/service-points/{point_id}/remove", response_model=RemovedOut, responses=problems(404, 409)
)
async def remove(
    point_id: uuid.UUID, body: RemoveIn, svc: ServicesDep, who: OperatorDep
) -> RemovedOut:
    """拆表: final reading (typed, or the newest) rated, binding ended, point unmetered."""
    out = await service.remove(
        svc.db, who, point_id, body.final_register, datetime.now(UTC), svc.timing
    )
    return RemovedOut(
        point_id=out.point_id,
        final_register=None if out.final_register is None else str(out.final_register),
        charged=_yuan(out.charged),
    )


class SettleIn(_In):
    settlement: Literal["refund", "move"] | None = None
    to_account: Annotated[Key, Field(max_length=20)] | None = None
    refund_amount: Amount | None = None
    write_off: Flag = False
    reason: Reason | None = None
    final_registers: dict[uuid.UUID, Register] = Field(default_factory=dict, max_length=16)

    def request(self) -> service.SettleRequest:
        return service.SettleRequest(
            how=Settlement(self.settlement) if self.settlement else None,
            to_account=self.to_account,
            refund_amount=self.refund_amount,
            write_off=self.write_off,
            reason=self.reason,
            finals=dict(self.final_registers),
        )


class SettledOut(BaseModel):
    account: str
    refunded: str
    moved: str
    written_off: str
    to_account: str | None
    receipt_no: str | None
    new_account: str | None = None
    points: list[uuid.UUID] = []


def _settled(s: service.Settled) -> SettledOut:
    return SettledOut(
        account=s.account_number,
        refunded=_yuan(s.refunded),
        moved=_yuan(s.moved),
        written_off=_yuan(s.written_off),
        to_account=s.to_account,
        receipt_no=s.receipt_no,
        new_account=s.new_account,
        points=list(s.points),
    )


@router.post("/accounts/{number}/cancel", response_model=SettledOut, responses=problems(404, 409))
async def cancel(number: PathKey, body: SettleIn, svc: ServicesDep, who: OperatorDep) -> SettledOut:
    """消户: final readings rated, points removed, the balance refunded in cash or moved
    to another account (in debt: written off with account.write_off and a reason)."""
    out = await service.cancel(svc.db, who, number, body.request(), datetime.now(UTC), svc.timing)
    return _settled(out)


class TransferIn(SettleIn):
    customer_id: uuid.UUID | None = None
    customer: CustomerIn | None = None

    @model_validator(mode="after")
    def _one_customer(self) -> TransferIn:
        if (self.customer_id is None) == (self.customer is None):
            raise ValueError("give either customer_id or customer")
        if self.to_account is not None:
            raise ValueError("a transfer moves the balance to the new account: no to_account")
        return self


@router.post("/accounts/{number}/transfer", response_model=SettledOut, responses=problems(404, 409))
async def transfer(
    number: PathKey, body: TransferIn, svc: ServicesDep, who: OperatorDep
) -> SettledOut:
    """过户: the points move to a new account of another customer; the balance moves with
    them (settlement "move") or is refunded in cash ("refund")."""
    req = service.TransferRequest(
        settle=body.request(),
        customer_id=body.customer_id,
        customer=body.customer.data() if body.customer else None,
    )
    out = await service.transfer(svc.db, who, number, req, datetime.now(UTC), svc.timing)
    return _settled(out)
