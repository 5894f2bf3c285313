"""`prepay check`: the ledger's invariants over one tenant or all of them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from cloud.db import Database

_SIGNED = "CASE WHEN a.normal_side = 'debit' THEN 1 ELSE -1 END * coalesce(sum(p.amount), 0)"

_CHECKS: dict[str, str] = {
    # every entry's postings sum to zero, with at least two legs
    "unbalanced_entry": (
        "SELECT e.idempotency_key AS what, coalesce(sum(p.amount), 0)::text AS detail "
        "FROM journal_entry e LEFT JOIN posting p ON p.entry_id = e.id GROUP BY e.id "
        "HAVING coalesce(sum(p.amount), 0) <> 0 OR count(p.id) < 2"
    ),
    # live balance = postings + rated-but-unposted usage
    "cached_balance_mismatch": (
        f"SELECT a.code AS what, a.balance::text || ' cached vs ' || ({_SIGNED})::text "
        "|| ' posted + ' || a.unposted::text || ' unposted' AS detail FROM ledger_account a "
        "LEFT JOIN posting p ON p.ledger_account_id = a.id GROUP BY a.id "
        f"HAVING a.balance <> {_SIGNED} + a.unposted"
    ),
    # a wallet's unposted = the rated-unposted usage of its points
    "unposted_mismatch": (
        "SELECT a.code AS what, a.unposted::text || ' unposted vs ' || "
        "(-coalesce(sum(rs.charge_billed_total - rs.charge_posted_total), 0))::text "
        "|| ' rated' AS detail FROM ledger_account a "
        "LEFT JOIN account acc ON acc.wallet_id = a.id "
        "LEFT JOIN service_point sp ON sp.account_id = acc.id "
        "LEFT JOIN rating_state rs ON rs.service_point_id = sp.id GROUP BY a.id "
        "HAVING a.unposted <> -coalesce(sum(rs.charge_billed_total - rs.charge_posted_total), 0)"
    ),
    "idempotency_key_reused": (
        "SELECT idempotency_key AS what, count(*)::text AS detail FROM journal_entry "
        "GROUP BY idempotency_key HAVING count(*) > 1"
    ),
    # billed = exact total rounded once, half up; posted never runs ahead of billed
    "rating_rounding_drift": (
        "SELECT service_point_id::text AS what, charge_billed_total::text || ' billed vs ' || "
        "round(charge_exact_total, 2)::text || ' exact, ' || charge_posted_total::text || "
        "' posted' AS detail FROM rating_state "
        "WHERE charge_billed_total <> round(charge_exact_total, 2) "
        "OR charge_posted_total > charge_billed_total"
    ),
    # a point's usage entries carry exactly what its mark says was posted
    "usage_journal_mismatch": (
        "SELECT rs.service_point_id::text AS what, rs.charge_posted_total::text || "
        "' posted vs ' || coalesce(u.amount, 0)::text || ' in usage entries' AS detail "
        "FROM rating_state rs LEFT JOIN (SELECT split_part(e.idempotency_key, ':', 2) AS point, "
        "sum(p.amount) AS amount FROM journal_entry e JOIN posting p ON p.entry_id = e.id "
        "WHERE e.kind = 'usage' AND p.amount > 0 GROUP BY 1) u "
        "ON u.point = rs.service_point_id::text "
        "WHERE rs.charge_posted_total <> coalesce(u.amount, 0)"
    ),
    # a reversal mirrors its original, account by account
    "reversal_mismatch": (
        "SELECT r.idempotency_key AS what, p.ledger_account_id::text || ' off by ' || "
        "sum(p.amount)::text AS detail FROM journal_entry r "
        "JOIN posting p ON p.entry_id IN (r.id, r.reverses) "
        "WHERE r.reverses IS NOT NULL GROUP BY r.id, p.ledger_account_id "
        "HAVING sum(p.amount) <> 0"
    ),
    "reversal_of_reversal": (
        "SELECT r.idempotency_key AS what, 'reverses reversal ' || o.idempotency_key AS detail "
        "FROM journal_entry r JOIN journal_entry o ON o.id = r.reverses "
        "WHERE o.kind = 'reversal'"
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
