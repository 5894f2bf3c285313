"""Regression (issue 20, `prepay chaos --seed 8 --seconds 30`): `pg_terminate_backend` of the
app's connections stopped `prepay worker` — the notification sweep's and the dispatcher's
database errors ended their loops, and with them the process. Real PostgreSQL and broker:
the backends are terminated over and over while both run; both keep running and still work
afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import psycopg
from sqlalchemy.engine import make_url

from cloud.control.dispatcher import Dispatcher
from cloud.control.service import CommandTiming
from cloud.db import Database
from contract.mqtt import Topics
from notifications.worker import NotifyWorker


def _terminate(db_url: str) -> int:
    name = make_url(db_url).database
    admin = make_url(db_url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        row = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_the_worker_loops_outlive_killed_database_connections(
    db_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    db = Database.connect(db_url, None, "prepay_app")
    notify = NotifyWorker(db, {}, sweep_s=0.05)
    timing = CommandTiming(deadline=timedelta(seconds=30), retry=timedelta(seconds=2))
    dispatcher = Dispatcher(db, mqtt_url, Topics(topic_prefix), timing, sweep_s=0.05)
    tasks = [asyncio.create_task(notify.run()), asyncio.create_task(dispatcher.run())]
    try:
        await asyncio.wait_for(dispatcher.ready.wait(), 20)
        killed = 0
        for _ in range(15):
            killed += await asyncio.to_thread(_terminate, db_url)
            await asyncio.sleep(0.1)
        assert killed > 0
        await asyncio.sleep(1.5)
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        assert await notify.sweep() == 0  # and they work again
        await asyncio.wait_for(dispatcher.ready.wait(), 20)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await db.dispose()
