"""Prepaid control, the imperative shell around :mod:`cloud.control.policy`.

``evaluate`` is the one way a point's supply is decided: it locks the points' control
state (in id order, after the caller has moved their wallets, so the lock order is always
wallet → control state), runs the pure policy, records its events, and converges each
channel's **twin** (desired vs reported supply and keep-power) by queuing commands. A
command is queued only where the twin must change, or where it has not converged and
nothing is in flight (re-issued with backoff). A newer supply command supersedes an open
one of the same channel (a top-up landing while a trip is in flight ends supplied).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.control.policy import (
    Calendar,
    ChineseCalendar,
    ControlMemory,
    Decision,
    FriendlyHours,
    KeepPower,
    Override,
    PointPolicy,
    PolicyEvent,
    SupplyState,
    alarm_level,
    alarms_only,
    decide,
    in_arrears,
)
from cloud.db import pg_array, pg_text_array
from cloud.metrics import COMMAND_LATENCY
from cloud.notify import outbox
from cloud.workorders.open import open_work_order
from contract.mqtt import AckStatus, CommandAction

NOTIFY_CHANNEL = "prepay_command"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CALENDAR: Calendar = ChineseCalendar()
SUPPLY_ACTIONS = ("trip", "close", "close_allowed", "valve_open", "valve_close")
KEEP_ACTIONS = ("keep_power_on", "keep_power_off")
Reported = dict[uuid.UUID, tuple[datetime, SupplyState]]  # channel → (at, state)


@dataclass(frozen=True)
class CommandTiming:
    # Short, so a gateway that was away never carries out a stale supply command (it refuses
    # an expired one); the twin re-issues a fresh command when the gateway is back.
    deadline: timedelta = timedelta(minutes=2)
    retry: timedelta = timedelta(seconds=5)
    recharge_deadline: timedelta = timedelta(hours=24)  # idempotent at the meter (count)


@dataclass(frozen=True)
class PointControl:
    """A point as control sees it, loaded and locked by :func:`_load`."""

    id: uuid.UUID
    mode: str  # cloud | meter
    utility: str
    wallet_id: uuid.UUID
    policy: PointPolicy
    memory: ControlMemory
    recheck_at: datetime | None
    channel_id: uuid.UUID | None
    close_only: bool
    twin: tuple[str | None, str | None, datetime | None, bool | None, bool | None]
    meter_balance: Decimal | None
    meter_balance_at: datetime | None
    purchase_count: int | None


_ENSURE_STATES = sa.text(
    "INSERT INTO control_state (service_point_id, tenant_id) "
    "SELECT id, tenant_id FROM service_point WHERE id = ANY(CAST(:ids AS uuid[])) "
    "ORDER BY id ON CONFLICT (service_point_id) DO NOTHING"
)
_LOAD = sa.text(
    "SELECT sp.id, sp.control_mode, sp.utility, sp.credit_limit, sp.emergency_credit, "
    "sp.alarm1, sp.alarm2, a.wallet_id, s.timezone, s.friendly_night_start, "
    "s.friendly_night_end, s.friendly_weekends, s.friendly_holidays, s.notice_minutes, "
    "s.alarm_hysteresis, cs.supply, cs.alarm_level, cs.emergency, cs.notice_at, "
    "cs.deferred_until, cs.keep_power_by, cs.keep_power_reason, cs.keep_power_until, "
    "cs.override, cs.override_by, cs.override_reason, cs.override_until, "
    "cs.override_until_credit, cs.recheck_at, cs.meter_balance, cs.meter_balance_at, "
    "cs.purchase_count, b.channel_id, coalesce(d.close_only, false) AS close_only, "
    "tw.desired, tw.reported, tw.reported_at, tw.desired_keep, tw.reported_keep "
    "FROM control_state cs JOIN service_point sp ON sp.id = cs.service_point_id "
    "JOIN account a ON a.id = sp.account_id JOIN site s ON s.id = sp.site_id "
    "LEFT JOIN binding b ON b.service_point_id = sp.id AND b.removed_at IS NULL "
    "LEFT JOIN channel ch ON ch.id = b.channel_id LEFT JOIN device d ON d.id = ch.device_id "
    "LEFT JOIN supply_twin tw ON tw.channel_id = b.channel_id "
    "WHERE cs.service_point_id = ANY(CAST(:ids AS uuid[])) ORDER BY cs.service_point_id "
    "FOR UPDATE OF cs"
)
_PEEK = sa.text(_LOAD.text.removesuffix("FOR UPDATE OF cs"))


def _policy(r: Any) -> PointPolicy:
    return _policy_of(
        r.timezone,
        r.friendly_night_start,
        r.friendly_night_end,
        r.friendly_weekends,
        r.friendly_holidays,
        r.credit_limit,
        r.emergency_credit,
        r.alarm1,
        r.alarm2,
        r.alarm_hysteresis,
        r.notice_minutes,
    )


@functools.lru_cache(maxsize=4096)
def _policy_of(
    timezone: str,
    night_start: time | None,
    night_end: time | None,
    weekends: bool,
    holidays: bool,
    credit_limit: Decimal,
    emergency_credit: Decimal,
    alarm1: Decimal | None,
    alarm2: Decimal | None,
    hysteresis: Decimal,
    notice_minutes: int,
) -> PointPolicy:
    """Points share a handful of settings: one (immutable) policy object per combination,
    not one per point per batch on the ingest path."""
    friendly = FriendlyHours(timezone, night_start, night_end, weekends, holidays)
    return PointPolicy(
        credit_limit=credit_limit,
        emergency_credit=emergency_credit,
        alarm1=alarm1,
        alarm2=alarm2,
        hysteresis=hysteresis,
        notice=timedelta(minutes=notice_minutes),
        friendly=friendly,
    )


def _memory(r: Any) -> ControlMemory:
    if (
        r.keep_power_by is None
        and r.override is None
        and r.notice_at is None
        and r.deferred_until is None
        and not r.emergency
    ):  # the usual case: one shared object per (supply, alarm level)
        return _plain_memory(r.supply, r.alarm_level)
    keep = (
        KeepPower(r.keep_power_by, r.keep_power_reason or "", r.keep_power_until)
        if r.keep_power_by is not None
        else None
    )
    override = (
        Override(
            SupplyState(r.override),
            r.override_by or "",
            r.override_reason or "",
            r.override_until,
            r.override_until_credit,
        )
        if r.override is not None
        else None
    )
    return ControlMemory(
        supply=SupplyState(r.supply) if r.supply else None,
        alarm_level=r.alarm_level,
        emergency=r.emergency,
        notice_at=r.notice_at,
        keep_power=keep,
        override=override,
        deferred_until=r.deferred_until,
    )


@functools.lru_cache(maxsize=16)
def _plain_memory(supply: str | None, alarm_level: int) -> ControlMemory:
    return ControlMemory(SupplyState(supply) if supply else None, alarm_level)


async def load(
    conn: AsyncConnection, point_ids: Iterable[uuid.UUID], lock: bool = True
) -> list[PointControl]:
    """Load the points' control state in id order; ``lock``: FOR UPDATE, creating the state
    of a point that has none yet (without it, such a point is simply not returned)."""
    wanted = sorted(set(point_ids), key=lambda u: u.int)
    query = _LOAD if lock else _PEEK
    rows = (await conn.execute(query, {"ids": pg_array(wanted)})).all()
    if lock and len(rows) < len(wanted):  # first decision for some: create, then lock
        await conn.execute(_ENSURE_STATES, {"ids": pg_array(wanted)})
        rows = (await conn.execute(_LOAD, {"ids": pg_array(wanted)})).all()
    return [
        PointControl(
            id=r.id,
            mode=r.control_mode,
            utility=r.utility,
            wallet_id=r.wallet_id,
            policy=_policy(r),
            memory=_memory(r),
            recheck_at=r.recheck_at,
            channel_id=r.channel_id,
            close_only=r.close_only,
            twin=(r.desired, r.reported, r.reported_at, r.desired_keep, r.reported_keep),
            meter_balance=r.meter_balance,
            meter_balance_at=r.meter_balance_at,
            purchase_count=r.purchase_count,
        )
        for r in rows
    ]


async def wallet_balances(
    conn: AsyncConnection, wallet_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Decimal]:
    rows = await conn.execute(
        sa.text("SELECT id, balance FROM ledger_account WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": pg_array(set(wallet_ids))},
    )
    return {r[0]: r[1] for r in rows}


@dataclass(frozen=True)
class MeterNews:
    """What a meter-controlled point's meter last said about its own balance."""

    at: datetime
    balance: Decimal | None
    purchase_count: int | None


