"""Delivery under trouble, against the real database and the Twilio stand-in over HTTP:
signed status callbacks through the real API (a forged one is refused and changes
nothing; a status never moves backwards), a 10-minute outage on an injected clock (all
delivered afterwards, none twice), two workers at once (never the same message twice)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aiohttp
import psycopg
import pytest
from pydantic import SecretStr

from cloud.api.app import create_app
from cloud.db import Database
from cloud.embedded import free_port
from cloud.notify import outbox
from cloud.runtime import Wiring, serve_http
from cloud.settings import CloudSettings
from notifications.settings import NotifySettings
from standins.twilio import TwilioStandIn
from tests.conftest import wait_for
from tests.integration.notify_helpers import Clock, Shop, shop, twilio, worker

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai: no quiet hours


@pytest.fixture
async def sms() -> AsyncIterator[TwilioStandIn]:
    stand_in = TwilioStandIn(callbacks=False)
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def api(db_url: str, sms: TwilioStandIn) -> AsyncIterator[str]:
    """The real API on a port of its own, taking the stand-in's signed callbacks."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    wiring = Wiring.build(CloudSettings(database_url=db_url), db_url)
    wiring.services.notify_settings = NotifySettings(
        twilio_auth_token=SecretStr(sms.auth_token), public_base_url=base
    )
    task = asyncio.create_task(serve_http(create_app(wiring.services), "127.0.0.1", port))

    async def up() -> bool:
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return True
        return False

    await wait_for(up, 20, "the API to listen")
    yield base
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await wiring.db.dispose()


async def topups(s: Shop, n: int, meters: int) -> None:
    """``n`` "received" messages over the shop's accounts (distinct causes)."""
    async with s.db.tenant(s.tenant) as conn:
        for i in range(n):
            key = f"m{i % meters + 1}"
            account = await conn.scalar(
                __import__("sqlalchemy").text("SELECT id FROM account WHERE number = :n"),
                {"n": s.group.accounts[key]},
            )
            await outbox.topup_received(conn, s.tenant, account, Decimal(10 + i), f"t:{i}", NOW)


async def test_signed_callbacks_move_forward_only_and_a_forged_one_is_refused(
    db: Database, sms: TwilioStandIn, api: str
) -> None:
    s = await shop(db)
    await s.prefer()
    await topups(s, 1, 1)
    sms.callbacks = True
    w = worker(db, Clock(NOW), twilio(sms, callback_base=api))
    await w.deliver(s.tenant)
    (msg,) = sms.messages
    assert msg.callback is not None and msg.callback.startswith(f"{api}/api/v1/notify/twilio/")

    async def delivered() -> bool:
        return bool(await s.q("SELECT status = 'delivered' FROM notification"))

    await wait_for(delivered, 10, "the delivered callback")
    row = (await s.rows("SELECT status, provider_id, status_at FROM notification"))[0]
    assert row.provider_id == msg.sid
    # a late "sent" after "delivered": accepted (204), and the status stays delivered
    assert await sms.callback(msg, "sent") == 204
    assert await s.q("SELECT status FROM notification") == "delivered"
    # a forged signature: 403, nothing changes; none at all: 403 too
    assert await sms.callback(msg, "undelivered", forged=True) == 403
    async with aiohttp.ClientSession() as http:
        async with http.post(msg.callback, data={"MessageStatus": "failed"}) as resp:
            assert resp.status == 403
    after = (await s.rows("SELECT status, provider_id, status_at FROM notification"))[0]
    assert after == row
    await w.close()


async def test_out_of_order_callbacks_end_at_the_final_status(
    db: Database, sms: TwilioStandIn, api: str
) -> None:
    s = await shop(db)
    await s.prefer()
    await topups(s, 1, 1)
    sms.callbacks, sms.out_of_order, sms.final_status = True, True, "undelivered"
    w = worker(db, Clock(NOW), twilio(sms, callback_base=api))
    await w.deliver(s.tenant)

    async def settled() -> bool:
        return len(sms._tasks) == 0 and len(sms.messages) == 1

    await wait_for(settled, 10, "both callbacks")
    row = (await s.rows("SELECT status, error FROM notification"))[0]
    assert row.status == "undelivered" and row.error["ErrorCode"] == "30003"
    await w.close()


