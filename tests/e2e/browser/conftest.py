"""Browser tests: the console served by uvicorn on a free port of this machine, driven by
Playwright in Debian's Chromium (/usr/bin/chromium). Screenshots of every step are kept
under .prepay/artifacts/browser (CI keeps them as artifacts)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from cloud.api.app import create_app
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from tests.conftest import wait_for

CHROMIUM = os.environ.get("PREPAY_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("PREPAY_ARTIFACTS", ".prepay/artifacts")) / "browser"

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    base: str
    wiring: Wiring


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    """The API and console on a real socket (the browser cannot use an in-process app)."""
    wiring = Wiring.build(CloudSettings(database_url=db_url), db_url)
    port = _free_port()
    config = uvicorn.Config(
        create_app(wiring.services), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_for(_started(server), 10, "the console serving")
    try:
        yield Live(f"http://127.0.0.1:{port}", wiring)
    finally:
        server.should_exit = True
        await task
        await wiring.db.dispose()


def _started(server: uvicorn.Server) -> Callable[[], Awaitable[bool]]:
    async def started() -> bool:
        return bool(server.started)

    return started


def _tools_present() -> bool:
    return Path(CHROMIUM).exists() and shutil.which("pdftotext") is not None


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if not _tools_present():
        pytest.fail(
            f"browser tests need Debian's chromium at {CHROMIUM} and poppler-utils: "
            "apt-get install -y chromium fonts-noto-cjk poppler-utils (.ci/run does)"
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def sign_in(page: Any, base: str, slug: str) -> None:
    """Log in to the console as the seeded group's administrator, in Chinese."""
    await page.goto(f"{base}/console/login")
    await page.get_by_label("物业集团").fill(slug)
    await page.get_by_label("用户名").fill("admin")
    await page.get_by_label("密码").fill("demo-admin")
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_url("**/console/")
