"""Notifications in the console (issue 16 items 4 and 5): 催费 reminders sent to a ticked
selection through the outbox — confirmed first, sent once however often the form is
resent, only to accounts still in arrears — and what became of them: the sending's page,
the customer's messages, the delivery overview per day and channel (and its Excel), the
templates in both languages; another group sees none of it."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openpyxl import load_workbook

from cloud.auth import Principal
from cloud.db import Database
from cloud.dunning.remind import remind
from cloud.errors import Forbidden
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from notifications.providers.log import LogProvider
from tests.conftest import api_client, console_login, group_spec
from tests.integration.notify_helpers import Clock, Shop, at, worker
from tests.integration.test_dunning import owing  # noqa: F401  (the fixture)


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _post(http: httpx.AsyncClient, url: str, data: dict[str, object]) -> httpx.Response:
    token = http.cookies.get("prepay_csrf")
    assert token
    return await http.post(url, data={**data, "csrf_token": token}, follow_redirects=False)


async def test_a_reminder_to_the_ticked_accounts_is_sent_once_and_followed(
    db: Database,
    db_url: str,
    http: httpx.AsyncClient,
    owing: tuple[str, Seeded, dict[str, uuid.UUID]],  # noqa: F811
) -> None:
    slug, g, _buildings = owing
    s = Shop(db, g)
    await s.run("UPDATE customer SET phone = '+8613800138001'")
    m1, m4 = await s.account_id("m1"), await s.account_id("m4")  # m4 is in credit
    await console_login(http, slug)
    listed = await http.get("/console/arrears")
    assert "向勾选的账户发送催费提醒" in listed.text

    confirm = await http.get(f"/console/arrears/remind?account={m1}&account={m4}")
    assert confirm.status_code == 200, confirm.text
    assert g.accounts["m1"] in confirm.text and g.accounts["m4"] not in confirm.text
    assert "1 户已不再欠费" in confirm.text and "¥15.00" in confirm.text
    key = re.search(r'name="form_key" value="([0-9a-f]+)"', confirm.text).group(1)  # type: ignore[union-attr]
    form: dict[str, object] = {"form_key": key, "account": [str(m1), str(m4)]}

    forged = await http.post("/console/arrears/remind", data=form, follow_redirects=False)
    assert forged.status_code == 403
    assert await s.q("SELECT count(*) FROM notification") == 0
    first = await _post(http, "/console/arrears/remind", form)
    again = await _post(http, "/console/arrears/remind", form)  # a double click
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"] == f"/console/arrears/sent/{key}"
    notes = await s.rows("SELECT account_id, cause_kind, variables, status FROM notification")
    assert [(n.account_id, n.cause_kind, n.status) for n in notes] == [
        (m1, "arrears_reminder", "queued")
    ]
    assert notes[0].variables["owed"] == "15.00" and notes[0].variables["days_owed"] == "10"
    audit = await s.rows("SELECT detail FROM audit_event WHERE action = 'dunning.remind'")
    assert [a.detail["accounts"] for a in audit] == [g.accounts["m1"]]

    noon = at(datetime.now(UTC) + timedelta(days=1), 12, 0)  # after it, not in quiet hours
    await worker(db, Clock(noon), LogProvider()).deliver(g.tenant_id)
    sent = await http.get(first.headers["location"])
    assert sent.status_code == 200 and "已发出" in sent.text and "+8613800138001" in sent.text
    mine = await http.get(f"/console/accounts/{g.accounts['m1']}/notifications")
    assert "催费提醒" in mine.text and "已发出" in mine.text and "短信" in mine.text
    book = await http.get(f"/console/accounts/{g.accounts['m1']}/notifications?export=xlsx")
    lines = list(load_workbook(io.BytesIO(book.content)).active.iter_rows(values_only=True))
    assert lines[0][:3] == ("时间", "消息类型", "计量点")
    assert [(r[1], r[5]) for r in lines[1:]] == [("催费提醒", "已发出")]
    other_kind = await http.get(
        f"/console/accounts/{g.accounts['m1']}/notifications?kind=supply_cut"
    )
    assert "尚未向该客户发送任何消息" in other_kind.text
    none_yet = await http.get(f"/console/accounts/{g.accounts['m4']}/notifications")
    assert "尚未向该客户发送任何消息" in none_yet.text

    overview = await http.get("/console/reports/notifications")
    assert overview.status_code == 200 and "通知发送情况" in overview.text
    xlsx = await http.get("/console/reports/notifications?export=xlsx")
    rows = list(load_workbook(io.BytesIO(xlsx.content)).active.iter_rows(values_only=True))
    assert rows[0][:4] == ("日期", "渠道", "等待中", "已发出")
    assert [(r[1], r[3]) for r in rows[1:]] == [("短信", 1)]
    bad = await http.get("/console/reports/notifications?first=2026-02-30")
    assert bad.status_code == 422 and "年-月-日" in bad.text
    texts = await http.get("/console/reports/notifications/templates")
    assert "催费提醒" in texts.text and "Arrears reminder" in texts.text
    assert "【{site}】户号{account}欠费¥{owed}" in texts.text

    # another group sees none of it
    spec = group_spec()
    await seed_group(db, spec)
    async with api_client(CloudSettings(database_url=db_url), db_url) as them:
        await console_login(them, spec.slug)
        assert (await them.get(first.headers["location"])).status_code == 404
        page = await them.get("/console/reports/notifications?export=xlsx")
        assert len(list(load_workbook(io.BytesIO(page.content)).active.iter_rows())) == 1


async def test_reminders_need_their_permission(
    db: Database,
    owing: tuple[str, Seeded, dict[str, uuid.UUID]],  # noqa: F811
) -> None:
    _slug, g, _ = owing
    clerk = Principal(g.tenant_id, g.operator_id, "clerk", frozenset({"registry.view"}))
    account = await Shop(db, g).account_id("m1")
    with pytest.raises(Forbidden):
        await remind(db, clerk, (account,), uuid.uuid4().hex, datetime.now(UTC))