# :class:`Calm` in SQL, over a point's ``service_point sp``, ``control_state cs`` and
# ``supply_twin tw`` (NULL where a row is missing): the rating paths read it with the marks.
CALM_SQL = (
    "sp.control_mode = 'cloud' AND cs.supply = 'on' AND cs.keep_power_by IS NULL "
    "AND cs.override IS NULL AND cs.notice_at IS NULL AND cs.deferred_until IS NULL "
    "AND NOT cs.emergency AND cs.recheck_at IS NULL "
    "AND (tw.desired_keep IS NULL OR (NOT tw.desired_keep AND tw.reported_keep IS FALSE))"
)


@dataclass(frozen=True)
class Calm:
    """A cloud-controlled point control has nothing pending for (supply on by the balance,
    no keep-power, override, notice, deferral or emergency credit, keep-power converged),
    with what its alarm level depends on."""

    alarm_level: int
    alarm1: Decimal | None
    alarm2: Decimal | None
    hysteresis: Decimal


def stays_calm(
    calm: Calm,
    credit_limit: Decimal,
    balance: Decimal | None,
    twin: Twin,
    news: tuple[datetime, SupplyState] | None,
) -> bool:
    """Whether :func:`evaluate` would find nothing to do for a calm point: its twin stays
    converged on supply (this batch's report included) and its balance, if it moved,
    stays in credit at the same alarm level. Only ever a subset of what evaluate would
    call quiet, so skipping evaluate for it never loses a decision."""
    desired, state, at = twin
    if news is not None and (at is None or at <= news[0]):
        state = news[1].value
    return (
        desired == "on"
        and state == "on"
        and (
            balance is None
            or (
                balance > -credit_limit
                and alarm_level(
                    balance, calm.alarm1, calm.alarm2, calm.hysteresis, calm.alarm_level
                )
                == calm.alarm_level
            )
        )
    )


