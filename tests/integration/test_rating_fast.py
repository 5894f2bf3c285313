"""The set-based fast path (cloud.rating.fast) rates exactly as the Python core.

Random tariffs (flat, tiered across a block boundary, TOU by timestamps or by the meter's
registers, with and without a monthly fee; a common-area point), random reading series
(steady steps, gaps, jumps, a register going down, a stuck register while drawing power,
month and window boundaries) split into random batches and fed through the real ingest:
the stored marks, the wallet and the work orders are those of :func:`cloud.rating.core.rate`
applied batch by batch, and so are the usage entries of the windows they close — and the
fast path has rated a good share of them, closing windows too."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.check import check
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import IngestService
from cloud.rating import fast as fast_rating
from cloud.rating.core import PointTerms, RatingMark, RegisterReading, limits_for, rate
from cloud.registry.service import Seeded, seed_group
from cloud.tariffs.core import Tariff, TariffVersion, plan_from_spec
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import group_spec

TZ = "Asia/Shanghai"
EFFECTIVE = datetime(2026, 1, 1, tzinfo=UTC)
TIMING = CommandTiming()

_price = st.decimals(min_value=Decimal("0.1"), max_value=Decimal("3"), places=4)
_TOU_WINDOWS = [
    {"start": "00:00", "period": "valley"},
    {"start": "08:00", "period": "peak"},
    {"start": "11:00", "period": "sharp"},
    {"start": "13:00", "period": "flat"},
    {"start": "22:00", "period": "valley"},
]


@st.composite
def _plans(draw: st.DrawFn) -> tuple[str, dict[str, object], Decimal]:
    kind = draw(st.sampled_from(["flat", "tiered", "tou"]))
    fee = draw(st.sampled_from([Decimal(0), Decimal("12.50")]))
    if kind == "flat":
        return kind, {"unit_price": str(draw(_price))}, fee
    if kind == "tiered":
        up_to = draw(st.sampled_from(["0.5", "3", "40"]))
        blocks = [
            {"up_to": up_to, "price": str(draw(_price))},
            {"up_to": None, "price": str(draw(_price))},
        ]
        return kind, {"cycle": draw(st.sampled_from(["month", "year"])), "blocks": blocks}, fee
    prices = {p: str(draw(_price)) for p in ("sharp", "peak", "flat", "valley")}
    return kind, {"prices": prices, "windows": _TOU_WINDOWS}, fee


_STEP = st.tuples(
    st.sampled_from([1, 30, 60, 60, 60, 600, 3599, 3600, 9000]),  # seconds since the last
    st.sampled_from(["0", "0", "0.01", "0.05", "0.3", "1.25", "-0.5", "900"]),  # register delta
    st.sampled_from([None, "0", "1.5"]),  # power, kW
)


@st.composite
def _series(draw: st.DrawFn) -> tuple[datetime, list[tuple[int, str, str | None]], list[int]]:
    # near a local month end, a TOU boundary, an hour boundary — or anywhere
    start = draw(
        st.sampled_from(
            [
                datetime(2026, 3, 31, 15, 40, tzinfo=UTC),  # 23:40 Shanghai, month end
                datetime(2026, 12, 31, 15, 50, tzinfo=UTC),  # year end
                datetime(2026, 6, 10, 2, 58, tzinfo=UTC),  # 10:58, before 尖
                datetime(2026, 8, 3, 7, 17, 30, tzinfo=UTC),
            ]
        )
    )
    steps = draw(st.lists(_STEP, min_size=2, max_size=24))
    # mostly one or two readings a batch: the fast path rates all but a point's first
    cuts = sorted(draw(st.sets(st.integers(1, len(steps) - 1), min_size=(len(steps) - 1) // 2)))
    return start, steps, cuts


def _readings(
    start: datetime, steps: list[tuple[int, str, str | None]], tou: bool
) -> list[Reading]:
    at, total, registers = start, Decimal("100.00"), [Decimal("10.00")] * 4
    out = []
    for n, (seconds, delta, power) in enumerate(steps):
        at += timedelta(seconds=seconds)
        d = Decimal(delta)
        total = max(total + d, Decimal(0))
        if d > 0:  # the meter's own TOU registers move by parts of the delta
            registers = [registers[0], registers[1] + d / 2, registers[2], registers[3] + d / 2]
        out.append(
            Reading(
                device="m1",
                measured_at=at,
                total=total,
                tou=tuple(registers) if tou and n % 5 != 3 else None,  # type: ignore[arg-type]
                power=None if power is None else Decimal(power),
            )
        )
    return out


async def _add_version(
    conn: AsyncConnection, at: datetime, kind: str, spec: dict[str, object], fee: Decimal
) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO tariff_version (id, tenant_id, tariff_id, effective_from, kind, "
            "unit_price, spec, monthly_fee) SELECT gen_random_uuid(), tenant_id, id, :at, "
            ":k, :u, CAST(:s AS jsonb), :fee FROM tariff"
        ),
        {
            "at": at,
            "k": kind,
            "u": Decimal(str(spec["unit_price"])) if kind == "flat" else None,
            "s": json.dumps({} if kind == "flat" else spec),
            "fee": fee,
        },
    )


async def _group(
    db: Database, kind: str, spec: dict[str, object], fee: Decimal, common: bool
) -> tuple[str, Seeded, uuid.UUID]:
    seeded = await seed_group(db, group_spec(balance="10000.00"))
    async with db.tenant(seeded.tenant_id) as conn:
        await _add_version(conn, EFFECTIVE, kind, spec, fee)
        if common:
            await conn.execute(sa.text("UPDATE service_point SET common_area = true"))
        gw = str(await conn.scalar(sa.text("SELECT code FROM gateway")))
    return gw, seeded, seeded.points["m1"]


def _observe(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, Decimal]]:
    """Each call of the fast path from now on: (points it rated, points it left to the
    core, what the windows it closed posted)."""
    seen: list[tuple[int, int, Decimal]] = []
    original = fast_rating.rate_in_place

    async def observed(conn, tenant, skipped):  # type: ignore[no-untyped-def]
        rated = await original(conn, tenant, skipped)
        seen.append((rated.fast, len(rated.slow), rated.journaled))
        return rated

    monkeypatch.setattr(fast_rating, "rate_in_place", observed)
    return seen


async def _usage_entries(conn: AsyncConnection) -> list[sa.Row[Any]]:
    """Every usage entry: key, reason, effective time, actor, and its wallet and revenue
    legs, in time order."""
    rows = await conn.execute(
        sa.text(
            "SELECT e.idempotency_key, e.reason, e.effective_at, e.actor, "
            "sum(p.amount) FILTER (WHERE a.kind = 'wallet') AS wallet, "
            "sum(p.amount) FILTER (WHERE a.kind = 'revenue') AS revenue "
            "FROM journal_entry e JOIN posting p ON p.entry_id = e.id "
            "JOIN ledger_account a ON a.id = p.ledger_account_id "
            "WHERE e.kind = 'usage' GROUP BY e.id ORDER BY e.effective_at"
        )
    )
    return list(rows.all())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=_plans(), series=_series(), common=st.booleans(), resend=st.booleans())
@example(  # a steady meter across three hours, a reading a batch
    plan=("flat", {"unit_price": "0.8765"}, Decimal(0)),
    series=(
        datetime(2026, 8, 3, 7, 17, 30, tzinfo=UTC),
        [(600, "0.3", "1.5")] * 14,
        list(range(1, 14)),
    ),
    common=False,
    resend=False,
)
async def test_fast_path_rates_as_the_core(
    db: Database,
    plan: tuple[str, dict[str, object], Decimal],
    series: tuple[datetime, list[tuple[int, str, str | None]], list[int]],
    common: bool,
    resend: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind, spec, fee = plan
    start, steps, cuts = series
    gw, seeded, point = await _group(db, kind, spec, fee, common and kind == "flat")
    tenant = seeded.tenant_id
    readings = _readings(start, steps, tou=kind == "tou")
    bounds = zip([0, *cuts], [*cuts, len(readings)], strict=True)
    batches = [readings[a:b] for a, b in bounds if a < b]
    if resend and len(batches) > 1:
        batches.insert(2, batches[0])  # a re-delivery, late

    service = IngestService(db, TIMING)
    received = datetime(2027, 1, 2, tzinfo=UTC)
    with monkeypatch.context() as patched:  # (one example's, not every example's before it)
        seen = _observe(patched)
        for seq, batch in enumerate(batches, 1):
            message = TelemetryBatch(
                gateway=gw, boot_id="b", seq=seq, sent_at=received, readings=tuple(batch)
            )
            await service.store_telemetry(gw, message, received)
    fast_points = {
        "fast": sum(s[0] for s in seen),
        "slow": sum(s[1] for s in seen),
        "closing": sum(s[2] != 0 for s in seen),
    }

    # The core alone, batch by batch, on the same terms.
    version = TariffVersion(EFFECTIVE, plan_from_spec(kind, spec, None), fee)
    terms = PointTerms(
        Tariff((version,)),
        ZoneInfo(TZ),
        limits_for("electricity"),
        charged=not (common and kind == "flat"),
    )
    mark, expected_orders, billed_fees = RatingMark(), Counter[str](), Decimal(0)
    expected_entries = set()  # (key, reason, effective at, amount) of every usage entry
    for batch in batches:
        out = rate(
            mark,
            [RegisterReading(x.measured_at, x.total, x.tou, x.power) for x in batch],
            terms,
        )
        mark = out.mark
        expected_orders.update(a.kind.value for a in out.anomalies)
        billed_fees += sum((f.amount for f in out.fees), Decimal(0))
        expected_entries |= {
            (
                u.key(point),
                f"usage {u.window_start.isoformat()} to {u.effective_at.isoformat()}",
                u.effective_at,
                u.amount,
            )
            for u in out.postings
        }

    async with db.tenant(tenant) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT last_measured_at, last_register, last_tou, consumption_total, "
                    "charge_exact_total, charge_billed_total, charge_posted_total, cycle, "
                    "cycle_consumption, window_start, fee_month, stuck FROM rating_state "
                    "WHERE service_point_id = :p"
                ),
                {"p": point},
            )
        ).one()
        wallet, unposted = (
            await conn.execute(
                sa.text(
                    "SELECT l.balance, l.unposted FROM service_point sp "
                    "JOIN account a ON a.id = sp.account_id "
                    "JOIN ledger_account l ON l.id = a.wallet_id WHERE sp.id = :p"
                ),
                {"p": point},
            )
        ).one()
        entries = {
            (e.idempotency_key, e.reason, e.effective_at, e.wallet)
            for e in await _usage_entries(conn)
        }
        kinds = Counter(r[0] for r in await conn.execute(sa.text("SELECT kind FROM work_order")))
    assert row.last_measured_at == mark.last_measured_at
    assert row.last_register == mark.last_register
    assert (tuple(row.last_tou) if row.last_tou else None) == mark.last_tou
    assert row.consumption_total == mark.consumption_total
    assert row.charge_exact_total == mark.exact_total
    assert row.charge_billed_total == mark.billed_total
    assert row.charge_posted_total == mark.posted_total
    assert row.window_start == mark.window_start
    assert entries == expected_entries  # the usage windows closed, posted as the core posts
    assert unposted == mark.posted_total - mark.billed_total
    assert (await check(db, [tenant])).breaches == []
    assert row.cycle_consumption == mark.cycle_consumption
    assert row.stuck == mark.stuck
    assert wallet == Decimal("10000.00") - mark.billed_total - billed_fees
    assert kinds == expected_orders
    assert fast_points["fast"] + fast_points["slow"] > 0
    target(fast_points["fast"], label="readings rated set-based")
    target(fast_points["closing"], label="usage windows posted set-based")


async def test_the_fast_path_takes_the_usual_reading_and_a_price_change_voids_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady meter on a flat tariff is rated set-based after its first reading; a new
    tariff version (even one effective later) sends it back to the core once."""
    gw, seeded, point = await _group(db, "flat", {"unit_price": "1.0000"}, Decimal(0), False)
    tenant = seeded.tenant_id
    seen = _observe(monkeypatch)
    service = IngestService(db, TIMING)
    t0 = datetime(2026, 5, 6, 1, 0, 30, tzinfo=UTC)

    async def feed(minute: int, total: str) -> None:
        r = Reading(device="m1", measured_at=t0 + timedelta(minutes=minute), total=Decimal(total))
        batch = TelemetryBatch(gateway=gw, boot_id="b", seq=minute, sent_at=t0, readings=(r,))
        await service.store_telemetry(gw, batch, datetime.now(UTC))

    await feed(0, "10.00")
    await feed(1, "10.50")
    await feed(2, "11.00")
    async with db.tenant(tenant) as conn:
        at = t0 + timedelta(minutes=3, seconds=30)
        await _add_version(conn, at, "flat", {"unit_price": "2"}, Decimal(0))
    await feed(3, "11.50")  # the old price still, but decided by the core
    await feed(4, "12.00")  # the new price from 00:03:30 on
    await feed(5, "12.50")  # and set-based again
    assert [(fast, slow) for fast, slow, _ in seen] == [
        (0, 1),
        (1, 0),
        (1, 0),
        (0, 1),
        (0, 1),
        (1, 0),
    ]
    async with db.tenant(tenant) as conn:
        billed = await conn.scalar(
            sa.text("SELECT charge_billed_total FROM rating_state WHERE service_point_id = :p"),
            {"p": point},
        )
    assert billed == Decimal("0.50") * 3 + Decimal("1.00") * 2


