"""The room monitor at scale (issue 17's benchmark): a site of 2,000 premises with 4,000
points (an electricity and a water point each; a day of quarter-hourly readings per
meter, 384,000 in all), then the server time of one refresh — the htmx poll of the tiles
(the same route with ``HX-Request``) and the whole page — through the real app in-process
(routing, session check, the one query, the template), and of the query alone;
p50/p95 over ``--rounds``.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_monitor --rounds 30
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from cloud.api.app import create_app
from cloud.auth import PERMISSIONS, Principal
from cloud.db import Database, migrate
from cloud.monitor import rooms
from cloud.monitor.rooms import Filters, room_monitor
from cloud.registry.service import GroupSpec, seed_group
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from tests.bench.bench_lifecycle_search import _SEED
from tests.bench.bench_office import _stats, _time
from tests.bench.scratch import ScratchDatabase

POINTS = 4_000
READINGS_PER_CHANNEL = 96  # a day, every 15 minutes

# _SEED makes one premises per point; the odd points become the even premises' water
# points and the odd premises go: 2,000 premises of two points each.
_PAIR = """
UPDATE service_point sp SET premises_id = p.id, utility = 'water'
FROM premises p
WHERE substr(sp.name, 7)::int % 2 = 1 AND p.number = (substr(sp.name, 7)::int - 1)::text;
DELETE FROM premises WHERE number::int % 2 = 1;
UPDATE gateway SET online = true;
UPDATE ledger_account SET balance = (substr(code, 13)::int % 100) - 20 WHERE kind = 'wallet';
UPDATE service_point SET alarm1 = 30, alarm2 = 10;
INSERT INTO control_state (service_point_id, tenant_id, keep_power_by, keep_power_reason)
SELECT id, tenant_id, CASE WHEN substr(name, 7)::int % 50 = 0 THEN 'admin' END,
       CASE WHEN substr(name, 7)::int % 50 = 0 THEN 'hospital' END
FROM service_point;
"""
_READINGS = """
INSERT INTO reading (channel_id, measured_at, tenant_id, received_at, total, supply_on)
SELECT ch.id, :now - make_interval(mins => 15 * k), :t, :now - make_interval(mins => 15 * k),
       1000 + (:per - k) * 0.25, true
FROM channel ch CROSS JOIN generate_series(0, :per - 1) k
"""


async def main(rounds: int, explain: bool) -> None:
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        spec = GroupSpec(slug=f"b{tag}", name="基准物业", gateway_code=f"gw-{tag}", meters=[])
        g = await seed_group(db, spec)
        started = time.perf_counter()
        now = datetime.now(UTC)
        async with db.tenant(g.tenant_id) as conn:
            tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
            params = {"t": g.tenant_id, "s": g.site_id, "g": g.gateway_id, "tariff": tariff}
            await conn.execute(sa.text(_SEED), {**params, "n": POINTS})
            for statement in _PAIR.split(";\n"):
                if statement.strip():
                    await conn.execute(sa.text(statement))
            await conn.execute(
                sa.text(_READINGS), {"t": g.tenant_id, "per": READINGS_PER_CHANNEL, "now": now}
            )
            counts = (
                await conn.execute(
                    sa.text(
                        "SELECT (SELECT count(*) FROM premises), (SELECT count(*) FROM "
                        "service_point), (SELECT count(*) FROM reading)"
                    )
                )
            ).one()
            for table in ("premises", "service_point", "account", "reading", "control_state"):
                await conn.execute(sa.text(f"ANALYZE {table}"))
        print(
            f"seeded {counts[0]:,} premises, {counts[1]:,} points, {counts[2]:,} readings "
            f"in {time.perf_counter() - started:.0f} s"
        )
        who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
        if explain:
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            async with db.tenant(g.tenant_id) as conn:
                plan = await conn.execute(
                    sa.text("EXPLAIN (ANALYZE, COSTS OFF) " + rooms._POINTS),
                    {"site": g.site_id, "now": now, "midnight": midnight, "utility": ""},
                )
                print("\n".join(r[0] for r in plan))

        async def query(i: int) -> None:
            m = await room_monitor(db, who, None, Filters(), datetime.now(UTC))
            assert m.shown == counts[0]

        wiring = Wiring.build(CloudSettings(database_url=scratch.url), scratch.url)
        transport = httpx.ASGITransport(app=create_app(wiring.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            await http.get("/console/login")
            login = {
                "tenant": spec.slug,
                "username": "admin",
                "password": spec.admin_password,
                "csrf_token": http.cookies["prepay_csrf"],
            }
            assert (await http.post("/console/login", data=login)).status_code in (200, 303)

            async def poll(i: int) -> None:
                r = await http.get("/console/monitor", headers={"HX-Request": "true"})
                assert r.status_code == 200 and r.text.count('class="tile ') == counts[0]

            async def page(i: int) -> None:
                r = await http.get("/console/monitor")
                assert r.status_code == 200 and "<html" in r.text

            async def arrears(i: int) -> None:
                r = await http.get("/console/monitor?state=arrears", headers={"HX-Request": "true"})
                assert r.status_code == 200

            await poll(0), await query(0)  # warm: templates, plans
            size = len((await http.get("/console/monitor")).content)
            for name, call in (
                ("query alone", query),
                ("refresh (htmx poll)", poll),
                ("whole page", page),
                ("poll, arrears only", arrears),
            ):
                print(f"{name:20s} {_stats(await _time(rounds, call))}")
            print(f"page size {size / 1024:.0f} KiB")
        await wiring.db.dispose()
        await db.dispose()
    finally:
        scratch.drop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--explain", action="store_true", help="print the query's plan")
    a = p.parse_args()
    asyncio.run(main(a.rounds, a.explain))
