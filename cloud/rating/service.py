"""Rating service: advance each point's mark under a row lock, post usage, steer supply.

Per batch, whatever its size: one locking SELECT of the points' marks (in id order), one
query for their tariffs, one ``UPDATE … FROM unnest(…)`` of the marks, one batch of ledger
writes (live wallet balances for rated usage, journal entries for closed hourly windows and
monthly fees), one query of supply twins — and a command only where supply must change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.aio import raise_if_cancelled
from cloud.control import service as control
from cloud.control.service import CommandTiming, MeterNews, Reported, record_reported_many
from cloud.db import Database, pg_array, pg_text_array
from cloud.ledger import core as ledger
from cloud.ledger.service import ensure_accounts, post_many
from cloud.rating import fast as fast_rating
from cloud.rating.core import (
    Anomaly,
    PointTerms,
    RatingMark,
    RatingOutcome,
    RegisterReading,
    envelope,
    flush,
    limits_for,
    rate,
)
from cloud.tariffs.core import Tariff, TariffVersion, plan_from_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PointReading:
    service_point_id: uuid.UUID
    channel_id: uuid.UUID
    reading: RegisterReading


@dataclass
class RatingReport:
    points: int = 0
    charged: Decimal = Decimal(0)  # billed now (live balances), fen
    journaled: Decimal = Decimal(0)  # moved into the journal (closed windows, fees), fen
    anomalies: list[Anomaly] = field(default_factory=list)
    late: int = 0
    commands: int = 0


@dataclass(frozen=True)
class _Point:
    id: uuid.UUID
    mark: RatingMark
    terms: PointTerms
    utility: str
    wallet: ledger.AccountRef
    wallet_id: uuid.UUID
    control_mode: str
    credit_limit: Decimal
    channel_id: uuid.UUID | None
    twin: tuple[str | None, str | None, datetime | None]  # desired, reported, reported at
    calm: control.Calm | None = None  # control has nothing pending for the point
    terms_version: int = 0  # the tenant's "terms" counter when the terms were read
    revenue_id: uuid.UUID | None = None  # the utility's revenue account, once there is one


_BY_INT = attrgetter("int")  # PostgreSQL's uuid order, without uuid.__lt__ in Python
_SELECT_STATES = sa.text(
    "SELECT rs.*, sp.tariff_id, sp.utility, sp.credit_limit, sp.control_mode, sp.max_rate, "
    "sp.common_area, a.id AS account_id, a.number AS account_number, a.wallet_id, "
    "s.timezone, tw.desired AS twin_desired, tw.reported AS twin_reported, "
    "tw.reported_at AS twin_reported_at, "
    f"({control.CALM_SQL}) IS TRUE AS control_calm, "  # nothing pending: control.Calm
    "cs.alarm_level, sp.alarm1, sp.alarm2, s.alarm_hysteresis, "
    "(SELECT r.id FROM ledger_account r WHERE r.code = 'revenue:' || sp.utility) AS revenue_id "
    "FROM rating_state rs JOIN service_point sp ON sp.id = rs.service_point_id "
    "JOIN account a ON a.id = sp.account_id JOIN site s ON s.id = sp.site_id "
    "LEFT JOIN supply_twin tw ON tw.channel_id = rs.channel_id "
    "LEFT JOIN control_state cs ON cs.service_point_id = rs.service_point_id "
    "WHERE rs.service_point_id = ANY(CAST(:ids AS uuid[])) ORDER BY rs.service_point_id "
    "FOR UPDATE OF rs"
)
_UPDATE_STATES = sa.text(
    "UPDATE rating_state rs SET last_measured_at = v.at, last_register = v.reg, "
    "last_tou = CAST(v.tou AS numeric[]), consumption_total = v.ct, charge_exact_total = v.ex, "
    "charge_billed_total = v.bi, charge_posted_total = v.po, cycle = v.cy, "
    "cycle_consumption = v.cc, window_start = v.ws, fee_month = v.fm, stuck = v.st, "
    "channel_id = coalesce(v.ch, rs.channel_id), fast_until = v.fu, fast_terms = v.ft, "
    "fast_price = v.fp, fast_tou = CAST(v.fo AS numeric[]), fast_tiered = v.fi, "
    "fast_block_end = v.fb, fast_limits = CAST(v.fl AS numeric[]), fast_wallet = v.fw, "
    "fast_revenue = v.fr, first_measured_at = v.fa, first_register = v.fg "
    "FROM unnest("
    "CAST(:p AS uuid[]), CAST(:at AS timestamptz[]), CAST(:reg AS numeric[]), "
    "CAST(:tou AS text[]), CAST(:ct AS numeric[]), CAST(:ex AS numeric[]), "
    "CAST(:bi AS numeric[]), CAST(:po AS numeric[]), CAST(:cy AS text[]), "
    "CAST(:cc AS numeric[]), CAST(:ws AS timestamptz[]), CAST(:fm AS text[]), "
    "CAST(:st AS boolean[]), CAST(:ch AS uuid[]), CAST(:fu AS timestamptz[]), "
    "CAST(:ft AS bigint[]), CAST(:fp AS numeric[]), CAST(:fo AS text[]), "
    "CAST(:fi AS boolean[]), CAST(:fb AS numeric[]), CAST(:fl AS text[]), "
    "CAST(:fw AS uuid[]), CAST(:fr AS uuid[]), CAST(:fa AS timestamptz[]), "
    "CAST(:fg AS numeric[])) "
    "AS v(p, at, reg, tou, ct, ex, bi, po, cy, cc, ws, fm, st, ch, fu, ft, fp, fo, fi, fb, fl, "
    "fw, fr, fa, fg) WHERE rs.service_point_id = v.p"
)
_INSERT_WORK_ORDERS = sa.text(
    "INSERT INTO work_order (id, tenant_id, kind, service_point_id, channel_id, detail, status, "
    "created_at) SELECT gen_random_uuid(), :t, k, p, c, CAST(d AS jsonb), 'open', :now "
    "FROM unnest(CAST(:k AS text[]), CAST(:p AS uuid[]), CAST(:c AS uuid[]), "
    "CAST(:d AS text[])) AS v(k, p, c, d)"
)


def _tou(values: Sequence[Decimal] | None) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
    if values is None or len(values) != 4:
        return None
    return (values[0], values[1], values[2], values[3])


async def _tariffs(conn: AsyncConnection, tariff_ids: set[uuid.UUID]) -> dict[uuid.UUID, Tariff]:
    versions: dict[uuid.UUID, list[TariffVersion]] = defaultdict(list)
    rows = await conn.execute(
        sa.text(
            "SELECT tariff_id, effective_from, kind, unit_price, spec, monthly_fee "
            "FROM tariff_version WHERE tariff_id = ANY(CAST(:ids AS uuid[])) "
            "ORDER BY effective_from"
        ),
        {"ids": pg_array(sorted(tariff_ids))},
    )
    for r in rows:
        plan = plan_from_spec(r.kind, r.spec or {}, r.unit_price)
        versions[r.tariff_id].append(TariffVersion(r.effective_from, plan, r.monthly_fee))
    return {t: Tariff(tuple(v)) for t, v in versions.items()}


async def load_points(conn: AsyncConnection, point_ids: Sequence[uuid.UUID]) -> list[_Point]:
    """Lock the points' marks (in id order) and load what rating them needs."""
    ids = sorted(set(point_ids), key=_BY_INT)
    if not ids:
        return []
    arr = pg_array(ids)
    # Before the terms are read: a change committed after this voids the envelopes below.
    terms_version = int(await conn.scalar(sa.text(fast_rating.TERMS)) or 0)
    rows = (await conn.execute(_SELECT_STATES, {"ids": arr})).all()
    if len(rows) < len(ids):
        await conn.execute(fast_rating.INSERT_STATES, {"ids": arr})
        rows = (await conn.execute(_SELECT_STATES, {"ids": arr})).all()
    tariffs = await _tariffs(conn, {r.tariff_id for r in rows})
    terms: dict[tuple[object, ...], PointTerms] = {}  # most points of a batch share terms
    points = []
    for r in rows:
        key = (r.tariff_id, r.timezone, r.utility, r.max_rate, r.common_area)
        t = terms.get(key)
        if t is None:
            t = terms[key] = PointTerms(
                tariffs[r.tariff_id],
                ZoneInfo(r.timezone),
                limits_for(r.utility, r.max_rate),
                charged=not r.common_area,
            )
        points.append(
            _Point(
                id=r.service_point_id,
                mark=RatingMark(
                    r.last_measured_at,
                    r.last_register,
                    _tou(r.last_tou),
                    r.consumption_total,
                    r.charge_exact_total,
                    r.charge_billed_total,
                    r.charge_posted_total,
                    r.cycle,
                    r.cycle_consumption,
                    r.window_start,
                    r.fee_month,
                    r.stuck,
                    r.first_measured_at,
                    r.first_register,
                ),
                terms=t,
                utility=r.utility,
                wallet=ledger.wallet(r.account_id, r.account_number),
                wallet_id=r.wallet_id,
                control_mode=r.control_mode,
                credit_limit=r.credit_limit,
                channel_id=r.channel_id,
                twin=(r.twin_desired, r.twin_reported, r.twin_reported_at),
                calm=control.Calm(r.alarm_level, r.alarm1, r.alarm2, r.alarm_hysteresis)
                if r.control_calm
                else None,
                terms_version=terms_version,
                revenue_id=r.revenue_id,
            )
        )
    return points


