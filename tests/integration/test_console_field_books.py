"""Meter books in the console: make a book, put points on its route in order, assign a
field worker, open a cycle; another group's book is 404 and nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.field import books
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_form, console_login, group_spec
from tests.integration.test_field_readings import admin, worker


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def test_an_operator_makes_a_book_and_another_groups_is_not_found(
    http: httpx.AsyncClient, db: Database
) -> None:
    spec = group_spec(meters=3)
    g = await seed_group(db, spec)
    other = await seed_group(db, group_spec(meters=1))
    theirs = await books.create_book(
        db, admin(other), other.site_id, "T1", "Theirs", datetime.now(UTC)
    )
    reader = await worker(db, g)
    await console_login(http, spec.slug)
    r = await console_form(
        http, "/console/field/books", {"site_id": str(g.site_id), "code": "A1", "name": "一层"}
    )
    assert r.status_code == 303
    where = r.headers["location"]
    route = {f"pos-{g.points['m3']}": "1", f"pos-{g.points['m1']}": "2"}
    assert (await console_form(http, f"{where}/route", route)).status_code == 303
    r = await console_form(http, f"{where}/workers", {"operator_id": str(reader.operator_id)})
    assert r.status_code == 303
    r = await console_form(http, f"{where}/cycles", {"starts_on": "2026-12-01"})
    assert r.status_code == 303
    page = await http.get(r.headers["location"])
    assert "抄表周期已开启。" in page.text
    assert "reader" in page.text
    async with db.tenant(g.tenant_id) as conn:
        order = list(
            await conn.scalars(
                sa.text("SELECT service_point_id FROM meter_book_point ORDER BY position")
            )
        )
        tasks = await conn.scalar(sa.text("SELECT count(*) FROM reading_task"))
    assert order == [g.points["m3"], g.points["m1"]] and tasks == 2
    # another group's book: not found, and nothing of it changes
    assert (await http.get(f"/console/field/books/{theirs}")).status_code == 404
    for path, data in (
        ("workers", {"operator_id": str(reader.operator_id)}),
        ("cycles", {"starts_on": "2026-12-01"}),
    ):
        r = await console_form(http, f"/console/field/books/{theirs}/{path}", data)
        assert r.status_code == 404
    r = await console_form(http, f"{where}/route", {f"pos-{other.points['m1']}": "1"})
    assert r.status_code == 404
    async with db.tenant(other.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM meter_book_worker")) == 0
        assert await conn.scalar(sa.text("SELECT count(*) FROM reading_cycle")) == 0
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM meter_book_point")) == 2
