"""Notification settings in the console: a site's quiet hours, offline minutes and hourly
limit saved (and refused in Chinese, nothing typed lost), its duty staff added and removed
— and told of a gateway offline by the worker —, a customer's channel, language and muted
kinds as the clerk records them, which the outbox then follows; another group's site or
account is a 404, and each change is audited."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from decimal import Decimal

import httpx
import pytest

from cloud.db import Database
from cloud.notify import outbox
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_form, console_login, group_spec
from tests.integration.notify_helpers import Shop


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def test_a_sites_quiet_hours_limit_and_duty_staff(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    s = Shop(db, g)
    other = await seed_group(db, group_spec())
    await console_login(http, spec.slug)
    url = f"/console/settings/sites/{g.site_id}/notifications"
    page = await http.get(url)
    assert page.status_code == 200 and "通知设置" in page.text
    assert 'value="22:00"' in page.text and 'value="08:00"' in page.text

    half = await console_form(
        http,
        url,
        {
            "quiet_start": "23:00",
            "quiet_end": "",
            "gateway_offline_minutes": "15",
            "hourly_limit": "4",
        },
    )
    assert half.status_code == 422 and "免打扰" in half.text and 'value="23:00"' in half.text
    bad = await console_form(
        http,
        url,
        {"quiet_start": "", "quiet_end": "", "gateway_offline_minutes": "0", "hourly_limit": "4"},
    )
    assert bad.status_code == 422 and "1 至 1440" in bad.text
    ok = await console_form(
        http,
        url,
        {
            "quiet_start": "21:30",
            "quiet_end": "07:00",
            "gateway_offline_minutes": "15",
            "hourly_limit": "4",
        },
        follow_redirects=True,
    )
    assert ok.status_code == 200 and "通知设置已保存" in ok.text
    row = (
        await s.rows(
            "SELECT quiet_start, quiet_end, gateway_offline_minutes, notify_hourly_limit FROM site"
        )
    )[0]
    assert tuple(row) == (time(21, 30), time(7, 0), 15, 4)
    none = await console_form(
        http,
        url,
        {"quiet_start": "", "quiet_end": "", "gateway_offline_minutes": "15", "hourly_limit": "4"},
    )
    assert none.status_code == 303 and await s.q("SELECT quiet_start FROM site") is None

    staff = f"{url}/staff"
    wrong = await console_form(
        http,
        staff,
        {"name": "值班电工", "phone": "12345", "language": "zh_CN", "kinds": "gateway_offline"},
    )
    assert wrong.status_code == 422 and "手机号" in wrong.text and 'value="值班电工"' in wrong.text
    added = await console_form(
        http,
        staff,
        {
            "name": "值班电工",
            "phone": "139 0013 9000",
            "language": "zh_CN",
            "kinds": "gateway_offline",
        },
        follow_redirects=True,
    )
    assert "值班电工" in added.text and "+8613900139000" in added.text
    people = await s.rows("SELECT id, phone, kinds FROM notify_staff")
    assert [(p.phone, p.kinds) for p in people] == [("+8613900139000", ["gateway_offline"])]
    # the worker's outbox finds them: a gateway offline long enough tells them
    await s.run("UPDATE gateway SET online = false, last_seen_at = now() - interval '1 hour'")
    async with db.tenant(g.tenant_id) as conn:
        assert await outbox.gateways_offline(conn, g.tenant_id, datetime.now(UTC)) == 1
    told = await s.rows("SELECT cause_kind, address, staff_id FROM notification")
    assert [(t.cause_kind, t.staff_id) for t in told] == [("gateway_offline", people[0].id)]
    # a work order assigned at the site tells those who take work orders: nobody yet
    order = uuid.uuid4()
    async with db.tenant(g.tenant_id) as conn:
        args = (conn, g.tenant_id, g.site_id, order, "reading_anomaly", "Shop 1")
        assert await outbox.work_order_assigned(*args, datetime.now(UTC)) == 0
    both = await console_form(
        http,
        staff,
        {"name": "维修班", "phone": "+8613700137000", "language": "en",
         "kinds": "work_order_assigned"},
        follow_redirects=True,
    )  # fmt: skip
    assert "维修班" in both.text
    async with db.tenant(g.tenant_id) as conn:
        args = (conn, g.tenant_id, g.site_id, order, "reading_anomaly", "Shop 1")
        assert await outbox.work_order_assigned(*args, datetime.now(UTC)) == 1
        assert await outbox.work_order_assigned(*args, datetime.now(UTC)) == 0  # once
    sent = await s.rows(
        "SELECT language, variables->>'work_order' AS what FROM notification "
        "WHERE cause_kind = 'work_order_assigned'"
    )
    assert [(n.language, n.what) for n in sent] == [("en", "reading_anomaly")]
    await s.run("UPDATE notify_staff SET active = false WHERE name = '维修班'")

    gone = await console_form(http, f"{staff}/{people[0].id}/remove", {}, follow_redirects=True)
    assert (
        "已移除" in gone.text and await s.q("SELECT count(*) FROM notify_staff WHERE active") == 0
    )
    actions = [a.action for a in await s.rows("SELECT action FROM audit_event ORDER BY at")]
    assert {"site.notify", "site.staff_added", "site.staff_removed"} <= set(actions)

    assert (
        await http.get(f"/console/settings/sites/{other.site_id}/notifications")
    ).status_code == 404
    theirs = await console_form(
        http,
        f"/console/settings/sites/{other.site_id}/notifications/staff",
        {"name": "x", "phone": "13900139000", "kinds": "gateway_offline"},
    )
    assert theirs.status_code == 404
    theirs = await console_form(
        http,
        f"/console/settings/sites/{other.site_id}/notifications",
        {"quiet_start": "", "quiet_end": "", "gateway_offline_minutes": "9", "hourly_limit": "4"},
    )
    assert theirs.status_code == 404
    assert await s.q("SELECT count(*) FROM notify_staff WHERE site_id = :s", s=other.site_id) == 0


async def test_a_customers_channel_language_and_muted_kinds(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    s = Shop(db, g)
    number = g.accounts["m1"]
    await console_login(http, spec.slug)
    url = f"/console/accounts/{number}/notifications"
    page = await http.get(url)
    assert "通知方式" in page.text and "未设置时按短信、中文发送" in page.text
    done = await console_form(
        http,
        f"{url}/preference",
        {"channel": "wechat", "language": "en", "muted": "low_balance_1"},
        follow_redirects=True,
    )
    assert done.status_code == 200 and "客户的选择已保存" in done.text
    pref = (await s.rows("SELECT channels, language, muted FROM notify_preference"))[0]
    assert tuple(pref) == (["wechat", "sms"], "en", ["low_balance_1"])
    assert re.search(r'value="wechat"[^>]*checked', done.text)
    refused = await console_form(
        http, f"{url}/preference", {"channel": "sms", "language": "zh_CN", "muted": "supply_cut"}
    )
    assert refused.status_code == 422 and "停止供应" in refused.text
    # the outbox follows the choice: a muted kind is written skipped
    async with db.tenant(g.tenant_id) as conn:
        await outbox.topup_received(
            conn, g.tenant_id, await s.account_id(), Decimal("5"), "sale:test", datetime.now(UTC)
        )
    note = (await s.rows("SELECT channel, language FROM notification"))[0]
    assert tuple(note) == ("wechat", "en")
    # (account numbers are the group's own: another group's A000001 is its own account)
    nowhere = await console_form(
        http,
        "/console/accounts/A999999/notifications/preference",
        {"channel": "sms", "language": "zh_CN"},
    )
    assert nowhere.status_code == 404
