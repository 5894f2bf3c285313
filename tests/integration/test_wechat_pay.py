"""WeChat Pay for the tenant app (issue 15) against the WeChat Pay stand-in, the real API
(over HTTP: the stand-in POSTs its notifications to it) and PostgreSQL: an order, its
notification verified and credited once whatever comes twice or forged, the silent payment
found by query, the late one credited, refunds, and two property groups kept apart."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cloud.api.app import create_app
from cloud.auth import PERMISSIONS, Principal
from cloud.check import check
from cloud.db import Database
from cloud.errors import Invalid
from cloud.lifecycle import service as lifecycle
from cloud.lifecycle.core import Settlement
from cloud.payments.wechat.jobs import sweep_once
from cloud.payments.wechat.refunds import ClosingRefund, ask_closing, request_refund
from cloud.payments.wechat.secrets import SecretBox
from standins.wechatpay import BAD_KINDS
from tests.conftest import console_form, console_login
from tests.integration.pay_helpers import (
    PayEnv,
    add_group,
    bind,
    credits,
    order,
    pay_env,
    phone_login,
    wallet,
    wechat_login,
)


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[PayEnv]:
    async with pay_env(db_url) as e:
        yield e


def _shift(e: PayEnv, by: timedelta) -> None:
    base = e.service.clock
    e.service.clock = lambda: base() + by


async def test_a_mini_program_top_up_is_signed_paid_and_credited_once(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db)
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    before = await wallet(db, g)
    o = await order(env, g, auth)
    pay = o["pay"]
    # wx.requestPayment's parameters, signed with the merchant's key over the four lines
    key = serialization.load_pem_public_key(env.keys.public_key_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    signed = "\n".join([pay["appId"], pay["timeStamp"], pay["nonceStr"], pay["package"]]) + "\n"
    key.verify(
        base64.b64decode(pay["paySign"]), signed.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    assert pay["package"] == f"prepay_id={pay['prepay_id']}"
    placed = env.pay.order(o["out_trade_no"], mchid=g.sub_mchid)
    assert placed.request["amount"]["total"] == 3000
    assert placed.request["sub_mchid"] == g.sub_mchid
    assert "sp_openid" in placed.request["payer"]

    deliveries = await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid)
    assert [d.status for d in deliveries] == [204]
    assert await wallet(db, g) == before + Decimal("30.00")
    assert await credits(db, g, o["out_trade_no"]) == 1
    r = await env.http.get(f"/miniapp/v1/orders/{o['out_trade_no']}", headers=auth)
    assert r.json()["status"] == "paid"
    assert r.json()["balance"] == f"{before + 30:.2f}"
    async with db.tenant(g.seeded.tenant_id) as conn:
        clearing = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = :c"),
            {"c": f"clearing:wechat:{g.sub_mchid}"},
        )
    assert clearing == Decimal("30.00")  # the group's own sub-merchant holds the money


async def test_the_notification_storm_credits_once(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    before = await wallet(db, g)
    o = await order(env, g, auth, "50.00")
    storm = await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid, duplicates=49, concurrent=True)
    assert len(storm) == 50
    assert {d.status for d in storm} == {204}
    for _ in range(10):  # WeChat's re-sends over the next minute
        again = await env.pay.resend(o["out_trade_no"], mchid=g.sub_mchid)
        assert again.status == 204
    assert await credits(db, g, o["out_trade_no"]) == 1
    assert await wallet(db, g) == before + Decimal("50.00")
    async with db.tenant(g.seeded.tenant_id) as conn:
        told = await conn.scalar(
            sa.text("SELECT count(*) FROM notification WHERE cause_kind = 'topup_received'")
        )
    assert told == 1


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_a_bad_notification_is_refused_and_credits_nothing(
    env: PayEnv, db: Database, kind: str
) -> None:
    g = await add_group(env, db)
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    before = await wallet(db, g)
    o = await order(env, g, auth)
    await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid, notify=False)
    bad = await env.pay.send_bad(o["out_trade_no"], kind, mchid=g.sub_mchid)
    assert bad.status is not None and 400 <= bad.status < 500, (kind, bad.status, bad.answer)
    assert await credits(db, g, o["out_trade_no"]) == 0
    assert await wallet(db, g) == before
    async with db.tenant(g.seeded.tenant_id) as conn:
        exceptions = await conn.scalar(sa.text("SELECT count(*) FROM payment_exception"))
    assert exceptions == (1 if kind == "amount_differs" else 0)
    # the genuine one still credits
    genuine = await env.pay.resend(o["out_trade_no"], mchid=g.sub_mchid)
    if kind == "amount_differs":  # the order is under an exception: finance decides
        assert genuine.status == 204
    assert await credits(db, g, o["out_trade_no"]) == 1


async def test_a_notification_for_another_group_is_refused(env: PayEnv, db: Database) -> None:
    a, b = await add_group(env, db), await add_group(env, db)
    auth = await wechat_login(env, a)
    await bind(env, a, auth)
    o = await order(env, a, auth)
    await env.pay.pay(o["out_trade_no"], mchid=a.sub_mchid, notify=False)
    d = env.pay.bad_notification(o["out_trade_no"], "forged_signature", mchid=a.sub_mchid)
    genuine = env.pay._delivery(env.pay.order(o["out_trade_no"], mchid=a.sub_mchid), d.body)
    r = await env.http.post(
        f"/miniapp/v1/pay/notify/{b.seeded.tenant_id}",
        content=genuine.body.encode(),
        headers=genuine.headers,
    )
    assert r.status_code == 400  # B has no such order: an exception, no credit
    assert await credits(db, a, o["out_trade_no"]) == 0
    assert await credits(db, b, o["out_trade_no"]) == 0
    r = await env.http.post(
        "/miniapp/v1/pay/notify/not-a-group", content=genuine.body.encode(), headers=genuine.headers
    )
    assert r.status_code == 404


async def test_a_malformed_notification_is_400(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    headers = env.pay.signed_headers("{", None)
    r = await env.http.post(
        f"/miniapp/v1/pay/notify/{g.seeded.tenant_id}", content=b"{", headers=headers
    )
    assert r.status_code == 400
    assert r.json()["code"] == "FAIL"


async def test_a_silent_payment_is_found_by_the_query_job_and_credited_once(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db)
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    before = await wallet(db, g)
    o = await order(env, g, auth)
    await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid, notify=False)
    # (counts are the database's: other tests' groups may have orders in it too)
    await sweep_once(env.service)  # too early: not queried yet
    async with db.tenant(g.seeded.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT queried_at FROM payment_order")) is None
    assert await credits(db, g, o["out_trade_no"]) == 0
    _shift(env, timedelta(minutes=3))
    counts = await sweep_once(env.service)
    assert counts["credited"] >= 1
    assert await credits(db, g, o["out_trade_no"]) == 1
    # the notification arriving afterwards changes nothing
    late = await env.pay.resend(o["out_trade_no"], mchid=g.sub_mchid)
    assert late.status == 204
    assert await credits(db, g, o["out_trade_no"]) == 1
    assert await wallet(db, g) == before + Decimal("30.00")
    async with db.tenant(g.seeded.tenant_id) as conn:
        via = await conn.scalar(sa.text("SELECT credited_via FROM payment_order"))
    assert via == "query"


async def test_a_group_whose_merchant_secrets_do_not_open_stops_no_other(
    env: PayEnv, db: Database
) -> None:
    broken, fine = await add_group(env, db), await add_group(env, db)
    orders = {}
    for g in (broken, fine):
        auth = await wechat_login(env, g)
        await bind(env, g, auth)
        orders[g.slug] = await order(env, g, auth)
        await env.pay.pay(orders[g.slug]["out_trade_no"], mchid=g.sub_mchid, notify=False)
    # the broken group's secrets were sealed with a key this process does not have
    async with db.tenant(broken.seeded.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE merchant SET apiv3_key = :k"),
            {"k": SecretBox(Fernet.generate_key()).seal("0" * 32)},
        )
    env.service._kept.clear()
    _shift(env, timedelta(minutes=3))
    counts = await sweep_once(env.service)
    assert counts["failed"] >= 1
    assert await credits(db, fine, orders[fine.slug]["out_trade_no"]) == 1
    assert await credits(db, broken, orders[broken.slug]["out_trade_no"]) == 0


async def test_an_expired_order_is_closed_and_a_late_success_still_credited(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db)
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    before = await wallet(db, g)
    o = await order(env, g, auth)
    real = env.service.clock
    _shift(env, timedelta(minutes=16))
    counts = await sweep_once(env.service)
    env.service.clock = real
    assert counts["closed"] >= 1
    placed = env.pay.order(o["out_trade_no"], mchid=g.sub_mchid)
    assert placed.state == "CLOSED"
    r = await env.http.get(f"/miniapp/v1/orders/{o['out_trade_no']}", headers=auth)
    assert r.json()["status"] == "closed"
    # the payer's money was taken after all (a race WeChat resolves in the payer's favour)
    placed.state = "NOTPAY"
    deliveries = await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid, duplicates=2)
    assert {d.status for d in deliveries} == {204}
    assert await credits(db, g, o["out_trade_no"]) == 1
    assert await wallet(db, g) == before + Decimal("30.00")


async def test_refunds_never_exceed_what_was_paid_and_settle_through_refunds_payable(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db, balance="0.00")
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    o = await order(env, g, auth, "40.00")
    await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid)
    tenant = g.seeded.tenant_id
    no = o["out_trade_no"]
    first = await request_refund(
        env.service, tenant, no, Decimal("15.00"), "moved out", "t", "RF2026120301"
    )
    assert first.status == "processing"
    again = await request_refund(
        env.service, tenant, no, Decimal("15.00"), "moved out", "t", "RF2026120301"
    )
    assert again.replayed and len(env.pay.refunds) == 1
    from cloud.errors import Conflict, Invalid

    with pytest.raises(Invalid, match=r"at most 25\.00"):
        await request_refund(
            env.service, tenant, no, Decimal("25.01"), "too much", "t", "RF2026120302"
        )
    with pytest.raises(Conflict, match="different"):
        await request_refund(env.service, tenant, no, Decimal("5.00"), "other", "t", "RF2026120301")
    assert await wallet(db, g) == Decimal("25.00")
    delivery = await env.pay.settle_refund("RF2026120301", mchid=g.sub_mchid)
    assert delivery is not None and delivery.status == 204
    async with db.tenant(tenant) as conn:
        row = (
            await conn.execute(sa.text("SELECT status, paid_entry_id FROM payment_refund"))
        ).one()
        payable = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = 'refunds_payable'")
        )
        clearing = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = :c"),
            {"c": f"clearing:wechat:{g.sub_mchid}"},
        )
    assert row.status == "success" and row.paid_entry_id is not None
    assert payable == 0
    assert clearing == Decimal("25.00")
    # the notification again: nothing moves twice
    await env.pay.settle_refund("RF2026120301", mchid=g.sub_mchid)
    assert await wallet(db, g) == Decimal("25.00")


async def test_two_groups_are_paid_into_their_own_sub_merchants_and_kept_apart(
    env: PayEnv, db: Database
) -> None:
    a, b = await add_group(env, db), await add_group(env, db, meters=2)
    auth_a = await wechat_login(env, a)
    await bind(env, a, auth_a)
    only_b = b.seeded.accounts["m2"]  # a number group A does not have (numbers are per group)
    auth_b = await wechat_login(env, b)
    await bind(env, b, auth_b)
    oa, ob = await order(env, a, auth_a), await order(env, b, auth_b)
    await env.pay.pay(oa["out_trade_no"], mchid=a.sub_mchid)
    await env.pay.pay(ob["out_trade_no"], mchid=b.sub_mchid)
    assert env.pay.order(oa["out_trade_no"], mchid=a.sub_mchid).receiver == a.sub_mchid
    assert env.pay.order(ob["out_trade_no"], mchid=b.sub_mchid).receiver == b.sub_mchid
    # a tenant of A can neither bind nor pay into B's account, nor see B's order
    r = await env.http.post(
        "/miniapp/v1/bindings", json={"account": only_b, "phone": b.phone}, headers=auth_a
    )
    assert r.status_code == 404
    r = await env.http.post(
        "/miniapp/v1/orders", json={"account": only_b, "amount": "30.00"}, headers=auth_a
    )
    assert r.status_code == 404
    r = await env.http.get(f"/miniapp/v1/accounts/{only_b}", headers=auth_a)
    assert r.status_code == 404, (only_b, a.account, r.text)
    r = await env.http.get(f"/miniapp/v1/orders/{ob['out_trade_no']}", headers=auth_a)
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("amount", "status"),
    [
        ("0", 422),
        ("-5.00", 422),
        ("30.001", 422),
        ("5000.01", 422),
        ("abc", 422),
        (30.5, 422),  # a JSON fraction is a float, not a decimal
        ("5.00", 422),  # below the site's minimum of 10.00
    ],
)
async def test_bad_amounts_are_refused_with_a_clear_message(
    env: PayEnv, db: Database, amount: object, status: int
) -> None:
    g = await add_group(env, db)
    auth = await phone_login(env, g)
    await bind(env, g, auth)
    r = await env.http.post(
        "/miniapp/v1/orders", json={"account": g.account, "amount": amount}, headers=auth
    )
    assert r.status_code == status, r.text
    assert r.json()["message"].startswith(("请", "金额", "本站"))  # Chinese, for the tenant
    async with db.tenant(g.seeded.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM payment_order")) == 0


async def test_an_h5_top_up_goes_through_wechats_cashier_page(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    auth = await phone_login(env, g)  # outside WeChat: no openid, H5 payment
    await bind(env, g, auth)
    before = await wallet(db, g)
    o = await order(env, g, auth)
    url = o["pay"]["h5_url"]
    assert url.startswith(env.pay.url + "/standin/cashier")
    import httpx

    async with httpx.AsyncClient() as browser:
        page = await browser.get(url)
        assert "¥30.00" in page.text
        prepay = env.pay.order(o["out_trade_no"], mchid=g.sub_mchid).prepay_id
        done = await browser.post(
            env.pay.url + "/standin/cashier",
            data={"prepay_id": prepay, "redirect_url": env.base + f"/h5/{g.slug}/"},
        )
        assert done.status_code == 303  # the cashier paid before redirecting
    assert await wallet(db, g) == before + Decimal("30.00")


async def test_closing_an_account_refunds_its_wechat_payments_newest_first_the_rest_in_cash(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db, balance="10.00")
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    paid = []
    for amount in ("30.00", "20.00"):
        o = await order(env, g, auth, amount)
        await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid)
        paid.append(o["out_trade_no"])
    async with db.tenant(g.seeded.tenant_id) as conn:  # the gateway carried the commands out
        await conn.execute(
            sa.text(
                "UPDATE device_command SET state = 'acked', finished_at = now() "
                "WHERE state IN ('queued', 'sent')"
            )
        )
    who = Principal(g.seeded.tenant_id, g.seeded.operator_id, "admin", frozenset(PERMISSIONS))
    timing = env.wiring.services.timing
    with pytest.raises(Invalid):  # the cash part is what WeChat cannot take: not typed
        await lifecycle.cancel(
            db, who, g.account,
            lifecycle.SettleRequest(Settlement.REFUND, refund_amount=Decimal("60.00"),
                                    to_wechat=True),
            datetime.now(UTC), timing,
        )  # fmt: skip
    # the clerk closes it at the console: the WeChat part goes back first, the rest in cash
    console = httpx.ASGITransport(app=create_app(env.wiring.services))
    async with httpx.AsyncClient(transport=console, base_url="http://test") as clerk:
        await console_login(clerk, g.slug)
        page = await clerk.get(f"/console/accounts/{g.account}")
        assert page.status_code == 200, page.text
        assert "原路退回租户的微信支付（最多 ¥50.00" in page.text
        r = await console_form(
            clerk,
            f"/console/accounts/{g.account}/cancel",
            {"how": "wechat", "reason": "搬走", "form_key": "k" * 20},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        assert "done=cancelled_wechat" in r.headers["location"]
    async with db.tenant(g.seeded.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT r.out_refund_no, o.out_trade_no, r.amount, r.status FROM payment_refund r "
                "JOIN payment_order o ON o.id = r.order_id ORDER BY r.out_refund_no"
            )
        )
        asked = [tuple(r) for r in rows]
    assert [(o, a) for _, o, a, _ in asked] == [
        (paid[1], Decimal("20.00")),
        (paid[0], Decimal("30.00")),
    ]
    assert {st for *_, st in asked} <= {"processing", "success"}  # WeChat was asked at once
    assert await wallet(db, g) == Decimal("0.00")
    async with db.tenant(g.seeded.tenant_id) as conn:
        cash = await conn.scalar(
            sa.text("SELECT detail->>'refunded' FROM audit_event WHERE action = 'account.cancel'")
        )
    assert cash == "10.00"  # the seeded cash, refunded in cash
    done = [ClosingRefund(no, o, a) for no, o, a, _ in asked]
    for p in done:
        note = await env.pay.settle_refund(p.out_refund_no, mchid=g.sub_mchid)
        assert note is not None and note.status == 204
    again = await ask_closing(env.service, g.seeded.tenant_id, done, "搬走")
    assert {v.status for v in again} == {"success"}
    async with db.tenant(g.seeded.tenant_id) as conn:
        rows = (
            await conn.execute(
                sa.text("SELECT status, count(*) FROM payment_refund GROUP BY status")
            )
        ).all()
    assert [tuple(r) for r in rows] == [("success", 2)]
    assert (await check(db, [g.seeded.tenant_id])).ok
