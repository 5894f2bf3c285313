"""Operators' control: trip, restore, keep-power on/off for one point or a whole site, the
pre-disconnection check, and the control view (live balance, policy, twin, commands).

Every action needs its permission and a reason, is an audit event, and goes through the
policy like any other decision (the override or keep-power is remembered in the point's
control state; the twin converges by commands). A trip of a point that is not in arrears is
refused, with the live balance in the message, unless the operator overrides with a reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit, horizons
from cloud.auth import Principal
from cloud.control import service as control
from cloud.control.policy import (
    ControlMemory,
    Decision,
    KeepPower,
    Override,
    SupplyState,
    decide,
    in_arrears,
)
from cloud.control.service import CommandTiming, PointControl
from cloud.db import Database, pg_array
from cloud.errors import Conflict, Invalid, NotFound

PERMISSION = {
    "trip": "control.trip",
    "restore": "control.restore",
    "keep_power_on": "control.keep_power",
    "keep_power_off": "control.keep_power",
}


class ControlAction(StrEnum):
    TRIP = "trip"
    RESTORE = "restore"
    KEEP_POWER_ON = "keep_power_on"
    KEEP_POWER_OFF = "keep_power_off"


@dataclass(frozen=True)
class ControlRequest:
    action: ControlAction
    reason: str
    override: bool = False  # cut a point that is not in arrears (the reason says why)
    until: datetime | None = None  # keep-power / override expiry


@dataclass(frozen=True)
class PointResult:
    point_id: uuid.UUID
    name: str
    done: bool
    message: str
    balance: Decimal
    in_arrears: bool
    supply: str


class Refused(Conflict):
    """An action the pre-disconnection check or keep-power refuses (HTTP 409)."""


async def operate_point(
    db: Database,
    who: Principal,
    point_id: uuid.UUID,
    req: ControlRequest,
    now: datetime,
    timing: CommandTiming,
) -> PointResult:
    """One point: a refusal raises :class:`Refused` with the live balance in it."""
    who.require(PERMISSION[req.action])
    _check(req, now)
    async with db.tenant(who.tenant_id) as conn:
        names = await _names(conn, [point_id])
        if point_id not in names:
            raise NotFound(f"service point {point_id} not found")
        (result,) = await _operate(conn, who, names, req, now, timing)
    if not result.done:
        raise Refused(result.message)
    return result


async def operate_site(
    db: Database,
    who: Principal,
    site_id: uuid.UUID,
    req: ControlRequest,
    now: datetime,
    timing: CommandTiming,
) -> list[PointResult]:
    """Every point of a site (a building): each is checked on its own; refusals are listed
    in the results, the others are carried out."""
    who.require(PERMISSION[req.action])
    _check(req, now)
    async with db.tenant(who.tenant_id) as conn:
        if not await conn.scalar(sa.text("SELECT 1 FROM site WHERE id = :s"), {"s": site_id}):
            raise NotFound(f"site {site_id} not found")
        rows = await conn.execute(
            sa.text(
                "SELECT id, name FROM service_point WHERE site_id = :s AND NOT common_area "
                "ORDER BY name"
            ),
            {"s": site_id},
        )
        names = {r.id: r.name for r in rows}
        return await _operate(conn, who, names, req, now, timing) if names else []


#: How far ahead keep-power or an override may be set to end (a longer one is open-ended:
#: leave ``until`` out and end it by hand): cloud.horizons.KEEP_POWER.
MAX_UNTIL = horizons.KEEP_POWER.ahead


def _check(req: ControlRequest, now: datetime) -> None:
    if len(req.reason.strip()) < 3:
        raise Invalid("a control action needs a reason (at least 3 characters)")
    if req.until is not None and req.until <= now:
        raise Invalid(f"until {req.until.isoformat()} is not in the future")
    if req.until is not None and req.until > now + MAX_UNTIL:
        raise Invalid(
            f"until {req.until.isoformat()} is more than {MAX_UNTIL.days} days ahead; "
            "leave it out for an open-ended action"
        )


async def _names(conn: AsyncConnection, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = await conn.execute(
        sa.text("SELECT id, name FROM service_point WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": pg_array(ids)},
    )
    return {r.id: r.name for r in rows}


async def _operate(
    conn: AsyncConnection,
    who: Principal,
    names: dict[uuid.UUID, str],
    req: ControlRequest,
    now: datetime,
    timing: CommandTiming,
) -> list[PointResult]:
    points = await control.load(conn, names)
    balances = await control.wallet_balances(conn, {p.wallet_id for p in points})
    results: list[PointResult] = []
    changed: list[PointControl] = []
    for p in points:
        balance = _balance(p, balances)
        arrears = in_arrears(balance, p.policy)
        memory, refusal = _apply(p, req, who, arrears, balance, names[p.id], now)
        if refusal is not None:
            results.append(
                PointResult(p.id, names[p.id], False, refusal, balance, arrears, _supply(p))
            )
            continue
        await control.store_memory(conn, p.id, memory, p.recheck_at, req.reason, now)
        changed.append(replace(p, memory=memory))
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            f"control.{req.action.value}",
            f"service_point:{p.id}",
            now,
            {
                "reason": req.reason,
                "override": str(req.override).lower(),
                "until": req.until.isoformat() if req.until else "",
                "balance": str(balance),
                "in_arrears": str(arrears).lower(),
            },
        )
        results.append(PointResult(p.id, names[p.id], True, "", balance, arrears, ""))
    outcome = await control.evaluate_loaded(
        conn, who.tenant_id, changed, now, timing, balances, actor=who.actor
    )
    return [_with_decision(r, outcome.decisions.get(r.point_id)) for r in results]


def _with_decision(r: PointResult, d: Decision | None) -> PointResult:
    if d is None:  # refused: nothing was decided
        return r
    return replace(r, message=f"{r.name}: supply {d.supply} ({d.reason})", supply=d.supply.value)


def _balance(p: PointControl, wallets: dict[uuid.UUID, Decimal]) -> Decimal:
    if p.mode == "meter" and p.meter_balance is not None:
        return p.meter_balance
    return wallets[p.wallet_id]


def _supply(p: PointControl) -> str:
    return p.memory.supply.value if p.memory.supply else ""


def _apply(
    p: PointControl,
    req: ControlRequest,
    who: Principal,
    arrears: bool,
    balance: Decimal,
    name: str,
    now: datetime,
) -> tuple[ControlMemory, str | None]:
    """The point's new memory for the action, or the reason it is refused."""
    mem = p.memory
    keep = mem.keep_power if mem.keep_power and mem.keep_power.active(now) else None
    if req.action is ControlAction.KEEP_POWER_ON:
        return replace(mem, keep_power=KeepPower(who.actor, req.reason, req.until)), None
    if req.action is ControlAction.KEEP_POWER_OFF:
        if keep is None:
            return mem, f"{name} has no keep-power to turn off"
        return replace(mem, keep_power=None), None
    if req.action is ControlAction.TRIP:
        if keep is not None:
            return mem, (
                f"{name} is under keep-power ({keep.by}: {keep.reason}); turn keep-power off "
                "before tripping it"
            )
        if not arrears and not req.override:
            return mem, (
                f"{name} is not in arrears: live balance {balance} (credit limit "
                f"{p.policy.credit_limit}); tripping it needs override with a reason"
            )
        override = Override(SupplyState.OFF, who.actor, req.reason, req.until, arrears)
        return replace(mem, override=override), None
    # restore: lift an operator's trip; where the policy would still cut (or, for a
    # meter-controlled point, to close the relay the operator opened), hold supply on
    # until the point is back in credit (or ``until``)
    lifted = replace(mem, override=None)
    if p.mode == "cloud" and decide(balance, p.policy, lifted, now, control.CALENDAR).supply is (
        SupplyState.ON
    ):
        return lifted, None
    return replace(
        lifted, override=Override(SupplyState.ON, who.actor, req.reason, req.until, True)
    ), None


