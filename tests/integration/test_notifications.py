"""Notifications end to end against the real database (and the Twilio stand-in over
HTTP): one message per crossing through the real ingest path, quiet hours on an injected
clock, top-ups, bad input, staff events, WeChat acceptances with the SMS fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cloud.control.policy import EventKind, PolicyEvent
from cloud.control.service import record_events
from cloud.db import Database
from cloud.notify import outbox
from notifications.providers.wechat import WeChatSubscribe
from standins.twilio import TwilioStandIn
from standins.wechat import WeChatStandIn
from tests.integration.notify_helpers import Clock, at, shop, twilio, worker

DAY = datetime(2026, 11, 20, 12, tzinfo=UTC)  # a Friday


@pytest.fixture
async def sms() -> AsyncIterator[TwilioStandIn]:
    stand_in = TwilioStandIn(callbacks=False)
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


async def test_one_message_per_crossing_in_the_customers_language_and_quiet_hours(
    db: Database, sms: TwilioStandIn
) -> None:
    s = await shop(db)
    await s.prefer(channels=("sms",), language="en", phone="+8613800138001")
    clock = Clock(at(DAY, 20, 50))
    w = worker(db, clock, twilio(sms))
    await s.read("m1", "100.00", clock.t)
    # 21:00: ¥4.50 left, through alarm 1 (¥5): told at once, in English
    clock.t = at(DAY, 21, 0)
    await s.read("m1", "105.50", clock.t)
    await w.deliver(s.tenant)
    assert [m.body.split(":")[1].strip() for m in sms.messages] == [
        "credit of Shop 1 electricity (account " + s.group.accounts["m1"] + ") is low"
    ]
    assert "¥4.50 left" in sms.messages[0].body and sms.messages[0].to == "+8613800138001"
    # 23:10: ¥1.50, through alarm 2 — quiet hours: it waits until 08:00
    clock.t = at(DAY, 23, 10)
    await s.read("m1", "108.50", clock.t)
    await w.deliver(s.tenant)
    assert len(sms.messages) == 1
    held = [n for n in await s.notes() if n.cause_kind == "low_balance_2"]
    assert held[0].status == "queued"
    assert held[0].next_attempt_at == at(DAY + timedelta(days=1), 8, 0)
    assert "quiet hours" in held[0].reason
    # 23:30: exhausted, cut — messaged at once, quiet hours or not
    clock.t = at(DAY, 23, 30)
    await s.read("m1", "111.00", clock.t)
    await w.deliver(s.tenant)
    assert len(sms.messages) == 2 and "has been cut" in sms.messages[1].body
    clock.t = at(DAY + timedelta(days=1), 7, 59)
    await w.deliver(s.tenant)
    assert len(sms.messages) == 2
    clock.t = at(DAY + timedelta(days=1), 8, 0)
    await w.deliver(s.tenant)
    assert len(sms.messages) == 3 and "is very low: ¥1.50 left" in sms.messages[2].body
    # 08:05: a top-up — one "received" message (and the restore)
    clock.t = at(DAY + timedelta(days=1), 8, 5)
    await s.sell("20.00", "notify-topup-1", clock.t)
    await s.sell("20.00", "notify-topup-1", clock.t)  # a replay of the same sale
    await w.deliver(s.tenant)
    await w.deliver(s.tenant)
    bodies = [m.body for m in sms.messages[3:]]
    assert sorted(b.split(": ")[1].split(" ")[0] for b in bodies) == ["supply", "¥20.00"]
    assert any("¥20.00 received" in b and "Balance ¥19.00" in b for b in bodies)
    notes = await s.notes()
    assert [n.cause_kind for n in notes].count("topup_received") == 1
    assert {n.status for n in notes} == {"sent"}
    assert sorted(n.cause_kind for n in notes) == sorted(
        ["low_balance_1", "low_balance_2", "supply_cut", "topup_received", "supply_restored"]
    )
    # the English texts run past 160 GSM-7 characters: 153 a segment then
    assert sorted(n.segments for n in notes) == sorted(m.segments for m in sms.messages)
    assert {n.segments for n in notes} <= {1, 2}
    assert await s.q("SELECT count(*) FROM control_event WHERE notified_at IS NULL") == 0


async def test_a_threshold_crossed_twice_in_a_minute_is_one_message(db: Database) -> None:
    s = await shop(db)
    now = at(DAY, 12, 0)
    event = PolicyEvent(EventKind.LOW_BALANCE_1, "¥4.50")
    async with db.tenant(s.tenant) as conn:
        await record_events(conn, s.tenant, [(s.point(), event, Decimal("4.50"))], now, "policy")
        later = now + timedelta(seconds=20)
        await record_events(conn, s.tenant, [(s.point(), event, Decimal("4.40"))], later, "policy")
    assert await s.q("SELECT count(*) FROM control_event") == 2
    assert await s.q("SELECT count(*) FROM notification") == 1


async def test_chinese_by_default_and_segments_counted(db: Database, sms: TwilioStandIn) -> None:
    s = await shop(db)
    await s.run("UPDATE customer SET phone = '13800138002'")  # no preference row: SMS, zh
    clock = Clock(at(DAY, 12, 0))
    await s.sell("30.00", "zh-1", clock.t)
    await worker(db, clock, twilio(sms)).deliver(s.tenant)
    (m,) = sms.messages
    assert m.to == "+8613800138002"
    assert (
        m.body.startswith("【Riverside Market】户号") and "已到账¥30.00，当前余额¥40.00" in m.body
    )
    assert (await s.notes())[0].segments == m.segments == (1 if len(m.body) <= 70 else 2)


async def test_bad_input_is_marked_with_a_reason_and_the_worker_goes_on(
    db: Database, sms: TwilioStandIn
) -> None:
    s = await shop(db, meters=4)
    await s.prefer("m1", phone="12345")  # not E.164
    await s.prefer("m2", channels=())  # no channel at all
    await s.prefer("m3")
    await s.prefer("m4")
    clock = Clock(at(DAY, 12, 0))
    for m in ("m1", "m2", "m3", "m4"):
        await s.sell("10.00", f"bad-{m}", clock.t, meter=m)
    acct3 = await s.account_id("m3")
    await s.run(
        "UPDATE notification SET variables = variables - 'amount' WHERE account_id = :a", a=acct3
    )
    await worker(db, clock, twilio(sms)).deliver(s.tenant)
    by_account = {
        r.account_id: r for r in await s.rows("SELECT account_id, status, reason FROM notification")
    }
    r1, r2, r3, r4 = [by_account[await s.account_id(m)] for m in ("m1", "m2", "m3", "m4")]
    assert (r1.status, r1.reason) == (
        "failed",
        "phone number '12345' is not E.164 (+ country code and number)",
    )
    assert (r2.status, r2.reason) == ("skipped", "the customer has no notification channel")
    assert (r3.status, r3.reason) == ("failed", "template variable missing: amount")
    assert r4.status == "sent"
    assert len(sms.messages) == 1


async def test_a_muted_kind_is_skipped_and_the_hourly_limit_holds_the_rest(
    db: Database, sms: TwilioStandIn
) -> None:
    s = await shop(db)
    c = await s.prefer()
    await s.run("UPDATE notify_preference SET muted = '{refund_paid}' WHERE customer_id = :c", c=c)
    await s.run("UPDATE site SET notify_hourly_limit = 2")
    now = at(DAY, 12, 0)
    async with db.tenant(s.tenant) as conn:
        await outbox.refund_paid(conn, s.tenant, await s.account_id(), Decimal("3.00"), "r1", now)
        for i in range(3):
            e = PolicyEvent(EventKind.LOW_BALANCE_1, "")
            t = now + timedelta(minutes=i)
            await record_events(conn, s.tenant, [(s.point(), e, Decimal("4.50"))], t, "policy")
    clock = Clock(now + timedelta(minutes=5))
    w = worker(db, clock, twilio(sms))
    await w.deliver(s.tenant)
    notes = await s.notes()
    assert [(n.cause_kind, n.status) for n in notes if n.cause_kind == "refund_paid"] == [
        ("refund_paid", "skipped")
    ]
    alarms = [n for n in notes if n.cause_kind == "low_balance_1"]
    assert sorted(n.status for n in alarms) == ["queued", "sent", "sent"]
    (waiting,) = [n for n in alarms if n.status == "queued"]
    assert "at most 2 messages an hour" in waiting.reason
    assert waiting.next_attempt_at == clock.t + timedelta(hours=1)
    clock.t += timedelta(hours=1)
    await w.deliver(s.tenant)
    assert len(sms.messages) == 3


async def test_staff_are_told_of_a_gateway_offline_longer_than_the_site_allows(
    db: Database, sms: TwilioStandIn
) -> None:
    s = await shop(db)
    now = at(DAY, 12, 0)
    await s.run(
        "INSERT INTO notify_staff (id, tenant_id, site_id, name, phone, language) "
        "VALUES (gen_random_uuid(), :t, :s, '值班电工', '+8613900139000', 'zh_CN')",
        t=s.tenant,
        s=s.group.site_id,
    )
    await s.run(
        "UPDATE gateway SET online = false, last_seen_at = :at", at=now - timedelta(minutes=20)
    )
    async with db.tenant(s.tenant) as conn:
        assert await outbox.gateways_offline(conn, s.tenant, now) == 0  # 20 < 30 minutes
        later = now + timedelta(minutes=15)
        assert await outbox.gateways_offline(conn, s.tenant, later) == 1
        assert await outbox.gateways_offline(conn, s.tenant, later + timedelta(minutes=5)) == 0
    await worker(db, Clock(now + timedelta(minutes=16)), twilio(sms)).deliver(s.tenant)
    (m,) = sms.messages
    assert m.to == "+8613900139000" and "已离线35分钟" in m.body


async def test_wechat_two_acceptances_then_sms_and_43101_is_the_same_signal(
    db: Database, sms: TwilioStandIn
) -> None:
    wx = WeChatStandIn()
    await wx.start()
    try:
        s = await shop(db, meters=2)
        for m in ("m1", "m2"):
            await s.prefer(m, channels=("wechat", "sms"), phone=f"+86138001380{m[1]}0")
        users = {}
        for m, remaining in (("m1", 2), ("m2", 1)):
            user = await s.q(
                "INSERT INTO app_user (id, tenant_id, appid, openid, created_at) VALUES "
                "(gen_random_uuid(), :t, :app, :o, now()) RETURNING id",
                t=s.tenant,
                app=wx.appid,
                o=f"openid-{m}",
            )
            users[m] = user
            await s.run(
                "INSERT INTO account_binding (id, tenant_id, user_id, account_id, bound_at) "
                "VALUES (gen_random_uuid(), :t, :u, :a, now())",
                t=s.tenant,
                u=user,
                a=await s.account_id(m),
            )
            await s.run(
                "INSERT INTO subscribe_acceptance (tenant_id, user_id, template_id, remaining, "
                "updated_at) VALUES (:t, :u, 'tmpl-topup_received', :r, now())",
                t=s.tenant,
                u=user,
                r=remaining,
            )
        wx.refuse.add("openid-m2")  # WeChat itself says m2's user has no subscription
        clock = Clock(at(DAY, 12, 0))
        w = worker(
            db,
            clock,
            twilio(sms),
            wechat=WeChatSubscribe(wx.appid, wx.secret, wx.url, "pages/index/index"),
        )
        for i in range(3):
            clock.t += timedelta(seconds=1)
            await s.sell("10.00", f"wx-{i}", clock.t)
            await w.deliver(s.tenant)
        await s.sell("10.00", "wx-m2", clock.t, meter="m2")
        await w.deliver(s.tenant)
        assert [m["touser"] for m in wx.messages] == ["openid-m1", "openid-m1"]
        assert wx.messages[0]["template_id"] == "tmpl-topup_received"
        assert wx.messages[0]["data"]["amount2"] == {"value": "¥10.00"}
        assert sorted(m.to for m in sms.messages) == ["+8613800138010", "+8613800138020"]
        rows = await s.rows(
            "SELECT a.number, n.channel, n.status, n.reason FROM notification n "
            "JOIN account a ON a.id = n.account_id ORDER BY n.created_at"
        )
        assert [(r.channel, r.status) for r in rows] == [
            ("wechat", "sent"),
            ("wechat", "sent"),
            ("sms", "sent"),
            ("sms", "sent"),
        ]
        assert rows[2].reason == "no WeChat acceptance left; sent by SMS"
        assert "WeChat refused" in rows[3].reason
        left = await s.rows("SELECT user_id, remaining FROM subscribe_acceptance")
        assert {r.user_id: r.remaining for r in left} == {users["m1"]: 0, users["m2"]: 0}
    finally:
        await wx.stop()


async def test_an_undelivered_recharge_tells_the_customer_once(
    db: Database, sms: TwilioStandIn
) -> None:
    from cloud.workorders.open import open_work_order

    s = await shop(db)
    await s.prefer()
    now = at(DAY, 12, 0)
    detail = {"amount": "20.00", "purchase_count": "3", "cause": "sale:R00000001"}
    async with db.tenant(s.tenant) as conn:
        for _ in range(2):  # the failed ack, then the same recharge expiring
            await open_work_order(conn, s.tenant, "recharge_failed", s.point(), None, now, detail)
    assert await s.q("SELECT count(*) FROM work_order") == 2
    await worker(db, Clock(now), twilio(sms)).deliver(s.tenant)
    (m,) = sms.messages
    assert "¥20.00充值未能写入Shop 1 electricity" in m.body
