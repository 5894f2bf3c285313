"""The field worker's phone app (DESIGN §15) at ``/field/``: one page that keeps working
offline (a service worker caches it; the day's tasks and the queue of readings live in the
phone's localStorage), and the two JSON calls it makes — download the day's books, upload
the queue. The worker logs in with ``POST /api/v1/auth/token``; the calls carry that
bearer token (not a cookie, so no other site can make them)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from cloud.api.deps import OperatorDep, ServicesDep
from cloud.console import format as fmt
from cloud.console import i18n
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render
from cloud.documents.receipt import receipt_escpos, receipt_pdf
from cloud.errors import Invalid, NotFound, Unauthorized
from cloud.field import books
from cloud.field.collection import collect
from cloud.field.readings import ANOMALIES, MAX_ITEMS, MAX_PHOTO, FieldItem, upload
from cloud.payments.sales import get_sale

router = APIRouter(include_in_schema=False)
_STATIC = Path(__file__).parent / "static"

# The upload's refusals (cloud.field.readings) for the catalogue; shown translated.
FIELD_MESSAGES = (
    N_("this point is not on your meter books"),
    N_("the reading's time is in the future"),
    N_("a register cannot be negative"),
    N_("the photo is larger than 512 KB"),
    N_("unknown anomaly code"),
    N_("an anomaly 'other' needs a note"),
    N_("a reading needs a register value or an anomaly code"),
    N_("the point has no meter installed"),
    N_("the reading is older than the site accepts"),
    N_("the reading is from before the meter was installed"),
    N_("the register value is out of range"),
    N_("permission 'field.work' required"),
)
ANOMALY_LABELS = {
    "meter_stopped": N_("Meter stopped"),
    "display_broken": N_("Display broken"),
    "no_access": N_("No access"),
    "seal_broken": N_("Seal broken"),
    "meter_reversed": N_("Meter running backwards"),
    "other": N_("Other (note)"),
}


def _require_bearer(request: Request) -> None:
    if not request.headers.get("authorization", "").lower().startswith("bearer "):
        raise Unauthorized("log in first")


@router.get("/field/")
async def field_app(request: Request, svc: ServicesDep) -> Response:
    """The app's one page (no login needed to open it: it works offline)."""
    labels = [(code, _(ANOMALY_LABELS[code])) for code in ANOMALIES]
    resp = render(
        request,
        svc,
        "field_app.html",
        {"anomalies": labels, "max_photo": MAX_PHOTO},
    )
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@router.get("/field/sw.js")
async def service_worker() -> Response:
    """The service worker, served from ``/field/`` so that it controls the app's pages."""
    return FileResponse(
        _STATIC / "field_sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/field/"},
    )


@router.get("/field/api/book")
async def download(request: Request, svc: ServicesDep, who: OperatorDep) -> JSONResponse:
    """The day's tasks of the worker's books, in route order (money as strings)."""
    _require_bearer(request)
    now = datetime.now(UTC)
    tasks = await books.download(svc.db, who, now.date(), now)
    today = now.astimezone(ZoneInfo(tasks[0].zone)).date() if tasks else now.date()
    return JSONResponse(
        {
            "worker": who.username,
            "day": today.isoformat(),
            "downloaded_at": now.isoformat(),
            "tasks": [
                {
                    "task": str(t.task_id),
                    "book": t.book_code,
                    "position": t.position,
                    "point": str(t.point_id),
                    "name": t.point_name,
                    "account": t.account_number,
                    "reason": t.reason,
                    "last_total": None if t.last_total is None else str(t.last_total),
                    "last_at": fmt.when(t.last_at, t.zone) if t.last_at else None,
                    "balance": None if t.balance is None else str(t.balance),
                    "balance_text": fmt.money(t.balance),
                    "unit_price": None if t.unit_price is None else str(t.unit_price),
                    "done": t.done,
                }
                for t in tasks
            ],
        }
    )


Text = Annotated[str, StringConstraints(max_length=500)]


class ItemIn(BaseModel):
    id: uuid.UUID  # made by the phone when the reading was taken
    point: uuid.UUID
    measured_at: AwareDatetime
    total: Decimal | None = Field(default=None, max_digits=16, decimal_places=3)
    anomaly: Text | None = None
    note: Text | None = None
    photo: str | None = Field(default=None, max_length=2 * MAX_PHOTO)  # base64


class UploadIn(BaseModel):
    items: list[ItemIn] = Field(max_length=MAX_ITEMS)


def _photo(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Invalid("a photo must be a base64 JPEG") from exc


@router.post("/field/api/readings")
async def upload_readings(
    request: Request, body: UploadIn, svc: ServicesDep, who: OperatorDep
) -> JSONResponse:
    """Upload the phone's queue: one result per item, in order (stored, duplicate, or
    refused with the reason in the worker's language). Sent again, it changes nothing."""
    _require_bearer(request)
    now = datetime.now(UTC)
    items = [
        FieldItem(i.id, i.point, i.measured_at, i.total, i.anomaly or None, i.note, _photo(i.photo))
        for i in body.items
    ]
    results = await upload(svc.db, who, items, now, svc.timing)
    return JSONResponse(
        {
            "lang": i18n.current.get(),
            "results": [
                {
                    "id": str(r.id),
                    "status": r.status,
                    "message": None if r.message is None else _(r.message),
                    "work_order": None if r.work_order_id is None else str(r.work_order_id),
                }
                for r in results
            ],
        }
    )


class SaleIn(BaseModel):
    account: Annotated[str, StringConstraints(max_length=40)]
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    key: Annotated[str, StringConstraints(min_length=8, max_length=100)]  # the phone's


@router.post("/field/api/sales")
async def field_sale(
    request: Request, body: SaleIn, svc: ServicesDep, who: OperatorDep
) -> JSONResponse:
    """A cash sale into the worker's own drawer; sent again with its key, answered again."""
    _require_bearer(request)
    sold = await collect(
        svc.db, who, body.account, body.amount, body.key, datetime.now(UTC), svc.timing
    )
    return JSONResponse(
        {
            "receipt_no": sold.receipt_no,
            "account": sold.account_number,
            "amount": str(sold.amount),
            "balance_after": str(sold.balance_after),
            "replayed": sold.replayed,
        }
    )


@router.get("/field/api/sales/{receipt_no}/receipt.{kind}")
async def field_receipt(
    receipt_no: str, kind: str, request: Request, svc: ServicesDep, who: OperatorDep
) -> Response:
    """The receipt of a field sale: ``pdf`` (80 mm roll) or ``escpos`` (thermal printer)."""
    _require_bearer(request)
    if kind not in ("pdf", "escpos"):
        raise NotFound(f"receipt format {kind} not found")
    sale = await get_sale(svc.db, who, receipt_no[:40])
    if kind == "pdf":
        pdf = await asyncio.to_thread(receipt_pdf, sale, "80mm")
        return Response(pdf, media_type="application/pdf")
    data = await asyncio.to_thread(receipt_escpos, sale)
    return Response(data, media_type="application/octet-stream")
