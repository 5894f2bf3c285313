"""``prepay reconcile --tenant SLUG --day YYYY-MM-DD``: one day's reconciliation on
demand; prints the run's state and each open exception. Exit 0 when matched (exceptions or
not), 1 when the bill was refused (a wrong hash) or could not be fetched, 2 for bad input."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

import sqlalchemy as sa


async def run_reconcile(wiring: Any, args: argparse.Namespace) -> int:
    from cloud.auth import PERMISSIONS, Principal
    from cloud.errors import DomainError
    from cloud.reconcile.service import Reconciler

    async with wiring.db.platform() as conn:
        tenant_id = await conn.scalar(
            sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": args.tenant}
        )
    if tenant_id is None:
        print(f"prepay reconcile: no property group {args.tenant!r}", file=sys.stderr)
        return 2
    rec = Reconciler(wiring.services.wechat_pay)
    try:
        run = await rec.reconcile(tenant_id, args.day, "cli:reconcile")
        who = Principal(tenant_id, uuid.UUID(int=0), "cli", frozenset(PERMISSIONS))
        _, found = await rec.run_detail(who, run.id)
    except DomainError as exc:
        print(f"prepay reconcile: {exc}", file=sys.stderr)
        return 2
    finally:
        await wiring.services.wechat_pay.close()
    print(
        f"{args.tenant} {run.mchid} {run.bill_date}: {run.state}, {run.lines} line(s), "
        f"paid {run.paid_total}, refunded {run.refund_total}, {run.open} open exception(s)"
    )
    if run.error:
        print(
            f"  {run.error}; next try {run.next_try_at:%Y-%m-%d %H:%M %Z}"
            if run.next_try_at
            else f"  {run.error}"
        )
    for e in found:
        if e.resolution is None:
            print(f"  {e.kind} {e.ref}: ours {e.ours} theirs {e.theirs} {e.detail.get('why', '')}")
    return 0 if run.state == "matched" else 1
