"""The legacy import in the console (设置 → 导入): upload the vending program's export,
see every row it would refuse and why (the dry run, the default), then import it all or
nothing. The template and its columns are linked from the page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.datastructures import UploadFile

from cloud.api.deps import Services, ServicesDep
from cloud.console import i18n, lists
from cloud.console.format import when
from cloud.console.i18n import gettext as _
from cloud.console.pages import refused_csrf, render, signed_in
from cloud.console.refusals import explain
from cloud.errors import DomainError, NotFound
from cloud.registry import importer
from cloud.registry.scope import sites_of

router = APIRouter(prefix="/console/imports", include_in_schema=False)
TEMPLATES = {"xlsx": "import_template.xlsx", "csv": "import_template.csv"}


@router.get("")
async def imports_page(
    request: Request,
    svc: ServicesDep,
    export: Annotated[str, Query(max_length=8)] = "",
    run: uuid.UUID | None = None,
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    who.require("import.run")
    if export == "xlsx" and run:
        return await _refusals_xlsx(request, svc, who.tenant_id, run)
    if export == "xlsx":
        every = await importer.list_runs(svc.db, who.tenant_id, lists.EXPORT_LIMIT)
        headers = [_("Time"), _("File"), _("By"), _("Rows"), _("Kind"), _("Refused")]
        rows = [
            [
                when(r.created_at),
                r.filename,
                r.actor,
                r.rows,
                _("check") if r.dry_run else _("import"),
                r.refused,
            ]
            for r in every
        ]
        return lists.xlsx("imports.xlsx", headers, rows)
    runs = await importer.list_runs(svc.db, who.tenant_id, 20)
    ctx = {"who": who, "runs": runs, "report": None, "error": None}
    return render(request, svc, "imports.html", ctx, section="settings")


async def _refusals_xlsx(
    request: Request, svc: Services, tenant_id: uuid.UUID, run_id: uuid.UUID
) -> Response:
    """One run's refused rows, to correct the file against (row, column, reason)."""
    runs = await importer.list_runs(svc.db, tenant_id, lists.EXPORT_LIMIT)
    found = next((r for r in runs if r.id == run_id), None)
    if found is None:
        raise NotFound(f"import run {run_id} not found")
    zh = i18n.current.get() == "zh_CN"
    rows = [[r["row"], r["column"], r["zh"] if zh else r["en"]] for r in found.report]
    return lists.xlsx("import-refusals.xlsx", [_("Row"), _("Column"), _("Reason")], rows)


@router.get("/template.{ext}")
async def template(ext: str, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if ext not in TEMPLATES:
        return render(request, svc, "message.html", {"message": _("Page not found.")}, status=404)
    path = importer.__file__.rsplit("/", 1)[0] + "/" + TEMPLATES[ext]
    return FileResponse(path, filename=TEMPLATES[ext])


@router.post("")
async def upload(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    who.require("import.run")
    form = await request.form()
    file = form.get("file")
    dry_run = form.get("mode") != "import"
    error = None
    report = None
    if not isinstance(file, UploadFile) or not file.filename:
        error = _("Choose the file to import (.xlsx or .csv).")
    else:
        data = await file.read(importer.MAX_BYTES + 1)
        async with svc.db.tenant(who.tenant_id) as conn:
            sites = await sites_of(conn, who)
        try:
            report = await importer.run_import(
                svc.db,
                who.tenant_id,
                who.actor,
                file.filename[:200],
                data,
                dry_run=dry_run,
                now=datetime.now(UTC),
                sites=sites,
            )
        except DomainError as exc:
            error = explain(exc)
    runs = await importer.list_runs(svc.db, who.tenant_id, 20)
    status = 422 if error or (report is not None and report.refusals) else 200
    ctx = {"who": who, "runs": runs, "report": report, "error": error}
    return render(request, svc, "imports.html", ctx, status=status, section="settings")
