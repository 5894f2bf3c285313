"""WeChat Pay notifications verified and credited per second (issue 15), duplicates mixed
in. The API runs as ``prepay api`` in a process of its own; this process is WeChat: N orders
are made through the API, each is paid at the stand-in and its notification signed ahead
as 1 + k copies (k random 0..3: duplicates WeChat sends when an answer is slow); then all
copies are POSTed, at most ``--concurrency`` in flight, in random order. Afterwards every
order must be credited exactly once and every copy answered 204.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_wechat_pay --orders 1000

The latency from a notification to the meter's ack: ``bench_control --via wechat``."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from collections import Counter

import psycopg
from psycopg import sql

from cloud.db import Database, migrate
from standins.wechatpay.model import Delivery
from tests.integration.pay_helpers import add_group, bind, credits, order, pay_env, wechat_login


async def run(url: str, orders: int, concurrency: int, seed: int) -> None:
    db = Database.connect(url, None, "prepay_app")
    rng = random.Random(seed)
    try:
        async with pay_env(url, api_process=True) as env:
            g = await add_group(env, db, balance="0.00")
            auth = await wechat_login(env, g)
            await bind(env, g, auth)
            made = [await order(env, g, auth, "10.00") for _ in range(orders)]
            copies: list[Delivery] = []
            for o in made:
                await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid, notify=False)
                n = 1 + rng.randint(0, 3)
                copies += env.pay.signed_notifications(o["out_trade_no"], n, mchid=g.sub_mchid)
            rng.shuffle(copies)
            gate = asyncio.Semaphore(concurrency)

            async def one(d: Delivery) -> None:
                async with gate:
                    await env.pay.post(d)

            started = time.perf_counter()
            await asyncio.gather(*(one(d) for d in copies))
            took = time.perf_counter() - started
            once = [await credits(db, g, o["out_trade_no"]) for o in made]
            assert once == [1] * len(made), "an order was not credited exactly once"
            statuses = Counter(d.status or d.error for d in copies)
            assert set(statuses) == {204}, statuses
            sent = len(copies)
            print(
                f"{orders} orders, {sent} notifications ({sent - orders} duplicates), "
                f"concurrency {concurrency}, in {took:.2f} s: {sent / took:.0f} "
                f"notifications/s, {orders / took:.0f} credits/s; every order credited once; "
                f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
            )
    finally:
        await db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=1000)
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
