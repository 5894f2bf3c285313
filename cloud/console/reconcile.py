"""Reconciliation with WeChat Pay in the console (财务 → 对账): the runs per merchant and
bill day with their state, a day reconciled on demand, and a run's exceptions with their
resolution buttons (credit, refund, write off). Routes stay thin: the rules are
:mod:`cloud.reconcile.service`'s."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import Services, ServicesDep
from cloud.auth import Principal
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_form, signed_in
from cloud.console.refusals import explain
from cloud.errors import Conflict, DomainError, Invalid
from cloud.reconcile.service import DAYS_BACK, Reconciler, china_day

router = APIRouter(prefix="/console/finance/reconcile", include_in_schema=False)
ZONE = "Asia/Shanghai"  # WeChat's bill day, and its times, are China time

STATES = {
    "pending": N_("Fetching"),
    "matched": N_("Matched"),
    "refused": N_("Refused: the file's hash is wrong; tried again later"),
    "failed": N_("Not fetched; tried again later"),
}
KINDS = {
    "theirs_only": N_("In WeChat's bill only"),
    "ours_only": N_("In our books only"),
    "amount_differs": N_("Amount differs"),
    "status_differs": N_("Status differs"),
    "refund_mismatch": N_("Refund mismatched"),
    "malformed": N_("Unreadable bill line"),
}
RESOLUTIONS = {
    "credited": N_("Credited to the wallet"),
    "refunded": N_("Credited and refunded to the payer"),
    "written_off": N_("Written off"),
    "cleared": N_("Gone from the latest bill"),
}
DONE = {
    "credit": N_("Payment credited to the wallet."),
    "refund": N_("Payment credited and refunded to the payer."),
    "write_off": N_("Difference written off."),
    "run": N_("Bill fetched and matched."),
}
RESOLVE_FORMS = (  # the resolutions that ask for a reason: (action, button, confirmation)
    ("refund", N_("Refund to the payer"), N_("Credit this payment and refund it to the payer?")),
    ("write_off", N_("Write off"), N_("Write this difference off? It is posted to adjustments.")),
)
EXPECTED = {"credit": "credited", "refund": "refunded", "write_off": "written_off"}
# the service's refusals, for the catalogue (explain() finds them there)
SERVICE_MESSAGES = (
    N_("a day's trade bill is ready the next morning: choose yesterday or before"),
    N_("WeChat Pay keeps trade bills for 90 days: choose a later day"),
    N_("reconciliation covers the whole property group: a tenant-wide scope is needed"),
    N_("choose credit, refund or write off"),
    N_("give a reason"),
    N_("the reason is at most 500 characters, without control characters"),
    N_("this exception is already resolved"),
    N_("only a payment WeChat took for one of our orders can be credited"),
    N_("this property group does not take WeChat payments yet"),
    N_("permission 'finance.reconcile' required"),
    N_("permission 'finance.write_off' required"),
    N_("the wallet holds less than the refund"),
    N_("give the bill day as YYYY-MM-DD"),
)


def _days(now: datetime) -> dict[str, str]:
    today = china_day(now)
    return {
        "yesterday": (today - timedelta(days=1)).isoformat(),
        "oldest": (today - timedelta(days=DAYS_BACK)).isoformat(),
    }


async def _runs_page(
    request: Request, svc: Services, who: Principal, error: str | None = None, status: int = 200,
    day: str = "",
) -> Response:  # fmt: skip
    rec = Reconciler(svc.wechat_pay)
    ctx: dict[str, Any] = {
        "who": who,
        "runs": await rec.runs(who),
        "error": error,
        "day": day,
        "zone": ZONE,
        "STATES": STATES,
        **_days(datetime.now(UTC)),
    }
    return render(request, svc, "reconcile_runs.html", ctx, status=status, section="finance")


@router.get("")
async def runs_page(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _runs_page(request, svc, who)


@router.post("")
async def run_day(request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    text = str(form.get("day") or "")[:10]
    try:
        who.require("finance.reconcile")
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise Invalid("give the bill day as YYYY-MM-DD") from None
        run = await Reconciler(svc.wechat_pay).reconcile(who.tenant_id, day, who.actor)
    except DomainError as exc:
        return await _runs_page(request, svc, who, explain(exc), exc.status, text)
    done = "?done=run" if run.state == "matched" else ""
    return RedirectResponse(f"/console/finance/reconcile/{run.id}{done}", status_code=303)


async def _run_page(
    request: Request, svc: Services, who: Principal, run_id: uuid.UUID,
    error: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    run, found = await Reconciler(svc.wechat_pay).run_detail(who, run_id)
    done = request.query_params.get("done", "")
    ctx = {
        "who": who,
        "run": run,
        "found": found,
        "error": error,
        "done": _(DONE[done]) if done in DONE else None,
        "zone": ZONE,
        "STATES": STATES,
        "KINDS": KINDS,
        "RESOLUTIONS": RESOLUTIONS,
        "can_write_off": "finance.write_off" in who.permissions,
        "resolve_forms": RESOLVE_FORMS,
    }
    return render(request, svc, "reconcile_run.html", ctx, status=status, section="finance")


@router.get("/{run_id}")
async def run_page(run_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _run_page(request, svc, who, run_id)


@router.post("/{run_id}/exceptions/{exception_id}")
async def resolve(
    run_id: uuid.UUID, exception_id: uuid.UUID, request: Request, svc: ServicesDep
) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    action = str(form.get("action") or "")[:20]
    reason = str(form.get("reason") or "")[:2000]
    rec = Reconciler(svc.wechat_pay)
    run, found = await rec.run_detail(who, run_id)  # (404: not this group's run)
    if not any(e.id == exception_id for e in found):
        return await _run_page(request, svc, who, run.id, _("Not found"), 404)
    try:
        await rec.resolve(who, exception_id, action, reason)
    except Conflict as exc:
        # a double submit: the first press resolved it as asked; say so, once
        now = (await rec.run_detail(who, run_id))[1]
        if any(e.id == exception_id and e.resolution == EXPECTED.get(action) for e in now):
            return RedirectResponse(f"/console/finance/reconcile/{run_id}?done={action}", 303)
        return await _run_page(request, svc, who, run_id, explain(exc), exc.status)
    except DomainError as exc:
        return await _run_page(request, svc, who, run_id, explain(exc), exc.status)
    return RedirectResponse(f"/console/finance/reconcile/{run_id}?done={action}", status_code=303)
