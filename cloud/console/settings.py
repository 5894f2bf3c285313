"""The console's 设置 (Settings) pages: onboarding a property group in the browser (sites,
buildings and premises, outlets, tariffs, operators and roles, cross-outlet grants).

Routes stay thin: parse the form, call one service of ``cloud.registry.admin`` or
``cloud.tariffs.admin``. A form that creates something carries a one-time key (a repeat
is sent to the first one's result); a refusal re-draws the form with the input kept."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import Services, ServicesDep
from cloud.auth import PERMISSIONS, Principal
from cloud.console import forms, lists, tariff_form
from cloud.console.format import when
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import refused_csrf, render, signed_in
from cloud.console.refusals import MARGIN_HINT, explain
from cloud.db import Database
from cloud.errors import DomainError, Forbidden, Invalid, NotFound
from cloud.horizons import EARLIEST, GRANT, TARIFF_START, Horizon
from cloud.registry import admin
from cloud.registry import admin_core as core
from cloud.tariffs import admin as tariffs
from cloud.tariffs.rules import VersionDraft

router = APIRouter(prefix="/console/settings", include_in_schema=False)
BASE = "/console/settings"

ZONES = (
    "Asia/Shanghai",
    "Asia/Urumqi",
    "Asia/Hong_Kong",
    "Asia/Macau",
    "Asia/Taipei",
    "Asia/Singapore",
    "Asia/Tokyo",
    "UTC",
)
KINDS = (("shop", N_("Shop")), ("flat", N_("Flat")), ("office", N_("Office")), ("unit", N_("Unit")))
PLAN_KINDS = {"flat": N_("Flat rate"), "tiered": N_("Tiered"), "tou": N_("Time of use")}
UTILITIES = (("electricity", N_("Electricity")), ("water", N_("Water")))
SCOPES = (
    ("tenant", N_("Whole property group")),
    ("site", N_("Chosen sites")),
    ("outlet", N_("Chosen outlets")),
)
PERMISSION_LABELS = {
    "registry.view": N_("View sites, buildings and premises"),
    "registry.edit": N_("Edit sites, buildings, premises and outlets"),
    "operator.manage": N_("Manage operators, roles and grants"),
    "account.open": N_("Open accounts"),
    "account.close": N_("Close and transfer accounts"),
    "account.write_off": N_("Write off arrears"),
    "meter.install": N_("Install, swap and remove meters"),
    "import.run": N_("Import legacy data"),
    "sale.create": N_("Sell credit"),
    "sale.reverse": N_("Reverse sales"),
    "dunning.send": N_("Send arrears reminders"),
    "control.trip": N_("Trip supply"),
    "control.restore": N_("Restore supply"),
    "control.keep_power": N_("Keep-power (保电)"),
    "tariff.edit": N_("Edit tariffs"),
    "finance.reconcile": N_("Reconcile finance"),
    "finance.write_off": N_("Write off reconciliation differences"),
    "gateway.commission": N_("Commission gateways"),
    "gateway.configure": N_("Configure gateways"),
}
DONE = {
    "site": N_("Site saved."),
    "building": N_("Building added."),
    "premises": N_("Premises added."),
    "outlet": N_("Outlet added."),
    "tariff": N_("Tariff saved."),
    "version": N_("Version added."),
    "assigned": N_("Service points assigned to the tariff."),
    "role": N_("Role added."),
    "operator": N_("Operator added."),
    "deactivated": N_("Operator deactivated."),
    "password": N_("Password reset: that operator's sessions have ended."),
    "grant": N_("Grant added."),
    "unchanged": N_("Nothing was changed."),
    "premises_saved": N_("Premises saved."),
    "role_saved": N_("Role saved."),
    "operator_saved": N_("Operator saved."),
    "reactivated": N_("Operator active again: they can sign in."),
    "revoked": N_("Grant revoked."),
}
# what the price plan's fields are drawn with (cloud.console.tariff_form reads them)
PLAN_FIELDS = {
    "cycles": tariff_form.CYCLES,
    "periods": tariff_form.PERIODS,
    "tier_rows": tariff_form.TIER_ROWS,
    "tou_rows": tariff_form.TOU_ROWS,
}

Form = dict[str, str]
Again = Callable[[str, int], Awaitable[Response]]


def _now() -> datetime:
    return datetime.now(UTC)


# what each list's search box looks in
def _site_texts(st: admin.SiteRow) -> str:
    return f"{st.settings.name} {st.settings.timezone}"


def _name(row: Any) -> str:
    return str(row.name)


def _operator_texts(o: admin.OperatorRow) -> str:
    return f"{o.username} {o.display_name} {o.role}"


def _role_texts(r: admin.RoleRow) -> str:
    return " ".join([r.name, *(_(PERMISSION_LABELS.get(p, p)) for p in r.permissions)])


def _grant_texts(g: admin.GrantRow) -> str:
    return f"{g.username} {g.outlet} {g.reason} {g.granted_by}"


def _done(request: Request) -> str:
    code = request.query_params.get("done", "")
    return _(DONE[code]) if code in DONE else ""


def _page(
    request: Request, svc: Services, who: Principal, name: str, ctx: dict[str, Any], status: int
) -> Response:
    base = {"who": who, "done": _done(request), "error": "", "form": {}, "BASE": BASE}
    return render(request, svc, name, base | ctx, status=status, section="settings")


def _refused(request: Request, svc: Services, who: Principal, exc: DomainError) -> Response:
    ctx = {"who": who, "message": explain(exc), "refused": True}
    return render(request, svc, "message.html", ctx, status=exc.status, section="settings")


async def _read(request: Request) -> tuple[Form, dict[str, list[str]]]:
    raw = await request.form()
    data = {k: v.strip() for k, v in raw.items() if isinstance(v, str)}
    multi = {k: [v for v in raw.getlist(k) if isinstance(v, str)] for k in raw}
    return data, multi


async def _create(
    svc: Services,
    who: Principal,
    data: Form,
    work: Callable[[], Awaitable[str]],
    again: Again,
) -> Response:
    """Claim the form's one-time key, do the work and go to its result (303); a repeat goes
    to the first one's result; a refusal releases the key and re-draws the form."""
    key = data.get("form_key", "")
    if not key:
        return await again(_("This form has no key: reload the page and try again."), 422)
    claim = await forms.claim(svc.db, who, key, _now())
    if not claim.first:
        return RedirectResponse(claim.result or BASE, status_code=303)
    try:
        where = await work()
    except DomainError as exc:
        await forms.release(svc.db, who, key)
        if exc.status == 404:
            raise
        return await again(explain(exc), exc.status)
    await forms.finish(svc.db, who, key, where)
    return RedirectResponse(where, status_code=303)