@dataclass
class Outcome:
    decisions: dict[uuid.UUID, Decision]
    commands: int = 0
    events: int = 0
    unrecorded: Reported = field(default_factory=dict)  # reported states still to write


async def evaluate(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    point_ids: Iterable[uuid.UUID],
    now: datetime,
    timing: CommandTiming,
    balances: dict[uuid.UUID, Decimal] | None = None,
    meter_news: dict[uuid.UUID, MeterNews] | None = None,
    calendar: Calendar = CALENDAR,
    actor: str = "policy",
    retry_now: bool = False,
    reported: Reported | None = None,
) -> Outcome:
    """Decide supply for ``point_ids`` (wallet balances as moved in this transaction, the
    rest read), record events and converge their twins. Returns the decisions.

    The points are first read without a lock: one whose decision changes nothing (the
    ingest path's usual case) costs no write at all. The others are locked, re-read and
    decided again, so a concurrent change is never lost. ``reported``: supply states the
    meters reported in this transaction, not yet in the twins (the caller records them
    after this, keeping the lock order control state → twin)."""
    wanted = set(point_ids)
    raw = await load(conn, wanted, lock=False)
    peeked = _with_reports(raw, reported)
    known = dict(balances or {})
    missing = {p.wallet_id for p in peeked if p.mode == "cloud"} - set(known)
    if missing:
        known.update(await wallet_balances(conn, missing))
    quiet: dict[uuid.UUID, Decision] = {}
    for p in peeked:
        p2, d, _ = _decide(p, known, meter_news, now, calendar)
        if p2 is p and not d.events and _unchanged(p, d) and _converged(p, d):
            quiet[p.id] = d
    busy = wanted - set(quiet)
    outcome = Outcome(quiet, unrecorded=_unrecorded(raw, reported))
    if busy:
        locked = await load(conn, busy)
        more = await evaluate_loaded(
            conn,
            tenant_id,
            _with_reports(locked, reported),
            now,
            timing,
            known,
            meter_news,
            calendar,
            actor,
            retry_now,
            reported,
        )
        outcome.decisions.update(more.decisions)
        outcome.commands, outcome.events = more.commands, more.events
    return outcome


def _with_reports(points: list[PointControl], reported: Reported | None) -> list[PointControl]:
    """The points with their twins' reported state replaced where ``reported`` is newer."""
    if not reported:
        return points
    out = []
    for p in points:
        news = reported.get(p.channel_id) if p.channel_id is not None else None
        desired, _, at, dk, rk = p.twin
        if news is not None and (at is None or at <= news[0]):
            p = replace(p, twin=(desired, news[1].value, news[0], dk, rk))
        out.append(p)
    return out


REPORT_REFRESH = timedelta(minutes=5)


def _unrecorded(points: list[PointControl], reported: Reported | None) -> Reported:
    return unrecorded_reports(
        {p.channel_id: p.twin[:3] for p in points if p.channel_id is not None}, reported
    )


Twin = tuple[str | None, str | None, datetime | None]  # desired, reported, reported at


def unrecorded_reports(
    twins: dict[uuid.UUID, Twin],
    reported: Reported | None,
    only: Iterable[uuid.UUID] | None = None,
) -> Reported:
    """The reported states worth writing to the twins (of ``only`` those channels): those
    that change a twin's state, and a refresh of its time every few minutes; a meter
    repeating what its twin already says costs no write on every batch."""
    out: Reported = {}
    wanted = None if only is None else set(only)
    for channel, (at, state) in (reported or {}).items():
        if wanted is not None and channel not in wanted:
            continue
        twin = twins.get(channel)
        if (
            twin is None
            or twin[1] != state.value
            or twin[2] is None
            or twin[2] + REPORT_REFRESH <= at
        ):
            out[channel] = (at, state)
    return out


def _unchanged(p: PointControl, d: Decision) -> bool:
    return d.memory == p.memory and d.recheck_at == p.recheck_at


def _decide(
    p: PointControl,
    known: dict[uuid.UUID, Decimal],
    meter_news: dict[uuid.UUID, MeterNews] | None,
    now: datetime,
    calendar: Calendar,
) -> tuple[PointControl, Decision, Decimal | None]:
    """The point with any newer meter news applied, its decision, and the balance the
    decision was made on."""
    news = (meter_news or {}).get(p.id)
    if (
        news is not None
        and p.mode == "meter"
        and (p.meter_balance_at is None or p.meter_balance_at < news.at)
    ):
        p = replace(
            p,
            meter_balance=news.balance if news.balance is not None else p.meter_balance,
            meter_balance_at=news.at,
            purchase_count=news.purchase_count
            if news.purchase_count is not None
            else p.purchase_count,
        )
    if p.mode == "cloud":
        return p, decide(known[p.wallet_id], p.policy, p.memory, now, calendar), known[p.wallet_id]
    return p, meter_decision(p, now), p.meter_balance


