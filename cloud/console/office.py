"""The business office in the console (DESIGN §12, §7): 营业 — find an account, open one
(开户), install, swap and remove meters (装表 换表 拆表), transfer (过户) and cancel (消户);
售电/售水 — the counter: find the account, sell, print the receipt, reverse (冲正).
Routes parse the form, call one service, and render; a refusal re-renders the form with
what was typed and the reason in the operator's language."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import Services, ServicesDep
from cloud.api.fields import has_control
from cloud.auth import Principal
from cloud.console import forms, lists
from cloud.console.format import when
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import refused_csrf, render, signed_in
from cloud.console.refusals import explain
from cloud.documents.receipt import draw_ahead
from cloud.errors import DomainError
from cloud.lifecycle import accounts, service
from cloud.lifecycle.core import Settlement
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.payments.reversal import reverse_sale
from cloud.payments.sales import get_sale, list_sales
from cloud.payments.wechat.refunds import ask_closing
from cloud.registry import admin
from cloud.tariffs.admin import list_tariffs

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console", include_in_schema=False)

DONE = {
    "opened": N_("Account opened."),
    "installed": N_("Meter installed."),
    "swapped": N_("Meter swapped."),
    "removed": N_("Meter removed."),
    "transferred": N_("Premises transferred to the new customer."),
    "cancelled": N_("Account cancelled."),
    "cancelled_wechat": N_(
        "Account cancelled. The balance goes back to the tenant's WeChat Pay payments, "
        "newest first (WeChat usually pays it within minutes); a cash refund, if any, is "
        "the rest."
    ),
    "reversed": N_("Sale reversed."),
}
METHODS = (("cash", N_("Cash")), ("card", N_("Bank card")), ("transfer", N_("Bank transfer")))
UTILITIES = (("electricity", N_("Electricity")), ("water", N_("Water")))
# values shown translated: account statuses, premises kinds, payment methods
SHOWN = (
    N_("pending"),
    N_("active"),
    N_("closed"),
    N_("shop"),
    N_("flat"),
    N_("office"),
    N_("unit"),
    N_("cash"),
    N_("card"),
    N_("transfer"),
)


class FormError(Exception):
    """A form field the operator must correct (the message is already translated)."""


def _field(form: Any, name: str, *, required: bool = True, max_len: int = 200) -> str:
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise FormError(_("Please fill in: %(field)s") % {"field": _(LABELS.get(name, name))})
    if len(text) > max_len or has_control(text, lines=name == "reason"):
        raise FormError(
            _("%(field)s is too long or holds control characters")
            % {"field": _(LABELS.get(name, name))}
        )
    return text


def _amount(form: Any, name: str, *, required: bool = True, places: int = 2) -> Decimal | None:
    text = _field(form, name, required=required, max_len=20).replace(",", "").replace("¥", "")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FormError(
            _("%(field)s must be a number, e.g. 50.00") % {"field": _(LABELS[name])}
        ) from None
    if not value.is_finite() or value.as_tuple().exponent < -places:  # type: ignore[operator]
        raise FormError(
            _("%(field)s takes at most %(places)s decimals")
            % {"field": _(LABELS[name]), "places": places}
        )
    return value


def _sale_amount(form: Any) -> Decimal:
    amount = _amount(form, "amount")
    assert amount is not None  # (required)
    if amount <= 0 or amount > Decimal("100000"):
        raise FormError(_("The amount must be more than ¥0 and at most ¥100,000"))
    return amount


def _method(form: Any) -> str:
    method = _field(form, "method", max_len=10)
    if method not in dict(METHODS):
        raise FormError(_("Please choose: %(field)s") % {"field": _(LABELS["method"])})
    return method


def _form_key(form: Any) -> str:
    key = form.get("form_key")
    if not isinstance(key, str) or not key.strip() or len(key) > 64 or has_control(key):
        raise FormError(_("This form has no key: reload the page and try again."))
    return key.strip()


def _uuid(form: Any, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(_field(form, name, max_len=40))
    except ValueError:
        raise FormError(_("Please choose: %(field)s") % {"field": _(LABELS[name])}) from None


LABELS = {
    "name": N_("Customer name"),
    "phone": N_("Phone"),
    "id_number": N_("ID or business licence number"),
    "premises_id": N_("Premises"),
    "amount": N_("Amount (¥)"),
    "method": N_("Payment method"),
    "outlet_id": N_("Outlet"),
    "reason": N_("Reason"),
    "gateway_code": N_("Gateway"),
    "key": N_("Meter name on the gateway"),
    "profile": N_("Meter model (profile)"),
    "bus": N_("Bus"),
    "address": N_("Meter address"),
    "serial": N_("Meter number"),
    "channel": N_("Channel"),
    "register": N_("Register reading at installation (kWh / m³)"),
    "final_register": N_("Final reading of the old meter"),
    "initial_register": N_("Initial reading of the new meter"),
    "to_account": N_("Move the balance to account"),
    "refund_amount": N_("Cash refunded (¥)"),
    "how": N_("The balance"),
}


def _now() -> datetime:
    return datetime.now(UTC)


async def _home_site(svc: Services, who: Principal, number: str) -> uuid.UUID | None:
    """The site of the account's first point (the one a sale to it is made for)."""
    async with svc.db.tenant(who.tenant_id) as conn:
        site: uuid.UUID | None = await conn.scalar(
            sa.text(
                "SELECT sp.site_id FROM account a JOIN service_point sp ON sp.account_id = a.id "
                "WHERE a.number = :n ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1"
            ),
            {"n": number},
        )
    return site


