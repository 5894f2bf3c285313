"""`prepay check`: the ledger's invariants over one tenant or all of them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from cloud.db import Database

_CHECKS: dict[str, str] = {
    "unbalanced_entry": (
        "SELECT e.idempotency_key AS what, coalesce(sum(p.amount), 0)::text AS detail "
        "FROM journal_entry e LEFT JOIN posting p ON p.entry_id = e.id GROUP BY e.id "
        "HAVING coalesce(sum(p.amount), 0) <> 0 OR count(p.id) < 2"
    ),
    "cached_balance_mismatch": (
        "SELECT a.code AS what, a.balance::text || ' cached vs ' || "
        "(CASE WHEN a.normal_side = 'debit' THEN 1 ELSE -1 END * coalesce(sum(p.amount), 0))::text"
        " || ' posted' AS detail FROM ledger_account a "
        "LEFT JOIN posting p ON p.ledger_account_id = a.id GROUP BY a.id "
        "HAVING a.balance <> CASE WHEN a.normal_side = 'debit' THEN 1 ELSE -1 END "
        "* coalesce(sum(p.amount), 0)"
    ),
    "idempotency_key_reused": (
        "SELECT idempotency_key AS what, count(*)::text AS detail FROM journal_entry "
        "GROUP BY idempotency_key HAVING count(*) > 1"
    ),
    "rating_rounding_drift": (
        "SELECT service_point_id::text AS what, charge_posted_total::text || ' posted vs ' || "
        "round(charge_exact_total, 2)::text || ' exact' AS detail FROM rating_state "
        "WHERE charge_posted_total <> round(charge_exact_total, 2)"
    ),
}


@dataclass
class CheckReport:
    tenants: int = 0
    entries: int = 0
    breaches: list[tuple[uuid.UUID, str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaches


async def check(db: Database, tenant_ids: list[uuid.UUID] | None = None) -> CheckReport:
    report = CheckReport()
    for tenant_id in tenant_ids if tenant_ids is not None else await db.tenant_ids():
        report.tenants += 1
        async with db.tenant(tenant_id) as conn:
            report.entries += int(
                await conn.scalar(sa.text("SELECT count(*) FROM journal_entry")) or 0
            )
            for name, query in _CHECKS.items():
                for row in await conn.execute(sa.text(query)):
                    report.breaches.append((tenant_id, name, row.what, row.detail))
    return report