async def control_view(
    db: Database, who: Principal, point_id: uuid.UUID, now: datetime
) -> dict[str, Any]:
    """What the console shows before any control action: live balance and arrears, what the
    policy decides now and why, keep-power and overrides, the twin, commands and events."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        names = await _names(conn, [point_id])
        if point_id not in names:
            raise NotFound(f"service point {point_id} not found")
        (p,) = await control.load(conn, [point_id])
        balances = await control.wallet_balances(conn, [p.wallet_id])
        wallet = balances[p.wallet_id]
        balance = _balance(p, balances)
        preview: Decision = (
            decide(balance, p.policy, p.memory, now, control.CALENDAR)
            if p.mode == "cloud"
            else control.meter_decision(p, now)
        )
        twin = (
            await conn.execute(
                sa.text(
                    "SELECT desired, desired_at, desired_reason, reported, reported_at, "
                    "desired_keep, reported_keep, reported_keep_at FROM supply_twin "
                    "WHERE channel_id = :c"
                ),
                {"c": p.channel_id},
            )
        ).first()
        commands = await conn.execute(
            sa.text(
                "SELECT id, action, state, reason, origin, created_at, sent_at, attempts, "
                "deadline, finished_at, result FROM device_command WHERE service_point_id = :p "
                "OR (channel_id = :c AND service_point_id IS NULL) "
                "ORDER BY created_at DESC LIMIT 20"
            ),
            {"p": point_id, "c": p.channel_id},
        )
        events = await conn.execute(
            sa.text(
                "SELECT kind, at, balance, detail, actor FROM control_event "
                "WHERE service_point_id = :p ORDER BY at DESC LIMIT 20"
            ),
            {"p": point_id},
        )
        limit = p.policy.credit_limit
        m = p.memory
        return {
            "id": str(p.id),
            "name": names[point_id],
            "control_mode": p.mode,
            "balance": str(balance),
            "wallet_balance": str(wallet),
            "meter_balance": None if p.meter_balance is None else str(p.meter_balance),
            "credit_limit": str(limit),
            "emergency_credit": str(p.policy.emergency_credit),
            "in_arrears": in_arrears(balance, p.policy),
            "arrears": str(max(Decimal(0), -(balance + limit))),
            "decision": {"supply": preview.supply.value, "reason": preview.reason},
            "alarm_level": m.alarm_level,
            "notice_at": m.notice_at,
            "keep_power": None
            if m.keep_power is None
            else {
                "by": m.keep_power.by,
                "reason": m.keep_power.reason,
                "until": m.keep_power.until,
            },
            "override": None
            if m.override is None
            else {
                "supply": m.override.supply.value,
                "by": m.override.by,
                "reason": m.override.reason,
                "until": m.override.until,
                "until_credit": m.override.until_credit,
            },
            "twin": None if twin is None else dict(twin._mapping),
            "commands": [dict(r._mapping) for r in commands],
            "events": [dict(r._mapping) for r in events],
        }