async def test_a_ten_minute_outage_delays_and_loses_nothing_and_sends_none_twice(
    db: Database, sms: TwilioStandIn
) -> None:
    s = await shop(db, meters=5)
    for m in ("m1", "m2", "m3", "m4", "m5"):
        await s.prefer(m, phone=f"+86139001390{m[1]}0")
    await topups(s, 20, 5)
    clock = Clock(NOW)
    w = worker(db, clock, twilio(sms))
    sms.outage = True
    while clock.t < NOW + timedelta(minutes=10):
        await w.deliver(s.tenant)
        clock.t += timedelta(seconds=15)
    assert sms.messages == [] and sms.refused >= 20 * 4  # tried, backing off
    notes = await s.notes()
    assert {n.status for n in notes} == {"queued"} and min(n.attempts for n in notes) >= 4
    err = await s.q("SELECT error FROM notification LIMIT 1")
    assert err["status"] == 503 and err["code"] == 20500  # the provider's answer kept
    sms.outage = False
    while clock.t < NOW + timedelta(minutes=40):
        await w.deliver(s.tenant)
        clock.t += timedelta(seconds=15)
    notes = await s.notes()
    assert {n.status for n in notes} == {"sent"}
    assert len(sms.messages) == 20
    assert len({m.body for m in sms.messages}) == 20  # each message once
    assert {n.provider_id for n in notes} == {m.sid for m in sms.messages}
    await w.close()


async def test_a_provider_refusal_is_final_with_its_answer_kept(
    db: Database, sms: TwilioStandIn
) -> None:
    s = await shop(db)
    await s.prefer()
    await topups(s, 1, 1)
    # a number E.164 accepts but Twilio refuses (21211): failed at once, no retry
    await s.run("UPDATE customer SET phone = '+15005550001'")
    w = worker(db, Clock(NOW), twilio(sms))
    await w.deliver(s.tenant)
    row = (await s.rows("SELECT status, reason, error, attempts FROM notification"))[0]
    assert (row.status, row.reason, row.attempts) == ("failed", "refused by the provider", 1)
    assert row.error["code"] == 21211 and row.error["status"] == 400
    assert sms.messages == []
    await w.close()


async def test_two_workers_at_once_never_send_the_same_message(
    db: Database, sms: TwilioStandIn
) -> None:
    s = await shop(db, meters=10)
    for i in range(1, 11):
        await s.prefer(f"m{i}", phone=f"+8613700137{i:03d}")
    await topups(s, 400, 10)
    clock = Clock(NOW)
    a, b = worker(db, clock, twilio(sms)), worker(db, clock, twilio(sms))
    a.settings.batch = b.settings.batch = 25
    done = await asyncio.gather(a.deliver(s.tenant), b.deliver(s.tenant), a.deliver(s.tenant))
    assert sum(done) == 400 and min(done[:2]) > 0  # both took part
    assert len(sms.messages) == 400
    assert len({m.body for m in sms.messages}) == 400
    assert await s.q("SELECT count(*) FROM notification WHERE status = 'sent'") == 400
    await a.close()
    await b.close()


async def test_the_consoles_queries_a_customers_messages_and_the_daily_overview(
    db: Database, sms: TwilioStandIn
) -> None:
    from cloud.notify.queries import customer_notifications, delivery_overview, template_texts

    s = await shop(db, meters=2)
    c1 = await s.prefer("m1")
    await s.prefer("m2", phone="12345")
    await topups(s, 4, 2)  # two each
    w = worker(db, Clock(NOW), twilio(sms))
    await w.deliver(s.tenant)
    await w.close()
    async with db.tenant(s.tenant) as conn:
        total, items = await customer_notifications(conn, c1, limit=1)
        assert total == 2 and len(items) == 1
        assert (items[0].kind, items[0].status, items[0].channel) == (
            "topup_received",
            "sent",
            "sms",
        )
        assert (
            items[0].title_msgid == "Top-up received" and items[0].account == s.group.accounts["m1"]
        )
        assert items[0].segments == 1 and items[0].address == "+8613800138001"
        day = NOW.date()
        (row,) = await delivery_overview(conn, day, day)
    assert (row.day, row.channel, row.sent, row.failed, row.segments) == (day, "sms", 2, 2, 2)
    assert template_texts()[0][3].startswith("【{site}】")


async def test_prepay_notify_delivers_the_moment_an_event_commits(
    db: Database, db_url: str, sms: TwilioStandIn
) -> None:
    """The command itself, as systemd runs it: woken by NOTIFY, not by its sweep."""
    import os
    import subprocess
    import sys

    s = await shop(db)
    await s.prefer()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAY_")}
    env.update(
        DATABASE_URL=db_url,
        PREPAY_NOTIFY_SMS_PROVIDER="twilio",
        PREPAY_NOTIFY_TWILIO_AUTH_TOKEN=sms.auth_token,
        PREPAY_NOTIFY_TWILIO_BASE_URL=sms.url,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloud.cli", "notify", env=env, stderr=subprocess.DEVNULL
    )
    try:

        async def listening() -> bool:  # (its imports take seconds on a loaded machine)
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                row = await (
                    await conn.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                        "AND query = 'LISTEN prepay_notify'"
                    )
                ).fetchone()
            return row is not None

        await wait_for(listening, 30, "prepay notify listening")
        await s.sell("25.00", "cli-1", datetime.now(UTC))

        async def arrived() -> bool:
            return len(sms.messages) == 1

        await wait_for(arrived, 15, "the message from prepay notify")
        assert "¥25.00" in sms.messages[0].body
    finally:
        proc.terminate()
        await proc.wait()
