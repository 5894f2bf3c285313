"""Legacy import over HTTP: upload an .xlsx or CSV file, dry run by default (DESIGN §12)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel

from cloud.api.deps import OperatorDep, ServicesDep
from cloud.api.problems import PROBLEM, PROBLEM_SCHEMA, problems
from cloud.errors import Invalid
from cloud.registry.importer import MAX_BYTES, FileTooLarge, ImportReport, list_runs, run_import
from cloud.registry.scope import sites_of

router = APIRouter(prefix="/api/v1", tags=["import"], responses=problems(401, 403))

_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file


class RefusalOut(BaseModel):
    row: int  # as the spreadsheet shows it: the header is row 1
    column: str
    zh: str
    en: str


class ImportOut(BaseModel):
    id: uuid.UUID
    filename: str
    dry_run: bool
    written: bool
    rows: int
    refused: int  # rows refused
    refusals: list[RefusalOut]
    customers: int
    accounts: int
    premises: int
    points: int
    meters: int
    opening_entries: int
    opening_total: str


class RunOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    actor: str
    filename: str
    rows: int
    dry_run: bool
    refused: int
    refusals: list[dict[str, Any]]


def _out(report: ImportReport) -> ImportOut:
    return ImportOut(
        id=report.run_id,
        filename=report.filename,
        dry_run=report.dry_run,
        written=report.written,
        rows=report.rows,
        refused=report.refused,
        refusals=[RefusalOut(**r.as_dict()) for r in report.refusals],
        customers=report.customers,
        accounts=report.accounts,
        premises=report.premises,
        points=report.points,
        meters=report.meters,
        opening_entries=report.opening_entries,
        opening_total=str(report.opening_total),
    )


def _filename(upload: UploadFile) -> str:
    name = (upload.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:200]
    return name or "upload"


@router.post(
    "/imports",
    response_model=ImportOut,
    responses={
        201: {"description": "imported", "model": ImportOut},
        **problems(409, 413, why={413: "file over 20 MB"}),
        422: {
            "description": "refused rows (the report), an unreadable file, or the fields named",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/ImportOut"},
                            {"$ref": "#/components/schemas/HTTPValidationError"},
                        ]
                    }
                },
                PROBLEM: {"schema": PROBLEM_SCHEMA},
            },
        },
    },
)
async def post_import(
    request: Request,
    response: Response,
    svc: ServicesDep,
    who: OperatorDep,
    file: Annotated[UploadFile, File(description=".xlsx or .csv (UTF-8 or GB18030)")],
    dry_run: Annotated[bool, Form()] = True,
) -> ImportOut:
    """Check (dry run, the default) or import a legacy file. 200: a dry run's report;
    201: imported; 422: the report of a refused real run (nothing written), or an
    unreadable file; 413: over 20 MB."""
    who.require("import.run")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES + _MULTIPART_SLACK:
        raise FileTooLarge("文件超过20 MB / the file is larger than 20 MB")
    data = await file.read(MAX_BYTES + 1)
    if not data:
        raise Invalid("文件为空 / the file is empty")
    async with svc.db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
    report = await run_import(
        svc.db,
        who.tenant_id,
        who.actor,
        _filename(file),
        data,
        dry_run=dry_run,
        now=datetime.now(UTC),
        sites=sites,
    )
    if report.written:
        response.status_code = 201
    elif not dry_run:
        response.status_code = 422
    return _out(report)


@router.get("/imports", response_model=list[RunOut])
async def get_imports(
    svc: ServicesDep,
    who: OperatorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[RunOut]:
    """The property group's import runs (dry, refused and written), newest first."""
    who.require("import.run")
    runs = await list_runs(svc.db, who.tenant_id, limit)
    return [
        RunOut(
            id=r.id,
            created_at=r.created_at,
            actor=r.actor,
            filename=r.filename,
            rows=r.rows,
            dry_run=r.dry_run,
            refused=r.refused,
            refusals=r.report,
        )
        for r in runs
    ]
