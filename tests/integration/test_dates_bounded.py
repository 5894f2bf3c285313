"""Every date a person enters is bounded (issue 22, item 7; cloud/horizons.py): a
keep-power ``until``, a grant's start and end, a tariff version's start and a report's day
before 2000 or further ahead than their kind allows are a 422 naming the field in the API,
and a message in the clerk's language in the console, and change nothing; a date within
reason is taken as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, console_form, console_login, group_spec

S = "/console/settings"
ANCIENT = "0001-01-01T00:00:00+08:00"  # converting it to UTC overflows Python's datetime
FAR = "4496-01-01T00:00:00+00:00"


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


@pytest.fixture
async def seeded(db: Database) -> tuple[str, Seeded]:
    spec = group_spec()
    return spec.slug, await seed_group(db, spec)


def _refused(r: httpx.Response, field: str) -> str:
    """The message of the 422 that names ``field`` (the body's or the query's)."""
    assert r.status_code == 422, (r.status_code, r.text)
    for e in r.json()["detail"]:
        if e["loc"][-1] == field:
            return str(e["msg"])
    raise AssertionError(f"no error names {field}: {r.text}")


def _ahead(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def _count(db: Database, g: Seeded, table: str) -> int:
    async with db.tenant(g.tenant_id) as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)


async def test_keep_power_until_is_bounded(
    db: Database, http: httpx.AsyncClient, seeded: tuple[str, Seeded]
) -> None:
    slug, g = seeded
    auth = await admin_auth(http, slug)
    url = f"/api/v1/service-points/{g.points['m1']}/control"
    keep = {"action": "keep_power_on", "reason": "hospital ward"}
    for until, why in ((FAR, "366 days ahead"), (ANCIENT, "before 2000-01-01")):
        r = await http.post(url, json={**keep, "until": until}, headers=auth)
        assert why in _refused(r, "until")
        r = await http.post(
            f"/api/v1/sites/{g.site_id}/control", json={**keep, "until": until}, headers=auth
        )
        assert why in _refused(r, "until")
    assert await _count(db, g, "control_event") == 0
    r = await http.post(url, json={**keep, "until": _ahead(365)}, headers=auth)
    assert r.status_code == 200 and r.json()["done"], r.text


async def test_a_grants_start_and_end_are_bounded(
    db: Database, http: httpx.AsyncClient, seeded: tuple[str, Seeded]
) -> None:
    slug, g = seeded
    auth = await admin_auth(http, slug)
    url = f"/api/v1/operators/{g.operator_id}/outlet-grants"
    body = {"outlet_id": str(g.outlet_id), "reason": "cover the counter"}
    cases = [
        ({"starts_at": FAR, "ends_at": FAR}, "starts_at", "366 days ahead"),
        ({"starts_at": _ahead(1), "ends_at": _ahead(400)}, "ends_at", "366 days ahead"),
        ({"starts_at": ANCIENT, "ends_at": _ahead(1)}, "starts_at", "before 2000-01-01"),
    ]
    for times, field, why in cases:
        r = await http.post(url, json={**body, **times}, headers=auth)
        assert why in _refused(r, field)
    assert await _count(db, g, "outlet_grant") == 0


async def test_a_tariff_version_starts_within_five_years(
    db: Database, http: httpx.AsyncClient, seeded: tuple[str, Seeded]
) -> None:
    slug, g = seeded
    auth = await admin_auth(http, slug)
    async with db.tenant(g.tenant_id) as conn:
        tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
    url = f"/api/v1/tariffs/{tariff}/versions"
    plan = {"plan": {"kind": "flat", "unit_price": "1.1000"}}
    for start, why in ((FAR, "1827 days ahead"), (_ahead(5 * 365 + 3), "1827 days ahead")):
        r = await http.post(url, json={**plan, "effective_from": start}, headers=auth)
        assert why in _refused(r, "effective_from")
    new = {"name": "Shops", "utility": "electricity", "version": {**plan, "effective_from": FAR}}
    assert "1827 days ahead" in _refused(
        await http.post("/api/v1/tariffs", json=new, headers=auth), "effective_from"
    )
    assert await _count(db, g, "tariff_version") == 1
    r = await http.post(url, json={**plan, "effective_from": _ahead(4 * 365)}, headers=auth)
    assert r.status_code == 201, r.text
    assert len(r.json()["scheduled"]) == 1


async def test_a_report_day_is_bounded(http: httpx.AsyncClient, seeded: tuple[str, Seeded]) -> None:
    slug, _g = seeded
    auth = await admin_auth(http, slug)
    for day in ("0001-01-01", "4496-01-01"):
        r = await http.get("/api/v1/sales", params={"business_day": day}, headers=auth)
        _refused(r, "business_day")
    today = datetime.now(UTC).date().isoformat()
    r = await http.get("/api/v1/sales", params={"business_day": today}, headers=auth)
    assert r.status_code == 200 and r.json()["total"] == 0


def _local(days: float) -> str:
    return (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=days)).strftime(
        "%Y-%m-%dT%H:%M"
    )


async def _key(http: httpx.AsyncClient, url: str) -> str:
    import re

    page = await http.get(url)
    assert page.status_code == 200, page.text
    found = re.search(r'name="form_key" value="([0-9a-f]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_console_forms_say_which_date_is_out_of_reason(
    db: Database, http: httpx.AsyncClient, seeded: tuple[str, Seeded]
) -> None:
    slug, g = seeded
    await console_login(http, slug)
    async with db.tenant(g.tenant_id) as conn:
        tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
    turl = f"{S}/tariffs/{tariff}"
    version = {"kind": "flat", "unit_price": "1.1000"}

    async def add_version(start: str) -> httpx.Response:
        form = {**version, "effective_from": start, "form_key": await _key(http, turl)}
        return await console_form(http, f"{turl}/versions", form)

    r = await add_version("4496-01-01T00:00")
    assert r.status_code == 422 and "价格的生效时间不能晚于 5 年之后" in r.text
    r = await add_version("0001-01-01T00:00")
    assert r.status_code == 422 and "不接受 2000-01-01 之前的日期" in r.text

    grant = {
        "operator_id": str(g.operator_id),
        "outlet_id": str(g.outlet_id),
        "starts_at": _local(400),
        "ends_at": _local(401),
        "reason": "支援一号厅",
    }
    r = await console_form(
        http, f"{S}/grants", {**grant, "form_key": await _key(http, f"{S}/grants")}
    )
    assert r.status_code == 422 and "授权的开始和结束时间不能晚于一年之后" in r.text

    http.cookies.set("prepay_lang", "en")
    r = await add_version("9999-12-31T23:59")
    assert r.status_code == 422 and "A price can take effect at most 5 years from now." in r.text
    r = await console_form(
        http,
        f"{S}/grants",
        {**grant, "starts_at": "0001-01-01T00:00", "form_key": await _key(http, f"{S}/grants")},
    )
    assert r.status_code == 422 and "Dates before 2000-01-01 are not accepted." in r.text
    assert await _count(db, g, "tariff_version") == 1
    assert await _count(db, g, "outlet_grant") == 0

    r = await add_version(_local(30))  # within reason: taken
    assert r.status_code == 303, r.text
    assert await _count(db, g, "tariff_version") == 2


async def test_a_sites_reading_age_is_set_in_the_api_and_the_console(
    db: Database, http: httpx.AsyncClient, seeded: tuple[str, Seeded]
) -> None:
    slug, g = seeded
    auth = await admin_auth(http, slug)
    url = f"/api/v1/sites/{g.site_id}"
    assert (await http.get(url, headers=auth)).json()["reading_max_age_days"] == 3650
    _refused(
        await http.patch(url, json={"reading_max_age_days": 0}, headers=auth),
        "reading_max_age_days",
    )
    r = await http.patch(url, json={"reading_max_age_days": 90}, headers=auth)
    assert r.status_code == 200 and r.json()["reading_max_age_days"] == 90

    await console_login(http, slug)
    page = await http.get(f"{S}/sites/{g.site_id}")
    assert page.status_code == 200 and 'name="reading_max_age_days"' in page.text
    assert 'value="90"' in page.text
    site = {
        "name": "Riverside Market",
        "timezone": "Asia/Shanghai",
        "business_day_cutoff": "00:00",
        "notice_minutes": "0",
        "alarm_hysteresis": "1.00",
        "price_margin": "15",
    }
    for age, said in (
        ("0", "读数回溯天数须在 1 到 3650 天之间"),
        ("一年", "读数回溯天数须为整数天"),
    ):
        r = await console_form(
            http, f"{S}/sites/{g.site_id}", {**site, "reading_max_age_days": age}
        )
        assert r.status_code == 422 and said in r.text, r.text
    r = await console_form(http, f"{S}/sites/{g.site_id}", {**site, "reading_max_age_days": "30"})
    assert r.status_code == 303, r.text
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT reading_max_age_days FROM site")) == 30
