"""The business office at scale (issue 14's benchmark): 10,000 service points and 10
million readings (1,000 per channel), then the server time of the console's account
search, account page, a sale and the receipt PDF, each through the real app in-process
(routing, session check, CSRF, templates), p50/p95 over ``--rounds``.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_office --rounds 40

The receipt PDF is measured as the clerk meets it — a sale's receipt is drawn in the
background as soon as the sale commits (cloud.documents.receipt.draw_ahead), so the click
on 打印 finds it — and drawn on the click (the cache emptied first). Both with the
documents' cut CJK font (cloud.documents.pdf); ``--no-font-cache`` measures without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import sqlalchemy as sa

from cloud.api.app import create_app
from cloud.db import Database, migrate
from cloud.registry.service import GroupSpec, seed_group
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from tests.bench.bench_lifecycle_search import _SEED, POINTS
from tests.bench.scratch import ScratchDatabase

READINGS_PER_CHANNEL = 1_000
_READINGS = """
INSERT INTO reading (channel_id, measured_at, tenant_id, received_at, total, supply_on)
SELECT ch.id, now() - make_interval(mins => 15 * k), :t, now() - make_interval(mins => 15 * k),
       1000 + (:per - k) * 0.25, true
FROM channel ch CROSS JOIN generate_series(1, :per) k
WHERE ch.id = ANY(CAST(:chs AS uuid[]))
"""


def _stats(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"p50 {statistics.median(ms):6.1f} ms   p95 {q[18]:6.1f} ms"


async def _time(rounds: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    ms = []
    for i in range(rounds):
        t = time.perf_counter()
        await call(i)
        ms.append((time.perf_counter() - t) * 1000)
    return ms


async def main(rounds: int, font_cache: bool) -> None:
    if not font_cache:
        os.environ["PREPAY_FONT_CACHE"] = tempfile.mkdtemp()
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        spec = GroupSpec(slug=f"b{tag}", name="基准物业", gateway_code=f"gw-{tag}", meters=[])
        g = await seed_group(db, spec)
        started = time.perf_counter()
        async with db.tenant(g.tenant_id) as conn:
            tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
            params = {"t": g.tenant_id, "s": g.site_id, "g": g.gateway_id, "tariff": tariff}
            await conn.execute(sa.text(_SEED), {**params, "n": POINTS})
            channels = list(await conn.scalars(sa.text("SELECT id FROM channel ORDER BY id")))
        for i in range(0, len(channels), 500):  # 500 channels (500,000 readings) a transaction
            async with db.tenant(g.tenant_id) as conn:
                await conn.execute(
                    sa.text(_READINGS),
                    {"t": g.tenant_id, "per": READINGS_PER_CHANNEL, "chs": channels[i : i + 500]},
                )
        async with db.tenant(g.tenant_id) as conn:
            n = await conn.scalar(sa.text("SELECT count(*) FROM reading"))
            for table in ("customer", "account", "premises", "device", "service_point", "reading"):
                await conn.execute(sa.text(f"ANALYZE {table}"))
        print(f"seeded {POINTS} points and {n:,} readings in {time.perf_counter() - started:.0f} s")

        wiring = Wiring.build(CloudSettings(database_url=scratch.url), scratch.url)
        transport = httpx.ASGITransport(app=create_app(wiring.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            await http.get("/console/login")
            csrf = http.cookies["prepay_csrf"]
            login = {
                "tenant": spec.slug,
                "username": "admin",
                "password": spec.admin_password,
                "csrf_token": csrf,
            }
            assert (await http.post("/console/login", data=login)).status_code in (200, 303)

            async def search(i: int) -> None:
                q = ("A100%04d", "Customer %d", "139%08d", "SN%d")[i % 4] % (1000 + 37 * i)
                r = await http.get("/console/accounts", params={"q": q})
                assert r.status_code == 200, r.text

            async def page(i: int) -> None:
                r = await http.get(f"/console/accounts/A{1000000 + 1000 + 37 * i}")
                assert r.status_code == 200, r.text

            receipts: list[str] = []

            async def sell(i: int) -> None:
                number = f"A{1000000 + 2000 + i}"
                body = {
                    "amount": "50.00",
                    "method": "cash",
                    "outlet_id": str(g.outlet_id),
                    "form_key": uuid.uuid4().hex,
                    "csrf_token": csrf,
                }
                r = await http.post(f"/console/counter/{number}/sell", data=body)
                assert r.status_code == 303, r.text
                receipts.append(r.headers["location"].rsplit("/", 1)[1])

            async def receipt(i: int) -> None:
                r = await http.get(f"/api/v1/sales/{receipts[i % len(receipts)]}/receipt.pdf")
                assert r.status_code == 200 and r.content.startswith(b"%PDF")

            await search(0), await page(0)  # warm: templates, plans
            for name, call in (("account search", search), ("account page", page), ("sale", sell)):
                print(f"{name:16s} {_stats(await _time(rounds, call))}")
            from cloud.documents import pdf
            from cloud.documents import receipt as drawing

            if font_cache and not pdf.subset_path().exists():
                await asyncio.to_thread(pdf.build_subset)
            if font_cache and not pdf.truetype_path().exists():
                await asyncio.to_thread(pdf.build_truetype)
            started = time.perf_counter()  # the sales' receipts drawn in the background
            while drawing.kept_receipts() < len(receipts):
                if time.perf_counter() - started > 120:
                    break
                await asyncio.sleep(0.2)
            ahead = await _time(rounds, receipt)
            print(f"{'receipt PDF':16s} {_stats(ahead)}  (the click after the sale: drawn ahead)")
            drawing._drawn.clear()
            print(
                f"{'receipt PDF':16s} {_stats(await _time(rounds, receipt))}  (drawn on the click)"
            )
            assert re.match(r"R\d+", receipts[0])
        await wiring.db.dispose()
        await db.dispose()
    finally:
        scratch.drop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--no-font-cache", action="store_true")
    a = p.parse_args()
    asyncio.run(main(a.rounds, not a.no_font_cache))