def _tou_text(tou: tuple[Decimal, ...] | None) -> str | None:
    return None if tou is None else "{" + ",".join(str(v) for v in tou) + "}"


def _envelopes(
    marks: list[tuple[_Point, RatingMark, uuid.UUID | None]], revenues: dict[str, uuid.UUID]
) -> dict[str, str]:
    """The ``_UPDATE_STATES`` parameters of each point's envelope after ``marks``
    (``revenues``: utility → revenue account, for points that did not know theirs)."""
    found = [envelope(m, p.terms) for p, m, _ in marks]
    return {
        "fu": pg_array(e.until if e else None for e in found),
        "ft": pg_array(p.terms_version for p, _, _ in marks),
        "fp": pg_array(e.price if e else None for e in found),
        "fo": pg_text_array(_tou_text(e.tou_prices) if e else None for e in found),
        "fi": pg_array(bool(e and e.tiered) for e in found),
        "fb": pg_array(e.block_end if e else None for e in found),
        "fl": pg_text_array(_tou_text(e.limits) if e else None for e in found),
        "fw": pg_array(p.wallet_id for p, _, _ in marks),
        "fr": pg_array(p.revenue_id or revenues.get(p.utility) for p, _, _ in marks),
    }


async def persist(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    outcomes: Sequence[tuple[_Point, RatingOutcome, uuid.UUID | None]],
    now: datetime,
    timing: CommandTiming,
    actor: str = "rating",
    reported: Reported | None = None,
    fast: bool = False,
    changed: Reported | None = None,
) -> RatingReport:
    """Write the marks, work orders and money of ``outcomes`` (point, outcome, channel),
    record the supply states meters ``reported``, and steer the supply of the
    cloud-controlled points among them. ``fast``: the points :mod:`cloud.rating.fast` rated
    in this transaction are in its table; their wallets move with the others, and those
    control must look at are steered with the others; ``changed``: those of ``reported``
    that change a twin's state.

    Locks are taken in one order everywhere: rating marks (by point), ledger accounts (by
    id), control state (by point), then supply twins (by channel) — so concurrent workers,
    top-ups and operators never deadlock."""
    report = RatingReport(points=len(outcomes))
    if not outcomes and not fast:
        await record_reported_many(conn, reported or {})
        return report
    marks = [(p, o.mark, ch) for p, o, ch in outcomes]
    if marks:
        await _update_marks(conn, tenant_id, marks)
    orders = [(p, a, ch or p.channel_id) for p, o, ch in outcomes for a in o.anomalies]
    if orders:
        await conn.execute(
            _INSERT_WORK_ORDERS,
            {
                "t": tenant_id,
                "now": now,
                "k": pg_text_array(a.kind.value for _, a, _ in orders),
                "p": pg_array(p.id for p, _, _ in orders),
                "c": pg_array(ch for _, _, ch in orders),
                "d": pg_text_array(_detail(a) for _, a, _ in orders),
            },
        )
        report.anomalies = [a for _, a, _ in orders]
    drafts: list[ledger.EntryDraft] = []
    live: dict[ledger.AccountRef, Decimal] = defaultdict(Decimal)
    for p, o, _ in outcomes:
        report.late += o.late
        report.charged += o.billed
        if o.billed:
            live[p.wallet] -= o.billed
        revenue = ledger.revenue(p.utility)
        for u in o.postings:
            drafts.append(
                ledger.EntryDraft(
                    idempotency_key=u.key(p.id),
                    kind=ledger.EntryKind.USAGE,
                    actor=actor,
                    effective_at=u.effective_at,
                    legs=ledger.usage(p.wallet, revenue, u.amount),
                    reason=f"usage {u.window_start.isoformat()} to {u.effective_at.isoformat()}",
                    settles=p.wallet.code,
                )
            )
            report.journaled += u.amount
        for f in o.fees:
            drafts.append(
                ledger.EntryDraft(
                    idempotency_key=f.key(p.id),
                    kind=ledger.EntryKind.FIXED_CHARGE,
                    actor=actor,
                    effective_at=f.effective_at,
                    legs=ledger.usage(p.wallet, revenue, f.amount),
                    reason=f"monthly fee {f.month}",
                )
            )
            report.charged += f.amount
            report.journaled += f.amount
    known = {p.wallet.code: (p.wallet_id, p.wallet.normal_side) for p, _, _ in outcomes}
    batch = await post_many(
        conn, tenant_id, drafts, live, known, live_from=fast_rating.LIVE if fast else None
    )
    cloud = [
        (p, ch or p.channel_id) for p, _, ch in outcomes if p.terms.charged and (ch or p.channel_id)
    ]
    balances = batch.balances
    if fast:
        busy = await fast_rating.busy_points(conn, changed or {})
        if busy:
            more = await load_points(conn, list(busy))
            cloud += [(p, p.channel_id) for p in more if p.terms.charged and p.channel_id]
            balances = {
                **{p.wallet_id: b for p in more if (b := busy[p.id]) is not None},
                **balances,
            }
    unrecorded = reported or {}
    if cloud:
        report.commands, unrecorded = await _steer(
            conn, tenant_id, cloud, balances, reported or {}, now, timing
        )
    # Last: the twins' lock comes after the control state's, as on every other path.
    await record_reported_many(conn, unrecorded)
    return report


