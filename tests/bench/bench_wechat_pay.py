"""WeChat Pay notifications verified and credited per second (issue 15), duplicates mixed
in: N orders through the API, each paid at the stand-in and notified 1 + k times (k random
0..3) concurrently, at most ``--concurrency`` orders at once; afterwards every order must
be credited exactly once.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_wechat_pay --orders 300

(The latency from notification to the meter's ack is not measured here yet.)"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid

import psycopg
from psycopg import sql

from cloud.db import Database, migrate
from tests.integration.pay_helpers import add_group, bind, credits, order, pay_env, wechat_login


async def run(url: str, orders: int, concurrency: int, seed: int) -> None:
    db = Database.connect(url, None, "prepay_app")
    rng = random.Random(seed)
    try:
        async with pay_env(url) as env:
            g = await add_group(env, db, balance="0.00")
            auth = await wechat_login(env, g)
            await bind(env, g, auth)
            made = [await order(env, g, auth, "10.00") for _ in range(orders)]
            copies = [1 + rng.randint(0, 3) for _ in made]
            gate = asyncio.Semaphore(concurrency)
            statuses: list[int | None] = []

            async def one(o: dict[str, str], n: int) -> None:
                async with gate:
                    ds = await env.pay.pay(
                        o["out_trade_no"], mchid=g.sub_mchid, duplicates=n - 1, concurrent=True
                    )
                    statuses.extend(d.status for d in ds)

            started = time.perf_counter()
            await asyncio.gather(*(one(o, n) for o, n in zip(made, copies, strict=True)))
            took = time.perf_counter() - started
            once = [await credits(db, g, o["out_trade_no"]) for o in made]
            assert once == [1] * len(made), "an order was not credited exactly once"
            assert set(statuses) == {204}, set(statuses)
            sent = sum(copies)
            print(
                f"{orders} orders, {sent} notifications ({sent - orders} duplicates) in "
                f"{took:.2f} s: {sent / took:.0f} notifications/s, {orders / took:.0f} "
                f"credits/s; every order credited once"
            )
    finally:
        await db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    admin = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"prepay_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        migrate(url, "prepay_app")
        asyncio.run(run(url, args.orders, args.concurrency, args.seed))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
