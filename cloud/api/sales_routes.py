"""REST API v1 for the counter: a sale, its receipt (PDF, ESC/POS), its reversal (冲正),
and pages of sales. POST /sales itself is in cloud.api.routes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from cloud.api.deps import OperatorDep, ServicesDep
from cloud.api.fields import Key, PathKey, Reason, ReportDay
from cloud.api.problems import problems
from cloud.documents.receipt import drawn_receipt, receipt_escpos
from cloud.payments.reversal import reverse_sale
from cloud.payments.sales import SaleView, get_sale, list_sales

router = APIRouter(prefix="/api/v1", tags=["counter"], responses=problems(401, 403))


class GrantOut(BaseModel):
    id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    reason: str
    granted_by: str


class ReversalOut(BaseModel):
    at: datetime
    by: str | None
    reason: str | None
    entry_id: uuid.UUID | None


class SaleDetailOut(BaseModel):
    id: uuid.UUID
    receipt_no: str
    account: str
    customer: str
    premises: str | None
    amount: str
    method: str
    balance_after: str | None
    created_at: datetime
    business_day: date | None
    timezone: str
    site: str | None
    outlet_id: uuid.UUID | None
    outlet: str | None
    operator: str
    grant: GrantOut | None
    reversal: ReversalOut | None


class SalePageOut(BaseModel):
    items: list[SaleDetailOut]
    total: int
    limit: int
    offset: int


class ReverseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class ReverseOut(BaseModel):
    receipt_no: str
    account: str
    amount: str
    entry_id: uuid.UUID
    balance_after: str
    reversed_at: datetime
    commands: int


def _out(s: SaleView) -> SaleDetailOut:
    return SaleDetailOut(
        id=s.id,
        receipt_no=s.receipt_no,
        account=s.account_number,
        customer=s.customer,
        premises=s.premises,
        amount=str(s.amount),
        method=s.method,
        balance_after=None if s.balance_after is None else str(s.balance_after),
        created_at=s.created_at,
        business_day=s.business_day,
        timezone=s.timezone,
        site=s.site_name,
        outlet_id=s.outlet_id,
        outlet=s.outlet_name,
        operator=s.operator,
        grant=None
        if s.grant is None
        else GrantOut(
            id=s.grant.id,
            starts_at=s.grant.starts_at,
            ends_at=s.grant.ends_at,
            reason=s.grant.reason,
            granted_by=s.grant.granted_by,
        ),
        reversal=None
        if s.reversed_at is None
        else ReversalOut(
            at=s.reversed_at,
            by=s.reversed_by,
            reason=s.reversal_reason,
            entry_id=s.reversal_entry_id,
        ),
    )


@router.get("/sales", response_model=SalePageOut)
async def sales_page(
    svc: ServicesDep,
    who: OperatorDep,
    account: Annotated[Key | None, Query(description="account number")] = None,
    operator: Annotated[Key | None, Query(description="operator username")] = None,
    business_day: Annotated[ReportDay | None, Query(description="the site's business day")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SalePageOut:
    """Sales newest first, within the operator's scope (and the operator's own sales)."""
    page = await list_sales(svc.db, who, account, operator, business_day, limit, offset)
    return SalePageOut(
        items=[_out(s) for s in page.items], total=page.total, limit=limit, offset=offset
    )


@router.get("/sales/{receipt_no}", response_model=SaleDetailOut, responses=problems(404))
async def sale_detail(receipt_no: PathKey, svc: ServicesDep, who: OperatorDep) -> SaleDetailOut:
    """A sale: where (outlet, site), by whom, under which cross-outlet grant, and its
    reversal if it was reversed."""
    return _out(await get_sale(svc.db, who, receipt_no))


@router.get(
    "/sales/{receipt_no}/receipt.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **problems(404)},
)
async def sale_receipt_pdf(
    receipt_no: PathKey,
    svc: ServicesDep,
    who: OperatorDep,
    layout: Literal["a5", "80mm"] = "a5",
) -> Response:
    """The receipt as a PDF (CJK font embedded): an A5 sheet or an 80 mm thermal roll."""
    sale = await get_sale(svc.db, who, receipt_no)
    pdf = await drawn_receipt(sale, layout)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{sale.receipt_no}-{layout}.pdf"'},
    )


@router.get(
    "/sales/{receipt_no}/receipt.escpos",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **problems(404)},
)
async def sale_receipt_escpos(receipt_no: PathKey, svc: ServicesDep, who: OperatorDep) -> Response:
    """The receipt as ESC/POS bytes for a thermal printer (Chinese text in GB18030)."""
    sale = await get_sale(svc.db, who, receipt_no)
    return Response(
        await asyncio.to_thread(receipt_escpos, sale),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{sale.receipt_no}.escpos"'},
    )


@router.post("/sales/{receipt_no}/reverse", response_model=ReverseOut, responses=problems(404, 409))
async def sale_reverse(
    receipt_no: PathKey, body: ReverseIn, svc: ServicesDep, who: OperatorDep
) -> ReverseOut:
    """Reverse (冲正) a sale of today's business day, with ``sale.reverse`` and a reason;
    refused (409) once the day has closed, the operator's cash for it was handed over, or
    the meter has taken the sale's recharge."""
    r = await reverse_sale(svc.db, who, receipt_no, body.reason, datetime.now(UTC), svc.timing)
    return ReverseOut(
        receipt_no=r.receipt_no,
        account=r.account_number,
        amount=str(r.amount),
        entry_id=r.entry_id,
        balance_after=str(r.balance_after),
        reversed_at=r.reversed_at,
        commands=r.commands,
    )
