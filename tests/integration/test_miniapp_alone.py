"""`prepay miniapp` runs the tenant app on its own: /miniapp/v1 and the H5 pages in a
process of their own, without the console or the operators' API — here from two processes
sharing the port (``--processes 2``: a login code sent through one is checked by either)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from pathlib import Path

import httpx
import sqlalchemy as sa

from cloud.db import Database
from cloud.embedded import free_port
from cloud.registry.service import seed_group
from tests.conftest import group_spec, wait_for


async def test_prepay_miniapp_serves_the_tenant_app_and_nothing_else(
    db: Database, db_url: str
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE customer SET phone = '13800138555'"))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "PREPAY_DATABASE_URL": db_url,
        "PREPAY_API_PORT": str(port),
        "PREPAY_SECRET_KEY": secrets.token_urlsafe(48),
    }
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "prepay"), "miniapp", "--processes", "2", env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:

            async def up() -> bool:
                assert proc.returncode is None, "prepay miniapp exited"
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/healthz")).status_code == 200
                return False

            await wait_for(up, 30, "prepay miniapp to listen")
            children = _children(proc.pid)
            assert len(children) == 2, children  # two processes serve the one port
            r = await http.post(
                "/miniapp/v1/login/sms", json={"tenant": spec.slug, "phone": "13800138555"}
            )
            assert r.status_code == 200, r.text
            code = r.json()["dev_code"]
            r = await http.post(
                "/miniapp/v1/login/phone",
                json={"tenant": spec.slug, "phone": "13800138555", "code": code},
            )
            assert r.status_code == 200, r.text
            auth = {"authorization": f"Bearer {r.json()['token']}"}
            r = await http.post(
                "/miniapp/v1/bindings",
                json={"account": g.accounts["m1"], "phone": "13800138555"},
                headers=auth,
            )
            assert r.status_code == 201, r.text
            r = await http.get(f"/miniapp/v1/accounts/{g.accounts['m1']}", headers=auth)
            assert r.status_code == 200 and r.json()["balance"] == "10.00", r.text
            assert (await http.get(f"/h5/{spec.slug}/")).status_code == 200
            assert (await http.get("/", follow_redirects=False)).headers["location"] == "/h5/"
            # the console and the operators' API are not here
            assert (await http.get("/console/login")).status_code == 404
            r = await http.post(
                "/api/v1/auth/token",
                json={"tenant": spec.slug, "username": "admin", "password": spec.admin_password},
            )
            assert r.status_code == 404
    finally:
        children = _children(proc.pid) if proc.returncode is None else []
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0
    assert not [c for c in children if _alive(c)]  # SIGTERM to the parent stopped them too


def _children(pid: int) -> list[int]:
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
