"""Login throttling, kept in PostgreSQL: 20 wrong passwords in a minute lock that login
for 15 minutes with a clear 429 (the right password too), other operators of the same
group still log in, an unknown group is throttled as well, the lock ends by itself, and
one client address trying many logins is locked at 100."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from cloud.api.app import create_app
from cloud.auth import ADDRESS_LIMIT, LOGIN_LIMIT, Sessions, hash_password
from cloud.db import Database
from cloud.errors import TooManyAttempts, Unauthorized
from cloud.registry.service import seed_group
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from tests.conftest import console_form, group_spec


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _second_operator(db: Database, tenant: uuid.UUID) -> None:
    async with db.tenant(tenant) as conn:
        role = await conn.scalar(sa.text("SELECT role_id FROM operator WHERE username = 'admin'"))
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active) VALUES (gen_random_uuid(), :t, 'clerk', 'Clerk', :h, :r, true)"
            ),
            {"t": tenant, "h": hash_password("clerk-pass-1"), "r": role},
        )


async def test_twenty_wrong_passwords_lock_that_login_only(db: Database) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    await _second_operator(db, group.tenant_id)
    clock = Clock()
    sessions = Sessions(db, uuid.uuid4().hex * 2, 3600, clock)
    for _ in range(LOGIN_LIMIT):
        with pytest.raises(Unauthorized):
            await sessions.login(spec.slug, "admin", "wrong", "10.1.1.1")
        clock.now += timedelta(seconds=2)
    with pytest.raises(TooManyAttempts, match="locked until") as locked:
        await sessions.login(spec.slug, "admin", "demo-admin", "10.1.1.2")  # right, refused
    assert 14 * 60 < locked.value.retry_after_s <= 15 * 60 + 1
    # another operator of the same group, from the same address, is not locked out
    assert await sessions.login(spec.slug, "clerk", "clerk-pass-1", "10.1.1.1")
    clock.now += timedelta(minutes=15, seconds=1)
    assert await sessions.login(spec.slug, "admin", "demo-admin", "10.1.1.1")


async def test_failures_spread_beyond_a_minute_do_not_lock(db: Database) -> None:
    spec = group_spec()
    await seed_group(db, spec)
    clock = Clock()
    sessions = Sessions(db, uuid.uuid4().hex * 2, 3600, clock)
    for _ in range(3 * LOGIN_LIMIT):
        with pytest.raises(Unauthorized):
            await sessions.login(spec.slug, "admin", "wrong")
        clock.now += timedelta(seconds=4)  # 15 a minute
    assert await sessions.login(spec.slug, "admin", "demo-admin")


async def test_an_unknown_group_and_a_noisy_address_are_throttled(db: Database) -> None:
    clock = Clock()
    sessions = Sessions(db, uuid.uuid4().hex * 2, 3600, clock)
    ghost = f"nobody-{uuid.uuid4().hex[:6]}"
    for _ in range(LOGIN_LIMIT):
        with pytest.raises(Unauthorized):
            await sessions.login(ghost, "admin", "x")
    with pytest.raises(TooManyAttempts):
        await sessions.login(ghost, "admin", "x")
    address = f"192.0.2.{uuid.uuid4().int % 250}"
    for i in range(ADDRESS_LIMIT):
        with pytest.raises(Unauthorized):
            await sessions.login(ghost, f"user{i}", "x", address)
    with pytest.raises(TooManyAttempts):
        await sessions.login(ghost, "someone-else", "x", address)


async def test_the_api_answers_429_with_retry_after(db: Database, db_url: str) -> None:
    spec = group_spec()
    await seed_group(db, spec)
    wiring = Wiring.build(CloudSettings(database_url=db_url), db_url)
    transport = httpx.ASGITransport(app=create_app(wiring.services))
    body = {"tenant": spec.slug, "username": "admin", "password": "wrong"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            codes = [
                (await http.post("/api/v1/auth/token", json=body)).status_code
                for _ in range(LOGIN_LIMIT)
            ]
            assert codes == [401] * LOGIN_LIMIT
            r = await http.post("/api/v1/auth/token", json={**body, "password": "demo-admin"})
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 800
            assert "locked until" in r.json()["detail"]
            page = await console_form(http, "/console/login", body)
            assert page.status_code == 429 and "分钟后再试" in page.text
            assert "其他操作员仍可登录" in page.text
    finally:
        await wiring.db.dispose()
