"""The console's foundation: zh-CN by default and English on request (the choice kept in
a cookie), security headers on every answer, cookies HttpOnly/SameSite, a form POST
without this browser's CSRF token (a cross-site form) refused and changing nothing,
logout ending the session, times in the site's zone, the list exported to Excel, and the
zh-CN catalogue holding a translation of every message."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from babel.messages.pofile import read_po
from openpyxl import load_workbook

from cloud.db import Database
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from tests.conftest import api_client, console_form, console_login, group_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


@pytest.fixture
async def slug(db: Database) -> str:
    spec = group_spec()
    await seed_group(db, spec)
    return spec.slug


async def test_chinese_by_default_english_on_request(http: httpx.AsyncClient, slug: str) -> None:
    page = await http.get("/console/login")
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in page.text and "物业集团" in page.text
    en = await http.get("/console/login?lang=en")
    assert "Property group" in en.text and '<html lang="en">' in en.text
    assert "prepay_lang=en" in en.headers["set-cookie"]
    again = await http.get("/console/login")  # the cookie keeps the choice
    assert "Property group" in again.text
    await console_login(http, slug)
    monitor = await http.get("/console/")
    assert "Service points" in monitor.text
    zh = await http.get("/console/?lang=zh_CN")
    for label in ("营业", "售电/售水", "监控", "控制", "工单", "报表", "财务", "设置"):
        assert label in zh.text


async def test_security_headers_and_cookie_flags(http: httpx.AsyncClient, slug: str) -> None:
    page = await http.get("/console/login")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    csrf_cookie = page.headers["set-cookie"].lower()
    assert "httponly" in csrf_cookie and "samesite=strict" in csrf_cookie
    r = await console_login(http, slug)
    session = r.headers["set-cookie"].lower()
    assert "prepay_session=" in session and "httponly" in session and "samesite=lax" in session
    api = await http.get("/healthz")
    assert api.headers["x-content-type-options"] == "nosniff"


async def test_secure_cookies_on_localhost(db_url: str, slug: str) -> None:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        client.base_url = httpx.URL("http://127.0.0.1")
        page = await client.get("/console/login")
        assert "secure" in page.headers["set-cookie"].lower()


async def test_a_cross_site_form_is_refused(http: httpx.AsyncClient, slug: str) -> None:
    await console_login(http, slug)
    points = await http.get("/api/v1/service-points", headers={})
    assert points.status_code == 200  # the session cookie works for the API too
    point = points.json()[0]["id"]
    url = f"/console/points/{point}/control"
    body = {"action": "trip", "reason": "forged", "override": "true"}
    forged = await http.post(url, data=body)  # no token: what another site's form sends
    assert forged.status_code == 403 and "刷新页面" in forged.text
    wrong = await http.post(url, data={**body, "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    other_origin = await console_form(http, url, body, headers={"origin": "https://evil.example"})
    assert other_origin.status_code == 403
    page = await http.get(f"/console/points/{point}")
    assert "forged" not in page.text  # nothing was queued


async def test_logout_ends_the_console_session(http: httpx.AsyncClient, slug: str) -> None:
    await console_login(http, slug)
    token = http.cookies.get("prepay_session")
    assert (await http.get("/console/", follow_redirects=False)).status_code == 200
    r = await console_form(http, "/console/logout", {}, follow_redirects=False)
    assert r.status_code == 303
    replay = await http.get("/api/v1/service-points", headers={"authorization": f"Bearer {token}"})
    assert replay.status_code == 401  # the old cookie's token no longer works


async def test_times_in_the_site_zone_and_excel_export(http: httpx.AsyncClient, slug: str) -> None:
    await console_login(http, slug)
    page = await http.get("/console/")
    assert "¥10.00" in page.text
    xlsx = await http.get("/console/?export=xlsx")
    assert xlsx.status_code == 200
    ws = load_workbook(io.BytesIO(xlsx.content)).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][0] == "计量点" and len(rows) == 2 and rows[1][2] == 10


def test_the_chinese_catalogue_translates_every_message(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_",
            "-k",
            "N_",
            "-o",
            str(pot),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as f:
        ids = {m.id for m in read_po(f) if m.id}
    po = ROOT / "cloud/console/locale/zh_CN/LC_MESSAGES/messages.po"
    with po.open("rb") as f:
        done = {m.id for m in read_po(f) if m.id and m.string}
    assert sorted(ids - done) == []


def test_no_template_needs_what_the_csp_forbids() -> None:
    """The policy allows no inline style or script: a ``style=`` attribute or an inline
    ``<script>`` would silently not apply in the browser."""
    templates = ROOT / "cloud/console/templates"
    bad = [
        (p.name, needle)
        for p in sorted(templates.glob("*.html"))
        for needle in ('style="', "<style", "<script>", "onclick=", "onsubmit=")
        if needle in p.read_text(encoding="utf-8")
    ]
    assert bad == []
