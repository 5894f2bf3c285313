"""Common-area allocation service: rate the common meter over a period with its own tariff,
weigh the members (floor area or their consumption over the same period), and post one
``common_area`` entry that debits each member's wallet its share and credits revenue."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.common_area.core import AllocationError, Basis, split
from cloud.db import Database
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.money import to_fen
from cloud.rating.core import RatingMark, RegisterReading, rate
from cloud.rating.service import load_points


@dataclass(frozen=True)
class Allocation:
    entry_id: uuid.UUID | None  # None when there was nothing to charge
    created: bool
    consumption: Decimal
    charge: Decimal
    shares: dict[uuid.UUID, Decimal] = field(default_factory=dict)


async def _readings(
    conn: AsyncConnection, point_id: uuid.UUID, start: datetime, end: datetime
) -> list[RegisterReading]:
    """The point's readings in ``(start, end]`` plus the last one at or before ``start``."""
    rows = await conn.execute(
        sa.text(
            "WITH ch AS (SELECT channel_id FROM binding WHERE service_point_id = :p "
            "AND (removed_at IS NULL OR removed_at > :start)) "
            "SELECT measured_at, total, tou, power FROM reading WHERE channel_id IN "
            "(SELECT channel_id FROM ch) AND measured_at <= :end AND measured_at >= "
            "coalesce((SELECT max(measured_at) FROM reading WHERE channel_id IN "
            "(SELECT channel_id FROM ch) AND measured_at <= :start), :start) "
            "ORDER BY measured_at"
        ),
        {"p": point_id, "start": start, "end": end},
    )
    return [
        RegisterReading(
            r.measured_at,
            r.total,
            None if r.tou is None else (r.tou[0], r.tou[1], r.tou[2], r.tou[3]),
            r.power,
        )
        for r in rows
    ]


async def allocate_common_area(
    db: Database,
    tenant_id: uuid.UUID,
    common_point: uuid.UUID,
    members: Sequence[uuid.UUID],
    basis: Basis,
    start: datetime,
    end: datetime,
    actor: str,
    *,
    dry_run: bool = False,
) -> Allocation:
    """Share the common meter's charge for ``(start, end]`` among ``members``; posting the
    same period twice is a no-op (the entry's key is the meter and the period).
    ``dry_run``: the shares as they would be posted, nothing written (the preview)."""
    if not members or common_point in members:
        raise AllocationError("choose member points other than the common meter")
    async with db.tenant(tenant_id) as conn:
        points = {p.id: p for p in await load_points(conn, [common_point, *members])}
        if set(points) != {common_point, *members}:
            raise AllocationError("unknown service point among the common meter and members")
        common = points[common_point]
        readings = await _readings(conn, common_point, start, end)
        rated = rate(RatingMark(), readings, replace(common.terms, charged=True))
        charge = to_fen(rated.mark.exact_total)
        if charge == 0:
            return Allocation(None, False, rated.consumption, charge)
        weights: list[tuple[uuid.UUID, Decimal]] = []
        if basis is Basis.AREA:
            areas: dict[uuid.UUID, Decimal | None] = dict(
                (
                    await conn.execute(
                        sa.text("SELECT id, floor_area FROM service_point WHERE id = ANY(:ids)"),
                        {"ids": list(members)},
                    )
                ).all()
            )
            if any(areas[m] is None for m in members):
                raise AllocationError("a member point has no floor area")
            weights = [(m, areas[m] or Decimal(0)) for m in members]
        else:
            for m in members:
                used = rate(
                    RatingMark(),
                    await _readings(conn, m, start, end),
                    replace(points[m].terms, charged=False),
                )
                weights.append((m, used.consumption))
        shares = split(charge, weights)
        if dry_run:
            return Allocation(None, False, rated.consumption, charge, shares)
        debits = [ledger.Leg(points[m].wallet, a) for m, a in shares.items() if a]
        legs = (*debits, ledger.Leg(ledger.revenue(common.utility), -charge))
        posted = await post(
            conn,
            tenant_id,
            ledger.EntryDraft(
                idempotency_key=f"common:{common_point}:{start.isoformat()}/{end.isoformat()}",
                kind=ledger.EntryKind.COMMON_AREA,
                actor=actor,
                effective_at=end,
                legs=legs,
                reason=f"公摊 {rated.consumption} by {basis.value}, "
                f"{start.isoformat()} to {end.isoformat()}",
            ),
        )
        return Allocation(posted.entry_id, posted.created, rated.consumption, charge, shares)