async def _change(work: Callable[[], Awaitable[str]], again: Again) -> Response:
    try:
        where = await work()
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await again(explain(exc), exc.status)
    return RedirectResponse(where, status_code=303)


# --- parsing form input (English msgids: explain() translates them) ------------------


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        raise Invalid(what) from None
    if not value.is_finite():
        raise Invalid(what)
    return value


def _clock(text: str, what: str) -> time | None:
    if not text:
        return None
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise Invalid(what) from None


def _local(text: str, zone: str, what: str) -> datetime | None:
    """A ``datetime-local`` input, read in the site's zone."""
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(what) from None
    return naive.replace(tzinfo=ZoneInfo(zone)) if naive.tzinfo is None else naive


def _within(text: str, zone: str, what: str, horizon: Horizon, far: str) -> datetime | None:
    """A ``datetime-local`` input (:func:`_local`) within reason: not before 2000, and not
    further ahead than ``horizon`` allows (``far`` says how far, for the clerk)."""
    value = _local(text, zone, what)
    if value is None:
        return None
    if value < EARLIEST:
        raise Invalid(N_("Dates before 2000-01-01 are not accepted."))
    if horizon.problem(value, _now()) is not None:
        raise Invalid(far)
    return value


def _uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise Invalid(what) from None


def _site_settings(data: Form) -> core.SiteSettings:
    cutoff = _clock(data.get("business_day_cutoff", ""), N_("The cut-off is a time like 00:00."))
    notice = data.get("notice_minutes", "0") or "0"
    if not notice.isdigit():
        raise Invalid(N_("Notice minutes is a whole number."))
    age = data.get("reading_max_age_days", "365") or "365"
    if not (age.isascii() and age.isdigit()) or len(age) > 5:
        raise Invalid(N_("The readings' allowed age is a whole number of days."))
    price = data.get("catalogue_price", "")
    margin = data.get("price_margin", "") or "0"
    return core.SiteSettings(
        name=data.get("name", ""),
        timezone=data.get("timezone", "Asia/Shanghai"),
        business_day_cutoff=cutoff or time(0),
        friendly_night_start=_clock(
            data.get("friendly_night_start", ""), N_("The friendly night start is a time.")
        ),
        friendly_night_end=_clock(
            data.get("friendly_night_end", ""), N_("The friendly night end is a time.")
        ),
        friendly_weekends=data.get("friendly_weekends") == "on",
        friendly_holidays=data.get("friendly_holidays") == "on",
        notice_minutes=int(notice),
        alarm_hysteresis=_decimal(
            data.get("alarm_hysteresis", "") or "0", N_("The alarm hysteresis is an amount.")
        ),
        catalogue_price=_decimal(price, N_("The catalogue price is a number.")) if price else None,
        price_margin=_decimal(margin, N_("The allowed margin is a percentage.")) / 100,
        reading_max_age_days=int(age),
    )