async def evaluate_loaded(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    points: Sequence[PointControl],
    now: datetime,
    timing: CommandTiming,
    balances: dict[uuid.UUID, Decimal] | None = None,
    meter_news: dict[uuid.UUID, MeterNews] | None = None,
    calendar: Calendar = CALENDAR,
    actor: str = "policy",
    retry_now: bool = False,
    reported: Reported | None = None,
) -> Outcome:
    """:func:`evaluate` for points already loaded and locked. ``retry_now``: a twin that has
    not converged gets its command now, without the backoff (a gateway just came back)."""
    known = dict(balances or {})
    missing = {p.wallet_id for p in points if p.mode == "cloud"} - set(known)
    if missing:
        known.update(await wallet_balances(conn, missing))
    outcome = Outcome({})
    events: list[tuple[uuid.UUID, PolicyEvent, Decimal | None]] = []
    # twins are locked in channel order (as the ingest path records reported states)
    for p0 in sorted(points, key=lambda p: p.channel_id.int if p.channel_id else 0):
        p, d, balance = _decide(p0, known, meter_news, now, calendar)
        if p is not p0:
            await _store_meter_news(conn, p)
        outcome.decisions[p.id] = d
        events += [(p.id, e, balance) for e in d.events]
        if not _unchanged(p, d):
            await store_memory(conn, p.id, d.memory, d.recheck_at, d.reason, now)
        if p.channel_id is not None:
            outcome.commands += await _converge(
                conn, tenant_id, p, d, now, timing, actor, retry_now, reported
            )
    if events:
        await record_events(conn, tenant_id, events, now, actor)
        outcome.events = len(events)
    return outcome


def meter_decision(p: PointControl, now: datetime) -> Decision:
    """A meter-controlled point: alarms from the meter's own balance; the cloud steers its
    supply only on an operator's override; keep-power is still sent to the meter."""
    mem = p.memory
    keep = mem.keep_power if mem.keep_power and mem.keep_power.active(now) else None
    override = mem.override if mem.override and mem.override.active(now) else None
    if (
        override is not None
        and override.until_credit
        and p.meter_balance is not None
        and not in_arrears(p.meter_balance, p.policy)
    ):
        override = None  # the meter has credit again: it decides its supply itself
    mem = replace(mem, keep_power=keep, override=override)
    if p.meter_balance is not None:
        d = alarms_only(p.meter_balance, p.policy, mem)
    else:
        d = Decision(mem.supply or SupplyState.ON, "the meter controls supply", mem)
    # decided again when keep-power or the override ends, with no reading needed
    ends = [t for t in (d.recheck_at, keep and keep.until, override and override.until) if t]
    d = replace(d, recheck_at=min(ends) if ends else None)
    if override is not None:
        return replace(
            d,
            supply=override.supply,
            reason=f"{override.supply} by {override.by}: {override.reason}",
            memory=replace(d.memory, supply=override.supply),
        )
    return d


async def _store_meter_news(conn: AsyncConnection, p: PointControl) -> None:
    await conn.execute(
        sa.text(
            "UPDATE control_state SET meter_balance = :b, meter_balance_at = :at, "
            "purchase_count = greatest(purchase_count, :n) WHERE service_point_id = :p"
        ),
        {"b": p.meter_balance, "at": p.meter_balance_at, "n": p.purchase_count, "p": p.id},
    )


async def store_memory(
    conn: AsyncConnection,
    point_id: uuid.UUID,
    m: ControlMemory,
    recheck_at: datetime | None,
    reason: str,
    now: datetime,
) -> None:
    keep, override = m.keep_power, m.override
    await conn.execute(
        sa.text(
            "UPDATE control_state SET supply = :supply, reason = :reason, alarm_level = :lvl, "
            "emergency = :em, notice_at = :notice, deferred_until = :deferred, "
            "keep_power_by = :kb, keep_power_reason = :kr, keep_power_until = :ku, "
            "override = :o, override_by = :ob, override_reason = :orr, override_until = :ou, "
            "override_until_credit = :oc, recheck_at = :recheck, decided_at = :now "
            "WHERE service_point_id = :p"
        ),
        {
            "supply": m.supply.value if m.supply else None,
            "reason": reason,
            "lvl": m.alarm_level,
            "em": m.emergency,
            "notice": m.notice_at,
            "deferred": m.deferred_until,
            "kb": keep.by if keep else None,
            "kr": keep.reason if keep else None,
            "ku": keep.until if keep else None,
            "o": override.supply.value if override else None,
            "ob": override.by if override else None,
            "orr": override.reason if override else None,
            "ou": override.until if override else None,
            "oc": override.until_credit if override else False,
            "recheck": recheck_at,
            "now": now,
            "p": point_id,
        },
    )


async def record_events(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    events: Sequence[tuple[uuid.UUID, PolicyEvent, Decimal | None]],
    now: datetime,
    actor: str,
) -> None:
    """Control events, and their customers' notifications, in the decision's transaction."""
    result = await conn.execute(
        sa.text(
            "INSERT INTO control_event (id, tenant_id, service_point_id, kind, at, balance, "
            "detail, actor) SELECT gen_random_uuid(), :t, v.p, v.k, :now, v.b, v.d, :actor "
            "FROM unnest(CAST(:p AS uuid[]), CAST(:k AS text[]), CAST(:b AS numeric[]), "
            "CAST(:d AS text[])) AS v(p, k, b, d) RETURNING id"
        ),
        {
            "t": tenant_id,
            "now": now,
            "actor": actor,
            "p": pg_array(p for p, _, _ in events),
            "k": pg_text_array(e.kind.value for _, e, _ in events),
            "b": pg_array(b for _, _, b in events),
            "d": pg_text_array(e.detail for _, e, _ in events),
        },
    )
    await outbox.control_events(conn, tenant_id, [r[0] for r in result], now)