async def test_the_fast_path_closes_usage_windows_as_the_core_posts_them(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings that cross an hour stay set-based: each closed window is journaled (the
    usage entry, its two postings, the wallet's unposted settled, revenue credited) with
    the core's key, reason and amount."""
    gw, seeded, point = await _group(db, "flat", {"unit_price": "1.0000"}, Decimal(0), False)
    seen = _observe(monkeypatch)
    service = IngestService(db, TIMING)
    t0 = datetime(2026, 5, 6, 1, 50, 30, tzinfo=UTC)
    for seq, (minute, total) in enumerate(
        [(0, "10.00"), (5, "10.50"), (15, "11.00"), (20, "11.25"), (75, "11.75")], 1
    ):
        r = Reading(device="m1", measured_at=t0 + timedelta(minutes=minute), total=Decimal(total))
        batch = TelemetryBatch(gateway=gw, boot_id="b", seq=seq, sent_at=t0, readings=(r,))
        await service.store_telemetry(gw, batch, datetime.now(UTC))

    # the first reading by the core; then every one set-based, two of them closing windows
    assert seen == [
        (0, 1, Decimal(0)),
        (1, 0, Decimal(0)),
        (1, 0, Decimal("0.50")),
        (1, 0, Decimal(0)),
        (1, 0, Decimal("0.75")),
    ]
    async with db.tenant(seeded.tenant_id) as conn:
        entries = await _usage_entries(conn)
        balances = {
            r[0]: (r[1], r[2])
            for r in await conn.execute(
                sa.text(
                    "SELECT kind, sum(balance), sum(unposted) FROM ledger_account GROUP BY kind"
                )
            )
        }
        mark = (
            await conn.execute(
                sa.text(
                    "SELECT charge_billed_total, charge_posted_total, window_start "
                    "FROM rating_state WHERE service_point_id = :p"
                ),
                {"p": point},
            )
        ).one()
    h1, h2 = datetime(2026, 5, 6, 1, tzinfo=UTC), datetime(2026, 5, 6, 2, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert [tuple(e) for e in entries] == [
        (
            f"usage:{point}:{h1.isoformat()}/0.50",
            f"usage {h1.isoformat()} to {(h1 + hour).isoformat()}",
            h1 + hour,
            "rating",
            Decimal("0.50"),
            Decimal("-0.50"),
        ),
        (
            f"usage:{point}:{h2.isoformat()}/1.25",
            f"usage {h2.isoformat()} to {(h2 + hour).isoformat()}",
            h2 + hour,
            "rating",
            Decimal("0.75"),
            Decimal("-0.75"),
        ),
    ]
    assert tuple(mark) == (Decimal("1.75"), Decimal("1.25"), datetime(2026, 5, 6, 3, tzinfo=UTC))
    assert balances["wallet"] == (Decimal("10000.00") - Decimal("1.75"), Decimal("-0.50"))
    assert balances["revenue"] == (Decimal("1.25"), Decimal(0))
    assert (await check(db, [seeded.tenant_id])).breaches == []


async def test_a_new_meters_first_two_readings_out_of_order_are_both_charged(
    db: Database,
) -> None:
    """Regression (issue 20): the later reading arrives first and becomes the baseline; the
    earlier one moves the baseline back and the interval between them is charged, through
    the real ingest (the fast path leaves it to the core)."""
    gw, seeded, point = await _group(db, "flat", {"unit_price": "1.0000"}, Decimal(0), False)
    service = IngestService(db, TIMING)
    t0 = datetime(2026, 5, 6, 1, 0, 30, tzinfo=UTC)
    for seq, (minute, total) in enumerate([(1, "10.50"), (0, "10.00"), (2, "11.00")], 1):
        r = Reading(device="m1", measured_at=t0 + timedelta(minutes=minute), total=Decimal(total))
        batch = TelemetryBatch(gateway=gw, boot_id="b", seq=seq, sent_at=t0, readings=(r,))
        await service.store_telemetry(gw, batch, datetime.now(UTC))
    async with db.tenant(seeded.tenant_id) as conn:
        consumption, billed = (
            await conn.execute(
                sa.text(
                    "SELECT consumption_total, charge_billed_total FROM rating_state "
                    "WHERE service_point_id = :p"
                ),
                {"p": point},
            )
        ).one()
    assert consumption == Decimal("1.00") and billed == Decimal("1.00")
    assert (await check(db, [seeded.tenant_id])).breaches == []


async def test_an_earlier_batch_arriving_after_a_later_one_is_charged(db: Database) -> None:
    """Regression (issue 20, found by `prepay chaos --seed 1`): two ingest workers stored a
    gateway's second batch before its first; the first batch's readings were dropped as
    late and the interval before the baseline never charged."""
    gw, seeded, point = await _group(db, "flat", {"unit_price": "1.0000"}, Decimal(0), False)
    service = IngestService(db, TIMING)
    t0 = datetime(2026, 5, 6, 1, 0, 30, tzinfo=UTC)
    batches = [
        [(3, "11.20"), (4, "11.70"), (5, "12.00")],
        [(0, "10.00"), (1, "10.50"), (2, "11.00")],
    ]
    for seq, rows in enumerate(batches, 1):
        readings = tuple(
            Reading(device="m1", measured_at=t0 + timedelta(minutes=m), total=Decimal(v))
            for m, v in rows
        )
        batch = TelemetryBatch(gateway=gw, boot_id="b", seq=seq, sent_at=t0, readings=readings)
        await service.store_telemetry(gw, batch, datetime.now(UTC))
    async with db.tenant(seeded.tenant_id) as conn:
        consumption, billed = (
            await conn.execute(
                sa.text(
                    "SELECT consumption_total, charge_billed_total FROM rating_state "
                    "WHERE service_point_id = :p"
                ),
                {"p": point},
            )
        ).one()
    assert consumption == Decimal("2.00") and billed == Decimal("2.00")
    assert (await check(db, [seeded.tenant_id])).breaches == []
