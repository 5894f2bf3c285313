"""Login time for an existing operator against an unknown user and an unknown property
group: the medians must not tell an attacker which usernames exist.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_login --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from decimal import Decimal

from cloud.auth import Sessions
from cloud.db import Database, migrate
from cloud.errors import Unauthorized
from cloud.registry.service import GroupSpec, MeterSpec, seed_group
from tests.bench.scratch import ScratchDatabase


async def _time(sessions: Sessions, tenant: str, user: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        try:
            await sessions.login(tenant, user, "wrong-password")
        except Unauthorized:
            pass
        out.append((time.perf_counter() - t) * 1000)
    return out


async def main(rounds: int) -> None:
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        spec = GroupSpec(
            slug=f"b{tag}",
            name="Bench",
            gateway_code=f"gw-{tag}",
            unit_price=Decimal("1"),
            meters=[MeterSpec("m1", 1, "Shop 1", Decimal("10"))],
        )
        await seed_group(db, spec)
        sessions = Sessions(db, "x" * 8 + uuid.uuid4().hex * 2, 3600)
        await _time(sessions, spec.slug, "admin", 3)  # warm up pools and the dummy hash
        cases = {
            "existing operator, wrong password": (spec.slug, "admin"),
            "unknown username": (spec.slug, "nobody"),
            "unknown property group": ("no-such-group", "admin"),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):  # interleaved, so the machine's drift is shared
            for name, (tenant, user) in cases.items():
                times[name] += await _time(sessions, tenant, user, 1)
        for name, ms in times.items():
            print(
                f"{name:36s} median {statistics.median(ms):7.1f} ms  "
                f"p90 {statistics.quantiles(ms, n=10)[-1]:7.1f} ms  ({rounds} logins)"
            )
        await db.dispose()
    finally:
        scratch.drop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=50)
    asyncio.run(main(p.parse_args().rounds))