def _supply_wanted(p: PointControl, d: Decision) -> SupplyState | None:
    if p.mode == "meter" and d.memory.override is None:
        return None  # the meter decides
    return d.supply


def _converged(p: PointControl, d: Decision) -> bool:
    """The twin (as loaded) already matches the decision: desired and reported supply both
    as wanted, and keep-power as wanted (or never used on the channel)."""
    if p.channel_id is None:
        return True
    desired, reported, _, desired_keep, reported_keep = p.twin
    want = _supply_wanted(p, d)
    # nothing wanted (the meter decides): converged once no override's wish is left on the
    # twin (see _release)
    supply_ok = desired is None if want is None else desired == want.value == reported
    keep_want = d.memory.keep_power is not None
    keep_ok = (desired_keep is None and not keep_want) or (
        desired_keep == keep_want == reported_keep
    )
    return supply_ok and keep_ok


def supply_action(p: PointControl, supply: SupplyState) -> CommandAction:
    if p.utility == "water":
        return CommandAction.VALVE_OPEN if supply is SupplyState.ON else CommandAction.VALVE_CLOSE
    if supply is SupplyState.OFF:
        return CommandAction.TRIP
    return CommandAction.CLOSE_ALLOWED if p.close_only else CommandAction.CLOSE


async def _converge(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    p: PointControl,
    d: Decision,
    now: datetime,
    timing: CommandTiming,
    actor: str,
    retry_now: bool = False,
    reported: Reported | None = None,
) -> int:
    """Bring the channel's twin to the decision: keep-power first (a trip after keep-power
    ends must reach a meter that no longer refuses it), then supply."""
    assert p.channel_id is not None
    keep_want = d.memory.keep_power is not None
    supply_want = _supply_wanted(p, d)
    if _converged(p, d):
        return 0  # the hot path's usual case: no round trip
    await conn.execute(
        sa.text(
            "INSERT INTO supply_twin (channel_id, tenant_id, desired_reason) VALUES (:c, :t, '') "
            "ON CONFLICT (channel_id) DO NOTHING"
        ),
        {"c": p.channel_id, "t": tenant_id},
    )
    twin = (
        await conn.execute(
            sa.text(
                "SELECT desired, desired_at, reported, reported_at, desired_keep, reported_keep "
                "FROM supply_twin WHERE channel_id = :c FOR UPDATE"
            ),
            {"c": p.channel_id},
        )
    ).one()
    reported_state = twin.reported
    news = (reported or {}).get(p.channel_id)
    if news is not None and (twin.reported_at is None or twin.reported_at <= news[0]):
        await record_reported(conn, p.channel_id, news[1], news[0])
        reported_state = news[1].value
    queued = 0
    at = now
    if keep_want or twin.desired_keep is not None:
        keep_changed = twin.desired_keep is not keep_want
        if keep_changed:
            await conn.execute(
                sa.text("UPDATE supply_twin SET desired_keep = :k WHERE channel_id = :c"),
                {"k": keep_want, "c": p.channel_id},
            )
        if keep_changed or (
            twin.reported_keep is not keep_want
            and await _may_retry(conn, p.channel_id, KEEP_ACTIONS, None, now, timing, retry_now)
        ):
            action = CommandAction.KEEP_POWER_ON if keep_want else CommandAction.KEEP_POWER_OFF
            await enqueue(conn, tenant_id, p, action, {}, d.reason, at, timing, actor, KEEP_ACTIONS)
            queued += 1
            at = at + timedelta(microseconds=1)
    if supply_want is None:
        if twin.desired is not None:  # an override of a meter-controlled point has ended
            queued += await _release(conn, tenant_id, p, reported_state, at, timing, actor)
        return queued
    want = supply_want.value
    action = supply_action(p, supply_want)
    if twin.desired != want:
        await conn.execute(
            sa.text(
                "UPDATE supply_twin SET desired = :d, desired_at = :now, desired_reason = :r "
                "WHERE channel_id = :c"
            ),
            {"d": want, "now": now, "r": d.reason, "c": p.channel_id},
        )
        # A command in flight the other way may still reach the meter: follow it with
        # this one (it supersedes it). Otherwise only a meter not already there gets one.
        if reported_state != want or await _open(conn, p.channel_id, SUPPLY_ACTIONS):
            await enqueue(
                conn, tenant_id, p, action, {}, d.reason, at, timing, actor, SUPPLY_ACTIONS
            )
            return queued + 1
        return queued
    if reported_state == want:
        return queued
    done_if_acked = (
        (action.value, twin.desired_at or EPOCH)
        if action is CommandAction.CLOSE_ALLOWED or reported_state is None
        else None
    )
    if await _may_retry(conn, p.channel_id, SUPPLY_ACTIONS, done_if_acked, now, timing, retry_now):
        await enqueue(conn, tenant_id, p, action, {}, d.reason, at, timing, actor, SUPPLY_ACTIONS)
        queued += 1
    return queued