async def _update_marks(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    marks: list[tuple[_Point, RatingMark, uuid.UUID | None]],
) -> None:
    # The revenue account a point's closed windows post to, made now if it is not there
    # yet: with it in the envelope, the fast path posts the next closed window itself.
    missing = {p.utility for p, _, _ in marks if p.revenue_id is None}
    revenues: dict[str, uuid.UUID] = {}
    if missing:
        found = await ensure_accounts(conn, tenant_id, [ledger.revenue(u) for u in missing])
        revenues = {u: found[ledger.revenue(u).code][0] for u in missing}
    await conn.execute(
        _UPDATE_STATES,
        {
            "p": pg_array(p.id for p, _, _ in marks),
            "at": pg_array(m.last_measured_at for _, m, _ in marks),
            "reg": pg_array(m.last_register for _, m, _ in marks),
            "tou": pg_text_array(_tou_text(m.last_tou) for _, m, _ in marks),
            "ct": pg_array(m.consumption_total for _, m, _ in marks),
            "ex": pg_array(m.exact_total for _, m, _ in marks),
            "bi": pg_array(m.billed_total for _, m, _ in marks),
            "po": pg_array(m.posted_total for _, m, _ in marks),
            "cy": pg_text_array(m.cycle for _, m, _ in marks),
            "cc": pg_array(m.cycle_consumption for _, m, _ in marks),
            "ws": pg_array(m.window_start for _, m, _ in marks),
            "fm": pg_text_array(m.fee_month for _, m, _ in marks),
            "st": pg_array(m.stuck for _, m, _ in marks),
            "ch": pg_array(ch for _, _, ch in marks),
            "fa": pg_array(m.first_measured_at for _, m, _ in marks),
            "fg": pg_array(m.first_register for _, m, _ in marks),
            **_envelopes(marks, revenues),
        },
    )