def _site_form(s: core.SiteSettings) -> Form:
    def hm(t: time | None) -> str:
        return t.strftime("%H:%M") if t else ""

    return {
        "name": s.name,
        "timezone": s.timezone,
        "business_day_cutoff": hm(s.business_day_cutoff),
        "friendly_night_start": hm(s.friendly_night_start),
        "friendly_night_end": hm(s.friendly_night_end),
        "friendly_weekends": "on" if s.friendly_weekends else "",
        "friendly_holidays": "on" if s.friendly_holidays else "",
        "notice_minutes": str(s.notice_minutes),
        "alarm_hysteresis": str(s.alarm_hysteresis),
        "catalogue_price": "" if s.catalogue_price is None else str(s.catalogue_price),
        "price_margin": f"{(s.price_margin * 100).normalize():f}",
        "reading_max_age_days": str(s.reading_max_age_days),
    }


# --- index ---------------------------------------------------------------------------


@router.get("")
async def index(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return _page(request, svc, who, "settings_index.html", {}, 200)


@router.get("/gateways")
async def gateways(request: Request, svc: ServicesDep) -> Response:
    """The gateways' own pages (cloud.console.gateways)."""
    return RedirectResponse("/console/gateways", status_code=303)


# --- sites ---------------------------------------------------------------------------


async def _sites_page(
    request: Request, svc: Services, who: Principal, form: Form, error: str, status: int
) -> Response:
    try:
        sites = await admin.list_sites(svc.db, who)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    defaults = _site_form(core.SiteSettings(name=""))
    found = lists.listed(request, sites, _site_texts)
    ctx = {
        "sites": found.items,
        "page": found.page,
        "q": found.q,
        "form": form or defaults,
        "error": error,
        "zones": ZONES,
        "key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_sites.html", ctx, status)


@router.get("/sites")
async def sites_page(
    request: Request, svc: ServicesDep, export: Annotated[str, Query(max_length=8)] = ""
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        try:
            sites = await admin.list_sites(svc.db, who)
        except Forbidden as exc:
            return _refused(request, svc, who, exc)
        headers = [
            _("Site"), _("Time zone"), _("Business-day cut-off"), _("Friendly night"),
            _("Catalogue price"),
        ]  # fmt: skip
        rows = [
            [
                st.settings.name,
                st.settings.timezone,
                st.settings.business_day_cutoff.strftime("%H:%M"),
                f"{st.settings.friendly_night_start:%H:%M}–{st.settings.friendly_night_end:%H:%M}"
                if st.settings.friendly_night_start and st.settings.friendly_night_end
                else "",
                st.settings.catalogue_price,
            ]
            for st in lists.exported(request, sites, _site_texts)
        ]
        return lists.xlsx("sites.xlsx", headers, rows)
    return await _sites_page(request, svc, who, {}, "", 200)


@router.post("/sites")
async def create_site(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        await admin.create_site(svc.db, who, _site_settings(data), _now())
        return f"{BASE}/sites?done=site"

    async def again(error: str, status: int) -> Response:
        return await _sites_page(request, svc, who, data, error, status)

    return await _create(svc, who, data, work, again)


async def _site_page(
    request: Request,
    svc: Services,
    who: Principal,
    site_id: uuid.UUID,
    form: Form,
    error: str,
    status: int,
) -> Response:
    site = await admin.get_site(svc.db, who, site_id)
    ctx = {"site": site, "form": form or _site_form(site.settings), "error": error, "zones": ZONES}
    return _page(request, svc, who, "settings_site.html", ctx, status)


@router.get("/sites/{site_id}")
async def site_page(site_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    try:
        return await _site_page(request, svc, who, site_id, {}, "", 200)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)


@router.post("/sites/{site_id}")
async def update_site(site_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        who.require("registry.edit")
        s = _site_settings(data)
        current = (await admin.get_site(svc.db, who, site_id)).settings
        changes = {
            f: getattr(s, f) for f in core.SITE_FIELDS if getattr(s, f) != getattr(current, f)
        }
        if changes:  # the audit event names only what changed
            await admin.update_site(svc.db, who, site_id, changes, _now())
        return f"{BASE}/sites?done=site"

    async def again(error: str, status: int) -> Response:
        return await _site_page(request, svc, who, site_id, data, error, status)

    return await _change(work, again)


# --- buildings and premises ----------------------------------------------------------


async def _names_xlsx(
    request: Request,
    svc: Services,
    who: Principal,
    site_id: uuid.UUID,
    lister: Callable[[Database, Principal, uuid.UUID], Awaitable[Sequence[Any]]],
    header: str,
) -> Response:
    """A site's buildings or outlets (anything with a ``name``) as an Excel file."""
    try:
        site = await admin.get_site(svc.db, who, site_id)
        named = await lister(svc.db, who, site_id)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    rows = [[site.settings.name, n.name] for n in lists.exported(request, named, _name)]
    filename = "buildings.xlsx" if lister is admin.list_buildings else "outlets.xlsx"
    return lists.xlsx(filename, [_("Site"), header], rows)


async def _buildings_page(
    request: Request,
    svc: Services,
    who: Principal,
    site_id: uuid.UUID,
    form: Form,
    error: str,
    status: int,
) -> Response:
    try:
        site = await admin.get_site(svc.db, who, site_id)
        buildings = await admin.list_buildings(svc.db, who, site_id)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    found = lists.listed(request, buildings, _name)
    ctx = {
        "site": site,
        "buildings": found.items,
        "page": found.page,
        "q": found.q,
        "form": form,
        "error": error,
        "key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_buildings.html", ctx, status)


@router.get("/sites/{site_id}/buildings")
async def buildings_page(
    site_id: uuid.UUID,
    request: Request,
    svc: ServicesDep,
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        return await _names_xlsx(request, svc, who, site_id, admin.list_buildings, _("Building"))
    return await _buildings_page(request, svc, who, site_id, {}, "", 200)


@router.post("/sites/{site_id}/buildings")
async def create_building(site_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        await admin.create_building(svc.db, who, site_id, data.get("name", ""), _now())
        return f"{BASE}/sites/{site_id}/buildings?done=building"

    async def again(error: str, status: int) -> Response:
        return await _buildings_page(request, svc, who, site_id, data, error, status)

    return await _create(svc, who, data, work, again)


async def _building(svc: Services, who: Principal, building_id: uuid.UUID) -> admin.BuildingRow:
    """The building, through the sites the operator sees (NotFound otherwise)."""
    for site in await admin.list_sites(svc.db, who):
        for b in await admin.list_buildings(svc.db, who, site.id):
            if b.id == building_id:
                return b
    raise NotFound(f"building {building_id} not found")


async def _premises_page(
    request: Request,
    svc: Services,
    who: Principal,
    building_id: uuid.UUID,
    form: Form,
    error: str,
    status: int,
    q: str = "",
    offset: int = 0,
) -> Response:
    try:
        building = await _building(svc, who, building_id)
        query = admin.PremisesQuery(building_id=building_id, q=q or None, offset=offset)
        found = await admin.search_premises(svc.db, who, query)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    page = lists.page_of(offset, found.total)
    ctx = {
        "building": building,
        "premises": found.items,
        "page": page,
        "q": q,
        "form": form,
        "error": error,
        "kinds": KINDS,
        "key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_premises.html", ctx, status)


@router.get("/buildings/{building_id}/premises")
async def premises_page(
    building_id: uuid.UUID,
    request: Request,
    svc: ServicesDep,
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        try:
            building = await _building(svc, who, building_id)
        except Forbidden as exc:
            return _refused(request, svc, who, exc)
        rows: list[list[Any]] = []
        while len(rows) < lists.EXPORT_LIMIT:
            query = admin.PremisesQuery(
                building_id=building_id, q=q or None, limit=admin.PAGE_MAX, offset=len(rows)
            )
            found = await admin.search_premises(svc.db, who, query)
            rows += [
                [building.name, p.floor, p.number, _(dict(KINDS)[p.kind]), p.floor_area]
                for p in found.items
            ]
            if len(found.items) < admin.PAGE_MAX:
                break
        headers = [_("Building"), _("Floor"), _("Number"), _("Kind"), _("Floor area (m²)")]
        return lists.xlsx("premises.xlsx", headers, rows)
    return await _premises_page(request, svc, who, building_id, {}, "", 200, q, offset)


@router.post("/buildings/{building_id}/premises")
async def create_premises(building_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        area = data.get("floor_area", "")
        draft = core.PremisesDraft(
            floor=data.get("floor", ""),
            number=data.get("number", ""),
            kind=data.get("kind", "shop"),
            floor_area=_decimal(area, N_("The floor area is a number of m².")) if area else None,
        )
        await admin.create_premises(svc.db, who, building_id, draft, _now())
        return f"{BASE}/buildings/{building_id}/premises?done=premises"

    async def again(error: str, status: int) -> Response:
        return await _premises_page(request, svc, who, building_id, data, error, status)

    return await _create(svc, who, data, work, again)


# --- outlets -------------------------------------------------------------------------


async def _outlets_page(
    request: Request,
    svc: Services,
    who: Principal,
    site_id: uuid.UUID,
    form: Form,
    error: str,
    status: int,
) -> Response:
    try:
        site = await admin.get_site(svc.db, who, site_id)
        outlets = await admin.list_outlets(svc.db, who, site_id)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    found = lists.listed(request, outlets, _name)
    ctx = {
        "site": site,
        "outlets": found.items,
        "page": found.page,
        "q": found.q,
        "form": form,
        "error": error,
        "key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_outlets.html", ctx, status)


@router.get("/sites/{site_id}/outlets")
async def outlets_page(
    site_id: uuid.UUID,
    request: Request,
    svc: ServicesDep,
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        return await _names_xlsx(request, svc, who, site_id, admin.list_outlets, _("Outlet"))
    return await _outlets_page(request, svc, who, site_id, {}, "", 200)


@router.post("/sites/{site_id}/outlets")
async def create_outlet(site_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        await admin.create_outlet(svc.db, who, site_id, data.get("name", ""), _now())
        return f"{BASE}/sites/{site_id}/outlets?done=outlet"

    async def again(error: str, status: int) -> Response:
        return await _outlets_page(request, svc, who, site_id, data, error, status)

    return await _create(svc, who, data, work, again)


# --- tariffs -------------------------------------------------------------------------


def _zone(sites: list[admin.SiteRow], site_id: uuid.UUID | None) -> str:
    for s in sites:
        if s.id == site_id:
            return s.settings.timezone
    return "Asia/Shanghai"


def _tariff_texts(site_names: Mapping[Any, str]) -> Callable[[tariffs.TariffView], str]:
    def texts(t: tariffs.TariffView) -> str:
        site = site_names.get(t.site_id, "") if t.site_id else _("Whole property group")
        return f"{t.name} {_(dict(UTILITIES)[t.utility])} {site}"

    return texts


def _version(data: Form, zone: str, utility: str | None) -> VersionDraft:
    """The version in the form: its price plan (cloud.console.tariff_form), monthly fee,
    start and, for a price above the site's margin, the reason."""
    fee = data.get("monthly_fee", "") or "0"
    start = _within(
        data.get("effective_from", ""),
        zone,
        N_("The start is a date and time."),
        TARIFF_START,
        N_("A price can take effect at most 5 years from now."),
    )
    reason = None
    if data.get("margin_ack") == "on":
        reason = data.get("margin_reason", "")
        if len(reason) < 3:
            raise Invalid(N_("Give a reason (3 characters or more) for the price."))
    plan = tariff_form.plan_from_form(data, utility)
    monthly = _decimal(fee, N_("The monthly fee is an amount."))
    return VersionDraft(plan.kind, plan.spec, monthly, start, reason)


async def _tariffs_page(
    request: Request, svc: Services, who: Principal, form: Form, error: str, status: int
) -> Response:
    try:
        who.require("registry.view")
        found = await tariffs.list_tariffs(svc.db, who, _now())
        sites = await admin.list_sites(svc.db, who)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    names = {s.id: s.settings.name for s in sites}
    listed = lists.listed(request, found, _tariff_texts(names))
    ctx = {
        "tariffs": listed.items,
        "page": listed.page,
        "q": listed.q,
        "sites": sites,
        "site_names": names,
        "zones": {s.id: s.settings.timezone for s in sites},
        "utilities": UTILITIES,
        "plan_kinds": PLAN_KINDS,
        **PLAN_FIELDS,
        "form": form or {"kind": "flat", "monthly_fee": "0"},
        "error": error,
        "margin": _(MARGIN_HINT) in error,
        "key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_tariffs.html", ctx, status)


@router.get("/tariffs")
async def tariffs_page(
    request: Request, svc: ServicesDep, export: Annotated[str, Query(max_length=8)] = ""
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        try:
            who.require("registry.view")
            found = await tariffs.list_tariffs(svc.db, who, _now())
            sites = await admin.list_sites(svc.db, who)
        except Forbidden as exc:
            return _refused(request, svc, who, exc)
        names: dict[uuid.UUID | None, str] = {s.id: s.settings.name for s in sites}
        zones: dict[uuid.UUID | None, str] = {s.id: s.settings.timezone for s in sites}
        headers = [
            _("Tariff"), _("Utility"), _("Site"), _("State"), _("In force"), _("Unit price"),
            _("Monthly fee"), _("Since"), _("Next version from"),
        ]  # fmt: skip
        rows: list[list[Any]] = []
        for t in lists.exported(request, found, _tariff_texts(names)):
            now, zone = t.current, zones.get(t.site_id, "Asia/Shanghai")
            price = (now.spec.get("unit_price") if now else None) or ""
            rows.append(
                [
                    t.name,
                    _(dict(UTILITIES)[t.utility]),
                    names.get(t.site_id) or _("Whole property group"),
                    _("active") if t.active else _("inactive"),
                    _(PLAN_KINDS[now.kind]) if now else "",
                    Decimal(price) if price else "",
                    now.monthly_fee if now else "",
                    when(now.effective_from, zone) if now else "",
                    when(t.scheduled[0].effective_from, zone) if t.scheduled else "",
                ]
            )
        return lists.xlsx("tariffs.xlsx", headers, rows)
    return await _tariffs_page(request, svc, who, {}, "", 200)


@router.post("/tariffs")
async def create_tariff(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        who.require("tariff.edit")
        site = data.get("site_id", "")
        site_id = _uuid(site, N_("Choose a site.")) if site else None
        utility = data.get("utility", "")
        if utility not in dict(UTILITIES):
            raise Invalid(N_("Choose electricity or water."))
        zone = _zone(await admin.list_sites(svc.db, who), site_id)
        version = _version(data, zone, utility)
        new = tariffs.NewTariff(data.get("name", ""), utility, site_id, version)
        tariff_id = await tariffs.create_tariff(svc.db, who, new, _now())
        return f"{BASE}/tariffs/{tariff_id}?done=tariff"

    async def again(error: str, status: int) -> Response:
        return await _tariffs_page(request, svc, who, data, error, status)

    return await _create(svc, who, data, work, again)


async def _points(svc: Services, who: Principal, site_id: uuid.UUID | None) -> list[Any]:
    """The points a tariff may be put on: those of its site (every visible site for a
    tariff of the whole group), not removed."""
    async with svc.db.tenant(who.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT sp.id, sp.name, sp.utility, sp.site_id, sp.tariff_id, s.name AS site "
                "FROM service_point sp JOIN site s ON s.id = sp.site_id "
                "WHERE sp.removed_at IS NULL AND (CAST(:s AS uuid) IS NULL OR sp.site_id = :s) "
                "ORDER BY s.name, sp.name"
            ),
            {"s": site_id},
        )
        return list(rows)


async def _tariff_page(
    request: Request,
    svc: Services,
    who: Principal,
    tariff_id: uuid.UUID,
    form: Form,
    error: str,
    status: int,
) -> Response:
    try:
        who.require("registry.view")
        tariff = await tariffs.get_tariff(svc.db, who, tariff_id, _now())
        sites = await admin.list_sites(svc.db, who)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    visible = {s.id for s in sites}
    points = [
        p
        for p in await _points(svc, who, tariff.site_id)
        if p.site_id in visible and p.utility == tariff.utility
    ]
    found = lists.listed(request, points, lambda p: f"{p.name} {p.site}")
    ctx = {
        "t": tariff,
        "site_name": next((s.settings.name for s in sites if s.id == tariff.site_id), None),
        "zone": _zone(sites, tariff.site_id),
        "points": found.items,
        "page": found.page,
        "q": found.q,
        "plan_kinds": PLAN_KINDS,
        **PLAN_FIELDS,
        "form": form or {"kind": "flat", "monthly_fee": "0"},
        "error": error,
        "margin": _(MARGIN_HINT) in error,
        "key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_tariff.html", ctx, status)


@router.get("/tariffs/{tariff_id}")
async def tariff_page(tariff_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _tariff_page(request, svc, who, tariff_id, {}, "", 200)


@router.post("/tariffs/{tariff_id}/versions")
async def add_version(tariff_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        who.require("tariff.edit")
        tariff = await tariffs.get_tariff(svc.db, who, tariff_id, _now())
        zone = _zone(await admin.list_sites(svc.db, who), tariff.site_id)
        version = _version(data, zone, tariff.utility)
        await tariffs.add_version(svc.db, who, tariff_id, version, _now())
        return f"{BASE}/tariffs/{tariff_id}?done=version"

    async def again(error: str, status: int) -> Response:
        return await _tariff_page(request, svc, who, tariff_id, data, error, status)

    return await _create(svc, who, data, work, again)


@router.post("/tariffs/{tariff_id}/assign")
async def assign_tariff(tariff_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, multi = await _read(request)

    async def work() -> str:
        who.require("tariff.edit")
        ids = [_uuid(p, N_("Choose service points.")) for p in multi.get("point_ids", [])]
        if not ids:
            raise Invalid(N_("Choose at least one service point."))
        await tariffs.assign_tariff(svc.db, who, tariff_id, ids, _now())
        return f"{BASE}/tariffs/{tariff_id}?done=assigned"

    async def again(error: str, status: int) -> Response:
        return await _tariff_page(request, svc, who, tariff_id, data, error, status)

    return await _change(work, again)


# --- operators and roles -------------------------------------------------------------


async def _operators_page(
    request: Request,
    svc: Services,
    who: Principal,
    form: Form,
    error: str,
    status: int,
    which: str = "",
    chosen: dict[str, list[str]] | None = None,
) -> Response:
    try:
        operators = await admin.list_operators(svc.db, who)
        roles = await admin.list_roles(svc.db, who)
        sites = await admin.list_sites(svc.db, who)
        outlets = await admin.list_outlets(svc.db, who)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    names = {s.id: s.settings.name for s in sites} | {o.id: o.name for o in outlets}
    people = lists.listed(request, operators, _operator_texts)
    kinds = lists.listed(request, roles, _role_texts, param="roles_offset")
    ctx = {
        "operators": people.items,
        "page": people.page,
        "q": people.q,
        "roles": roles,  # (every role: the new operator's choice)
        "role_rows": kinds.items,
        "roles_page": kinds.page,
        "sites": sites,
        "outlets": outlets,
        "site_names": {s.id: s.settings.name for s in sites},
        "names": names,
        "labels": PERMISSION_LABELS,
        "permissions": PERMISSIONS,
        "scopes": SCOPES,
        "form": form,
        "chosen": chosen or {},
        "error": error,
        "which": which,
        "key": forms.new_key(),
        "role_key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_operators.html", ctx, status)


@router.get("/operators")
async def operators_page(
    request: Request, svc: ServicesDep, export: Annotated[str, Query(max_length=8)] = ""
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        return await _operators_xlsx(request, svc, who)
    return await _operators_page(request, svc, who, {}, "", 200)


async def _operators_xlsx(request: Request, svc: Services, who: Principal) -> Response:
    """The operators, then the roles, in one sheet each."""
    try:
        operators = await admin.list_operators(svc.db, who)
        roles = await admin.list_roles(svc.db, who)
        sites = await admin.list_sites(svc.db, who)
        outlets = await admin.list_outlets(svc.db, who)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    names = {s.id: s.settings.name for s in sites} | {o.id: o.name for o in outlets}

    def perms(r: admin.RoleRow) -> str:
        return "、".join(_(PERMISSION_LABELS.get(p, p)) for p in r.permissions)

    people = [
        [
            o.username,
            o.display_name,
            o.role,
            _(dict(SCOPES)[o.scope]),
            "、".join(names.get(i, str(i)) for i in o.scope_ids),
            _("active") if o.active else _("inactive"),
        ]
        for o in lists.exported(request, operators, _operator_texts)
    ]
    return lists.xlsx_sheets(
        "operators.xlsx",
        [
            (
                _("Operators"),
                [_("User"), _("Name"), _("Role"), _("Scope"), _("Sites or outlets"), _("State")],
                people,
            ),
            (
                _("Roles"),
                [_("Role"), _("Permissions")],
                [[r.name, perms(r)] for r in lists.exported(request, roles, _role_texts)],
            ),
        ],
    )


@router.post("/roles")
async def create_role(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, multi = await _read(request)

    async def work() -> str:
        perms = multi.get("permissions", [])
        await admin.create_role(svc.db, who, data.get("name", ""), perms, _now())
        return f"{BASE}/operators?done=role"

    async def again(error: str, status: int) -> Response:
        return await _operators_page(request, svc, who, data, error, status, "role", multi)

    return await _create(svc, who, data, work, again)


@router.post("/operators")
async def create_operator(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, multi = await _read(request)

    async def work() -> str:
        scope = data.get("scope", "tenant")
        field = {"site": "site_ids", "outlet": "outlet_ids"}.get(scope)
        ids = tuple(_uuid(i, N_("Choose sites or outlets.")) for i in multi.get(field or "", []))
        draft = admin.OperatorDraft(
            username=data.get("username", ""),
            display_name=data.get("display_name", ""),
            password=data.get("password", ""),
            role_id=_uuid(data.get("role_id", ""), N_("Choose a role.")),
            scope=scope,
            scope_ids=ids,
        )
        await admin.create_operator(svc.db, who, draft, _now())
        return f"{BASE}/operators?done=operator"

    async def again(error: str, status: int) -> Response:
        kept = {k: v for k, v in data.items() if k != "password"}
        return await _operators_page(request, svc, who, kept, error, status, "operator", multi)

    return await _create(svc, who, data, work, again)


@router.post("/operators/{operator_id}/deactivate")
async def deactivate_operator(
    operator_id: uuid.UUID, request: Request, svc: ServicesDep
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad

    async def work() -> str:
        change = admin.OperatorChange(active=False)
        await admin.update_operator(svc.db, who, operator_id, change, _now())
        return f"{BASE}/operators?done=deactivated"

    async def again(error: str, status: int) -> Response:
        return await _operators_page(request, svc, who, {}, error, status)

    return await _change(work, again)


@router.post("/operators/{operator_id}/password")
async def reset_password(operator_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        password = data.get("password", "")
        await admin.reset_password(svc.db, who, operator_id, password, _now())
        return f"{BASE}/operators?done=password"

    async def again(error: str, status: int) -> Response:
        return await _operators_page(request, svc, who, {}, error, status)

    return await _change(work, again)


# --- cross-outlet grants -------------------------------------------------------------


async def _grants_page(
    request: Request, svc: Services, who: Principal, form: Form, error: str, status: int
) -> Response:
    try:
        grants = await admin.list_grants(svc.db, who)
        operators = await admin.list_operators(svc.db, who)
        outlets = await admin.list_outlets(svc.db, who)
        sites = await admin.list_sites(svc.db, who)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    zones = {s.id: s.settings.timezone for s in sites}
    names = {s.id: s.settings.name for s in sites}
    found = lists.listed(request, grants, lambda g: f"{_grant_texts(g)} {names.get(g.site_id, '')}")
    ctx = {
        "grants": found.items,
        "page": found.page,
        "q": found.q,
        # a tenant-wide operator already sells everywhere: only the scoped ones need grants
        "operators": [o for o in operators if o.active and o.scope != "tenant"],
        "outlets": outlets,
        "site_names": {s.id: s.settings.name for s in sites},
        "zones": zones,
        "form": form,
        "error": error,
        "now": _now(),
        "key": forms.new_key(),
    }
    return _page(request, svc, who, "settings_grants.html", ctx, status)


@router.get("/grants")
async def grants_page(
    request: Request, svc: ServicesDep, export: Annotated[str, Query(max_length=8)] = ""
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if export == "xlsx":
        try:
            grants = await admin.list_grants(svc.db, who)
            sites = await admin.list_sites(svc.db, who)
        except Forbidden as exc:
            return _refused(request, svc, who, exc)
        zones = {s.id: s.settings.timezone for s in sites}
        names = {s.id: s.settings.name for s in sites}
        now = _now()

        def state(g: admin.GrantRow) -> str:
            if g.revoked_at is not None:
                return _("revoked")
            return _("expired") if g.ends_at <= now else _("in force")

        headers = [
            _("Operator"), _("Outlet"), _("Site"), _("From"), _("Until"), _("Reason"),
            _("Granted by"), _("State"),
        ]  # fmt: skip
        rows = [
            [
                g.username,
                g.outlet,
                names.get(g.site_id, ""),
                when(g.starts_at, zones.get(g.site_id, "Asia/Shanghai")),
                when(g.ends_at, zones.get(g.site_id, "Asia/Shanghai")),
                g.reason,
                g.granted_by,
                state(g),
            ]
            for g in lists.exported(
                request, grants, lambda g: f"{_grant_texts(g)} {names.get(g.site_id, '')}"
            )
        ]
        return lists.xlsx("grants.xlsx", headers, rows)
    return await _grants_page(request, svc, who, {}, "", 200)


@router.post("/grants")
async def create_grant(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        operator_id = _uuid(data.get("operator_id", ""), N_("Choose an operator."))
        outlet_id = _uuid(data.get("outlet_id", ""), N_("Choose an outlet."))
        outlets = {o.id: o for o in await admin.list_outlets(svc.db, who)}
        zone = _zone(
            await admin.list_sites(svc.db, who),
            outlets[outlet_id].site_id if outlet_id in outlets else None,
        )
        far = N_("A grant can start and end at most a year from now.")
        starts = _within(
            data.get("starts_at", ""), zone, N_("The start is a date and time."), GRANT, far
        )
        ends = _within(data.get("ends_at", ""), zone, N_("The end is a date and time."), GRANT, far)
        if starts is None or ends is None:
            raise Invalid(N_("A grant needs a start and an end."))
        draft = core.GrantDraft(outlet_id, starts, ends, data.get("reason", ""))
        await admin.grant_outlet(svc.db, who, operator_id, draft, _now())
        return f"{BASE}/grants?done=grant"

    async def again(error: str, status: int) -> Response:
        return await _grants_page(request, svc, who, data, error, status)

    return await _create(svc, who, data, work, again)


@router.post("/grants/{grant_id}/revoke")
async def revoke_grant(grant_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad

    async def work() -> str:
        await admin.revoke_grant(svc.db, who, grant_id, _now())
        return f"{BASE}/grants?done=revoked"

    async def again(error: str, status: int) -> Response:
        return await _grants_page(request, svc, who, {}, error, status)

    return await _change(work, again)