async def _release(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    p: PointControl,
    reported_state: str | None,
    now: datetime,
    timing: CommandTiming,
    actor: str,
) -> int:
    """A meter-controlled point's override has ended (expired, or lifted when the meter had
    credit again): the relay is left as the meter itself would have it — closed unless its
    own balance is in arrears (a meter trips itself when its credit runs out, but does not
    close a relay a remote trip opened) — and the twin wants nothing any more."""
    arrears = p.meter_balance is not None and in_arrears(p.meter_balance, p.policy)
    verdict = SupplyState.OFF if arrears else SupplyState.ON
    reason = "the override ended: the meter decides its supply again"
    await conn.execute(
        sa.text(
            "UPDATE supply_twin SET desired = NULL, desired_at = :now, desired_reason = :r "
            "WHERE channel_id = :c"
        ),
        {"now": now, "r": reason, "c": p.channel_id},
    )
    assert p.channel_id is not None
    if reported_state == verdict.value and not await _open(conn, p.channel_id, SUPPLY_ACTIONS):
        return 0
    action = supply_action(p, verdict)
    await enqueue(conn, tenant_id, p, action, {}, reason, now, timing, actor, SUPPLY_ACTIONS)
    return 1


async def cut_for_closure(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    point_ids: Iterable[uuid.UUID],
    reason: str,
    now: datetime,
    timing: CommandTiming,
    actor: str,
) -> int:
    """消户: each cloud-controlled point still bound to its meter has its supply cut (relay
    open, valve closed), in the closure's transaction: the meter stays at the premises and
    nobody would be charged for what it supplied. Keep-power is lifted first (the closure
    has ended the order). A meter-controlled point's meter holds no credit by then (the
    closure waits for it) and cuts itself. Returns the commands queued."""
    queued = 0
    for p in await load(conn, point_ids):
        if p.mode != "cloud" or p.channel_id is None:
            continue
        memory = ControlMemory(SupplyState.OFF, p.memory.alarm_level)
        decision = Decision(SupplyState.OFF, reason, memory)
        queued += await _converge(conn, tenant_id, p, decision, now, timing, actor)
        await conn.execute(
            sa.text("UPDATE control_state SET supply = 'off' WHERE service_point_id = :p"),
            {"p": p.id},
        )
    return queued


async def _open(conn: AsyncConnection, channel_id: uuid.UUID, family: tuple[str, ...]) -> bool:
    return bool(
        await conn.scalar(
            sa.text(
                "SELECT 1 FROM device_command WHERE channel_id = :c AND state IN "
                "('queued', 'sent') AND action = ANY(CAST(:f AS text[])) LIMIT 1"
            ),
            {"c": channel_id, "f": pg_text_array(family)},
        )
    )


async def _may_retry(
    conn: AsyncConnection,
    channel_id: uuid.UUID,
    family: tuple[str, ...],
    done_if_acked: tuple[str, datetime] | None,
    now: datetime,
    timing: CommandTiming,
    retry_now: bool = False,
) -> bool:
    """A twin that has not converged gets a fresh command only when none of its family is in
    flight and the last one finished long enough ago (backoff doubling per failed attempt
    since the last success, up to 64 × the retry interval). ``done_if_acked`` (action,
    since): an ack of that action since then ends the retrying — a close-allowed waits for
    the tenant's button, and a meter that cannot report its state has said it is done."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE state IN ('queued', 'sent')) AS open, "
                "max(finished_at) AS last, count(*) FILTER (WHERE state IN ('failed', 'expired') "
                "AND created_at > coalesce((SELECT max(created_at) FROM device_command "
                "WHERE channel_id = :c AND state = 'acked' AND action = ANY(CAST(:f AS text[]))),"
                " '-infinity')) AS failures, "
                "bool_or(state = 'acked' AND action = :done AND created_at >= :since) "
                "AS done FROM device_command WHERE channel_id = :c "
                "AND action = ANY(CAST(:f AS text[]))"
            ),
            {
                "c": channel_id,
                "f": pg_text_array(family),
                "done": done_if_acked[0] if done_if_acked else "",
                "since": done_if_acked[1] if done_if_acked else now,
            },
        )
    ).one()
    if row.open or row.done:
        return False
    if row.last is None or retry_now:
        return True
    backoff = timing.retry * (2 ** min(int(row.failures or 0), 6))
    return bool(row.last + backoff <= now)


async def enqueue(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    p: PointControl,
    action: CommandAction,
    params: dict[str, str],
    reason: str,
    now: datetime,
    timing: CommandTiming,
    origin: str,
    supersedes: tuple[str, ...] = (),
    deadline: timedelta | None = None,
) -> uuid.UUID:
    """Queue a command for the point's channel; an open command of the ``supersedes``
    family on that channel is superseded by it (the newest decision wins)."""
    command_id = uuid.uuid4()
    await conn.execute(
        sa.text(
            "INSERT INTO device_command (id, tenant_id, gateway_id, channel_id, "
            "service_point_id, action, params, state, reason, created_at, deadline, attempts, "
            "result, origin) SELECT :id, :t, d.gateway_id, ch.id, :p, :action, "
            "CAST(:params AS jsonb), 'queued', :reason, :now, :deadline, 0, '{}'::jsonb, :o "
            "FROM channel ch JOIN device d ON d.id = ch.device_id WHERE ch.id = :c"
        ),
        {
            "id": command_id,
            "t": tenant_id,
            "p": p.id,
            "action": action.value,
            "params": json.dumps(params),
            "reason": reason,
            "now": now,
            "deadline": now + (deadline or timing.deadline),
            "o": origin,
            "c": p.channel_id,
        },
    )
    if supersedes:
        await conn.execute(
            sa.text(
                "UPDATE device_command SET state = 'superseded', superseded_by = :id, "
                "finished_at = :now WHERE channel_id = :c AND state IN ('queued', 'sent') "
                "AND action = ANY(CAST(:f AS text[])) AND id <> :id"
            ),
            {"id": command_id, "now": now, "c": p.channel_id, "f": pg_text_array(supersedes)},
        )
    await conn.execute(
        sa.text("SELECT pg_notify(:ch, :t)"), {"ch": NOTIFY_CHANNEL, "t": str(tenant_id)}
    )
    return command_id


async def record_reported(
    conn: AsyncConnection, channel_id: uuid.UUID, supply: SupplyState, at: datetime
) -> None:
    """The device's own word on its supply state; older news never overwrites newer."""
    await conn.execute(
        sa.text(
            "UPDATE supply_twin SET reported = :s, reported_at = :at WHERE channel_id = :c "
            "AND (reported_at IS NULL OR reported_at <= :at)"
        ),
        {"s": supply.value, "at": at, "c": channel_id},
    )


