"""The finance reports in the console (DESIGN §14, issue 18 item 4): one page per report
with its filters (site, first and last day, level or grouping), an ECharts chart, the
table with its totals, a print layout and the same figures as an Excel file. The figures
come from ``cloud.reports``; this module parses, checks the scope, renders."""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.api.deps import ServicesDep
from cloud.console import format as fmt
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.lists import XLSX
from cloud.console.pages import render, signed_in
from cloud.console.refusals import explain
from cloud.errors import DomainError
from cloud.reports import arrears, collections, finance, liability, revenue
from cloud.reports import period as periods
from cloud.reports.period import Period, PeriodRefused
from cloud.reports.scope import Scope, resolve
from cloud.reports.table import Column, Table

router = APIRouter(prefix="/console/reports", include_in_schema=False)

Text = Annotated[str, Query(max_length=40)]

Build = Callable[[AsyncConnection, Scope, Period, str], Awaitable[Table]]


@dataclass(frozen=True)
class Report:
    slug: str
    title: str  # msgid
    about: str  # msgid
    choices: dict[str, str]  # level / grouping → msgid ({} : none)
    default: str
    build: Build
    as_of: bool = False  # a balance at the end of the last day, not movements over a period
    long: frozenset[str] = frozenset()  # choices allowed a period longer than a year


async def _finance(c: AsyncConnection, s: Scope, p: Period, level: str) -> Table:
    return await finance.report(c, s, p, level)


async def _collections(c: AsyncConnection, s: Scope, p: Period, by: str) -> Table:
    return await collections.report(c, s, p, by)


async def _revenue(c: AsyncConnection, s: Scope, p: Period, _by: str) -> Table:
    return await revenue.report(c, s, p)


async def _liability(c: AsyncConnection, s: Scope, p: Period, _by: str) -> Table:
    return await liability.report(c, s, p)


async def _arrears(c: AsyncConnection, s: Scope, p: Period, _by: str) -> Table:
    return await arrears.report(c, s, p)


SALES_BY = {"day": N_("per day"), "month": N_("per month"), "year": N_("per year")}
REPORTS = {
    r.slug: r
    for r in (
        Report(
            "finance",
            N_("Energy and finance report"),
            N_("opening balance, top-ups, usage, refunds and closing balance, with registers"),
            finance.LEVEL_WORDS,
            "account",
            _finance,
        ),
        Report(
            "collections",
            N_("Collections"),
            N_("money received per outlet, operator, method and channel"),
            collections.GROUP_WORDS,
            "outlet",
            _collections,
        ),
        Report(
            "sales",
            N_("Sales per day, month and year"),
            N_("counter sales and WeChat payments, net of reversals"),
            SALES_BY,
            "day",
            _collections,
            long=frozenset({"month", "year"}),
        ),
        Report(
            "revenue",
            N_("Revenue per utility and tariff"),
            N_("usage charges, monthly fees and common-area shares"),
            {},
            "",
            _revenue,
        ),
        Report(
            "liability",
            N_("Prepaid liability"),
            N_("what the group owes its tenants per site, against the money received"),
            {},
            "",
            _liability,
            as_of=True,
        ),
        Report(
            "arrears",
            N_("Arrears and ageing"),
            N_("accounts below zero and for how long"),
            {},
            "",
            _arrears,
            as_of=True,
        ),
    )
}
LONGEST = 3660  # days a per-month or per-year sales report may cover

#: what a "label" cell holds, in the user's words
WORDS = {
    "electricity": N_("electricity"),
    "water": N_("water"),
    "cash": N_("cash"),
    "card": N_("card"),
    "transfer": N_("bank transfer"),
    "wechat": N_("WeChat Pay"),
    "other": N_("other"),
}
PERIOD_REFUSALS = {
    periods.NOT_A_DAY: N_("Give the days as year-month-day, e.g. 2026-12-01."),
    periods.REVERSED: N_("The first day is after the last day: swap them."),
    periods.FUTURE: N_("The last day is in the future: a report can only cover days up to today."),
    periods.TOO_LONG: N_("The period is longer than %(days)s days: choose a shorter one."),
}


def label(column: Column, value: Any) -> str:
    text = "" if value is None else str(value)
    if column.key == "outlet" and not text:
        return _("online (WeChat Pay)")
    if column.key == "operator" and not text:
        return _("online")
    if column.key == "channel" and text.startswith("wechat:"):
        return f"{_('WeChat Pay')} {text.removeprefix('wechat:')}"
    return _(WORDS[text]) if text in WORDS else (_(text) if text else "—")


def cell_text(column: Column, value: Any, row: dict[str, Any]) -> str:
    """A cell as the page shows it (money as ¥, energy and registers with their places)."""
    kind = column.kind
    if value is None:
        return "—"
    if kind == "money":
        return fmt.money(value)
    if kind == "kwh":
        return fmt.number(value, 2)
    if kind in ("m3", "register"):
        return fmt.number(value, 3 if kind == "m3" or row.get("utility") == "water" else 2)
    if kind in ("int", "days"):
        return f"{value:,}"
    if kind == "label":
        return label(column, value)
    return str(value)


