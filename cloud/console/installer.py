"""The installer's actions in the console: a site's claim codes (issue one — shown once —,
see the used, expired and revoked ones, revoke one), and on a gateway's page: install a
meter it reports that nobody registered yet (装表 from the quarantine) and push a config,
checked here before it is sent. Routes stay thin: parse, check, call one service."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api import queries
from cloud.api.deps import Services, ServicesDep
from cloud.auth import Principal
from cloud.console.format import when
from cloud.console.i18n import gettext as _
from cloud.console.pages import is_fragment, render, render_fragment, signed_form, signed_in
from cloud.console.refusals import explain
from cloud.errors import DomainError, NotFound
from cloud.lifecycle import service as lifecycle
from cloud.registry import meter_test
from cloud.registry.commissioning import issue_claim, revoke_claim, site_claims
from cloud.registry.gateway_config import push_config
from cloud.registry.scope import sites_of
from contract.mqtt import CONFIG_PUSHABLE, Topics

router = APIRouter(prefix="/console/installer", include_in_schema=False)
gateway_router = APIRouter(prefix="/console/gateways", include_in_schema=False)

MAX_TTL_HOURS = 168


class FormError(ValueError):
    pass


async def _sites(svc: Services, who: Principal) -> list[Any]:
    async with svc.db.tenant(who.tenant_id) as conn:
        scope = await sites_of(conn, who)
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT id, name, timezone FROM site WHERE CAST(:s AS uuid[]) IS NULL "
                    "OR id = ANY(CAST(:s AS uuid[])) ORDER BY name"
                ),
                {"s": scope},
            )
        ).all()
    return list(rows)


async def _claims_page(
    request: Request,
    svc: Services,
    who: Principal,
    site: str,
    *,
    issued: Any = None,
    error: str | None = None,
    done: str | None = None,
    status: int = 200,
) -> Response:
    who.require("gateway.commission")
    sites = await _sites(svc, who)
    chosen = next((s for s in sites if str(s.id) == site), None)
    if site and chosen is None:  # another group's site, or one outside the operator's scope
        raise NotFound(f"site {site} not found")
    chosen = chosen or (sites[0] if sites else None)
    claims = await site_claims(svc.db, who, chosen.id) if chosen else []
    now = datetime.now(UTC)
    ctx = {
        "who": who,
        "sites": sites,
        "site": chosen,
        "claims": [(c, c.state(now)) for c in claims],
        "issued": issued,
        "error": error,
        "done": done,
        "max_hours": MAX_TTL_HOURS,
    }
    return render(request, svc, "installer_claims.html", ctx, status=status, section="settings")


@router.get("/claims")
async def claims(
    request: Request, svc: ServicesDep, site: Annotated[str, Query(max_length=40)] = ""
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _claims_page(request, svc, who, site, done=_done(request))


def _done(request: Request) -> str | None:
    return _("The claim code is revoked.") if request.query_params.get("done") else None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _site_id(form: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(form.get("site", "")))
    except ValueError:
        raise FormError(_("Choose the site.")) from None


@router.post("/claims")
async def issue(request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    site = str(form.get("site", ""))[:40]
    try:
        site_id = _site_id(form)
        text = str(form.get("hours", "")).strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_TTL_HOURS:
            raise FormError(
                _("A claim code lives 1 to %(max)s hours: give a whole number of hours.")
                % {"max": MAX_TTL_HOURS}
            )
        await queries.require_site(svc.db, who, site_id)
        claim = await issue_claim(
            svc.db, who, site_id, datetime.now(UTC), timedelta(hours=int(text))
        )
    except FormError as exc:
        chosen = site if _is_uuid(site) else ""  # "Choose the site." shows the form again
        return await _claims_page(request, svc, who, chosen, error=str(exc), status=422)
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _claims_page(request, svc, who, site, error=explain(exc), status=exc.status)
    return await _claims_page(request, svc, who, str(site_id), issued=claim, status=201)


@router.post("/claims/{claim_id}/revoke")
async def revoke(claim_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    site = str(form.get("site", ""))[:40]
    try:
        await revoke_claim(svc.db, who, claim_id, datetime.now(UTC))
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _claims_page(request, svc, who, site, error=explain(exc), status=exc.status)
    return RedirectResponse(f"/console/installer/claims?site={site}&done=1", status_code=303)


# -- a gateway's page: install what it reports, push a config ------------------------------

_LIMITS = {"poll_interval_s": (1, 86_400), "heartbeat_s": (5, 86_400), "publish_batch": (1, 10_000)}


def checked_config(text: str) -> dict[str, Any]:
    """The config typed in the editor, or FormError saying in the installer's words what is
    wrong with it (nothing is sent then)."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise FormError(
            _("The config is not valid JSON (line %(line)s, column %(col)s).")
            % {"line": getattr(exc, "lineno", "?"), "col": getattr(exc, "colno", "?")}
        ) from None
    if not isinstance(config, dict) or not config:
        raise FormError(_("The config is a JSON object with at least one setting, e.g. {…}."))
    foreign = sorted(set(config) - CONFIG_PUSHABLE)
    if foreign:
        raise FormError(
            _("A gateway does not take these settings from the cloud: %(keys)s. It takes: %(ok)s.")
            % {"keys": ", ".join(foreign), "ok": ", ".join(sorted(CONFIG_PUSHABLE))}
        )
    for key, (low, high) in _LIMITS.items():
        if key in config:
            v = config[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
                raise FormError(
                    _("%(key)s is a number from %(low)s to %(high)s.")
                    % {"key": key, "low": low, "high": high}
                )
    for key in ("buses", "profiles"):
        if key in config and not isinstance(config[key], dict | list):
            raise FormError(_("%(key)s is a JSON object or list.") % {"key": key})
    buses = config.get("buses")
    if isinstance(buses, list):
        names = [b.get("name") for b in buses if isinstance(b, dict)]
        if len(names) != len(buses) or any(not isinstance(n, str) or not n for n in names):
            raise FormError(_("Every bus has a name."))
        if len(set(names)) != len(names):
            raise FormError(_("Two buses have the same name."))
    return config


async def _gateway_page(
    request: Request, svc: Services, code: str, *, error: str | None = None,
    done: str | None = None, config_text: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    from cloud.console.gateways import gateway_view

    return await gateway_view(
        request, svc, code, error=error, done=done, config_text=config_text, status=status
    )


@gateway_router.post("/{code}/install")
async def install(code: str, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    code = code[:64]
    try:
        try:
            point_id = uuid.UUID(str(form.get("point", "")))
        except ValueError:
            raise FormError(_("Choose the service point the meter goes on.")) from None
        key = str(form.get("key", "")).strip()[:64]
        channel = str(form.get("channel", "1")).strip()
        if not key or not channel.isdigit() or not 1 <= int(channel) <= 64:
            raise FormError(_("The meter's name on the gateway and its channel (1 to 64)."))
        spec = lifecycle.DeviceSpec(
            gateway_code=code,
            key=key,
            channel=int(channel),
            profile=str(form.get("profile", "")).strip()[:80] or None,
            bus=str(form.get("bus", "")).strip()[:64] or None,
            address=str(form.get("address", "")).strip()[:32] or None,
            serial=str(form.get("serial", "")).strip()[:32] or None,
        )
        await queries.require_gateway(svc.db, who, code)
        await lifecycle.install(
            svc.db,
            who,
            point_id,
            lifecycle.InstallRequest(spec, None, True),
            datetime.now(UTC),
            svc.timing,
        )
    except FormError as exc:
        return await _gateway_page(request, svc, code, error=str(exc), status=422)
    except DomainError as exc:
        if exc.status == 404 and "gateway" in str(exc):
            raise
        return await _gateway_page(request, svc, code, error=explain(exc), status=exc.status)
    return RedirectResponse(f"/console/gateways/{code}?done=installed", status_code=303)


@gateway_router.post("/{code}/config")
async def push(code: str, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    code = code[:64]
    text = str(form.get("config", ""))[:20_000]
    try:
        who.require("gateway.configure")
        await queries.require_gateway(svc.db, who, code)
        config = checked_config(text)
        if not svc.cloud_mqtt_url:
            raise FormError(_("This console has no broker to send configs through."))
        await push_config(
            svc.db, who, code, config, datetime.now(UTC), svc.cloud_mqtt_url,
            Topics(svc.mqtt_prefix),
        )  # fmt: skip
    except FormError as exc:
        return await _gateway_page(request, svc, code, error=str(exc), config_text=text, status=422)
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _gateway_page(
            request, svc, code, error=explain(exc), config_text=text, status=exc.status
        )
    return RedirectResponse(f"/console/gateways/{code}?done=pushed", status_code=303)


@gateway_router.post("/{code}/test")
async def test_meter(code: str, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    code = code[:64]
    key = str(form.get("key", "")).strip()[:64]
    channel = str(form.get("channel", "1")).strip()
    if not key or not channel.isdigit() or not 1 <= int(channel) <= 64:
        msg = _("The meter's name on the gateway and its channel (1 to 64).")
        return await _gateway_page(request, svc, code, error=msg, status=422)
    try:
        test_id = await meter_test.ask(
            svc.db, who, code, key, int(channel), datetime.now(UTC), svc.timing
        )
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _gateway_page(request, svc, code, error=explain(exc), status=exc.status)
    return RedirectResponse(f"/console/gateways/{code}/test/{test_id}", status_code=303)


@gateway_router.get("/{code}/test/{test_id}")
async def test_answer(
    code: str, test_id: uuid.UUID, request: Request, svc: ServicesDep
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    t = await meter_test.answer(svc.db, who, code[:64], test_id)
    async with svc.db.tenant(who.tenant_id) as conn:
        zone = await conn.scalar(
            sa.text(
                "SELECT s.timezone FROM gateway g JOIN site s ON s.id = g.site_id WHERE g.code = :c"
            ),
            {"c": code[:64]},
        )
    ctx = {"who": who, "t": t, "code": code[:64], "zone": zone or "Asia/Shanghai"}
    if is_fragment(request):
        return render_fragment(request, "meter_test.html", "answer", {**ctx, "when": when})
    return render(request, svc, "meter_test.html", ctx, section="settings")