async def _steer(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    points: list[tuple[_Point, uuid.UUID | None]],
    moved: dict[uuid.UUID, Decimal],
    reported: Reported,
    now: datetime,
    timing: CommandTiming,
) -> tuple[int, Reported]:
    """Re-decide supply for the rated points (their wallets as just moved): the control
    policy, its events and the twins (with this batch's reported states, newer where
    newer). Returns the commands queued and the reported states still to record."""
    meter_channels = [ch for p, ch in points if p.control_mode == "meter" and ch is not None]
    news: dict[uuid.UUID, MeterNews] = {}
    if meter_channels:
        by_channel = {ch: p.id for p, ch in points if ch is not None}
        rows = await conn.execute(
            sa.text(
                "SELECT DISTINCT ON (channel_id) channel_id, measured_at, meter_balance, "
                "purchase_count FROM reading WHERE channel_id = ANY(CAST(:c AS uuid[])) "
                "AND (meter_balance IS NOT NULL OR purchase_count IS NOT NULL) "
                "ORDER BY channel_id, measured_at DESC"
            ),
            {"c": pg_array(meter_channels)},
        )
        news = {by_channel[r[0]]: MeterNews(r[1], r[2], r[3]) for r in rows}
    # The usual case costs nothing here: a point control has nothing pending for, whose
    # twin stays converged and whose balance stays in credit at the same alarm level.
    calm = {
        ch: p.twin
        for p, ch in points
        if ch is not None
        and ch == p.channel_id
        and p.calm is not None
        and control.stays_calm(
            p.calm, p.credit_limit, moved.get(p.wallet_id), p.twin, reported.get(ch)
        )
    }
    busy = [p.id for p, ch in points if ch not in calm]
    if not busy:
        return 0, control.unrecorded_reports(calm, reported)
    outcome = await control.evaluate(
        conn, tenant_id, busy, now, timing, moved, news, reported=reported
    )
    unrecorded = {ch: n for ch, n in outcome.unrecorded.items() if ch not in calm}
    unrecorded.update(control.unrecorded_reports(calm, reported, only=calm))
    return outcome.commands, unrecorded


