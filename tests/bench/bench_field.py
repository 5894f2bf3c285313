"""End-to-end time of a field worker's upload: 500 queued readings (every tenth with a
40 KB photo, two anomalies) posted to ``/field/api/readings`` on a loopback socket, stored
and rated by the gateway's path; then the same queue again (all duplicates). Target (issue
19): ≤ 5 s for the 500.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_field --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import uvicorn

from cloud.api.app import create_app
from cloud.control.service import CommandTiming
from cloud.db import Database, migrate
from cloud.field import books
from cloud.ingest.service import IngestService
from cloud.registry.service import GroupSpec, MeterSpec, seed_group
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch
from tests.bench.scratch import ScratchDatabase
from tests.conftest import wait_for
from tests.integration.test_field_readings import admin, worker

POINTS = 500
PHOTO = base64.b64encode(b"\xff\xd8" + bytes(40 * 1024)).decode()


def _started(server: uvicorn.Server) -> Callable[[], Awaitable[bool]]:
    async def started() -> bool:
        return bool(server.started)

    return started


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(rounds: int) -> None:
    scratch = ScratchDatabase.create()
    server: uvicorn.Server | None = None
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        spec = GroupSpec(
            slug=f"f{tag}",
            name="滨江物业集团",
            gateway_code=f"gw-{tag}",
            unit_price=Decimal("1"),
            reading_max_age_days=3650,
            meters=[
                MeterSpec(f"m{i}", i, f"商铺 {i}", Decimal("1000")) for i in range(1, POINTS + 1)
            ],
        )
        g = await seed_group(db, spec)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=rounds + 2)
        await IngestService(db, CommandTiming()).store_telemetry(
            spec.gateway_code,
            TelemetryBatch(
                gateway=spec.gateway_code,
                boot_id="b",
                seq=1,
                sent_at=start,
                readings=tuple(
                    Reading(device=f"m{i}", measured_at=start, total=Decimal(100))
                    for i in range(1, POINTS + 1)
                ),
            ),
            start,
        )
        who = await worker(db, g)
        boss = admin(g)
        now = datetime.now(UTC)
        book = await books.create_book(db, boss, g.site_id, "B1", "一号线", now)
        await books.set_route(db, boss, book, list(g.points.values()), now)
        await books.assign(db, boss, book, who.operator_id, now)
        await db.dispose()

        wiring = Wiring.build(CloudSettings(database_url=scratch.url), scratch.url)
        port = _port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(wiring.services), host="127.0.0.1", port=port, log_level="warning"
            )
        )
        serving = asyncio.create_task(server.serve())
        await wait_for(_started(server), 10, "the app serving")
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            r = await http.post(
                "/api/v1/auth/token",
                json={"tenant": spec.slug, "username": "reader", "password": "field-pass"},
            )
            auth = {"authorization": f"Bearer {r.json()['access_token']}"}
            first: list[float] = []
            again: list[float] = []
            for n in range(rounds):
                at = start + timedelta(days=n + 1)
                items = [
                    {
                        "id": str(uuid.uuid4()),
                        "point": str(p),
                        "measured_at": (at + timedelta(seconds=k)).isoformat(),
                        "total": f"{100 + (n + 1) * 2 + k % 3}.25",
                        "anomaly": "seal_broken" if k in (7, 300) else None,
                        "photo": PHOTO if k % 10 == 0 else None,
                    }
                    for k, p in enumerate(g.points.values())
                ]
                t = time.perf_counter()
                r = await http.post("/field/api/readings", json={"items": items}, headers=auth)
                first.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                got = [x["status"] for x in r.json()["results"]]
                assert got == ["stored"] * POINTS, set(got)
                t = time.perf_counter()
                r = await http.post("/field/api/readings", json={"items": items}, headers=auth)
                again.append(time.perf_counter() - t)
                assert [x["status"] for x in r.json()["results"]] == ["duplicate"] * POINTS
        mb = len(PHOTO) * POINTS / 10 / 1e6
        print(f"{POINTS} readings per upload ({POINTS // 10} photos, {mb:.1f} MB of base64)")
        for name, s in (("upload", first), ("same queue again", again)):
            print(
                f"{name:18} median {statistics.median(s):.2f} s  "
                f"min {min(s):.2f}  max {max(s):.2f}  ({len(s)} rounds)"
            )
        server.should_exit = True
        await serving
        await wiring.db.dispose()
    finally:
        scratch.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
