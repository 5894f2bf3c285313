"""The console's Settings pages: a property group onboarded in the browser (site,
building, premises, outlet, tariff with the margin refusal then accepted with a reason,
role, operator scoped to an outlet, grant); a repeated form creates one row; a form
without the CSRF token, another group's ids and a missing permission are refused and
change nothing."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from cloud.db import Database
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_form, console_login, group_spec

S = "/console/settings"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


@pytest.fixture
async def seeded(db: Database) -> tuple[str, Seeded]:
    spec = group_spec()
    return spec.slug, await seed_group(db, spec)


def key_of(html: str, field: str = "form_key", nth: int = 0) -> str:
    keys = re.findall(rf'name="{field}" value="([0-9a-f]+)"', html)
    assert keys, "the page has no one-time form key"
    return keys[nth]


async def fresh_key(http: httpx.AsyncClient, url: str, nth: int = 0) -> str:
    page = await http.get(url)
    assert page.status_code == 200, page.text
    return key_of(page.text, nth=nth)


async def count(db: Database, tenant_id: uuid.UUID, table: str) -> int:
    async with db.tenant(tenant_id) as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)


SITE = {
    "name": "滨江商业广场",
    "timezone": "Asia/Shanghai",
    "business_day_cutoff": "04:00",
    "friendly_night_start": "22:00",
    "friendly_night_end": "08:00",
    "friendly_weekends": "on",
    "notice_minutes": "30",
    "alarm_hysteresis": "2.00",
    "catalogue_price": "1.0000",
    "price_margin": "15",
}


async def add_site(http: httpx.AsyncClient, db: Database, tenant_id: uuid.UUID) -> uuid.UUID:
    key = await fresh_key(http, f"{S}/sites")
    r = await console_form(http, f"{S}/sites", {**SITE, "form_key": key})
    assert r.status_code == 303 and r.headers["location"] == f"{S}/sites?done=site", r.text
    async with db.tenant(tenant_id) as conn:
        found = await conn.scalar(
            sa.text("SELECT id FROM site WHERE name = :n"), {"n": SITE["name"]}
        )
    assert isinstance(found, uuid.UUID)
    return found


async def test_onboard_a_group_in_the_browser(
    http: httpx.AsyncClient, db: Database, seeded: tuple[str, Seeded]
) -> None:
    slug, group = seeded
    await console_login(http, slug)
    index = await http.get(S)
    for label in ("站点", "楼栋与房间", "营业厅", "电价", "操作员与角色", "异地售电授权", "网关"):
        assert label in index.text

    # a site, then its settings changed
    site_id = await add_site(http, db, group.tenant_id)
    listed = await http.get(f"{S}/sites?done=site")
    assert 'role="status"' in listed.text and SITE["name"] in listed.text
    assert "04:00" in listed.text and "22:00–08:00" in listed.text
    edit = await http.get(f"{S}/sites/{site_id}")
    assert 'value="15"' in edit.text and "selected>Asia/Shanghai" in edit.text
    changed = await console_form(
        http, f"{S}/sites/{site_id}", {**SITE, "notice_minutes": "45", "price_margin": "10"}
    )
    assert changed.status_code == 303
    async with db.tenant(group.tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text("SELECT notice_minutes, price_margin FROM site WHERE id = :s"),
                {"s": site_id},
            )
        ).one()
    assert row.notice_minutes == 45 and str(row.price_margin) == "0.1000"
    bad = await console_form(http, f"{S}/sites/{site_id}", {**SITE, "friendly_night_end": ""})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    assert "夜间不断电时段须同时填写开始和结束" in bad.text
    assert "45" not in bad.text or 'value="滨江商业广场"' in bad.text  # the input is kept

    # a building (sent twice with the same key: one row) and its premises
    key = await fresh_key(http, f"{S}/sites/{site_id}/buildings")
    form = {"name": "A座", "form_key": key}
    first = await console_form(http, f"{S}/sites/{site_id}/buildings", form)
    second = await console_form(http, f"{S}/sites/{site_id}/buildings", form)
    assert first.status_code == second.status_code == 303
    assert second.headers["location"] == first.headers["location"]
    assert await count(db, group.tenant_id, "building") == 1
    page = await http.get(first.headers["location"])
    assert "A座" in page.text and 'role="status"' in page.text
    building_id = re.search(rf"/buildings/({UUID})/premises", page.text).group(1)  # type: ignore[union-attr]
    url = f"{S}/buildings/{building_id}/premises"
    key = await fresh_key(http, url)
    premises = {"floor": "1", "number": "101", "kind": "shop", "floor_area": "85.5"}
    made = await console_form(http, url, {**premises, "form_key": key})
    assert made.status_code == 303
    again = await console_form(http, url, {**premises, "form_key": await fresh_key(http, url)})
    assert again.status_code == 409 and 'role="alert"' in again.text
    assert "A座 已有房号 101。" in again.text
    retry = await console_form(  # the refused form's key was released: corrected, it works
        http, url, {**premises, "number": "102", "form_key": key_of(again.text)}
    )
    assert retry.status_code == 303
    listing = await http.get(f"{url}?q=10")
    assert "101" in listing.text and "102" in listing.text and "商铺" in listing.text
    xlsx = await http.get(f"{url}?export=xlsx")
    rows = list(load_workbook(io.BytesIO(xlsx.content)).active.iter_rows(values_only=True))
    assert rows[0][0] == "楼栋" and len(rows) == 3 and rows[1][2] == "101"

    # an outlet
    key = await fresh_key(http, f"{S}/sites/{site_id}/outlets")
    r = await console_form(
        http, f"{S}/sites/{site_id}/outlets", {"name": "一号营业厅", "form_key": key}
    )
    assert r.status_code == 303
    async with db.tenant(group.tenant_id) as conn:
        outlet_id = await conn.scalar(
            sa.text("SELECT id FROM outlet WHERE site_id = :s"), {"s": site_id}
        )
    for url, header, value in (  # the site's lists, each to Excel, in the clerk's language
        (f"{S}/sites", "站点", None),
        (f"{S}/sites/{site_id}/buildings", "站点", "A座"),
        (f"{S}/sites/{site_id}/outlets", "站点", "一号营业厅"),
    ):
        page = await http.get(url)
        assert f"{url}?export=xlsx" in page.text
        book = await http.get(f"{url}?export=xlsx")
        assert book.headers["content-type"].startswith("application/vnd.openxmlformats")
        sheet = list(load_workbook(io.BytesIO(book.content)).active.iter_rows(values_only=True))
        assert sheet[0][0] == header and len(sheet) >= 2
        if value is not None:
            assert [r[1] for r in sheet[1:]] == [value]

    # a tariff above the catalogue price plus margin: refused, then accepted with a reason
    key = await fresh_key(http, f"{S}/tariffs")
    tariff = {
        "name": "商业电价",
        "utility": "electricity",
        "site_id": str(site_id),
        "kind": "flat",
        "unit_price": "1.5000",
        "monthly_fee": "0",
        "form_key": key,
    }
    refused = await console_form(http, f"{S}/tariffs", tariff)
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert 'name="margin_ack"' in refused.text and 'value="1.5000"' in refused.text
    assert (
        "单价 1.5000 高于站点“滨江商业广场”的上限 1.1000（目录电价 1.0000 加 10% 上浮）"
        in refused.text
    )
    accepted = await console_form(
        http,
        f"{S}/tariffs",
        {**tariff, "margin_ack": "on", "margin_reason": "老合同价", "form_key": key},
    )
    assert accepted.status_code == 303, accepted.text
    detail = await http.get(accepted.headers["location"])
    assert "老合同价" in detail.text and "¥1.50" in detail.text
    assert f"/api/v1/sites/{site_id}/price-notice.pdf" in detail.text
    listed_tariffs = await http.get(f"{S}/tariffs")
    assert "商业电价" in listed_tariffs.text

    # a version later, in the site's local time, and the seeded site's tariff put on its point
    tariff_id = re.search(rf"/tariffs/({UUID})", accepted.headers["location"]).group(1)  # type: ignore[union-attr]
    start = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    turl = f"{S}/tariffs/{tariff_id}"
    version = {"kind": "flat", "unit_price": "1.1000", "effective_from": start}
    r = await console_form(
        http, f"{turl}/versions", {**version, "form_key": await fresh_key(http, turl)}
    )
    assert r.status_code == 303, r.text
    shown = await http.get(turl)
    assert "¥1.10" in shown.text and f"{start.replace('T', ' ')} (Asia/Shanghai)" in shown.text
    key = await fresh_key(http, f"{S}/tariffs")
    r = await console_form(
        http,
        f"{S}/tariffs",
        {
            "name": "阶梯",
            "utility": "electricity",
            "site_id": str(group.site_id),
            "kind": "tiered",
            "tier_up_1": "100",
            "tier_price_1": "0.9",
            "tier_price_2": "1.0",
            "monthly_fee": "5",
            "form_key": key,
        },
    )
    assert r.status_code == 303, r.text
    turl = r.headers["location"].split("?")[0]
    point = str(group.points["m1"])
    assert point in (await http.get(turl)).text
    r = await console_form(http, f"{turl}/assign", {"point_ids": point})
    assert r.status_code == 303
    async with db.tenant(group.tenant_id) as conn:
        on = await conn.scalar(
            sa.text("SELECT tariff_id FROM service_point WHERE id = :p"), {"p": point}
        )
    assert str(on) in turl

    # a role, an operator scoped to the new outlet, a grant at the seeded outlet, revoked
    ops = f"{S}/operators"
    page = await http.get(ops)
    role_key = key_of(page.text, nth=1)
    r = await console_form(
        http,
        f"{S}/roles",
        {"name": "收费员", "permissions": ["registry.view", "sale.create"], "form_key": role_key},  # type: ignore[dict-item]
    )
    assert r.status_code == 303
    page = await http.get(ops)
    assert "收费员" in page.text and "售电" in page.text
    role_id = re.search(rf'<option value="({UUID})"[^>]*>收费员', page.text).group(1)  # type: ignore[union-attr]
    operator = {
        "username": "clerk1",
        "display_name": "王芳",
        "password": "clerk-pass-1",
        "role_id": role_id,
        "scope": "outlet",
        "outlet_ids": str(outlet_id),
        "form_key": key_of(page.text),
    }
    r = await console_form(http, f"{S}/operators", operator)
    assert r.status_code == 303, r.text
    page = await http.get(ops)
    assert "clerk1" in page.text and "一号营业厅" in page.text
    found = re.search(rf"clerk1</a></td>.*?/operators/({UUID})/deactivate", page.text, re.S)
    clerk_id = found.group(1)  # type: ignore[union-attr]

    local = datetime.now(ZoneInfo("Asia/Shanghai"))
    grant = {
        "operator_id": clerk_id,
        "outlet_id": str(group.outlet_id),
        "starts_at": local.strftime("%Y-%m-%dT%H:%M"),
        "ends_at": (local + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        "reason": "支援一号厅",
        "form_key": await fresh_key(http, f"{S}/grants"),
    }
    too_long = await console_form(
        http,
        f"{S}/grants",
        {**grant, "ends_at": (local + timedelta(days=40)).strftime("%Y-%m-%dT%H:%M")},
    )
    assert too_long.status_code == 422 and 'role="alert"' in too_long.text
    r = await console_form(http, f"{S}/grants", grant)
    assert r.status_code == 303, r.text
    page = await http.get(f"{S}/grants")
    assert "支援一号厅" in page.text and "(Asia/Shanghai)" in page.text
    grant_id = re.search(rf"/grants/({UUID})/revoke", page.text).group(1)  # type: ignore[union-attr]
    r = await console_form(http, f"{S}/grants/{grant_id}/revoke", {})
    assert r.status_code == 303
    assert "已撤销" in (await http.get(f"{S}/grants")).text

    # the clerk's password reset, then the clerk deactivated
    r = await console_form(http, f"{S}/operators/{clerk_id}/password", {"password": "short"})
    assert r.status_code == 422 and 'role="alert"' in r.text
    r = await console_form(http, f"{S}/operators/{clerk_id}/password", {"password": "new-pass-22"})
    assert r.status_code == 303
    r = await console_form(http, f"{S}/operators/{clerk_id}/deactivate", {})
    assert r.status_code == 303
    async with db.tenant(group.tenant_id) as conn:
        active = await conn.scalar(
            sa.text("SELECT active FROM operator WHERE id = :o"), {"o": clerk_id}
        )
    assert active is False

    # the same pages in English
    for url, text in (
        (S, "Cross-outlet grants"),
        (f"{S}/sites/{site_id}", "Business-day cut-off"),
        (f"{S}/tariffs", "New tariff"),
        (f"{S}/operators", "Sell credit"),
        (f"{S}/grants", "New grant"),
    ):
        page = await http.get(url, params={"lang": "en"})
        assert page.status_code == 200 and text in page.text


async def test_a_form_without_csrf_creates_nothing(
    http: httpx.AsyncClient, db: Database, seeded: tuple[str, Seeded]
) -> None:
    slug, group = seeded
    await console_login(http, slug)
    key = await fresh_key(http, f"{S}/sites")
    r = await http.post(f"{S}/sites", data={**SITE, "form_key": key})
    assert r.status_code == 403
    r = await http.post(f"{S}/sites/{group.site_id}/buildings", data={"name": "X", "form_key": key})
    assert r.status_code == 403
    assert await count(db, group.tenant_id, "site") == 1
    assert await count(db, group.tenant_id, "building") == 0


async def test_another_groups_ids_are_not_found(
    http: httpx.AsyncClient, db: Database, seeded: tuple[str, Seeded]
) -> None:
    slug, _group = seeded
    other = await seed_group(db, group_spec())
    await console_login(http, slug)
    assert (await http.get(f"{S}/sites/{other.site_id}")).status_code == 404
    assert (await http.get(f"{S}/sites/{other.site_id}/buildings")).status_code == 404
    key = await fresh_key(http, f"{S}/sites")
    r = await console_form(
        http, f"{S}/sites/{other.site_id}/buildings", {"name": "X", "form_key": key}
    )
    assert r.status_code == 404
    r = await console_form(http, f"{S}/sites/{other.site_id}", SITE)
    assert r.status_code == 404
    r = await console_form(
        http, f"{S}/sites/{other.site_id}/outlets", {"name": "X", "form_key": key}
    )
    assert r.status_code == 404
    r = await console_form(http, f"{S}/operators/{other.operator_id}/deactivate", {})
    assert r.status_code == 404
    r = await console_form(
        http, f"{S}/operators/{other.operator_id}/password", {"password": "taken-over-1"}
    )
    assert r.status_code == 404
    async with db.tenant(other.tenant_id) as conn:
        other_tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
    assert (await http.get(f"{S}/tariffs/{other_tariff}")).status_code == 404
    version = {"kind": "flat", "unit_price": "9", "form_key": key}
    r = await console_form(http, f"{S}/tariffs/{other_tariff}/versions", version)
    assert r.status_code == 404
    own = re.search(rf"/tariffs/({UUID})", (await http.get(f"{S}/tariffs")).text).group(1)  # type: ignore[union-attr]
    r = await console_form(
        http, f"{S}/tariffs/{own}/assign", {"point_ids": str(other.points["m1"])}
    )
    assert r.status_code == 404
    r = await console_form(
        http,
        f"{S}/buildings/{uuid.uuid4()}/premises",
        {"floor": "1", "number": "1", "form_key": key},
    )
    assert r.status_code == 404
    assert (await http.get(f"{S}/buildings/{uuid.uuid4()}/premises")).status_code == 404
    grant = {
        "operator_id": str(other.operator_id),
        "outlet_id": str(other.outlet_id),
        # (within a year: a later one is refused before its ids are looked at)
        "starts_at": (datetime.now() + timedelta(days=30)).strftime("%Y-%m-%dT08:00"),
        "ends_at": (datetime.now() + timedelta(days=31)).strftime("%Y-%m-%dT08:00"),
        "reason": "forged",
        "form_key": key,
    }
    assert (await console_form(http, f"{S}/grants", grant)).status_code == 404
    assert await count(db, other.tenant_id, "tariff_version") == 1
    assert await count(db, other.tenant_id, "outlet_grant") == 0
    assert await count(db, other.tenant_id, "building") == 0
    assert await count(db, other.tenant_id, "outlet") == 1
    async with db.tenant(other.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT bool_and(active) FROM operator"))
        name = await conn.scalar(sa.text("SELECT name FROM site"))
    assert name != SITE["name"]


async def test_an_operator_without_registry_edit_is_told(
    db_url: str, db: Database, seeded: tuple[str, Seeded]
) -> None:
    slug, group = seeded
    async with api_client(CloudSettings(database_url=db_url), db_url) as admin:
        await console_login(admin, slug)
        page = await admin.get(f"{S}/operators")
        r = await console_form(
            admin,
            f"{S}/roles",
            {"name": "查看", "permissions": "registry.view", "form_key": key_of(page.text, nth=1)},
        )
        assert r.status_code == 303
        page = await admin.get(f"{S}/operators")
        role_id = re.search(rf'<option value="({UUID})"[^>]*>查看', page.text).group(1)  # type: ignore[union-attr]
        r = await console_form(
            admin,
            f"{S}/operators",
            {
                "username": "viewer",
                "display_name": "只读",
                "password": "viewer-pass-1",
                "role_id": role_id,
                "scope": "tenant",
                "form_key": key_of(page.text),
            },
        )
        assert r.status_code == 303, r.text
    async with api_client(CloudSettings(database_url=db_url), db_url) as viewer:
        await console_login(viewer, slug, "viewer", "viewer-pass-1")
        url = f"{S}/sites/{group.site_id}/buildings"
        page = await viewer.get(url)
        assert page.status_code == 200  # seeing is allowed
        r = await console_form(viewer, url, {"name": "B座", "form_key": key_of(page.text)})
        assert r.status_code == 403 and 'role="alert"' in r.text and "无权操作" in r.text
        assert 'value="B座"' in r.text  # the input is kept
        unchanged = await viewer.get(f"{S}/sites/{group.site_id}")
        assert unchanged.status_code == 200
        form = dict(
            re.findall(r'<input id="(\w+)" name="\w+"[^>]*? value="([^"]*)"', unchanged.text)
        )
        r = await console_form(viewer, f"{S}/sites/{group.site_id}", form)
        assert r.status_code == 403 and "需要“编辑站点、楼栋、房间与营业厅”权限" in r.text
        ops = await viewer.get(f"{S}/operators")
        assert ops.status_code == 403 and "无权操作" in ops.text
    assert await count(db, group.tenant_id, "building") == 0


async def test_a_site_administrator_sees_only_their_site(
    db_url: str, db: Database, seeded: tuple[str, Seeded]
) -> None:
    slug, group = seeded
    async with api_client(CloudSettings(database_url=db_url), db_url) as admin:
        await console_login(admin, slug)
        site_id = await add_site(admin, db, group.tenant_id)
        page = await admin.get(f"{S}/operators")
        perms = ["registry.view", "registry.edit", "operator.manage"]
        r = await console_form(
            admin,
            f"{S}/roles",
            {"name": "站点管理员", "permissions": perms, "form_key": key_of(page.text, nth=1)},  # type: ignore[dict-item]
        )
        assert r.status_code == 303
        page = await admin.get(f"{S}/operators")
        role_id = re.search(rf'<option value="({UUID})"[^>]*>站点管理员', page.text).group(1)  # type: ignore[union-attr]
        operator = {
            "username": "siteadmin",
            "display_name": "李强",
            "password": "site-pass-1",
            "role_id": role_id,
            "scope": "site",
            "form_key": key_of(page.text),
        }
        none = await console_form(admin, f"{S}/operators", operator)
        assert none.status_code == 422 and "请至少选择一个站点" in none.text
        assert 'value="李强"' in none.text and "site-pass-1" not in none.text
        r = await console_form(
            admin,
            f"{S}/operators",
            {**operator, "site_ids": str(site_id), "form_key": key_of(none.text)},
        )
        assert r.status_code == 303, r.text
    async with api_client(CloudSettings(database_url=db_url), db_url) as scoped:
        await console_login(scoped, slug, "siteadmin", "site-pass-1")
        sites = await scoped.get(f"{S}/sites")
        assert SITE["name"] in sites.text and "Riverside Market" not in sites.text
        assert (await scoped.get(f"{S}/sites/{group.site_id}/buildings")).status_code == 404
        key = key_of(sites.text)
        r = await console_form(scoped, f"{S}/sites", {**SITE, "name": "另一站点", "form_key": key})
        assert r.status_code == 403 and "只有全集团范围的操作员可以新增站点" in r.text
        r = await console_form(
            scoped, f"{S}/sites/{site_id}/outlets", {"name": "二号厅", "form_key": key_of(r.text)}
        )
        assert r.status_code == 303
    assert await count(db, group.tenant_id, "site") == 2
