"""The legacy import in the console (设置 → 导入): upload the vending program's export,
see every row it would refuse and why (the dry run, the default), then import it all or
nothing. The template and its columns are linked from the page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from cloud.api.deps import Services, ServicesDep
from cloud.auth import Principal
from cloud.console import forms, i18n, lists
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
    """The upload form and the earlier runs (searched by file or by who ran them, a page at
    a time); ``run``: that run's result on top (where a re-sent import is sent)."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    who.require("import.run")
    if export == "xlsx" and run:
        return await _refusals_xlsx(request, svc, who.tenant_id, run)
    if export == "xlsx":
        q = lists.asked(request)[0] or None
        _total, every = await importer.find_runs(svc.db, who.tenant_id, q, lists.EXPORT_LIMIT, 0)
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
    shown = None
    if run is not None:
        shown = await importer.get_run(svc.db, who.tenant_id, run)
        if shown is None:
            raise NotFound(f"import run {run} not found")
    return await _page(request, svc, who, None, None, shown)


async def _page(
    request: Request,
    svc: Services,
    who: Principal,
    report: importer.ImportReport | None,
    error: str | None,
    shown: importer.RunSummary | None = None,
    status: int = 200,
) -> Response:
    q, offset = lists.asked(request) if request.method == "GET" else ("", 0)
    total, runs = await importer.find_runs(
        svc.db, who.tenant_id, q or None, lists.PAGE_SIZE, offset
    )
    page = lists.page_of(offset, total)
    if not runs and total:  # past the last page: the last page
        _t, runs = await importer.find_runs(
            svc.db, who.tenant_id, q or None, lists.PAGE_SIZE, page.offset
        )
    ctx = {
        "who": who,
        "runs": runs,
        "page": page,
        "q": q,
        "report": report,
        "shown": shown,
        "error": error,
        "form_key": forms.new_key(),
    }
    return render(request, svc, "imports.html", ctx, status=status, section="settings")


async def _refusals_xlsx(
    request: Request, svc: Services, tenant_id: uuid.UUID, run_id: uuid.UUID
) -> Response:
    """One run's refused rows, to correct the file against (row, column, reason)."""
    found = await importer.get_run(svc.db, tenant_id, run_id)
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
    """A check (dry run) or the real import. A real run claims the form's one-time key
    first: a double click or a re-sent form imports once, and the repeat is sent to the
    first run's result."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    who.require("import.run")
    form = await request.form()
    file = form.get("file")
    dry_run = form.get("mode") != "import"
    raw_key = form.get("form_key")
    key = f"import:{raw_key.strip()}" if isinstance(raw_key, str) and raw_key.strip() else ""
    if not isinstance(file, UploadFile) or not file.filename:
        return await _page(
            request, svc, who, None, _("Choose the file to import (.xlsx or .csv)."), status=422
        )
    if not dry_run:
        if not key or len(key) > 64:
            error = _("This form has no key: reload the page and try again.")
            return await _page(request, svc, who, None, error, status=422)
        claim = await forms.claim(svc.db, who, key, datetime.now(UTC))
        if not claim.first:
            return RedirectResponse(claim.result or "/console/imports", status_code=303)
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
        if not dry_run:
            await forms.release(svc.db, who, key)
        return await _page(request, svc, who, None, explain(exc), status=422)
    if not dry_run:
        await forms.finish(svc.db, who, key, f"/console/imports?run={report.run_id}")
    status = 422 if report.refusals else 200
    return await _page(request, svc, who, report, None, status=status)
