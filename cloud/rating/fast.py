"""Rating's set-based fast path: a batch's readings rated in SQL, inside each point's envelope.

The Python core (:mod:`cloud.rating.core`) decides everything about a point's readings and,
whenever it has rated a point, leaves in ``rating_state`` the point's *envelope*
(:func:`cloud.rating.core.envelope`): until when its price, tier block, fee month and
tariff version stay as they are, the channel's limits, its wallet and the revenue account
its usage is posted to. The usual reading — after the mark, inside the envelope, a plain
step forward within the limits — then needs nothing of Python: one statement rates every
such point of a batch (consumption, exact charge, the fen total, the stuck flag, the mark),
journals the hourly usage windows the readings close (the core's entry: same key, reason,
amount and legs), and writes what each wallet and revenue account moves to a temporary
table the ledger's locked update reads. Every other point of the batch — a first reading,
a month or period closing, an anomaly, a changed tariff (the tenant's "terms" counter
voids every envelope), a point control must look at — is handed to the Python core, in the
same transaction and under the same locks.

A property test (tests/integration/test_rating_fast.py) holds the two paths to the same
marks, balances and usage entries for random tariffs, marks and readings.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.control.policy import SupplyState
from cloud.control.service import CALM_SQL, REPORT_REFRESH, Reported
from cloud.db import pg_array

# The ingest's staging table: the batch's readings with the columns (so the rounding) of
# ``reading``, but for the tenant and the time received, which are the batch's; with the
# service point each channel is bound to and ``n``, the row's place in the batch.
STAGED = "reading_in"
STAGED_COLUMNS = (
    "channel_id, measured_at, total, tou, voltage, current, power, supply_on, meter_balance, "
    "purchase_count"
)
STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGED} ON COMMIT DELETE ROWS AS SELECT "
    f"{STAGED_COLUMNS}, NULL::uuid AS service_point_id, 0 AS n FROM reading WITH NO DATA"
)
RATED = "rated_fast"  # the points rated here: see _RATED_TABLE
_RATED_TABLE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {RATED} (sp uuid, wallet uuid, ch uuid, billed numeric, "
    "posted numeric, revenue uuid) ON COMMIT DELETE ROWS"
)
# The ledger's moves of the points rated here, (account, live balance, unposted): a wallet
# loses what was billed, live; a usage entry posted here settles that much of the wallet's
# unposted usage and credits revenue (cloud.ledger.core.live_deltas of ledger.usage).
LIVE = (
    f"SELECT wallet, -billed, posted - billed FROM {RATED} WHERE billed <> 0 OR posted <> 0 "
    f"UNION ALL SELECT revenue, posted, 0 FROM {RATED} WHERE posted <> 0"
)

TERMS = "SELECT coalesce(max(value), 0) FROM tenant_counter WHERE name = 'terms'"

# The marks of the points the staged rows are bound to, locked in point order before
# anything else reads or writes them (a semi-join with the staged rows: no ids to send).
_LOCK = sa.text(
    "SELECT count(*) FROM (SELECT 1 FROM rating_state WHERE service_point_id IN ("
    f"SELECT service_point_id FROM {STAGED}) ORDER BY service_point_id FOR UPDATE) AS locked"
)
_NEW_STATES = (  # the marks of the points {}, where missing
    "INSERT INTO rating_state (service_point_id, tenant_id, consumption_total, "
    "charge_exact_total, charge_billed_total, charge_posted_total, cycle_consumption, stuck) "
    "SELECT id, tenant_id, 0, 0, 0, 0, 0, false FROM service_point WHERE id {} "
    "ON CONFLICT (service_point_id) DO NOTHING"
)
_INSERT_STAGED_STATES = sa.text(_NEW_STATES.format(f"IN (SELECT service_point_id FROM {STAGED})"))
INSERT_STATES = sa.text(_NEW_STATES.format("= ANY(CAST(:ids AS uuid[]))"))

# Python's datetime.isoformat() of a whole second, in the session's time zone (the zone
# psycopg hands the core its times in): the usage entries' keys and reasons are the core's.
_ISO = """'YYYY-MM-DD"T"HH24:MI:SSTZH:TZM'"""

# A step is one reading after the mark (with a register) and the one before it (the mark's
# for the first). Conditions mirror cloud.rating.core._advance; elapsed time is compared
# multiplied out (exact), with a margin of 1e-9 on the side that keeps a tie for Python.
# The first step in a later hourly window than the mark's closes the mark's window, as
# core._close_window does: the billed total up to that step, less what was posted, is
# journaled. (A point whose batch reaches into a third window goes to the core.)
_FAST = sa.text(f"""
WITH w AS (
  SELECT i.service_point_id AS sp, i.measured_at AS at, i.total, i.tou, i.power,
         i.channel_id = rs.channel_id AND rs.fast_wallet IS NOT NULL AS settled,
         step, rs.stuck, rs.fast_until, rs.fast_terms, rs.fast_price, rs.fast_tou,
         rs.fast_limits, rs.fast_tiered, rs.fast_block_end, rs.cycle_consumption AS cc,
         rs.charge_exact_total AS old_exact, rs.charge_billed_total AS old_billed,
         rs.charge_posted_total AS old_posted, rs.window_start AS ws0,
         rs.fast_revenue IS NOT NULL AS postable,
         i.measured_at < coalesce(rs.first_measured_at, CASE WHEN rs.consumption_total = 0
           THEN rs.last_measured_at END) AS before_base,  -- core._extend_back
         CASE WHEN row_number() OVER v = 1 THEN rs.last_measured_at ELSE lag(i.measured_at) OVER v
           END AS pat,
         CASE WHEN row_number() OVER v = 1 THEN rs.last_register ELSE lag(i.total) OVER v END
           AS ptot,
         CASE WHEN row_number() OVER v = 1 THEN rs.last_tou ELSE lag(i.tou) OVER v END AS ptou,
         step AND lead(i.measured_at) OVER v IS NULL AS is_last
  FROM {STAGED} i JOIN rating_state rs ON rs.service_point_id = i.service_point_id,
       LATERAL (SELECT i.total IS NOT NULL
                       AND i.measured_at > coalesce(rs.last_measured_at, '-infinity') AS step) st
  WHERE i.n <> ALL (CAST(:skipped AS integer[]))  -- (the staged rows name the batch's points)
  WINDOW v AS (PARTITION BY i.service_point_id, step ORDER BY i.measured_at)
),
d AS (
  SELECT w.*, w.total - w.ptot AS d, EXTRACT(EPOCH FROM w.at - w.pat) AS e,
         date_trunc('hour', w.at - interval '1 microsecond') AS win  -- core.window_of
  FROM w OFFSET 0  -- (a fence: each value once per row, however often c and p use it)
),
c AS (
  SELECT d.sp, d.at, d.total, d.tou, d.d, d.step, d.is_last, d.settled, d.fast_tiered, d.cc,
    d.fast_block_end, d.old_exact, d.old_billed, d.old_posted, d.ws0, d.win, d.postable,
    d.before_base,
    (d.fast_until IS NOT NULL AND d.fast_terms = :terms AND d.at < d.fast_until
     AND d.ptot IS NOT NULL AND d.pat IS NOT NULL AND d.win >= d.ws0
     AND d.e <= d.fast_limits[4] AND (d.tou IS NULL OR cardinality(d.tou) = 4)
     AND d.d >= 0 AND d.d * 3600 + 1e-9 <= d.fast_limits[1] * d.e + d.fast_limits[2] * 3600
     AND (d.d > 0 OR d.power IS NULL OR d.power <= 0 OR d.stuck
          OR d.power * d.e + 1e-9 < d.fast_limits[3] * 3600)) IS TRUE AS ok,
    (d.d = 0 AND d.power > 0 AND d.power * d.e + 1e-9 >= d.fast_limits[3] * 3600) IS TRUE
      AS stuckish,
    CASE WHEN d.d = 0 THEN 0
         WHEN d.fast_tou IS NOT NULL AND cardinality(d.ptou) = 4 AND cardinality(d.tou) = 4
              AND d.tou[1] >= d.ptou[1] AND d.tou[2] >= d.ptou[2] AND d.tou[3] >= d.ptou[3]
              AND d.tou[4] >= d.ptou[4] THEN
           (d.tou[1] - d.ptou[1]) * d.fast_tou[1] + (d.tou[2] - d.ptou[2]) * d.fast_tou[2]
           + (d.tou[3] - d.ptou[3]) * d.fast_tou[3] + (d.tou[4] - d.ptou[4]) * d.fast_tou[4]
         ELSE d.d * d.fast_price END AS charge
  FROM d OFFSET 0
),
p AS (
  SELECT sp, count(*) FILTER (WHERE step) AS steps,
    bool_and(settled) AND coalesce(bool_and(ok) FILTER (WHERE step), true)
      AND NOT coalesce(bool_or(before_base AND total IS NOT NULL) FILTER (WHERE NOT step), false)
      AND NOT coalesce(bool_or(stuckish) FILTER (WHERE step)
                       AND bool_or(d > 0) FILTER (WHERE step), false)
      AND (NOT bool_and(fast_tiered) OR max(fast_block_end) IS NULL
           OR max(cc) + coalesce(sum(d) FILTER (WHERE step), 0) <= max(fast_block_end))
      AND (min(win) FILTER (WHERE step AND win > ws0) IS NULL
           OR bool_and(postable) AND min(win) FILTER (WHERE step AND win > ws0)
                                     = max(win) FILTER (WHERE step)) AS fast,
    sum(d) FILTER (WHERE step) AS used, sum(charge) FILTER (WHERE step) AS exact,
    coalesce(bool_or(d > 0) FILTER (WHERE step), false) AS moved,
    max(at) FILTER (WHERE step) AS at, max(total) FILTER (WHERE is_last) AS total,
    max(tou) FILTER (WHERE is_last) AS tou, max(win) FILTER (WHERE step) AS win,
    max(ws0) AS ws0, coalesce(bool_or(win > ws0) FILTER (WHERE step), false) AS closing,
    round(max(old_exact) + coalesce(sum(charge) FILTER (WHERE step AND win = ws0), 0), 2)
      AS posted_to,
    round(max(old_exact) + coalesce(sum(charge) FILTER (WHERE step), 0), 2) - max(old_billed)
      AS billed,
    max(old_posted) AS old_posted
  FROM c GROUP BY sp
),
upd AS (
  UPDATE rating_state rs SET last_measured_at = p.at, last_register = p.total,
    last_tou = p.tou, consumption_total = rs.consumption_total + p.used,
    charge_exact_total = rs.charge_exact_total + p.exact,
    charge_billed_total = round(rs.charge_exact_total + p.exact, 2),
    charge_posted_total = CASE WHEN p.closing THEN p.posted_to ELSE rs.charge_posted_total END,
    window_start = p.win,
    cycle_consumption = CASE WHEN rs.fast_tiered THEN rs.cycle_consumption + p.used
                             ELSE rs.cycle_consumption END,
    stuck = rs.stuck AND NOT p.moved
  FROM p WHERE p.fast AND p.steps > 0 AND rs.service_point_id = p.sp
  RETURNING rs.service_point_id AS sp, rs.fast_wallet AS wallet, rs.channel_id AS ch, p.billed,
    rs.fast_revenue AS revenue, p.closing, p.ws0, p.posted_to, p.posted_to - p.old_posted AS amount
),
closed AS (  -- the window each closing point's readings close, with what it posts
  SELECT gen_random_uuid() AS id, * FROM upd WHERE closing AND amount <> 0
),
entries AS (
  INSERT INTO journal_entry (id, tenant_id, idempotency_key, kind, actor, reason, effective_at)
  SELECT id, :tenant, 'usage:' || sp || ':' || to_char(ws0, {_ISO}) || '/' || posted_to,
    'usage', 'rating',
    'usage ' || to_char(ws0, {_ISO}) || ' to ' || to_char(ws0 + interval '1 hour', {_ISO}),
    ws0 + interval '1 hour'
  FROM closed
  ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id
),
posted AS (
  SELECT closed.* FROM closed JOIN entries USING (id)
),
legs AS (  -- ledger.usage: debit the wallet, credit revenue
  INSERT INTO posting (id, tenant_id, entry_id, ledger_account_id, amount)
  SELECT gen_random_uuid(), :tenant, posted.id, x.account, x.amount
  FROM posted, LATERAL (VALUES (posted.wallet, posted.amount), (posted.revenue, -posted.amount))
    AS x(account, amount)
),
kept AS (
  INSERT INTO {RATED} (sp, wallet, ch, billed, posted, revenue)
  SELECT upd.sp, upd.wallet, upd.ch, upd.billed, coalesce(posted.amount, 0), upd.revenue
  FROM upd LEFT JOIN posted ON posted.sp = upd.sp
  UNION ALL
  SELECT p.sp, rs.fast_wallet, rs.channel_id, 0, 0, rs.fast_revenue FROM p
  JOIN rating_state rs ON rs.service_point_id = p.sp WHERE p.fast AND p.steps = 0
)
SELECT sp, NULL::numeric, NULL::numeric, NULL::bigint FROM p WHERE NOT p.fast
UNION ALL SELECT NULL, sum(p.billed), (SELECT sum(amount) FROM posted), count(*) FROM p WHERE p.fast
""")

# The points rated here that control must look at: everything but a cloud-controlled point
# control has nothing pending for, whose twin stays on and whose balance stays above the
# credit limit at the same alarm level (control.service.stays_calm, with the balance as
# moved; a subset of what stays_calm accepts).
_BUSY = """
SELECT f.sp, a.balance FROM {RATED} f
LEFT JOIN {news} AS n(ch, at, supply_on) ON n.ch = f.ch
JOIN service_point sp ON sp.id = f.sp
JOIN site s ON s.id = sp.site_id
LEFT JOIN ledger_account a ON a.id = f.wallet
LEFT JOIN control_state cs ON cs.service_point_id = f.sp
LEFT JOIN supply_twin tw ON tw.channel_id = f.ch,
LATERAL (SELECT CASE WHEN sp.alarm2 IS NOT NULL AND a.balance <= sp.alarm2 THEN 2
                     WHEN sp.alarm1 IS NOT NULL AND a.balance <= sp.alarm1 THEN 1
                     ELSE 0 END AS level) lv  -- the balance's alarm level, before hysteresis
WHERE NOT sp.common_area AND NOT coalesce(
  {calm}
  AND tw.desired = 'on'
  AND CASE WHEN n.at IS NOT NULL AND (tw.reported_at IS NULL OR tw.reported_at <= n.at)
           THEN n.supply_on ELSE tw.reported = 'on' END
  AND a.balance > -sp.credit_limit
  AND (lv.level = cs.alarm_level
       OR (lv.level < cs.alarm_level
           AND a.balance <= CASE cs.alarm_level WHEN 2 THEN sp.alarm2 WHEN 1 THEN sp.alarm1 END
                            + s.alarm_hysteresis)), false)
"""
# (with no news, a plan of its own: a generic plan over an empty unnest goes badly)
_BUSY_QUIET = sa.text(
    _BUSY.format(
        RATED=RATED,
        calm=CALM_SQL,
        news="(SELECT NULL::uuid, NULL::timestamptz, NULL::boolean WHERE false)",
    )
)
_BUSY_NEWS = sa.text(
    _BUSY.format(
        RATED=RATED,
        calm=CALM_SQL,
        news="unnest(CAST(:news_ch AS uuid[]), CAST(:news_at AS timestamptz[]), "
        "CAST(:news_on AS boolean[]))",
    )
)

# The supply states the batch's meters reported that are worth writing to their twins:
# a change, a twin's first, or a refresh of its time (control.service.unrecorded_reports).
_REPORTS = sa.text(f"""
SELECT n.channel_id, n.measured_at, n.supply_on,
       tw.reported IS DISTINCT FROM CASE WHEN n.supply_on THEN 'on' ELSE 'off' END AS changed
FROM (
  SELECT DISTINCT ON (i.channel_id) i.channel_id, i.measured_at, i.supply_on
  FROM {STAGED} i
  WHERE i.supply_on IS NOT NULL AND i.n <> ALL (CAST(:skipped AS integer[]))
  ORDER BY i.channel_id, i.measured_at DESC
) n LEFT JOIN supply_twin tw ON tw.channel_id = n.channel_id
WHERE tw.channel_id IS NULL OR tw.reported IS DISTINCT FROM
  CASE WHEN n.supply_on THEN 'on' ELSE 'off' END
  OR tw.reported_at IS NULL OR tw.reported_at + :refresh <= n.measured_at
""")

_SLOW_READINGS = sa.text(
    f"SELECT service_point_id, channel_id, measured_at, total, tou, power FROM {STAGED} "
    "WHERE service_point_id = ANY(CAST(:ids AS uuid[])) "
    "AND n <> ALL (CAST(:skipped AS integer[])) ORDER BY n"
)


async def lock_marks(conn: AsyncConnection, points: int) -> None:
    """Lock the marks of the staged rows' ``points`` (how many there are) in point order,
    creating those not there yet."""
    if (await conn.scalar(_LOCK) or 0) < points:
        await conn.execute(_INSERT_STAGED_STATES)
        await conn.scalar(_LOCK)


_REGISTRY = sa.text("SELECT value FROM tenant_counter WHERE name = 'registry'")
# Each staged row to the point its channel is bound to now (none: not rated; the reading
# is stored for its channel all the same, and a successor point rates from its own base).
_REBIND = sa.text(
    f"UPDATE {STAGED} i SET service_point_id = cur.sp FROM (SELECT s.n, (SELECT "
    "b.service_point_id FROM binding b WHERE b.channel_id = s.channel_id AND b.removed_at IS "
    f"NULL) AS sp FROM {STAGED} s) AS cur WHERE cur.n = i.n "
    "AND i.service_point_id IS DISTINCT FROM cur.sp"
)


async def rebind_if_changed(conn: AsyncConnection, registry: int) -> None:
    """When the registry moved on since the rows were staged, re-point them at today's
    bindings and lock the marks of any point that is new to the batch."""
    if int(await conn.scalar(_REGISTRY) or 0) == registry:
        return
    if (await conn.execute(_REBIND)).rowcount:
        await conn.execute(_INSERT_STAGED_STATES)
        await conn.scalar(_LOCK)


@dataclass(frozen=True)
class Rated:
    fast: int  # how many points were rated here
    slow: list[uuid.UUID]  # the points left for the Python core
    billed: Decimal  # what the wallets lost here (live)
    journaled: Decimal  # what the usage windows closed here posted


async def rate_in_place(conn: AsyncConnection, tenant_id: uuid.UUID, skipped: set[int]) -> Rated:
    """Rate the stored staged readings (all but the rows ``skipped``) of every point inside
    its envelope; the caller has locked the points' marks (:func:`lock_marks`)."""
    await conn.execute(sa.text(_RATED_TABLE))
    terms = await conn.scalar(sa.text(TERMS))
    rows = await conn.execute(
        _FAST,
        {
            "skipped": pg_array(sorted(skipped)),
            "terms": terms,
            "tenant": tenant_id,
        },
    )
    slow: list[uuid.UUID] = []
    fast, billed, journaled = 0, Decimal(0), Decimal(0)
    for sp, amount, posted, points in rows:
        if sp is None:
            fast, billed, journaled = points, amount or Decimal(0), posted or Decimal(0)
        else:
            slow.append(sp)
    return Rated(fast, slow, billed, journaled)


async def busy_points(conn: AsyncConnection, changed: Reported) -> dict[uuid.UUID, Decimal | None]:
    """The points rated here that control must look at, with their wallets' balances (after
    the ledger's update). ``changed``: the supply states of this batch that differ from
    the twins' (:func:`reports`; a repeated state changes nothing here)."""
    if not changed:
        return {r[0]: r[1] for r in await conn.execute(_BUSY_QUIET)}
    channels = list(changed)
    rows = await conn.execute(
        _BUSY_NEWS,
        {
            "news_ch": pg_array(channels),
            "news_at": pg_array(changed[c][0] for c in channels),
            "news_on": pg_array(changed[c][1] is SupplyState.ON for c in channels),
        },
    )
    return {r[0]: r[1] for r in rows}


async def reports(conn: AsyncConnection, skipped: set[int]) -> tuple[Reported, Reported]:
    """The supply states worth writing to the twins, and those among them that change a
    twin's state (the rest refresh its time)."""
    rows = (
        await conn.execute(
            _REPORTS, {"skipped": pg_array(sorted(skipped)), "refresh": REPORT_REFRESH}
        )
    ).all()
    news = {r[0]: (r[1], SupplyState.ON if r[2] else SupplyState.OFF) for r in rows}
    return news, {r[0]: news[r[0]] for r in rows if r[3]}


async def staged_readings(
    conn: AsyncConnection, ids: Sequence[uuid.UUID], skipped: set[int]
) -> list[
    tuple[uuid.UUID, uuid.UUID, datetime, Decimal | None, list[Decimal] | None, Decimal | None]
]:
    """The stored readings of ``ids`` in this batch, as the columns hold them."""
    rows = await conn.execute(
        _SLOW_READINGS, {"ids": pg_array(ids), "skipped": pg_array(sorted(skipped))}
    )
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
