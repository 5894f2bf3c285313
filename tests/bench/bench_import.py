"""Legacy import of a 10,000-row file (issue 14 target: ≤ 30 s): the dry run (file read,
every row checked) and the real run (read, checked, written in one transaction with its
opening entries, then `prepay check`), for an .xlsx workbook or a GB18030 CSV.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_import --rows 10000 --format xlsx
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from cloud.check import check
from cloud.db import Database, migrate
from cloud.registry.importer import run_import
from tests.bench.scratch import ScratchDatabase
from tests.integration.test_import import _gateway, _group, rows_for, to_csv, to_xlsx


async def main(n: int, formats: list[str]) -> None:
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        try:
            for kind in formats:
                seeded = await _group(db)
                rows = rows_for(await _gateway(db, seeded), n)
                data = to_xlsx(rows) if kind == "xlsx" else to_csv(rows, "gb18030")
                name = f"legacy.{kind}"
                t = time.perf_counter()
                dry = await run_import(
                    db, seeded.tenant_id, "bench", name, data, dry_run=True, now=datetime.now(UTC)
                )
                dry_s = time.perf_counter() - t
                t = time.perf_counter()
                real = await run_import(
                    db, seeded.tenant_id, "bench", name, data, dry_run=False, now=datetime.now(UTC)
                )
                real_s = time.perf_counter() - t
                ok = (await check(db, [seeded.tenant_id])).ok
                assert dry.refusals == [] and real.written
                print(
                    f"{kind}: {n:,} rows, {len(data) / 1e6:.1f} MB: "
                    f"dry run {dry_s:.2f} s, import {real_s:.2f} s "
                    f"({real.accounts:,} accounts, {real.points:,} points, "
                    f"{real.opening_entries:,} opening entries); prepay check "
                    f"{'OK' if ok else 'BREACH'}",
                    flush=True,
                )
        finally:
            await db.dispose()
    finally:
        scratch.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--format", choices=["xlsx", "csv", "both"], default="xlsx")
    args = parser.parse_args()
    asyncio.run(main(args.rows, ["xlsx", "csv"] if args.format == "both" else [args.format]))
