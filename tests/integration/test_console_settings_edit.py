"""The console's pages that change what onboarding made (premises, roles, operators, a
tariff's name and state) and the settings lists' Excel exports, against the real
PostgreSQL: a change is saved and audited, a form sent again changes nothing, a refusal
is worded in Chinese and changes nothing, another group's ids are not found."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

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


def key_of(html: str) -> str:
    found = re.search(r'name="form_key" value="([0-9a-f]+)"', html)
    assert found, "the page has no one-time form key"
    return found.group(1)


async def one(db: Database, tenant_id: uuid.UUID, sql: str, **params: Any) -> Any:
    async with db.tenant(tenant_id) as conn:
        return (await conn.execute(sa.text(sql), params)).one()


async def audits(db: Database, tenant_id: uuid.UUID, action: str) -> int:
    async with db.tenant(tenant_id) as conn:
        return int(
            await conn.scalar(
                sa.text("SELECT count(*) FROM audit_event WHERE action = :a"), {"a": action}
            )
            or 0
        )


def sheet(content: bytes, index: int = 0) -> list[tuple[Any, ...]]:
    book = load_workbook(io.BytesIO(content))
    return list(book.worksheets[index].iter_rows(values_only=True))


async def add_premises(http: httpx.AsyncClient, site_id: uuid.UUID) -> tuple[str, str]:
    """A building with two premises through the console; (building id, first premises id)."""
    url = f"{S}/sites/{site_id}/buildings"
    made = await console_form(
        http, url, {"name": "B座", "form_key": key_of((await http.get(url)).text)}
    )
    assert made.status_code == 303, made.text
    page = await http.get(made.headers["location"])
    building = re.search(rf"/buildings/({UUID})/premises", page.text).group(1)  # type: ignore[union-attr]
    url = f"{S}/buildings/{building}/premises"
    for number in ("201", "202"):
        form = {"floor": "2", "number": number, "kind": "shop", "floor_area": "40"}
        r = await console_form(http, url, {**form, "form_key": key_of((await http.get(url)).text)})
        assert r.status_code == 303, r.text
    listing = await http.get(url)
    first = re.search(rf'/premises/({UUID})" aria-label="编辑房间 201"', listing.text)
    assert first, "the premises list has no edit link"
    return building, first.group(1)


async def test_premises_edited_in_place(
    http: httpx.AsyncClient, db: Database, db_url: str, seeded: tuple[str, Seeded]
) -> None:
    slug, group = seeded
    await console_login(http, slug)
    building, premises = await add_premises(http, group.site_id)
    url = f"{S}/premises/{premises}"
    page = await http.get(url)
    assert page.status_code == 200 and 'value="201"' in page.text and 'value="40"' in page.text
    assert '<label for="floor_area">' in page.text

    saved = await console_form(
        http, url, {"floor": "2F", "number": "201A", "kind": "office", "floor_area": "42.5"}
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{S}/buildings/{building}/premises?done=premises_saved"
    assert "房间已保存" in (await http.get(saved.headers["location"])).text
    row = await one(
        db, group.tenant_id, "SELECT floor, number, kind, floor_area FROM premises WHERE id = :p",
        p=premises,
    )  # fmt: skip
    assert (row.floor, row.number, row.kind, str(row.floor_area)) == (
        "2F",
        "201A",
        "office",
        "42.50",
    )
    assert await audits(db, group.tenant_id, "premises.updated") == 1

    # the same form again: nothing differs, nothing is written
    again = await console_form(
        http, url, {"floor": "2F", "number": "201A", "kind": "office", "floor_area": "42.50"}
    )
    assert again.headers["location"].endswith("?done=unchanged")
    assert await audits(db, group.tenant_id, "premises.updated") == 1

    # another premises' number: refused in Chinese, the input kept, nothing changed
    taken = await console_form(
        http, url, {"floor": "2F", "number": "202", "kind": "office", "floor_area": ""}
    )
    assert taken.status_code == 409 and 'role="alert"' in taken.text
    assert "B座 已有房号 202。" in taken.text and 'value="202"' in taken.text
    bad_area = await console_form(
        http, url, {"floor": "2F", "number": "201A", "kind": "office", "floor_area": "四十"}
    )
    assert bad_area.status_code == 422 and 'role="alert"' in bad_area.text
    row = await one(db, group.tenant_id, "SELECT number FROM premises WHERE id = :p", p=premises)
    assert row.number == "201A"

    # another group's administrator does not find it
    other = group_spec()
    await seed_group(db, other)
    async with api_client(CloudSettings(database_url=db_url), db_url) as stranger:
        await console_login(stranger, other.slug)
        assert (await stranger.get(url)).status_code == 404
        r = await console_form(stranger, url, {"floor": "9", "number": "X", "kind": "shop"})
        assert r.status_code == 404
    row = await one(db, group.tenant_id, "SELECT number FROM premises WHERE id = :p", p=premises)
    assert row.number == "201A"


async def test_roles_and_operators_changed_and_reactivated(
    http: httpx.AsyncClient, db: Database, db_url: str, seeded: tuple[str, Seeded]
) -> None:
    slug, group = seeded
    await console_login(http, slug)
    ops = await http.get(f"{S}/operators")
    role_key = re.findall(r'name="form_key" value="([0-9a-f]+)"', ops.text)[1]
    made = await console_form(
        http,
        f"{S}/roles",
        {"name": "收费员", "permissions": ["registry.view"], "form_key": role_key},  # type: ignore[dict-item]
    )
    assert made.status_code == 303
    ops = await http.get(f"{S}/operators")
    role_id = re.search(rf'/roles/({UUID})">收费员', ops.text).group(1)  # type: ignore[union-attr]
    clerk = {
        "username": "clerk9",
        "display_name": "李雷",
        "password": "clerk-pass-9",
        "role_id": role_id,
        "scope": "outlet",
        "outlet_ids": str(group.outlet_id),
        "form_key": key_of(ops.text),
    }
    assert (await console_form(http, f"{S}/operators", clerk)).status_code == 303
    ops = await http.get(f"{S}/operators")
    clerk_id = re.search(rf'/operators/({UUID})">clerk9', ops.text).group(1)  # type: ignore[union-attr]

    # the role: renamed and given the sale permission; the page lists who has it
    page = await http.get(f"{S}/roles/{role_id}")
    assert "clerk9" in page.text and 'id="perm-registry.view" type="checkbox"' in page.text
    assert re.search(r'value="registry.view" checked', page.text)
    r = await console_form(
        http,
        f"{S}/roles/{role_id}",
        {"name": "柜台收费员", "permissions": ["registry.view", "sale.create"]},  # type: ignore[dict-item]
    )
    assert r.status_code == 303 and r.headers["location"] == f"{S}/operators?done=role_saved"
    row = await one(
        db, group.tenant_id, "SELECT name, permissions FROM role WHERE id = :r", r=role_id
    )
    assert row.name == "柜台收费员" and set(row.permissions) == {"registry.view", "sale.create"}
    refused = await console_form(  # a permission that does not exist
        http, f"{S}/roles/{role_id}", {"name": "柜台收费员", "permissions": "root"}
    )
    assert refused.status_code == 422 and 'role="alert"' in refused.text

    # the clerk signs in, then is moved to the whole site and renamed
    async with api_client(CloudSettings(database_url=db_url), db_url) as clerk_http:
        await console_login(clerk_http, slug, "clerk9", "clerk-pass-9")
        assert (await clerk_http.get("/console/counter")).status_code == 200
        page = await http.get(f"{S}/operators/{clerk_id}")
        assert (
            'value="李雷"' in page.text
            and 'id="scope-outlet" type="radio" name="scope" value="outlet" checked' in page.text
        )
        moved = {
            "display_name": "李雷雷",
            "role_id": role_id,
            "scope": "site",
            "site_ids": str(group.site_id),
            "active": "on",
        }
        r = await console_form(http, f"{S}/operators/{clerk_id}", moved)
        assert r.status_code == 303 and r.headers["location"].endswith("done=operator_saved")
        row = await one(
            db, group.tenant_id,
            "SELECT display_name, scope, scope_ids, active FROM operator WHERE id = :o", o=clerk_id,
        )  # fmt: skip
        assert (row.display_name, row.scope, row.scope_ids, row.active) == (
            "李雷雷", "site", [group.site_id], True,
        )  # fmt: skip
        # a scope naming no site is refused and changes nothing
        r = await console_form(http, f"{S}/operators/{clerk_id}", {**moved, "site_ids": ""})
        assert r.status_code == 422 and 'role="alert"' in r.text

        # deactivated from its page: the clerk's session ends at once
        r = await console_form(http, f"{S}/operators/{clerk_id}", {**moved, "active": ""})
        assert r.headers["location"].endswith("done=deactivated")
        gone = await clerk_http.get("/console/counter", follow_redirects=False)
        assert gone.status_code in (302, 303) and "/console/login" in gone.headers["location"]

    # and active again: the clerk signs in with the same password
    r = await console_form(http, f"{S}/operators/{clerk_id}", moved)
    assert r.headers["location"].endswith("done=reactivated")
    assert "已重新启用" in (await http.get(r.headers["location"])).text
    async with api_client(CloudSettings(database_url=db_url), db_url) as clerk_http:
        await console_login(clerk_http, slug, "clerk9", "clerk-pass-9")

    # an administrator cannot deactivate themselves, even by a forged form
    me = await http.get(f"{S}/operators/{group.operator_id}")
    assert 'name="active" value="on"' in me.text and 'id="active"' not in me.text
    r = await console_form(
        http,
        f"{S}/operators/{group.operator_id}",
        {
            "display_name": "Admin",
            "role_id": re.search(rf'<option value="({UUID})" selected', me.text).group(1),
            "scope": "tenant",
        },  # type: ignore[union-attr]
    )
    assert r.status_code == 422 and "不能停用您自己" in r.text
    row = await one(
        db, group.tenant_id, "SELECT active FROM operator WHERE id = :o", o=group.operator_id
    )
    assert row.active is True

    # the operators and roles as Excel: one sheet each, in Chinese
    book = await http.get(f"{S}/operators?export=xlsx")
    people, roles = sheet(book.content, 0), sheet(book.content, 1)
    assert people[0][:4] == ("用户名", "姓名", "角色", "范围")
    assert ("clerk9", "李雷雷", "柜台收费员") in [r[:3] for r in people[1:]]
    assert ("柜台收费员", "查看档案、售电") in [r[:2] for r in roles[1:]] or any(
        r[0] == "柜台收费员" and "售电" in r[1] for r in roles[1:]
    )

    # another group's ids are not found
    other = group_spec()
    await seed_group(db, other)
    async with api_client(CloudSettings(database_url=db_url), db_url) as stranger:
        await console_login(stranger, other.slug)
        for url in (f"{S}/operators/{clerk_id}", f"{S}/roles/{role_id}"):
            assert (await stranger.get(url)).status_code == 404
            r = await console_form(stranger, url, {**moved, "name": "x", "active": ""})
            assert r.status_code == 404
    row = await one(db, group.tenant_id, "SELECT active FROM operator WHERE id = :o", o=clerk_id)
    assert row.active is True


async def test_a_tariff_renamed_and_deactivated_and_the_lists_exported(
    http: httpx.AsyncClient, db: Database, db_url: str, seeded: tuple[str, Seeded]
) -> None:
    slug, group = seeded
    await console_login(http, slug)
    listed = await http.get(f"{S}/tariffs")
    used_id = re.search(rf'/tariffs/({UUID})"', listed.text).group(1)  # type: ignore[union-attr]
    turl = f"{S}/tariffs/{used_id}"
    page = await http.get(turl)
    assert 'id="tariff_active" name="active" type="checkbox" checked' in page.text

    # the seeded tariff is on a point: renamed, but not deactivated
    r = await console_form(http, turl, {"name": "商铺电价", "active": "on"})
    assert r.status_code == 303 and r.headers["location"] == f"{turl}?done=tariff"
    refused = await console_form(http, turl, {"name": "商铺电价"})
    assert refused.status_code == 422
    assert "价格方案“商铺电价”正被 1 个计量点使用：请先给它们换用其他价格方案。" in refused.text
    row = await one(db, group.tenant_id, "SELECT name, active FROM tariff WHERE id = :t", t=used_id)
    assert (row.name, row.active) == ("商铺电价", True)

    # a new tariff, unused: deactivated, then refused as a point's tariff, then active again
    key = key_of(listed.text)
    form = {
        "name": "备用电价", "utility": "electricity", "site_id": str(group.site_id),
        "kind": "flat", "unit_price": "0.9000", "monthly_fee": "0", "form_key": key,
    }  # fmt: skip
    made = await console_form(http, f"{S}/tariffs", form)
    assert made.status_code == 303, made.text
    spare = made.headers["location"].split("?")[0]
    r = await console_form(http, spare, {"name": "备用电价"})
    assert r.status_code == 303
    assert '<span class="muted">(已停用)</span></h2>' in (await http.get(spare)).text
    point = str(group.points["m1"])
    r = await console_form(http, f"{spare}/assign", {"point_ids": point})
    assert r.status_code == 422 and "已停用：请先在其页面启用" in r.text
    assert (
        await console_form(http, spare, {"name": "备用电价", "active": "on"})
    ).status_code == 303
    assert await audits(db, group.tenant_id, "tariff.update") == 3

    # the lists as Excel, each in the clerk's language
    book = sheet((await http.get(f"{S}/tariffs?export=xlsx")).content)
    assert book[0][:3] == ("价格方案", "类别", "站点")
    names = {r[0]: r for r in book[1:]}
    assert names["商铺电价"][3] == "正常" and names["备用电价"][5] == 0.9
    grants = sheet((await http.get(f"{S}/grants?export=xlsx")).content)
    assert grants[0][0] == "操作员" and len(grants) == 1
    gateways = sheet((await http.get("/console/gateways?export=xlsx")).content)
    assert gateways[0][0] == "网关" and gateways[1][0].startswith("gw-")
    imports = sheet((await http.get("/console/imports?export=xlsx")).content)
    assert imports[0][:2] == ("时间", "文件") and len(imports) == 1