async def _zone(svc: Services, who: Principal, number: str) -> str:
    """The time zone of the account's site (its first point's)."""
    async with svc.db.tenant(who.tenant_id) as conn:
        zone = await conn.scalar(
            sa.text(
                "SELECT s.timezone FROM account a JOIN service_point sp ON sp.account_id = a.id "
                "JOIN site s ON s.id = sp.site_id WHERE a.number = :n "
                "ORDER BY sp.removed_at NULLS FIRST, sp.id LIMIT 1"
            ),
            {"n": number},
        )
    return str(zone or "Asia/Shanghai")


# -- 营业: find an account -----------------------------------------------------------------


@router.get("/accounts")
async def account_search(
    request: Request,
    svc: ServicesDep,
    q: Annotated[str, Query(max_length=64)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    return await _search(request, svc, q, offset, export, "accounts")


@router.get("/counter")
async def counter_search(
    request: Request,
    svc: ServicesDep,
    q: Annotated[str, Query(max_length=64)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    return await _search(request, svc, q, offset, export, "counter")


async def _search(
    request: Request, svc: Services, q: str, offset: int, export: str, section: str
) -> Response:
    """营业's account search, or the counter's: the counter's also finds the accounts of
    the sites a cross-outlet grant in force lets the operator sell at."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    query = q.strip() or None
    if query and has_control(query):
        query = None
    selling_at = _now() if section == "counter" else None
    if export == "xlsx":
        found = await accounts.search_accounts(
            svc.db, who, query, None, lists.EXPORT_LIMIT, 0, selling_at=selling_at
        )
        headers = [
            _("Account"),
            _("Customer"),
            _("Phone"),
            _("Premises"),
            _("Balance (¥)"),
            _("Status"),
        ]
        rows = (
            [h.number, h.customer, h.phone or "", " ".join(h.premises), h.balance, _(h.status)]
            for h in found.items
        )
        return lists.xlsx(
            "accounts.xlsx" if section == "accounts" else "counter.xlsx", headers, rows
        )
    found = await accounts.search_accounts(
        svc.db, who, query, None, lists.PAGE_SIZE, offset, selling_at=selling_at
    )
    page = lists.Page(offset, lists.PAGE_SIZE, found.total)
    if section == "counter" and query and found.total == 1 and offset == 0:
        return RedirectResponse(f"/console/counter/{found.items[0].number}", status_code=303)
    ctx = {
        "who": who,
        "hits": found.items,
        "page": page,
        "q": q,
        "in_counter": section == "counter",
    }
    return render(request, svc, f"{section}_search.html", ctx, section=section)


# -- 开户 open an account -------------------------------------------------------------------


async def _open_form(
    request: Request,
    svc: Services,
    who: Principal,
    values: dict[str, str],
    error: str | None = None,
    status: int = 200,
) -> Response:
    now = _now()
    premises_q = values.get("premises_q", "")
    found = await admin.search_premises(
        svc.db, who, admin.PremisesQuery(q=premises_q or None, limit=100)
    )
    tariffs = [t for t in await list_tariffs(svc.db, who, now) if t.active and t.current]
    outlets = await _sale_outlets(svc, who, now)
    ctx = {
        "who": who,
        "premises": found.items,
        "premises_total": found.total,
        "tariffs": tariffs,
        "outlets": outlets,
        "v": values,
        "error": error,
        "form_key": values.get("form_key") or forms.new_key(),
        "methods": METHODS,
        "utilities": UTILITIES,
    }
    return render(request, svc, "account_open.html", ctx, status=status, section="accounts")


@router.get("/accounts/new")
async def open_page(
    request: Request,
    svc: ServicesDep,
    premises_q: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _open_form(request, svc, who, {"premises_q": premises_q})


@router.post("/accounts/new")
async def open_submit(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    key = values.get("form_key", "")[:64] or forms.new_key()
    try:
        customer = service.CustomerData(
            _field(form, "name", max_len=100),
            _field(form, "phone", required=False, max_len=20) or None,
            _field(form, "id_number", required=False, max_len=40) or None,
        )
        premises_id = _uuid(form, "premises_id")
        points = []
        for utility, _label in UTILITIES:
            if form.get(f"with_{utility}"):
                tariff = form.get(f"tariff_{utility}")
                try:
                    tariff_id = uuid.UUID(str(tariff))
                except ValueError:
                    raise FormError(_("Please choose the tariff of each supply")) from None
                points.append(service.PointOrder(utility, tariff_id))
        if not points:
            raise FormError(_("Choose at least one supply: electricity or water"))
        first = None
        if _amount(form, "amount", required=False):  # (0: no first sale)
            # the first sale: made in the opening's transaction
            first = service.FirstSale(
                _sale_amount(form), _method(form), _uuid(form, "outlet_id"), key
            )
    except FormError as exc:
        return await _open_form(request, svc, who, values, str(exc), 422)
    claim = await forms.claim(svc.db, who, key, _now())
    if not claim.first:
        return RedirectResponse(claim.result or "/console/accounts", status_code=303)
    req = service.OpenRequest(premises_id, tuple(points), customer=customer, first_sale=first)
    try:
        opened = await service.open_account(svc.db, who, req, _now(), svc.timing)
    except DomainError as exc:
        await forms.release(svc.db, who, key)
        return await _open_form(request, svc, who, values, explain(exc), exc.status)
    where = f"/console/accounts/{opened.account_number}?done=opened"
    if opened.sale is not None:
        where += f"&receipt={opened.sale.receipt_no}"
        if not opened.sale.replayed and svc.draw_receipts_ahead:
            draw_ahead(svc.db, who, opened.sale.receipt_no)
    await forms.finish(svc.db, who, key, where)
    return RedirectResponse(where, status_code=303)


# -- the account page and its lifecycle forms --------------------------------------------------


async def _account(
    request: Request,
    svc: Services,
    who: Principal,
    number: str,
    error: str | None = None,
    status: int = 200,
    values: dict[str, str] | None = None,
) -> Response:
    page = await accounts.account_page(svc.db, who, number)
    done = request.query_params.get("done", "")
    ctx = {
        "who": who,
        "a": page,
        "zone": await _zone(svc, who, number),
        "error": error,
        "done": _(DONE[done]) if done in DONE else None,
        "v": values or {},
        "receipt": request.query_params.get("receipt"),
        "form_key": forms.new_key(),
        "utilities": dict(UTILITIES),
        "wechat_refundable": await _wechat_refundable(svc, who, number),
    }
    return render(request, svc, "account.html", ctx, status=status, section="accounts")


async def _wechat_refundable(svc: Services, who: Principal, number: str) -> Decimal:
    """What the account's WeChat payments can still take back (消户 原路退回)."""
    async with svc.db.tenant(who.tenant_id) as conn:
        value = await conn.scalar(
            sa.text(
                "SELECT coalesce(sum(o.amount - o.refunded), 0) FROM payment_order o "
                "JOIN account a ON a.id = o.account_id WHERE a.number = :n "
                "AND o.status = 'paid' AND o.refunded < o.amount"
            ),
            {"n": number},
        )
    return Decimal(value or 0)


@router.get("/accounts/{number}")
async def account_view(number: str, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _account(request, svc, who, number[:20])


async def _point_action(
    request: Request, svc: Services, point_id: uuid.UUID, what: str
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    number = _field(form, "account", max_len=20) if form.get("account") else ""
    now = _now()
    try:
        if what == "install":
            device = _device(form)
            register = _amount(form, "register", required=False, places=3)
            read = bool(form.get("read"))
            if register is None and not read:
                raise FormError(_("Type the register reading or tick 'read it from the meter now'"))
            await service.install(
                svc.db,
                who,
                point_id,
                service.InstallRequest(device, register, read),
                now,
                svc.timing,
            )
        elif what == "swap":
            final = _amount(form, "final_register", places=3)
            initial = _amount(form, "initial_register", places=3)
            assert final is not None and initial is not None
            await service.swap(
                svc.db,
                who,
                point_id,
                service.SwapRequest(_device(form), final, initial),
                now,
                svc.timing,
            )
        else:
            final = _amount(form, "final_register", required=False, places=3)
            await service.remove(svc.db, who, point_id, final, now, svc.timing)
    except FormError as exc:
        return await _account(request, svc, who, number, str(exc), 422, values)
    except DomainError as exc:
        if exc.status == 404 or not number:
            raise
        return await _account(request, svc, who, number, explain(exc), exc.status, values)
    done = {"install": "installed", "swap": "swapped", "remove": "removed"}[what]
    return RedirectResponse(f"/console/accounts/{number}?done={done}", status_code=303)


def _device(form: Any) -> service.DeviceSpec:
    channel_text = _field(form, "channel", required=False, max_len=3) or "1"
    if not channel_text.isdigit() or not 1 <= int(channel_text) <= 64:
        raise FormError(_("The channel is a number from 1 to 64"))
    return service.DeviceSpec(
        gateway_code=_field(form, "gateway_code", max_len=64),
        key=_field(form, "key", max_len=64),
        channel=int(channel_text),
        profile=_field(form, "profile", required=False, max_len=80) or None,
        bus=_field(form, "bus", required=False, max_len=64) or None,
        address=_field(form, "address", required=False, max_len=32) or None,
        serial=_field(form, "serial", required=False, max_len=32) or None,
    )


@router.post("/points/{point_id}/install")
async def install_submit(point_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    return await _point_action(request, svc, point_id, "install")


@router.post("/points/{point_id}/swap")
async def swap_submit(point_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    return await _point_action(request, svc, point_id, "swap")


@router.post("/points/{point_id}/remove")
async def remove_submit(point_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    return await _point_action(request, svc, point_id, "remove")


def _settlement(form: Any, transfer: bool = False) -> service.SettleRequest:
    how = _field(form, "how", max_len=10)
    if how not in ("refund", "move", "write_off", "wechat") or (how == "wechat" and transfer):
        raise FormError(_("Please choose: %(field)s") % {"field": _(LABELS["how"])})
    reason = _field(form, "reason", required=how == "write_off", max_len=500) or None
    if how == "write_off":
        return service.SettleRequest(None, write_off=True, reason=reason)
    if how == "wechat":  # 原路退回: back to the WeChat payments, the rest in cash
        return service.SettleRequest(Settlement.REFUND, reason=reason, to_wechat=True)
    if how == "move":  # (a transfer moves it to the account it opens)
        to = None if transfer else _field(form, "to_account", max_len=20)
        return service.SettleRequest(Settlement.MOVE, to_account=to, reason=reason)
    return service.SettleRequest(
        Settlement.REFUND,
        refund_amount=_amount(form, "refund_amount", required=False),
        reason=reason,
    )


async def _account_action(request: Request, svc: Services, number: str, what: str) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    key = values.get("form_key", "")[:64] or forms.new_key()
    now = _now()
    try:
        settle = _settlement(form, transfer=what == "transfer")
        customer = None
        if what == "transfer":
            customer = service.CustomerData(
                _field(form, "name", max_len=100),
                _field(form, "phone", required=False, max_len=20) or None,
                _field(form, "id_number", required=False, max_len=40) or None,
            )
            if settle.how is None and not settle.write_off:
                raise FormError(_("A transfer moves the balance to the new account or refunds it"))
    except FormError as exc:
        return await _account(request, svc, who, number, str(exc), 422, values)
    claim = await forms.claim(svc.db, who, key, now)
    if not claim.first:
        return RedirectResponse(claim.result or f"/console/accounts/{number}", status_code=303)
    try:
        if what == "transfer":
            done = await service.transfer(
                svc.db,
                who,
                number,
                service.TransferRequest(settle, customer=customer),
                now,
                svc.timing,
            )
            where = f"/console/accounts/{done.new_account}?done=transferred"
        else:
            done = await service.cancel(svc.db, who, number, settle, now, svc.timing)
            where = f"/console/accounts/{number}?done=cancelled"
            if done.wechat_refunds:
                where += "_wechat"
                await _ask_wechat(svc, who, done, settle.reason)
        if done.receipt_no:
            where += f"&receipt={done.receipt_no}"
    except DomainError as exc:
        await forms.release(svc.db, who, key)
        if exc.status == 404:
            raise
        return await _account(request, svc, who, number, explain(exc), exc.status, values)
    await forms.finish(svc.db, who, key, where)
    return RedirectResponse(where, status_code=303)


async def _ask_wechat(
    svc: Services, who: Principal, done: service.Settled, reason: str | None
) -> None:
    """The closing's WeChat refunds are in the books: ask WeChat now (the worker's refund
    sweep asks again for any it could not reach)."""
    try:
        await ask_closing(
            svc.wechat_pay, who.tenant_id, list(done.wechat_refunds), reason or "消户退款"
        )
    except DomainError as exc:
        log.warning("account %s: WeChat refunds asked later: %s", done.account_number, exc)


@router.post("/accounts/{number}/transfer")
async def transfer_submit(number: str, request: Request, svc: ServicesDep) -> Response:
    return await _account_action(request, svc, number[:20], "transfer")


@router.post("/accounts/{number}/cancel")
async def cancel_submit(number: str, request: Request, svc: ServicesDep) -> Response:
    return await _account_action(request, svc, number[:20], "cancel")


# -- 售电/售水 the counter -------------------------------------------------------------------

_OUTLETS = """
SELECT o.id, o.name, s.name AS site, NULL::uuid AS grant_id, NULL::timestamptz AS ends_at,
  o.site_id
FROM outlet o JOIN site s ON s.id = o.site_id
WHERE CAST(:scope AS text) = 'tenant'
   OR (CAST(:scope AS text) = 'site' AND o.site_id = ANY(CAST(:ids AS uuid[])))
   OR (CAST(:scope AS text) = 'outlet' AND o.id = ANY(CAST(:ids AS uuid[])))
UNION ALL
SELECT o.id, o.name, s.name, g.id, g.ends_at, o.site_id FROM outlet_grant g
JOIN outlet o ON o.id = g.outlet_id JOIN site s ON s.id = o.site_id
WHERE g.operator_id = :op AND g.revoked_at IS NULL AND g.starts_at <= :now AND g.ends_at > :now
ORDER BY 3, 2
"""


async def _sale_outlets(svc: Services, who: Principal, now: datetime) -> list[Any]:
    """Where this operator may sell now: the outlets of their scope, then those of live
    cross-outlet grants (marked with the grant's end)."""
    async with svc.db.tenant(who.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(_OUTLETS),
            {"scope": who.scope, "ids": list(who.scope_ids), "op": who.operator_id, "now": now},
        )
        seen: dict[uuid.UUID, Any] = {}
        for r in rows:  # an outlet of the scope shows as such, not as granted
            if r.id not in seen or (seen[r.id].grant_id is not None and r.grant_id is None):
                seen[r.id] = r
        return list(seen.values())


async def _counter(
    request: Request,
    svc: Services,
    who: Principal,
    number: str,
    error: str | None = None,
    status: int = 200,
    values: dict[str, str] | None = None,
) -> Response:
    now = _now()
    page = await accounts.account_page(svc.db, who, number, selling_at=now)
    outlets = await _sale_outlets(svc, who, now)
    v = dict(values or {})
    if not v.get("outlet_id"):  # preselect an outlet at the account's own site, if any
        home = await _home_site(svc, who, number)
        at_home = [o for o in outlets if o.site_id == home]
        if at_home:
            v["outlet_id"] = str(at_home[0].id)
    ctx = {
        "who": who,
        "a": page,
        "zone": await _zone(svc, who, number),
        "error": error,
        "v": v,
        "form_key": (values or {}).get("form_key") or forms.new_key(),
        "outlets": outlets,
        "methods": METHODS,
        "utilities": dict(UTILITIES),
    }
    return render(request, svc, "counter.html", ctx, status=status, section="counter")


@router.get("/counter/{number}")
async def counter_page(number: str, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _counter(request, svc, who, number[:20])


@router.post("/counter/{number}/sell")
async def sell(number: str, request: Request, svc: ServicesDep) -> Response:
    """The sale: the form's one-time key is the sale's idempotency key, so a double click
    or a re-sent form sells once and shows the same receipt."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    number = number[:20]
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        amount = _sale_amount(form)
        method = _method(form)
        outlet = _uuid(form, "outlet_id")
        key = _field(form, "form_key", max_len=64)
    except FormError as exc:
        return await _counter(request, svc, who, number, str(exc), 422, values)
    try:
        sale = await sell_credit(
            svc.db,
            who,
            SaleRequest(number, amount, method, outlet),
            f"console:{key}",
            _now(),
            svc.timing,
        )
    except DomainError as exc:
        if exc.status == 404 and "account" not in str(exc):
            raise
        return await _counter(request, svc, who, number, explain(exc), exc.status, values)
    if not sale.replayed and svc.draw_receipts_ahead:
        draw_ahead(svc.db, who, sale.receipt_no)
    return RedirectResponse(f"/console/sales/{sale.receipt_no}", status_code=303)


async def _sale_page(
    request: Request,
    svc: Services,
    who: Principal,
    receipt_no: str,
    error: str | None = None,
    status: int = 200,
) -> Response:
    sale = await get_sale(svc.db, who, receipt_no)
    done = request.query_params.get("done", "")
    ctx = {
        "who": who,
        "s": sale,
        "error": error,
        "methods": dict(METHODS),
        "done": _(DONE[done]) if done in DONE else None,
        "can_reverse": "sale.reverse" in who.permissions and sale.reversed_at is None,
        "form_key": forms.new_key(),
    }
    return render(request, svc, "sale.html", ctx, status=status, section="counter")


@router.get("/sales/{receipt_no}")
async def sale_view(receipt_no: str, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _sale_page(request, svc, who, receipt_no[:20])


@router.get("/sales")
async def sales_list(
    request: Request,
    svc: ServicesDep,
    account: Annotated[str, Query(max_length=20)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        rows = []
        for start in range(0, lists.EXPORT_LIMIT, 200):  # the service pages at 200
            chunk = await list_sales(svc.db, who, account or None, None, None, 200, start)
            rows.extend(chunk.items)
            if len(chunk.items) < 200:
                break
        headers = [
            _("Receipt"),
            _("Time"),
            _("Account"),
            _("Customer"),
            _("Outlet"),
            _("Operator"),
            _("Amount"),
            _("Payment method"),
            _("Reversed"),
        ]
        return lists.xlsx(
            "sales.xlsx",
            headers,
            (
                [
                    s.receipt_no,
                    when(s.created_at, s.timezone),
                    s.account_number,
                    s.customer,
                    s.outlet_name or "",
                    s.operator,
                    s.amount,
                    _(dict(METHODS).get(s.method, s.method)),
                    when(s.reversed_at, s.timezone) if s.reversed_at else "",
                ]
                for s in rows
            ),
        )
    found = await list_sales(svc.db, who, account or None, None, None, lists.PAGE_SIZE + 1, offset)
    more = len(found.items) > lists.PAGE_SIZE
    ctx = {
        "who": who,
        "sales": found.items[: lists.PAGE_SIZE],
        "more": more,
        "offset": offset,
        "account": account,
        "methods": dict(METHODS),
    }
    return render(request, svc, "sales.html", ctx, section="counter")


@router.post("/sales/{receipt_no}/reverse")
async def reverse(receipt_no: str, request: Request, svc: ServicesDep) -> Response:
    """冲正: the form's one-time key makes a double click or a re-sent form reverse once
    and show the first reversal's result."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    receipt_no = receipt_no[:20]
    form = await request.form()
    try:
        reason = _field(form, "reason", max_len=500)
        key = _form_key(form)
    except FormError as exc:
        return await _sale_page(request, svc, who, receipt_no, str(exc), 422)
    now = _now()
    claim = await forms.claim(svc.db, who, f"reverse:{key}", now)
    if not claim.first:
        where = claim.result or f"/console/sales/{receipt_no}"
        return RedirectResponse(where, status_code=303)
    try:
        await reverse_sale(svc.db, who, receipt_no, reason, now, svc.timing)
    except DomainError as exc:
        await forms.release(svc.db, who, f"reverse:{key}")
        if exc.status == 404:
            raise
        return await _sale_page(request, svc, who, receipt_no, explain(exc), exc.status)
    where = f"/console/sales/{receipt_no}?done=reversed"
    await forms.finish(svc.db, who, f"reverse:{key}", where)
    return RedirectResponse(where, status_code=303)