def _detail(a: Anomaly) -> str:
    doc: dict[str, Any] = {"measured_at": a.measured_at.isoformat(), "detail": a.detail}
    if a.charged is not None:
        doc["charged_consumption"] = str(a.charged)
    return json.dumps(doc, ensure_ascii=False)


async def rate_staged(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    points: int,
    skipped: set[int],
    now: datetime,
    timing: CommandTiming,
    registry: int | None = None,
) -> RatingReport:
    """Rate the readings the ingest staged (:data:`cloud.rating.fast.STAGED`) and stored —
    all but the rows ``skipped`` — of the ``points`` (how many) service points the staged
    rows are bound to: set-based where each point's envelope allows it, the rest by the
    Python core, under one lock order. Late and duplicate readings never charge twice: each
    point's mark only moves forward, under a row lock."""
    reported, changed = await fast_rating.reports(conn, skipped)
    if not points:
        await record_reported_many(conn, reported)
        return RatingReport()
    await fast_rating.lock_marks(conn, points)
    if registry is not None:
        # The map the rows were staged by (``registry``, its version) may have changed
        # since: a 过户 or 拆表 that committed meanwhile retired the point a row names. Its
        # mark is locked now, so the bindings read next are the ones that stay.
        await fast_rating.rebind_if_changed(conn, registry)
    rated = await fast_rating.rate_in_place(conn, tenant_id, skipped)
    slow = rated.slow
    outcomes = []
    if slow:
        by_point: dict[uuid.UUID, list[PointReading]] = defaultdict(list)
        for sp, ch, at, total, tou, power in await fast_rating.staged_readings(conn, slow, skipped):
            by_point[sp].append(PointReading(sp, ch, RegisterReading(at, total, _tou(tou), power)))
        for p in await load_points(conn, slow):
            batch = by_point[p.id]
            latest = max(batch, key=lambda pr: pr.reading.measured_at).channel_id
            outcomes.append((p, rate(p.mark, [pr.reading for pr in batch], p.terms), latest))
    report = await persist(
        conn, tenant_id, outcomes, now, timing, reported=reported, fast=True, changed=changed
    )
    report.points = points
    report.charged += rated.billed
    report.journaled += rated.journaled
    return report


