"""The console's 设置 pages that change what onboarding made: a premises' floor, number,
kind and area; a role's name and permissions; an operator's name, role, scope and state
(deactivated, or active again); a tariff's name and state.

Each page shows the current values in a labelled form; saving sends only what changed to
the one service that owns it (``cloud.registry.admin``, ``cloud.tariffs.admin``), which
checks permission, scope and delegation and writes one audit event. Saving the same form
twice changes nothing the second time (nothing differs any more)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cloud.api.deps import Services, ServicesDep
from cloud.auth import PERMISSIONS, Principal
from cloud.console.i18n import N_
from cloud.console.pages import refused_csrf, signed_in
from cloud.console.settings import (
    BASE,
    KINDS,
    PERMISSION_LABELS,
    SCOPES,
    Form,
    _change,
    _decimal,
    _now,
    _page,
    _read,
    _refused,
    _tariff_page,
    _uuid,
)
from cloud.errors import Forbidden, Invalid, NotFound
from cloud.registry import admin
from cloud.tariffs import admin as tariffs

router = APIRouter(prefix=BASE, include_in_schema=False)


def _unchanged(where: str) -> str:
    return f"{where}?done=unchanged"


# --- premises ------------------------------------------------------------------------


def _premises_form(p: admin.PremisesRow) -> Form:
    area = "" if p.floor_area is None else f"{p.floor_area.normalize():f}"
    return {"floor": p.floor, "number": p.number, "kind": p.kind, "floor_area": area}


async def _premises_page(
    request: Request,
    svc: Services,
    who: Principal,
    premises_id: uuid.UUID,
    form: Form,
    error: str,
    status: int,
) -> Response:
    try:
        p = await admin.get_premises(svc.db, who, premises_id)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    ctx = {"p": p, "form": form or _premises_form(p), "error": error, "kinds": KINDS}
    return _page(request, svc, who, "settings_premises_edit.html", ctx, status)


@router.get("/premises/{premises_id}")
async def premises_page(premises_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _premises_page(request, svc, who, premises_id, {}, "", 200)


@router.post("/premises/{premises_id}")
async def update_premises(premises_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        who.require("registry.edit")
        current = await admin.get_premises(svc.db, who, premises_id)
        listing = f"{BASE}/buildings/{current.building_id}/premises"
        area = data.get("floor_area", "")
        wanted: dict[str, Any] = {
            "floor": data.get("floor", ""),
            "number": data.get("number", ""),
            "kind": data.get("kind", current.kind),
            "floor_area": _decimal(area, N_("The floor area is a number of m².")) if area else None,
        }
        changes = {k: v for k, v in wanted.items() if v != getattr(current, k)}
        if not changes:
            return _unchanged(listing)
        await admin.update_premises(svc.db, who, premises_id, changes, _now())
        return f"{listing}?done=premises_saved"

    async def again(error: str, status: int) -> Response:
        return await _premises_page(request, svc, who, premises_id, data, error, status)

    return await _change(work, again)


# --- roles ---------------------------------------------------------------------------


async def _role(svc: Services, who: Principal, role_id: uuid.UUID) -> admin.RoleRow:
    for r in await admin.list_roles(svc.db, who):
        if r.id == role_id:
            return r
    raise NotFound(f"role {role_id} not found")


async def _role_page(
    request: Request,
    svc: Services,
    who: Principal,
    role_id: uuid.UUID,
    form: Form,
    chosen: list[str] | None,
    error: str,
    status: int,
) -> Response:
    try:
        role = await _role(svc, who, role_id)
        users = [o for o in await admin.list_operators(svc.db, who) if o.role_id == role_id]
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    ctx = {
        "role": role,
        "users": users,
        "form": form or {"name": role.name},
        "chosen": role.permissions if chosen is None else chosen,
        "permissions": PERMISSIONS,
        "labels": PERMISSION_LABELS,
        "error": error,
    }
    return _page(request, svc, who, "settings_role.html", ctx, status)


@router.get("/roles/{role_id}")
async def role_page(role_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _role_page(request, svc, who, role_id, {}, None, "", 200)


@router.post("/roles/{role_id}")
async def update_role(role_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, multi = await _read(request)
    perms = multi.get("permissions", [])

    async def work() -> str:
        current = await _role(svc, who, role_id)
        name = data.get("name", "")
        new_name = None if name == current.name else name
        new_perms = None if set(perms) == set(current.permissions) else perms
        if new_name is None and new_perms is None:
            return _unchanged(f"{BASE}/operators")
        await admin.update_role(svc.db, who, role_id, new_name, new_perms, _now())
        return f"{BASE}/operators?done=role_saved"

    async def again(error: str, status: int) -> Response:
        return await _role_page(request, svc, who, role_id, data, perms, error, status)

    return await _change(work, again)


# --- operators -----------------------------------------------------------------------


async def _operator(svc: Services, who: Principal, operator_id: uuid.UUID) -> admin.OperatorRow:
    """The operator, among those the actor manages (NotFound otherwise)."""
    for o in await admin.list_operators(svc.db, who):
        if o.id == operator_id:
            return o
    raise NotFound(f"operator {operator_id} not found")


def _operator_form(o: admin.OperatorRow) -> Form:
    return {
        "display_name": o.display_name,
        "role_id": str(o.role_id),
        "scope": o.scope,
        "active": "on" if o.active else "",
    }


async def _operator_page(
    request: Request,
    svc: Services,
    who: Principal,
    operator_id: uuid.UUID,
    form: Form,
    chosen: dict[str, list[str]] | None,
    error: str,
    status: int,
) -> Response:
    try:
        o = await _operator(svc, who, operator_id)
        roles = await admin.list_roles(svc.db, who)
        sites = await admin.list_sites(svc.db, who)
        outlets = await admin.list_outlets(svc.db, who)
    except Forbidden as exc:
        return _refused(request, svc, who, exc)
    ids = [str(i) for i in o.scope_ids]
    current = {"site_ids": ids if o.scope == "site" else [], "outlet_ids": ids}
    if o.scope != "outlet":
        current["outlet_ids"] = []
    ctx = {
        "o": o,
        "roles": roles,
        "sites": sites,
        "outlets": outlets,
        "site_names": {s.id: s.settings.name for s in sites},
        "scopes": SCOPES,
        "form": form or _operator_form(o),
        "chosen": current if chosen is None else chosen,
        "error": error,
    }
    return _page(request, svc, who, "settings_operator.html", ctx, status)


@router.get("/operators/{operator_id}")
async def operator_page(operator_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _operator_page(request, svc, who, operator_id, {}, None, "", 200)


@router.post("/operators/{operator_id}")
async def update_operator(operator_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, multi = await _read(request)

    async def work() -> str:
        o = await _operator(svc, who, operator_id)
        scope = data.get("scope", o.scope)
        if scope not in dict(SCOPES):
            raise Invalid(N_("Choose a scope."))
        field = {"site": "site_ids", "outlet": "outlet_ids"}.get(scope)
        ids = tuple(_uuid(i, N_("Choose sites or outlets.")) for i in multi.get(field or "", []))
        role_id = _uuid(data.get("role_id", ""), N_("Choose a role."))
        display = data.get("display_name", "")
        active = data.get("active") == "on"
        same_scope = scope == o.scope and set(ids) == set(o.scope_ids)
        change = admin.OperatorChange(
            display_name=None if display == o.display_name else display,
            role_id=None if role_id == o.role_id else role_id,
            scope=None if same_scope else scope,
            scope_ids=None if same_scope else ids,
            active=None if active == o.active else active,
        )
        if change == admin.OperatorChange():
            return _unchanged(f"{BASE}/operators")
        await admin.update_operator(svc.db, who, operator_id, change, _now())
        done = {True: "reactivated", False: "deactivated", None: "operator_saved"}
        return f"{BASE}/operators?done={done[change.active]}"

    async def again(error: str, status: int) -> Response:
        return await _operator_page(request, svc, who, operator_id, data, multi, error, status)

    return await _change(work, again)


# --- a tariff's name and state -------------------------------------------------------


@router.post("/tariffs/{tariff_id}")
async def update_tariff(tariff_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    data, _multi = await _read(request)

    async def work() -> str:
        current = await tariffs.get_tariff(svc.db, who, tariff_id, _now())
        name = data.get("name", "")
        active = data.get("active") == "on"
        here = f"{BASE}/tariffs/{tariff_id}"
        if name == current.name and active == current.active:
            return _unchanged(here)
        await tariffs.update_tariff(
            svc.db,
            who,
            tariff_id,
            _now(),
            name=None if name == current.name else name,
            active=None if active == current.active else active,
        )
        return f"{here}?done=tariff"

    async def again(error: str, status: int) -> Response:
        return await _tariff_page(request, svc, who, tariff_id, {}, error, status)

    return await _change(work, again)
