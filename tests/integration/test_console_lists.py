"""The console's lists against the real PostgreSQL: settings lists, gateways and import
runs are searched and paged as the accounts are (the search's rows are what the Excel file
holds); the counter's search exports to Excel; a re-sent real import imports once and
shows the first run; other groups' runs and rows are never shown."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from cloud.db import Database
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_form, console_login, group_spec
from tests.integration.test_import import _gateway, rows_for, to_csv
from tests.integration.test_import import _group as import_group


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


def _sheet(r: httpx.Response) -> list[tuple[object, ...]]:
    assert r.status_code == 200, r.text
    return list(load_workbook(io.BytesIO(r.content)).active.iter_rows(values_only=True))


def _role_row(name: str, page: httpx.Response) -> bool:
    """The role's row in the roles' table (every role is also a choice of the new operator)."""
    return re.search(rf'/console/settings/roles/[0-9a-f-]+">{name}</a>', page.text) is not None


async def test_settings_lists_are_searched_and_paged(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec())
    async with db.tenant(g.tenant_id) as conn:
        for i in range(1, 56):  # 55 buildings: two pages
            await conn.execute(
                sa.text(
                    "INSERT INTO building (id, tenant_id, site_id, name) "
                    "VALUES (gen_random_uuid(), :t, :s, :n)"
                ),
                {"t": g.tenant_id, "s": g.site_id, "n": f"{i:02d}号楼"},
            )
        for i in range(1, 53):  # 52 roles besides the administrator's
            await conn.execute(
                sa.text(
                    "INSERT INTO role (id, tenant_id, name, permissions) "
                    "VALUES (gen_random_uuid(), :t, :n, ARRAY['sale.create'])"
                ),
                {"t": g.tenant_id, "n": f"收银{i:02d}"},
            )
    async with db.tenant(other.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO building (id, tenant_id, site_id, name) "
                "VALUES (gen_random_uuid(), :t, :s, '外组楼')"
            ),
            {"t": other.tenant_id, "s": other.site_id},
        )
    await console_login(http, spec.slug)
    base = f"/console/settings/sites/{g.site_id}/buildings"
    first = await http.get(base)
    assert first.status_code == 200 and "第 1 / 2 页，共 55 条" in first.text, first.text
    assert "01号楼" in first.text and "55号楼" not in first.text
    second = await http.get(base, params={"offset": "50"})
    assert "55号楼" in second.text and "01号楼" not in second.text
    found = await http.get(base, params={"q": "17号"})
    assert "17号楼" in found.text and "18号楼" not in found.text
    assert "搜索楼栋" in found.text
    none = await http.get(base, params={"q": "外组楼"})
    assert "没有与“外组楼”相符的记录" in none.text
    # nonsense in the address is no search and the first page, not an error
    odd = await http.get(base, params={"offset": "-3", "q": "\x07"})
    assert odd.status_code == 200 and "01号楼" in odd.text
    rows = _sheet(await http.get(base, params={"q": "17号", "export": "xlsx"}))
    assert [r[1] for r in rows[1:]] == ["17号楼"]
    # another group's site is not found
    assert (await http.get(f"/console/settings/sites/{other.site_id}/buildings")).status_code == 404

    ops = await http.get("/console/settings/operators", params={"q": "收银05"})
    assert ops.status_code == 200 and _role_row("收银05", ops) and not _role_row("收银06", ops)
    roles = await http.get("/console/settings/operators")
    assert "角色分页" in roles.text and not _role_row("收银52", roles)
    more = await http.get("/console/settings/operators", params={"roles_offset": "50"})
    assert _role_row("收银52", more)
    book = load_workbook(
        io.BytesIO(
            (
                await http.get(
                    "/console/settings/operators", params={"q": "收银05", "export": "xlsx"}
                )
            ).content
        )
    )
    assert [r[0] for r in book.worksheets[1].iter_rows(values_only=True)][1:] == ["收银05"]

    for path in (
        "/console/settings/sites",
        "/console/settings/tariffs",
        "/console/settings/grants",
    ):
        page = await http.get(path, params={"q": "不存在的东西"})
        assert page.status_code == 200 and "没有与“不存在的东西”相符的记录" in page.text, path
    tariffs = await http.get("/console/settings/tariffs", params={"q": "Commercial"})
    assert "Commercial flat" in tariffs.text

    gw = await http.get("/console/gateways", params={"q": "nothing-like-it"})
    assert gw.status_code == 200 and "没有与" in gw.text and "搜索网关" in gw.text
    async with db.tenant(g.tenant_id) as conn:
        code = await conn.scalar(sa.text("SELECT code FROM gateway"))
    listed = await http.get("/console/gateways", params={"q": str(code)[-6:]})
    assert str(code) in listed.text
    async with db.tenant(other.tenant_id) as conn:
        theirs = str(await conn.scalar(sa.text("SELECT code FROM gateway")))
    every = await http.get("/console/gateways", params={"q": "gw-"})
    assert str(code) in every.text and theirs not in every.text  # (another group's: never)
    sheet = _sheet(await http.get("/console/gateways", params={"q": "nothing", "export": "xlsx"}))
    assert len(sheet) == 1  # the headers only


async def test_the_counter_search_exports_to_excel(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec(meters=2)
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec())
    async with db.tenant(other.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE customer SET name = '外组客户'"))
    await console_login(http, spec.slug)
    page = await http.get("/console/counter", params={"q": "Shop"})
    assert page.status_code == 200 and "导出 Excel" in page.text
    rows = _sheet(await http.get("/console/counter", params={"q": "Shop", "export": "xlsx"}))
    assert rows[0][0] == "户号" and sorted(r[0] for r in rows[1:]) == sorted(g.accounts.values())
    stranger = _sheet(
        await http.get("/console/counter", params={"q": "外组客户", "export": "xlsx"})
    )
    assert len(stranger) == 1


async def test_a_resent_import_imports_once_and_shows_the_first_run(
    db: Database, http: httpx.AsyncClient
) -> None:
    g = await import_group(db)
    other = await import_group(db)
    async with db.tenant(g.tenant_id) as conn:
        slug = await conn.scalar(
            sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": g.tenant_id}
        )
    await console_login(http, str(slug))
    page = await http.get("/console/imports")
    key = re.search(r'name="form_key" value="([0-9a-f]+)"', page.text)
    assert key, "the import form has no one-time key"
    data = to_csv(rows_for(await _gateway(db, g), 3))
    token = http.cookies.get("prepay_csrf") or ""

    async def send(form_key: str | None) -> httpx.Response:
        fields = {"csrf_token": token, "mode": "import"}
        if form_key is not None:
            fields["form_key"] = form_key
        return await http.post(
            "/console/imports",
            data=fields,
            files={"file": ("legacy.csv", data, "text/csv")},
            follow_redirects=False,
        )

    async def accounts() -> int:
        async with db.tenant(g.tenant_id) as conn:
            return int(await conn.scalar(sa.text("SELECT count(*) FROM account")) or 0)

    before = await accounts()
    keyless = await send(None)
    assert keyless.status_code == 422 and "刷新页面" in keyless.text and await accounts() == before
    first = await send(key.group(1))
    assert first.status_code == 200 and "已导入 3 行" in first.text, first.text
    assert await accounts() == before + 2
    again = await send(key.group(1))  # a double click, or the form sent again
    assert again.status_code == 303 and await accounts() == before + 2
    shown = await http.get(again.headers["location"])
    assert shown.status_code == 200 and "未重复导入" in shown.text and "legacy.csv" in shown.text
    async with db.tenant(g.tenant_id) as conn:
        runs = await conn.scalar(sa.text("SELECT count(*) FROM import_run WHERE NOT dry_run"))
    assert runs == 1
    # the runs' list searched and paged; another group's run is not found
    listed = await http.get("/console/imports", params={"q": "legacy"})
    assert "legacy.csv" in listed.text and "第 1 / 1 页，共 1 条" in listed.text
    assert "没有与" in (await http.get("/console/imports", params={"q": "zzz"})).text
    theirs = uuid.uuid4()
    async with db.tenant(other.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO import_run (id, tenant_id, created_at, actor, filename, rows, "
                "dry_run, refused, report) VALUES (:id, :t, now(), 'x', 'theirs.csv', 1, true, 0, "
                "'[]')"
            ),
            {"id": theirs, "t": other.tenant_id},
        )
    assert (await http.get("/console/imports", params={"run": str(theirs)})).status_code == 404
    assert "theirs.csv" not in (await http.get("/console/imports")).text
    empty = await console_form(http, "/console/imports", {"mode": "check"})
    assert empty.status_code == 422 and "请选择要导入的文件" in empty.text
