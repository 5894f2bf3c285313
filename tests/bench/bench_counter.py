"""Server time of the counter's sale, sale lookup, reversal and receipts (PDF A5, PDF
80 mm, ESC/POS), called as the routes call them, on a small group (not the issue's
10,000 points and 10 million readings: that is the account-search bench's setup).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_counter --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from cloud.auth import PERMISSIONS, Principal
from cloud.control.service import CommandTiming
from cloud.db import Database, migrate
from cloud.documents.receipt import receipt_escpos, receipt_pdf
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.payments.reversal import reverse_sale
from cloud.payments.sales import get_sale
from cloud.registry.service import GroupSpec, MeterSpec, seed_group
from tests.bench.scratch import ScratchDatabase


def _since(t: float) -> float:
    return (time.perf_counter() - t) * 1000


async def main(rounds: int) -> None:
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        spec = GroupSpec(
            slug=f"b{tag}",
            name="滨江物业集团",
            gateway_code=f"gw-{tag}",
            unit_price=Decimal("1"),
            meters=[MeterSpec(f"m{i}", i, f"商铺 {i}", Decimal("10")) for i in range(1, 21)],
        )
        g = await seed_group(db, spec)
        who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
        timing = CommandTiming()
        times: dict[str, list[float]] = {
            k: []
            for k in ("sale", "sale lookup", "receipt A5", "receipt 80mm", "escpos", "reverse")
        }
        accounts = list(g.accounts.values())
        for i in range(rounds + 2):  # the first two warm pools, fonts and imports
            acct = accounts[i % len(accounts)]
            req = SaleRequest(acct, Decimal("50.00"), "cash", g.outlet_id)
            sample: dict[str, float] = {}
            t = time.perf_counter()
            sold = await sell_credit(db, who, req, f"bench-{i}", datetime.now(UTC), timing)
            sample["sale"] = _since(t)
            t = time.perf_counter()
            sale = await get_sale(db, who, sold.receipt_no)
            sample["sale lookup"] = _since(t)
            t = time.perf_counter()
            await asyncio.to_thread(receipt_pdf, sale, "a5")
            sample["receipt A5"] = _since(t)
            t = time.perf_counter()
            await asyncio.to_thread(receipt_pdf, sale, "80mm")
            sample["receipt 80mm"] = _since(t)
            t = time.perf_counter()
            await asyncio.to_thread(receipt_escpos, sale)
            sample["escpos"] = _since(t)
            t = time.perf_counter()
            await reverse_sale(db, who, sold.receipt_no, "bench", datetime.now(UTC), timing)
            sample["reverse"] = _since(t)
            if i >= 2:
                for k, v in sample.items():
                    times[k].append(v)
        for name, ms in times.items():
            p95 = statistics.quantiles(ms, n=20)[-1] if len(ms) > 1 else ms[0]
            print(f"{name:14s} p50 {statistics.median(ms):7.1f} ms  p95 {p95:7.1f} ms  ({rounds})")
        await db.dispose()
    finally:
        scratch.drop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=20)
    asyncio.run(main(p.parse_args().rounds))
