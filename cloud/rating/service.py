"""Rating service: advance each point's mark under a row lock, post usage, steer supply."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.control.policy import PointFinance, desired_supply
from cloud.control.service import CommandTiming, steer_supply
from cloud.ledger import core as ledger
from cloud.ledger.service import balance_of, post
from cloud.rating.core import FlatPrices, RatingMark, RegisterReading, rate


@dataclass(frozen=True)
class PointReading:
    service_point_id: uuid.UUID
    channel_id: uuid.UUID
    reading: RegisterReading


@dataclass
class RatingReport:
    points: int = 0
    charged: Decimal = Decimal(0)
    anomalies: int = 0
    commands: int = 0


async def rate_new_readings(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    new: list[PointReading],
    now: datetime,
    timing: CommandTiming,
) -> RatingReport:
    """Rate readings just stored (in this transaction). Late and duplicate readings never
    charge twice: each point's mark only moves forward, under ``FOR UPDATE``."""
    report = RatingReport()
    by_point: dict[uuid.UUID, list[PointReading]] = defaultdict(list)
    for pr in new:
        by_point[pr.service_point_id].append(pr)
    if not by_point:
        return report
    point_ids = sorted(by_point)
    await conn.execute(
        sa.text(
            "INSERT INTO rating_state (service_point_id, tenant_id, consumption_total, "
            "charge_exact_total, charge_posted_total) "
            "SELECT id, tenant_id, 0, 0, 0 FROM service_point WHERE id = ANY(:ids) "
            "ON CONFLICT (service_point_id) DO NOTHING"
        ),
        {"ids": point_ids},
    )
    states = {
        r.service_point_id: r
        for r in await conn.execute(
            sa.text(
                "SELECT rs.*, sp.tariff_id, sp.utility, sp.credit_limit, sp.control_mode, "
                "a.id AS account_id, a.number AS account_number "
                "FROM rating_state rs JOIN service_point sp ON sp.id = rs.service_point_id "
                "JOIN account a ON a.id = sp.account_id "
                "WHERE rs.service_point_id = ANY(:ids) ORDER BY rs.service_point_id "
                "FOR UPDATE OF rs"
            ),
            {"ids": point_ids},
        )
    }
    prices = await _prices(conn, {s.tariff_id for s in states.values()})
    for point_id in point_ids:
        st = states[point_id]
        mark = RatingMark(
            st.last_measured_at,
            st.last_register,
            st.consumption_total,
            st.charge_exact_total,
            st.charge_posted_total,
        )
        outcome = rate(mark, [pr.reading for pr in by_point[point_id]], prices[st.tariff_id])
        report.points += 1
        m = outcome.mark
        await conn.execute(
            sa.text(
                "UPDATE rating_state SET last_measured_at = :at, last_register = :reg, "
                "consumption_total = :ct, charge_exact_total = :ex, charge_posted_total = :po, "
                "channel_id = :ch WHERE service_point_id = :p"
            ),
            {
                "at": m.last_measured_at,
                "reg": m.last_register,
                "ct": m.consumption_total,
                "ex": m.exact_total,
                "po": m.posted_total,
                "ch": by_point[point_id][-1].channel_id,
                "p": point_id,
            },
        )
        for anomaly in outcome.anomalies:
            report.anomalies += 1
            await conn.execute(
                sa.text(
                    "INSERT INTO work_order (id, tenant_id, kind, service_point_id, channel_id, "
                    "detail, status, created_at) VALUES (:id, :t, :k, :p, :c, CAST(:d AS jsonb), "
                    "'open', :now)"
                ),
                {
                    "id": uuid.uuid4(),
                    "t": tenant_id,
                    "k": anomaly.kind.value,
                    "p": point_id,
                    "c": by_point[point_id][-1].channel_id,
                    "d": json.dumps(
                        {"measured_at": anomaly.measured_at.isoformat(), "detail": anomaly.detail}
                    ),
                    "now": now,
                },
            )
        wallet = ledger.wallet(st.account_id, st.account_number)
        if outcome.charge != 0:
            assert m.last_measured_at is not None
            legs: tuple[ledger.Leg, ...] = ledger.usage(
                wallet, ledger.revenue(st.utility), abs(outcome.charge)
            )
            if outcome.charge < 0:  # only a negative price can lower the exact total
                legs = ledger.mirror(legs)
            await post(
                conn,
                tenant_id,
                ledger.EntryDraft(
                    idempotency_key=f"usage:{point_id}:{m.last_measured_at.isoformat()}",
                    kind=ledger.EntryKind.USAGE,
                    actor="rating",
                    effective_at=m.last_measured_at,
                    legs=legs,
                    reason=f"{outcome.consumption} consumed",
                ),
            )
            report.charged += outcome.charge
        if st.control_mode == "cloud":
            balance = await balance_of(conn, wallet.code)
            decision = desired_supply(PointFinance(balance, st.credit_limit))
            channel_id = by_point[point_id][-1].channel_id
            if await steer_supply(conn, tenant_id, channel_id, decision, now, timing):
                report.commands += 1
    return report


async def _prices(conn: AsyncConnection, tariff_ids: set[uuid.UUID]) -> dict[uuid.UUID, FlatPrices]:
    versions: dict[uuid.UUID, list[tuple[datetime, Decimal]]] = defaultdict(list)
    rows = await conn.execute(
        sa.text(
            "SELECT tariff_id, effective_from, unit_price FROM tariff_version "
            "WHERE tariff_id = ANY(:ids) ORDER BY effective_from"
        ),
        {"ids": sorted(tariff_ids)},
    )
    for r in rows:
        versions[r.tariff_id].append((r.effective_from, r.unit_price))
    return {t: FlatPrices(tuple(v)) for t, v in versions.items()}