async def apply_to_points(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    point_ids: Sequence[uuid.UUID],
    step: Callable[[_Point], RatingOutcome | None],
    now: datetime,
    timing: CommandTiming,
    actor: str,
    channel: uuid.UUID | None = None,
) -> RatingReport:
    """Lock ``point_ids``, run ``step`` on each (None: leave it) and persist the outcomes."""
    points = await load_points(conn, point_ids)
    outcomes = [(p, o, channel) for p in points if (o := step(p)) is not None]
    return await persist(conn, tenant_id, outcomes, now, timing, actor)


async def post_closed_windows(
    conn: AsyncConnection, tenant_id: uuid.UUID, now: datetime, timing: CommandTiming
) -> RatingReport:
    """Journal every point's usage window that ended by ``now`` (a periodic job, so the
    journal catches up with live balances without waiting for the next reading)."""
    due = [
        r[0]
        for r in await conn.execute(
            sa.text(
                "SELECT service_point_id FROM rating_state WHERE "
                "charge_billed_total <> charge_posted_total AND window_start + interval '1 hour' "
                "<= :now"
            ),
            {"now": now},
        )
    ]

    def step(p: _Point) -> RatingOutcome | None:
        mark, posting = flush(p.mark, now)
        return None if posting is None else RatingOutcome(mark, postings=(posting,))

    return await apply_to_points(conn, tenant_id, due, step, now, timing, "rating")


async def close_usage_windows(db: Database, now: datetime, timing: CommandTiming) -> Decimal:
    """Journal every tenant's usage windows that ended by ``now``; returns the amount."""
    journaled = Decimal(0)
    for tenant_id in await db.tenant_ids():
        async with db.tenant(tenant_id) as conn:
            journaled += (await post_closed_windows(conn, tenant_id, now, timing)).journaled
    return journaled


async def close_usage_windows_forever(
    db: Database,
    timing: CommandTiming,
    clock: Callable[[], datetime],
    every: timedelta = timedelta(minutes=5),
) -> None:
    """The periodic job `prepay worker` runs: the journal catches up with live balances
    within ``every`` of a window's end, even for a point whose meter went quiet."""
    while True:
        try:
            await close_usage_windows(db, clock(), timing)
        except Exception:
            raise_if_cancelled()
            log.exception("closing usage windows failed; retrying in %s", every)
        await asyncio.sleep(every.total_seconds())
