"""Sessions are rows: logout ends the session (its token is refused from then on, other
sessions of the operator go on), a password change ends every session of the operator
and needs the current password, and a wrong or too short new password changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cloud.db import Database
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, group_spec


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


@pytest.fixture
async def slug(db: Database) -> str:
    spec = group_spec()
    await seed_group(db, spec)
    return spec.slug


async def test_logout_ends_only_that_session(http: httpx.AsyncClient, slug: str) -> None:
    first = await admin_auth(http, slug)
    second = await admin_auth(http, slug)
    assert (await http.get("/api/v1/service-points", headers=first)).status_code == 200
    r = await http.post("/api/v1/auth/logout", headers=first)
    assert r.status_code == 204
    r = await http.get("/api/v1/service-points", headers=first)
    assert r.status_code == 401 and "session has ended" in r.json()["detail"]
    assert (await http.get("/api/v1/service-points", headers=second)).status_code == 200


async def test_password_change_ends_every_session(http: httpx.AsyncClient, slug: str) -> None:
    one = await admin_auth(http, slug)
    two = await admin_auth(http, slug)
    wrong = {"current_password": "not-it", "new_password": "a-new-password-1"}
    r = await http.post("/api/v1/me/password", json=wrong, headers=one)
    assert r.status_code == 422 and "current password is wrong" in r.json()["detail"]
    short = {"current_password": "demo-admin", "new_password": "short"}
    r = await http.post("/api/v1/me/password", json=short, headers=one)
    assert r.status_code == 422
    # refusals changed nothing: both sessions live, the old password still logs in
    assert (await http.get("/api/v1/service-points", headers=two)).status_code == 200
    await admin_auth(http, slug)

    good = {"current_password": "demo-admin", "new_password": "a-new-password-1"}
    r = await http.post("/api/v1/me/password", json=good, headers=one)
    assert r.status_code == 204
    for headers in (one, two):
        r = await http.get("/api/v1/service-points", headers=headers)
        assert r.status_code == 401
    old = {"tenant": slug, "username": "admin", "password": "demo-admin"}
    assert (await http.post("/api/v1/auth/token", json=old)).status_code == 401
    new = {**old, "password": "a-new-password-1"}
    assert (await http.post("/api/v1/auth/token", json=new)).status_code == 200


async def test_a_forged_or_old_style_token_is_refused(http: httpx.AsyncClient, slug: str) -> None:
    r = await http.get("/api/v1/service-points", headers={"authorization": "Bearer not.a.token"})
    assert r.status_code == 401
