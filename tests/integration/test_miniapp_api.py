"""The tenant app's API (/miniapp/v1): login by phone and code, binding, what a tenant sees
of a bound account, alerts and subscriptions; and that no route answers another user's or
another property group's data (every route is tried by a stranger of the same group and a
user of another group)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.db import Database
from tests.integration.pay_helpers import (
    PayEnv,
    add_group,
    bind,
    order,
    pay_env,
    pdf_text,
    phone_login,
    wechat_login,
)


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[PayEnv]:
    async with pay_env(db_url) as e:
        yield e


async def test_phone_login_needs_the_code_sent_and_spends_it(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    http = env.http
    r = await http.post("/miniapp/v1/login/sms", json={"tenant": g.slug, "phone": "12345"})
    assert r.status_code == 422 and r.json()["message"].startswith("请")
    r = await http.post("/miniapp/v1/login/sms", json={"tenant": g.slug, "phone": "139 0000 1111"})
    assert r.status_code == 200 and r.json()["sent_to"] == "139****1111"
    code = r.json()["dev_code"]
    wrong = "000000" if code != "000000" else "111111"
    r = await http.post(
        "/miniapp/v1/login/phone", json={"tenant": g.slug, "phone": "13900001111", "code": wrong}
    )
    assert r.status_code == 401 and r.json()["message"] == "验证码错误。"
    r = await http.post(
        "/miniapp/v1/login/phone", json={"tenant": g.slug, "phone": "13900001111", "code": code}
    )
    assert r.status_code == 200
    token = r.json()["token"]
    again = await http.post(
        "/miniapp/v1/login/phone", json={"tenant": g.slug, "phone": "13900001111", "code": code}
    )
    assert again.status_code == 401  # a code works once
    auth = {"authorization": f"Bearer {token}"}
    assert (await http.get("/miniapp/v1/accounts", headers=auth)).json() == []
    assert (await http.post("/miniapp/v1/logout", headers=auth)).status_code == 204
    assert (await http.get("/miniapp/v1/accounts", headers=auth)).status_code == 401
    r = await http.post("/miniapp/v1/login/sms", json={"tenant": "no-such", "phone": "13900001111"})
    assert r.status_code == 404


async def test_binding_needs_the_phone_on_file_and_shows_the_account(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db, balance="42.50")
    auth = await wechat_login(env, g)
    r = await env.http.post(
        "/miniapp/v1/bindings", json={"account": g.account, "phone": "13912345678"}, headers=auth
    )
    assert r.status_code == 404
    assert "不匹配" in r.json()["message"]
    # or the code sent to the phone on file
    r = await env.http.post("/miniapp/v1/binding-codes", json={"account": g.account}, headers=auth)
    assert r.status_code == 200 and r.json()["sent_to"].endswith(g.phone[-4:])
    async with db.tenant(g.seeded.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM login_code")) == 1
    await bind(env, g, auth)
    await bind(env, g, auth)  # binding again is no change
    r = await env.http.get("/miniapp/v1/accounts", headers=auth)
    (account,) = r.json()
    assert account["number"] == g.account
    assert account["balance"] == "42.50"
    assert account["quick_amounts"] == ["30.00", "50.00", "100.00", "200.00"]
    assert account["topup_min"] == "10.00"
    assert [p["utility"] for p in account["points"]] == ["electricity"]
    # a second user binds the same account (a shop's staff); unbinding is each one's own
    other = await wechat_login(env, g)
    await bind(env, g, other)
    r = await env.http.delete(f"/miniapp/v1/bindings/{g.account}", headers=auth)
    assert r.status_code == 204
    assert (await env.http.get("/miniapp/v1/accounts", headers=auth)).json() == []
    assert len((await env.http.get("/miniapp/v1/accounts", headers=other)).json()) == 1


async def test_days_left_usage_and_top_ups_come_from_the_ledger_and_the_readings(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db, balance="70.00")
    auth = await phone_login(env, g)
    await bind(env, g, auth)
    now = datetime.now(UTC)
    tenant = g.seeded.tenant_id
    async with db.tenant(tenant) as conn:
        wallet = await conn.scalar(
            sa.text("SELECT wallet_id FROM account WHERE number = :n"), {"n": g.account}
        )
        revenue = await conn.scalar(sa.text("SELECT id FROM ledger_account WHERE kind = 'revenue'"))
        if revenue is None:
            revenue = await conn.scalar(
                sa.text(
                    "INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, "
                    "balance) VALUES (gen_random_uuid(), :t, 'revenue:electricity', 'revenue', "
                    "'Revenue', 'credit', 0) RETURNING id"
                ),
                {"t": tenant},
            )
        # ¥10 a day of usage over the last 14 days, journaled
        for day in range(14):
            entry = await conn.scalar(
                sa.text(
                    "INSERT INTO journal_entry (id, tenant_id, idempotency_key, kind, actor, "
                    "reason, effective_at, created_at) VALUES (gen_random_uuid(), :t, :k, "
                    "'usage', 'test', 'usage', :at, :at) RETURNING id"
                ),
                {"t": tenant, "k": f"u{day}", "at": now - timedelta(days=day, hours=1)},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO posting (id, tenant_id, entry_id, ledger_account_id, amount) "
                    "VALUES (gen_random_uuid(), :t, :e, :w, 10), (gen_random_uuid(), :t, :e, "
                    ":r, -10)"
                ),
                {"t": tenant, "e": entry, "w": wallet, "r": revenue},
            )
        channel = g.seeded.channels["m1"]
        await conn.execute(
            sa.text(
                "INSERT INTO reading (tenant_id, channel_id, measured_at, received_at, total) "
                "VALUES (:t, :c, :a, :a, 100), (:t, :c, :b, :b, 112.5)"
            ),
            {
                "t": tenant,
                "c": channel,
                "a": now - timedelta(hours=3),
                "b": now - timedelta(hours=2),
            },
        )
    r = await env.http.get(f"/miniapp/v1/accounts/{g.account}", headers=auth)
    assert r.json()["days_left"] == "7.0"  # ¥70 at ¥10 a day
    r = await env.http.get(f"/miniapp/v1/accounts/{g.account}/usage?period=day", headers=auth)
    days = r.json()
    assert len(days) == 30
    assert sum(Decimal(d["spent"]) for d in days) == Decimal("140.00")
    assert sum(Decimal(d["used"]) for d in days) == Decimal("12.5")
    r = await env.http.get(f"/miniapp/v1/accounts/{g.account}/usage?period=month", headers=auth)
    assert 12 <= len(r.json()) <= 13
    assert sum(Decimal(m["spent"]) for m in r.json()) == Decimal("140.00")
    r = await env.http.get(f"/miniapp/v1/accounts/{g.account}/usage?period=year", headers=auth)
    assert r.status_code == 422
    o = await order(env, g, auth, "20.00")
    await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid)
    r = await env.http.get(f"/miniapp/v1/accounts/{g.account}/topups", headers=auth)
    assert [(t["channel"], t["amount"], t["reference"]) for t in r.json()] == [
        ("wechat", "20.00", o["out_trade_no"])
    ]
    # its receipt, as the tenant downloads it
    r = await env.http.get(
        f"/miniapp/v1/accounts/{g.account}/receipts/{o['out_trade_no']}", headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    text = pdf_text(r.content).replace(" ", "")
    for shown in ("充值收据", o["out_trade_no"], "微信支付", "¥20.00", "贰拾元整", "电子收据"):
        assert shown in text, (shown, text)
    r = await env.http.get(f"/miniapp/v1/accounts/{g.account}/receipts/PC0000", headers=auth)
    assert r.status_code == 404
    assert r.json()["message"]


async def test_alert_preferences_and_subscriptions(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    url = f"/miniapp/v1/accounts/{g.account}/preferences"
    assert (await env.http.get(url, headers=auth)).json()["channels"] == ["sms"]
    r = await env.http.put(
        url, json={"channels": ["wechat", "sms"], "muted": ["low_balance_1"]}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert (await env.http.get(url, headers=auth)).json()["muted"] == ["low_balance_1"]
    r = await env.http.put(url, json={"channels": ["sms"], "muted": ["supply_cut"]}, headers=auth)
    assert r.status_code == 422 and "断电" in r.json()["message"]
    r = await env.http.put(url, json={"channels": []}, headers=auth)
    assert r.status_code == 422
    r = await env.http.post(
        "/miniapp/v1/subscriptions", json={"template_ids": ["tmpl-a", "tmpl-b"]}, headers=auth
    )
    assert r.json() == {"tmpl-a": 1, "tmpl-b": 1}
    await env.http.post(
        "/miniapp/v1/subscriptions", json={"template_ids": ["tmpl-a"]}, headers=auth
    )
    assert (await env.http.get("/miniapp/v1/subscriptions", headers=auth)).json() == {
        "tmpl-a": 2,
        "tmpl-b": 1,
    }


async def test_no_route_answers_another_users_or_another_groups_data(
    env: PayEnv, db: Database
) -> None:
    a, b = await add_group(env, db), await add_group(env, db, meters=2)
    owner = await wechat_login(env, a)
    await bind(env, a, owner)
    o = await order(env, a, owner)
    paid = await order(env, a, owner, "10.00")
    await env.pay.pay(paid["out_trade_no"], mchid=a.sub_mchid)
    stranger = await wechat_login(env, a)  # same group, nothing bound
    outsider = await wechat_login(env, b)  # another group (its own A000001 not bound)
    n = a.account
    routes = [
        ("GET", f"/miniapp/v1/accounts/{n}", None),
        ("GET", f"/miniapp/v1/accounts/{n}/usage", None),
        ("GET", f"/miniapp/v1/accounts/{n}/topups", None),
        ("GET", f"/miniapp/v1/accounts/{n}/receipts/{paid['out_trade_no']}", None),
        ("GET", f"/miniapp/v1/accounts/{n}/preferences", None),
        ("PUT", f"/miniapp/v1/accounts/{n}/preferences", {"channels": ["sms"]}),
        ("DELETE", f"/miniapp/v1/bindings/{n}", None),
        ("POST", "/miniapp/v1/orders", {"account": n, "amount": "30.00"}),
        ("GET", f"/miniapp/v1/orders/{o['out_trade_no']}", None),
    ]
    for who, name in ((stranger, "stranger"), (outsider, "outsider")):
        for method, path, body in routes:
            r = await env.http.request(method, path, json=body, headers=who)
            assert r.status_code == 404, (name, method, path, r.status_code, r.text)
        assert (await env.http.get("/miniapp/v1/accounts", headers=who)).json() == []
        assert (await env.http.get("/miniapp/v1/subscriptions", headers=who)).json() == {}
    # nobody without a session
    for method, path, body in routes:
        r = await env.http.request(method, path, json=body)
        assert r.status_code == 401, (method, path)
    # the owner still has it all
    assert (await env.http.get(f"/miniapp/v1/accounts/{n}", headers=owner)).status_code == 200
    receipt = f"/miniapp/v1/accounts/{n}/receipts/{paid['out_trade_no']}"
    assert (await env.http.get(receipt, headers=owner)).status_code == 200
    async with db.tenant(b.seeded.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM payment_order")) == 0
