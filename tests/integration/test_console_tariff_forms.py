"""A tariff's price plan in the console's own fields against the real PostgreSQL: tiers
as rows of upper bound and price, time-of-use periods as rows of start, end, period and
price (one over midnight included); each mistake refused in Chinese naming the row, with
everything typed kept and nothing saved; another group's tariff not found."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_form, console_login, group_spec

S = "/console/settings"


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _key(http: httpx.AsyncClient, url: str) -> str:
    page = await http.get(url)
    found = re.search(r'name="form_key" value="([0-9a-f]+)"', page.text)
    assert page.status_code == 200 and found, page.text
    return found.group(1)


async def _tariffs(db: Database, g: Seeded) -> list[Any]:
    async with db.tenant(g.tenant_id) as conn:
        return list(
            await conn.execute(
                sa.text(
                    "SELECT t.name, v.kind, v.spec FROM tariff t "
                    "JOIN tariff_version v ON v.tariff_id = t.id ORDER BY t.name"
                )
            )
        )


async def _new(
    http: httpx.AsyncClient, g: Seeded, fields: dict[str, str], **kw: Any
) -> httpx.Response:
    body = {
        "utility": "electricity",
        "site_id": str(g.site_id),
        "monthly_fee": "0",
        "form_key": await _key(http, f"{S}/tariffs"),
        **fields,
    }
    return await console_form(http, f"{S}/tariffs", body, **kw)


async def test_tiers_are_rows_and_their_mistakes_name_the_row(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    await console_login(http, spec.slug)
    page = await http.get(f"{S}/tariffs")
    assert "第 1 档：上限" in page.text and "JSON" not in page.text
    before = await _tariffs(db, g)
    tiers = {"name": "居民阶梯", "kind": "tiered", "cycle": "year"}
    bad = await _new(
        http,
        g,
        {**tiers, "tier_up_1": "100", "tier_price_1": "0.60", "tier_up_2": "50",
         "tier_price_2": "0.70", "tier_price_3": "0.90"},
    )  # fmt: skip
    assert bad.status_code == 422 and "第 2 行：上限 50 须大于上一档的 100" in bad.text
    # everything typed is still there
    assert (
        'value="50"' in bad.text and 'value="0.70"' in bad.text and 'value="居民阶梯"' in bad.text
    )
    assert re.search(r'value="tiered" checked', bad.text) and 'value="year" selected' in bad.text
    wrong = await _new(http, g, {**tiers, "tier_up_1": "100", "tier_price_1": "abc"})
    assert wrong.status_code == 422 and "第 1 行：单价不是数字" in wrong.text
    closed = await _new(http, g, {**tiers, "tier_up_1": "100", "tier_price_1": "0.6"})
    assert closed.status_code == 422 and "最后一档的上限请留空" in closed.text
    assert await _tariffs(db, g) == before

    ok = await _new(
        http,
        g,
        {**tiers, "tier_up_1": "2160", "tier_price_1": "0.5283", "tier_up_2": "4200",
         "tier_price_2": "0.5783", "tier_price_3": "0.8283"},
        follow_redirects=False,
    )  # fmt: skip
    assert ok.status_code == 303, ok.text
    saved = {r.name: r for r in await _tariffs(db, g)}["居民阶梯"]
    assert saved.kind == "tiered" and saved.spec["cycle"] == "year"
    assert [(b["up_to"], b["price"]) for b in saved.spec["blocks"]] == [
        ("2160", "0.5283"), ("4200", "0.5783"), (None, "0.8283"),
    ]  # fmt: skip


async def test_time_of_use_periods_cover_the_day(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec())
    await console_login(http, spec.slug)
    before = await _tariffs(db, g)
    day = [  # start, end, period, price: 22:00 on to 08:00 the next morning
        ("08:00", "11:00", "peak", "1.10"),
        ("11:00", "13:00", "sharp", "1.40"),
        ("13:00", "22:00", "peak", "1.10"),
        ("22:00", "08:00", "valley", "0.35"),
    ]
    rows = {"name": "商业分时", "kind": "tou"}
    for n, cells in enumerate(day, 1):
        rows |= {
            f"tou_{f}_{n}": v
            for f, v in zip(("start", "end", "period", "price"), cells, strict=True)
        }
    gap = await _new(http, g, {**rows, "tou_start_3": "13:30"})
    assert gap.status_code == 422, gap.text
    assert "第 2 行在 13:00 结束，但下一时段（第 3 行）从 13:30 开始" in gap.text
    assert 'value="13:30"' in gap.text and 'value="0.35"' in gap.text  # kept
    two = await _new(http, g, {**rows, "tou_price_3": "1.20"})
    assert two.status_code == 422 and "同一时段只能有一个单价" in two.text
    water = await _new(http, g, {**rows, "utility": "water"})
    assert water.status_code == 422 and "不能分时" in water.text
    assert await _tariffs(db, g) == before

    ok = await _new(http, g, rows, follow_redirects=False)
    assert ok.status_code == 303, ok.text
    saved = {r.name: r for r in await _tariffs(db, g)}["商业分时"]
    assert saved.kind == "tou"
    assert [(w["start"][:5], w["period"]) for w in saved.spec["windows"]] == [
        ("00:00", "valley"), ("08:00", "peak"), ("11:00", "sharp"), ("13:00", "peak"),
        ("22:00", "valley"),
    ]  # fmt: skip
    assert saved.spec["prices"] == {"peak": "1.10", "sharp": "1.40", "valley": "0.35"}

    # a version of another group's tariff: not found, nothing added
    async with db.tenant(other.tenant_id) as conn:
        theirs = await conn.scalar(sa.text("SELECT id FROM tariff LIMIT 1"))
    url = ok.headers["location"].split("?")[0]
    r = await console_form(
        http,
        f"{S}/tariffs/{theirs}/versions",
        {"kind": "flat", "unit_price": "1.00", "form_key": await _key(http, url)},
    )
    assert r.status_code == 404
    assert (await http.get(f"{S}/tariffs/{theirs}")).status_code == 404
    assert (await http.get(f"{S}/tariffs/{uuid.uuid4()}")).status_code == 404


async def test_a_water_tariff_and_a_water_account_say_water(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    await console_login(http, spec.slug)
    r = await _new(
        http,
        g,
        {"name": "自来水", "utility": "water", "kind": "flat", "unit_price": "4.5"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = await http.get(r.headers["location"])
    assert '<span class="muted">水价</span> 自来水' in page.text
    assert "¥4.5000/m³" in page.text and "单价（元/m³，单一价格用）" in page.text
    assert 'id="kind-tou"' not in page.text and "kWh" not in page.text  # nothing of electricity
    async with db.tenant(g.tenant_id) as conn:
        building = await conn.scalar(
            sa.text(
                "INSERT INTO building (id, tenant_id, site_id, name) "
                "VALUES (gen_random_uuid(), :t, :s, 'W栋') RETURNING id"
            ),
            {"t": g.tenant_id, "s": g.site_id},
        )
        premises = await conn.scalar(
            sa.text(
                "INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number, kind) "
                "VALUES (gen_random_uuid(), :t, :s, :b, '1', '101', 'flat') RETURNING id"
            ),
            {"t": g.tenant_id, "s": g.site_id, "b": building},
        )
        water = await conn.scalar(sa.text("SELECT id FROM tariff WHERE name = '自来水'"))
    form = await http.get("/console/accounts/new")
    assert '<label for="tariff_water">水价</label>' in form.text
    assert '<label for="tariff_electricity">电价</label>' in form.text
    opened = await console_form(
        http,
        "/console/accounts/new",
        {
            "name": "赵水",
            "premises_id": str(premises),
            "with_water": "1",
            "tariff_water": str(water),
            "form_key": await _key(http, "/console/accounts/new"),
        },
        follow_redirects=False,
    )
    assert opened.status_code == 303, opened.text
    number = opened.headers["location"].split("/")[-1].split("?")[0]
    counter = await http.get(f"/console/counter/{number}")
    assert counter.status_code == 200 and "收款并售水" in counter.text
    assert "收款并售电" not in counter.text