def cell_value(column: Column, value: Any) -> Any:
    """A cell as the Excel file holds it: numbers stay numbers, labels are worded."""
    return label(column, value) if column.kind == "label" else value


NUMBER_FORMATS = {
    "money": "¥#,##0.00;-¥#,##0.00",
    "kwh": "#,##0.00",
    "m3": "#,##0.000",
    "register": "#,##0.000",
    "int": "#,##0",
    "days": "0",
}


def workbook(title: str, subtitle: str, table: Table) -> bytes:
    """The report as an .xlsx (write-only: a large report streams): a title row, the
    period and sites, the headers, every row, the totals."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(re.sub(r"[\[\]:*?/\\]", "-", title)[:31])
    bold = Font(bold=True)
    head = WriteOnlyCell(ws, title)
    head.font = bold
    ws.append([head])
    ws.append([subtitle])
    headers = []
    for c in table.columns:
        h = WriteOnlyCell(ws, _(c.label))
        h.font = bold
        headers.append(h)
    ws.append(headers)
    formats = [NUMBER_FORMATS.get(c.kind) for c in table.columns]
    for row in table.rows:
        cells: list[Any] = []
        for c, f in zip(table.columns, formats, strict=True):
            value = cell_value(c, row.get(c.key))
            if f and value is not None:  # only figures carry a style: a large file streams
                cell = WriteOnlyCell(ws, value)
                cell.number_format = f
                cells.append(cell)
            else:
                cells.append(value)
        ws.append(cells)
    if table.totals and table.rows:  # as the page: no totals under an empty table
        ws.append([_("Total")] + [table.totals.get(c.key) for c in table.columns[1:]])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def chart_data(table: Table) -> dict[str, Any] | None:
    """The chart as ECharts reads it (amounts as strings: never through a float here)."""
    ch = table.chart
    if ch is None or not ch.categories:
        return None
    column = next((c for c in table.columns if c.kind == "label"), None)
    cats = [label(column, x) if column is not None else x for x in ch.categories]
    return {
        "kind": ch.kind,
        "categories": cats,
        "series": [{"name": _(s.label), "values": [str(v) for v in s.values]} for s in ch.series],
    }


def subtitle(report: Report, period: Period, scope: Scope) -> str:
    sites = "、".join(s.name for s in scope.sites) or "—"
    if report.as_of:
        when = _("at the end of %(day)s") % {"day": period.last.isoformat()}
    else:
        when = f"{period.first.isoformat()} – {period.last.isoformat()}"
    return f"{when} · {_('Sites')}: {sites}"


@router.get("/{slug}")
async def report_page(
    request: Request,
    svc: ServicesDep,
    slug: str,
    site: Text = "",
    first: Text = "",
    last: Text = "",
    by: Text = "",
    export: Text = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    report = REPORTS.get(slug)
    if report is None:
        ctx = {"who": who, "message": _("No such report."), "refused": True}
        return render(request, svc, "message.html", ctx, status=404, section="reports")
    choice = by if by in report.choices else report.default
    async with svc.db.tenant(who.tenant_id) as conn:
        try:
            scope = await resolve(conn, who, site)
        except DomainError as exc:
            ctx = {"who": who, "message": explain(exc), "refused": True}
            return render(request, svc, "message.html", ctx, status=exc.status, section="reports")
        today = scope.today()
        form = {"site": site, "first": first, "last": last, "by": choice}
        try:
            longest = LONGEST if choice in report.long else periods.MAX_DAYS
            if report.as_of:
                period = periods.period_of(last, last, today, longest)
            else:
                period = periods.period_of(first, last, today, longest)
        except PeriodRefused as exc:
            msg = _(PERIOD_REFUSALS[exc.reason]) % {"days": longest}
            ctx = _context(who, report, scope, form, None, None, msg)
            return render(request, svc, "reports_report.html", ctx, status=422, section="reports")
        table = await report.build(conn, scope, period, choice)
    form = {"site": site, "first": period.first.isoformat(), "last": period.last.isoformat(),
            "by": choice}  # fmt: skip
    title = _(report.title)
    if report.choices:
        title = f"{title} · {_(report.choices[choice])}"
    sub = subtitle(report, period, scope)
    if export == "xlsx":
        name = f"{slug}-{period.first:%Y%m%d}-{period.last:%Y%m%d}.xlsx"
        return Response(
            workbook(title, sub, table),
            media_type=XLSX,
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
        )
    ctx = _context(who, report, scope, form, table, period, None)
    ctx.update({"title": title, "subtitle": sub})
    return render(request, svc, "reports_report.html", ctx, section="reports")


def _context(
    who: Any,
    report: Report,
    scope: Scope,
    form: dict[str, str],
    table: Table | None,
    period: Period | None,
    error: str | None,
) -> dict[str, Any]:
    keep = {k: v for k, v in form.items() if v}
    return {
        "who": who,
        "report": report,
        "title": _(report.title),
        "subtitle": "",
        "scope": scope,
        "form": form,
        "table": table,
        "period": period,
        "error": error,
        "chart": chart_data(table) if table is not None else None,
        "export_href": f"/console/reports/{report.slug}?{urlencode({**keep, 'export': 'xlsx'})}",
        "cell_text": cell_text,
        "today": scope.today().isoformat(),
    }
