"""Text from outside never reaches PostgreSQL unchecked: a NUL (which PostgreSQL text
cannot hold) or another control character, or an over-long value, in any route's body or
path is a 422 that names the field and changes nothing — never a 500. Dates a user
enters are bounded too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, console_form, group_spec

NUL = "bad\u0000text"
PNUL = "bad%00text"  # the same in a path, as a client sends it


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


def _names(r: httpx.Response) -> str:
    assert r.status_code == 422, (r.status_code, r.text)
    return " ".join(".".join(str(p) for p in e["loc"]) for e in r.json()["detail"])


async def test_control_characters_and_long_text_are_422s_that_change_nothing(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    point = group.points["m1"]
    account = group.accounts["m1"]
    login = {"tenant": spec.slug, "username": "admin", "password": "demo-admin"}

    for field in ("tenant", "username", "password"):
        r = await http.post("/api/v1/auth/token", json={**login, field: NUL})
        assert field in _names(r)
    r = await http.post("/api/v1/auth/token", json={**login, "username": "u" * 65})
    assert "username" in _names(r)

    sale = {"account": NUL, "amount": "5.00"}
    headers = {**auth, "Idempotency-Key": "bad-text-0001"}
    assert "account" in _names(await http.post("/api/v1/sales", json=sale, headers=headers))

    assert "number" in _names(await http.get(f"/api/v1/accounts/{PNUL}/balance", headers=auth))
    long = "9" * 65
    assert "number" in _names(await http.get(f"/api/v1/accounts/{long}/balance", headers=auth))
    assert "code" in _names(
        await http.post(f"/api/v1/gateways/{PNUL}/revoke-credential", headers=auth)
    )
    r = await http.post(
        f"/api/v1/gateways/{PNUL}/config", json={"config": {"heartbeat_s": 30}}, headers=auth
    )
    assert "code" in _names(r)
    r = await http.post("/api/v1/gateways/commission", json={"claim": NUL})
    assert "claim" in _names(r)

    control = {"action": "trip", "reason": f"arrears {NUL}", "override": True}
    for url in (
        f"/api/v1/service-points/{point}/control",
        f"/api/v1/sites/{group.site_id}/control",
    ):
        assert "reason" in _names(await http.post(url, json=control, headers=auth))
    # a reason may span lines
    multi = {"action": "keep_power_on", "reason": "hospital\nroom 3"}
    ok = await http.post(f"/api/v1/service-points/{point}/control", json=multi, headers=auth)
    assert ok.status_code == 200, ok.text

    # dates are bounded: keep-power in year 4496 is refused, as is one in the past
    far = {"action": "keep_power_on", "reason": "event", "until": "4496-01-01T00:00:00+00:00"}
    r = await http.post(f"/api/v1/service-points/{point}/control", json=far, headers=auth)
    assert "until" in _names(r)  # (each bound: tests/integration/test_dates_bounded.py)
    soon = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    r = await http.post(
        f"/api/v1/service-points/{point}/control",
        json={"action": "keep_power_on", "reason": "event", "until": soon},
        headers=auth,
    )
    assert r.status_code == 200, r.text

    async with db.tenant(group.tenant_id) as conn:
        sales = await conn.scalar(sa.text("SELECT count(*) FROM counter_sale"))
        trips = await conn.scalar(
            sa.text("SELECT count(*) FROM device_command WHERE action = 'trip'")
        )
    assert sales == 0
    assert trips == 0, await _commands(db, group.tenant_id)
    bal = await http.get(f"/api/v1/accounts/{account}/balance", headers=auth)
    assert bal.json()["balance"] == "10.00"


async def test_console_login_with_a_nul_is_a_form_message(http: httpx.AsyncClient) -> None:
    r = await console_form(
        http, "/console/login", {"tenant": NUL, "username": "admin", "password": "x"}
    )
    assert r.status_code == 422 and "控制字符" in r.text


async def _commands(db: Database, tenant: object) -> list[tuple[str, str, str]]:
    async with db.tenant(tenant) as conn:  # type: ignore[arg-type]
        rows = await conn.execute(sa.text("SELECT action, origin, reason FROM device_command"))
        return [tuple(r) for r in rows]
