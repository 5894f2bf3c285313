"""The field app's JSON calls over HTTP: a worker's bearer token downloads their books and
uploads their queue; another group's or another book's points are refused and change
nothing; refusals come back in the worker's language."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.field import books
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, group_spec
from tests.integration.test_field_readings import admin, book_for, worker


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def token(http: httpx.AsyncClient, slug: str, name: str) -> dict[str, str]:
    r = await http.post(
        "/api/v1/auth/token", json={"tenant": slug, "username": name, "password": "field-pass"}
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


async def _readings(db: Database, g: Seeded) -> int:
    async with db.tenant(g.tenant_id) as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM field_reading")) or 0)


async def test_download_and_upload_over_http(http: httpx.AsyncClient, db: Database) -> None:
    spec = group_spec(meters=2)
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec(meters=1))
    who = await worker(db, g)
    book = await book_for(db, g, who, ["m1"])
    now = datetime.now(UTC)
    await books.open_cycle(db, admin(g), book, now.date() - timedelta(days=1), now)
    auth = await token(http, spec.slug, "reader")
    r = await http.get("/field/api/book", headers=auth)
    assert r.status_code == 200
    tasks = r.json()["tasks"]
    assert [t["point"] for t in tasks] == [str(g.points["m1"])]
    assert tasks[0]["balance"] == "10.00" and tasks[0]["unit_price"] == "1.0000"
    photo = base64.b64encode(b"\xff\xd8" + b"x" * 1000).decode()
    items = [
        {
            "id": str(uuid.uuid4()),
            "point": str(g.points["m1"]),
            "total": "5.5",
            "measured_at": (now - timedelta(minutes=1)).isoformat(),
            "photo": photo,
        },
        {
            "id": str(uuid.uuid4()),
            "point": str(g.points["m2"]),
            "total": "1",
            "measured_at": now.isoformat(),
        },  # same group, not on the worker's books
        {
            "id": str(uuid.uuid4()),
            "point": str(other.points["m1"]),
            "total": "1",
            "measured_at": now.isoformat(),
        },  # another group's
        {
            "id": str(uuid.uuid4()),
            "point": str(g.points["m1"]),
            "total": "6",
            "measured_at": (now + timedelta(days=1)).isoformat(),
        },
    ]
    r = await http.post("/field/api/readings?lang=zh_CN", json={"items": items}, headers=auth)
    assert r.status_code == 200, r.text
    got = [(x["status"], x["message"]) for x in r.json()["results"]]
    assert got[0] == ("stored", None)
    assert got[1][0] == got[2][0] == got[3][0] == "refused"
    assert got[1][1] == got[2][1] and "表册" in (got[1][1] or "")
    assert "未来" in (got[3][1] or "")
    again = await http.post("/field/api/readings", json={"items": items[:1]}, headers=auth)
    assert again.json()["results"][0]["status"] == "duplicate"
    assert await _readings(db, g) == 1 and await _readings(db, other) == 0


async def test_the_calls_want_a_field_workers_bearer_token(
    http: httpx.AsyncClient, db: Database
) -> None:
    spec = group_spec(meters=1)
    g = await seed_group(db, spec)
    assert (await http.get("/field/api/book")).status_code == 401
    admin_auth = await http.post(
        "/api/v1/auth/token",
        json={"tenant": spec.slug, "username": "admin", "password": "demo-admin"},
    )
    auth = {"authorization": f"Bearer {admin_auth.json()['access_token']}"}
    body = {
        "items": [
            {
                "id": str(uuid.uuid4()),
                "point": str(g.points["m1"]),
                "total": "1",
                "measured_at": datetime.now(UTC).isoformat(),
            }
        ]
    }
    # the administrator holds field.work but is on no book: the point is outside them
    r = await http.post("/field/api/readings", json=body, headers=auth)
    assert r.json()["results"][0]["status"] == "refused"
    page = await http.get("/field/")
    assert page.status_code == 200 and "外勤抄收" in page.text
    assert (await http.get("/field/sw.js")).headers["service-worker-allowed"] == "/field/"