async def record_reported_many(
    conn: AsyncConnection, latest: dict[uuid.UUID, tuple[datetime, SupplyState]]
) -> None:
    """:func:`record_reported` for a batch of channels in one statement (in channel order)."""
    if not latest:
        return
    channels = sorted(latest)
    await conn.execute(
        sa.text(
            "INSERT INTO supply_twin (channel_id, tenant_id, desired_reason, reported, "
            "reported_at) SELECT v.c, ch.tenant_id, '', v.s, v.at FROM unnest("
            "CAST(:c AS uuid[]), CAST(:s AS text[]), CAST(:at AS timestamptz[])) AS v(c, s, at) "
            "JOIN channel ch ON ch.id = v.c ORDER BY v.c "
            "ON CONFLICT (channel_id) DO UPDATE SET reported = excluded.reported, "
            "reported_at = excluded.reported_at WHERE supply_twin.reported_at IS NULL "
            "OR supply_twin.reported_at <= excluded.reported_at"
        ),
        {
            "c": pg_array(channels),
            "s": pg_text_array(latest[c][1].value for c in channels),
            "at": pg_array(latest[c][0] for c in channels),
        },
    )


_FINAL = {
    AckStatus.OK: "acked",
    AckStatus.FAILED: "failed",
    AckStatus.EXPIRED: "expired",
    AckStatus.INVALID: "failed",
    AckStatus.SUPERSEDED: "superseded",
}


async def apply_ack(
    conn: AsyncConnection,
    command_id: uuid.UUID,
    status: AckStatus,
    result: dict[str, str],
    reported: SupplyState | None,
    at: datetime,
) -> bool:
    """Close an open command with the gateway's answer. A duplicate or late ack (for a command
    already acked, superseded or expired) changes nothing and returns False; the meter's
    reported state in it is still news (record_reported keeps the newest)."""
    row = (
        await conn.execute(
            sa.text(
                "UPDATE device_command SET state = :s, finished_at = :at, result = "
                "CAST(:r AS jsonb) WHERE id = :id AND state IN ('queued', 'sent') "
                "RETURNING channel_id, action, params, service_point_id, tenant_id, created_at"
            ),
            {"s": _FINAL[status], "at": at, "r": json.dumps(result), "id": command_id},
        )
    ).first()
    changed = row is not None
    if row is not None:
        seconds = max((at - row.created_at).total_seconds(), 0.0)
        COMMAND_LATENCY.labels(_FINAL[status]).observe(seconds)
    if row is None:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT channel_id, action, params, service_point_id, tenant_id "
                    "FROM device_command WHERE id = :id"
                ),
                {"id": command_id},
            )
        ).first()
    if row is None:
        return False
    if reported is not None:
        await record_reported(conn, row.channel_id, reported, at)
    if status is AckStatus.OK and row.action in KEEP_ACTIONS:
        await conn.execute(
            sa.text(
                "UPDATE supply_twin SET reported_keep = :k, reported_keep_at = :at "
                "WHERE channel_id = :c AND (reported_keep_at IS NULL OR reported_keep_at <= :at)"
            ),
            {"k": row.action == "keep_power_on", "at": at, "c": row.channel_id},
        )
    if changed and row.action == "recharge" and row.service_point_id is not None:
        if status is AckStatus.OK:
            await conn.execute(
                sa.text(
                    "UPDATE control_state SET purchase_count = greatest(purchase_count, :n) "
                    "WHERE service_point_id = :p"
                ),
                {"n": int(row.params.get("purchase_count", 0)), "p": row.service_point_id},
            )
        else:
            await open_work_order(
                conn,
                row.tenant_id,
                "recharge_failed",
                row.service_point_id,
                row.channel_id,
                at,
                _recharge_failure(row, status, result),
            )
    return changed


async def expire_overdue(conn: AsyncConnection, now: datetime) -> int:
    """Open commands past their deadline expire. An undelivered recharge becomes a work
    order: the money is safe in the wallet and the meter never took that purchase count."""
    rows = (
        await conn.execute(
            sa.text(
                "UPDATE device_command SET state = 'expired', finished_at = :now "
                "WHERE state IN ('queued', 'sent') AND deadline <= :now "
                "RETURNING id, tenant_id, action, service_point_id, channel_id, params"
            ),
            {"now": now},
        )
    ).all()
    for r in rows:
        if r.action == "recharge" and r.service_point_id is not None:
            detail = _recharge_failure(r, AckStatus.EXPIRED, {"command": str(r.id)})
            await open_work_order(
                conn, r.tenant_id, "recharge_failed", r.service_point_id, r.channel_id, now, detail
            )
    return len(rows)


async def after_topup(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    amount: Decimal,
    cause: str,
    now: datetime,
    timing: CommandTiming,
    actor: str,
) -> int:
    """A top-up just credited the account's wallet (in this transaction): cloud-controlled
    points are re-decided at once (restoring supply, superseding an in-flight trip);
    a meter-controlled point gets a recharge command with the amount and the meter's next
    purchase count. Returns the commands queued."""
    ids = [
        r[0]
        for r in await conn.execute(
            sa.text("SELECT id FROM service_point WHERE account_id = :a AND NOT common_area"),
            {"a": account_id},
        )
    ]
    if not ids:
        return 0
    points = await load(conn, ids)
    outcome = await evaluate_loaded(conn, tenant_id, points, now, timing, actor=actor)
    meter_points = [p for p in points if p.mode == "meter" and p.channel_id is not None]
    if len(meter_points) > 1:
        await open_work_order(
            conn,
            tenant_id,
            "recharge_ambiguous",
            meter_points[0].id,
            meter_points[0].channel_id,
            now,
            {"cause": cause, "amount": str(amount), "points": str(len(meter_points))},
        )
        return outcome.commands
    for p in meter_points:
        if p.purchase_count is None:
            await open_work_order(
                conn,
                tenant_id,
                "recharge_unknown_count",
                p.id,
                p.channel_id,
                now,
                {"cause": cause, "amount": str(amount)},
            )
            continue
        # The next count after the meter's own (mirrored from its readings and acked
        # recharges) and after any recharge still on its way; a failed one is not counted.
        in_flight = await conn.scalar(
            sa.text(
                "SELECT max((params->>'purchase_count')::int) FROM device_command "
                "WHERE service_point_id = :p AND action = 'recharge' "
                "AND state IN ('queued', 'sent')"
            ),
            {"p": p.id},
        )
        count = max(p.purchase_count, in_flight or 0) + 1
        params = {"amount": str(amount), "purchase_count": str(count), "cause": cause}
        await enqueue(
            conn,
            tenant_id,
            p,
            CommandAction.RECHARGE,
            params,
            f"top-up {cause}",
            now,
            timing,
            actor,
            deadline=timing.recharge_deadline,
        )
        outcome.commands += 1
    return outcome.commands


def _recharge_failure(row: Any, status: AckStatus, result: dict[str, str]) -> dict[str, str]:
    """A failed or undelivered recharge's work-order detail: its params and the outcome."""
    return {**row.params, "status": status.value, **result}


_DUE_POINTS = sa.text(
    "SELECT service_point_id FROM control_state WHERE recheck_at <= :now "
    "UNION SELECT b.service_point_id FROM supply_twin tw "
    "JOIN binding b ON b.channel_id = tw.channel_id AND b.removed_at IS NULL "
    "JOIN channel ch ON ch.id = tw.channel_id JOIN device d ON d.id = ch.device_id "
    "JOIN gateway g ON g.id = d.gateway_id "
    "WHERE (g.online OR g.last_seen_at IS NULL) "
    "AND ((tw.desired IS NOT NULL AND tw.desired IS DISTINCT FROM tw.reported) "
    "OR (tw.desired_keep IS NOT NULL AND tw.desired_keep IS DISTINCT FROM tw.reported_keep)) "
    "LIMIT 2000"
)


async def sweep_tenant(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    now: datetime,
    timing: CommandTiming,
    gateway_id: uuid.UUID | None = None,
) -> Outcome:
    """Re-decide the points whose decision is due (a notice or friendly period ended,
    keep-power or an override expired) and those whose twin has not converged on an
    online gateway (a command failed or expired, or the gateway just came back): they get
    a fresh command for the current desired state, never a stale one."""
    if gateway_id is not None:
        ids = [
            r[0]
            for r in await conn.execute(
                sa.text(
                    "SELECT b.service_point_id FROM supply_twin tw "
                    "JOIN binding b ON b.channel_id = tw.channel_id AND b.removed_at IS NULL "
                    "JOIN channel ch ON ch.id = tw.channel_id "
                    "JOIN device d ON d.id = ch.device_id WHERE d.gateway_id = :g "
                    "AND ((tw.desired IS NOT NULL AND tw.desired IS DISTINCT FROM tw.reported) "
                    "OR (tw.desired_keep IS NOT NULL "
                    "AND tw.desired_keep IS DISTINCT FROM tw.reported_keep))"
                ),
                {"g": gateway_id},
            )
        ]
    else:
        ids = [r[0] for r in await conn.execute(_DUE_POINTS, {"now": now})]
    if not ids:
        return Outcome({})
    return await evaluate(conn, tenant_id, ids, now, timing, retry_now=gateway_id is not None)
