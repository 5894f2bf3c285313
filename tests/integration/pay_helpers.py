"""The tenant app and WeChat Pay under test: the real API on a port of its own (WeChat's
stand-in POSTs its notifications to it), the WeChat API and WeChat Pay stand-ins, seeded
property groups with a service-provider merchant each, and tenants logged in through the
API as a phone would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet
from pydantic import SecretStr

from cloud.api.app import create_app
from cloud.db import Database
from cloud.embedded import free_port
from cloud.payments.wechat.merchant import MerchantSettings, set_merchant
from cloud.payments.wechat.settings import PaySettings
from cloud.registry.service import GroupSpec, Seeded, seed_group
from cloud.runtime import Wiring, serve_http
from cloud.settings import CloudSettings
from standins.wechat import WeChatStandIn
from standins.wechatpay import MerchantKeys, WeChatPayStandIn
from tests.conftest import group_spec, wait_for

SP_MCHID = "1900000100"
SP_APPID = "wx-sp-platform"
SP_SECRET = "sp-platform-secret"


@dataclass
class Group:
    seeded: Seeded
    slug: str
    sub_mchid: str
    phone: str  # the first account's customer's phone on file (11 digits)

    @property
    def account(self) -> str:
        return self.seeded.accounts["m1"]


@dataclass
class PayEnv:
    base: str
    http: httpx.AsyncClient
    wiring: Wiring
    pay: WeChatPayStandIn
    wx: WeChatStandIn
    keys: MerchantKeys
    groups: list[Group] = field(default_factory=list)

    @property
    def service(self) -> Any:
        return self.wiring.services.wechat_pay


async def add_group(
    env: PayEnv,
    db: Database,
    balance: str = "10.00",
    meters: int = 1,
    spec: GroupSpec | None = None,
) -> Group:
    spec = spec or group_spec(meters=meters, balance=balance)
    seeded = await seed_group(db, spec)
    n = len(env.groups) + 1
    sub = f"19000001{n:02d}"
    phone = f"1380013{n:04d}"
    env.pay.add_sub_merchant(SP_MCHID, sub)
    async with db.tenant(seeded.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE customer SET phone = :p"), {"p": phone})
    k = env.keys
    await set_merchant(
        db,
        env.service.box,
        seeded.tenant_id,
        MerchantSettings(
            mode="partner",
            mchid=SP_MCHID,
            appid=SP_APPID,
            cert_serial_no=k.cert_serial_no,
            private_key=k.private_key_pem,
            apiv3_key=k.apiv3_key,
            sub_mchid=sub,
            app_secret=SP_SECRET,
            public_key=env.pay.public_key_pem,
            public_key_id=env.pay.public_key_id,
        ),
        "test",
        datetime.now(UTC),
    )
    group = Group(seeded, spec.slug, sub, phone)
    env.groups.append(group)
    return group


@contextlib.asynccontextmanager
async def pay_env(db_url: str, api_process: bool = False) -> AsyncIterator[PayEnv]:
    """The stand-ins and the API. ``api_process``: the API runs as ``prepay api`` in a
    process of its own (benchmarks: its CPU is not shared with the stand-in and the driver);
    this process keeps a wiring of the same settings for the merchants' sealed secrets."""
    pay = WeChatPayStandIn()
    wx = WeChatStandIn(appid=SP_APPID, secret=SP_SECRET)
    keys = MerchantKeys.generate(SP_MCHID)
    pay.add_merchant(SP_MCHID, keys, [SP_APPID])
    pay_url = await pay.start()
    wx_url = await wx.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    merchant_key = Fernet.generate_key().decode()
    settings = PaySettings(
        base_url=pay_url,
        public_base_url=base,
        wechat_api_base_url=wx_url,
        merchant_key=SecretStr(merchant_key),
    )
    wiring = Wiring.build(CloudSettings(database_url=db_url), db_url, pay=settings)
    task: asyncio.Task[None] | None = None
    proc: asyncio.subprocess.Process | None = None
    if api_process:
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "PREPAY_DATABASE_URL": db_url,
            "PREPAY_API_PORT": str(port),
            "PREPAY_SECRET_KEY": os.environ.get("PREPAY_SECRET_KEY", secrets.token_urlsafe(48)),
            "PREPAY_WECHATPAY_BASE_URL": pay_url,
            "PREPAY_WECHATPAY_PUBLIC_BASE_URL": base,
            "PREPAY_WECHATPAY_WECHAT_API_BASE_URL": wx_url,
            "PREPAY_WECHATPAY_MERCHANT_KEY": merchant_key,
        }
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "prepay"), "api", env=env
        )
    else:
        task = asyncio.create_task(serve_http(create_app(wiring.services), "127.0.0.1", port))

    async def up() -> bool:
        assert proc is None or proc.returncode is None, "prepay api exited"
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return True
        return False

    await wait_for(up, 30, "the API to listen")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            yield PayEnv(base, http, wiring, pay, wx, keys)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        await pay.stop()
        await wx.stop()
        await wiring.services.wechat_pay.close()
        await wiring.db.dispose()


async def phone_login(env: PayEnv, group: Group, phone: str | None = None) -> dict[str, str]:
    """Log in by phone and SMS code (the code is revealed in development)."""
    phone = phone or group.phone
    r = await env.http.post("/miniapp/v1/login/sms", json={"tenant": group.slug, "phone": phone})
    assert r.status_code == 200, r.text
    code = r.json()["dev_code"]
    r = await env.http.post(
        "/miniapp/v1/login/phone", json={"tenant": group.slug, "phone": phone, "code": code}
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


async def wechat_login(
    env: PayEnv, group: Group, openid: str | None = None, appid: str | None = None
) -> dict[str, str]:
    """Log in from the mini-program: wx.login's code through code2session."""
    code = env.wx.issue_code(openid or f"o-{uuid.uuid4().hex[:16]}", appid=appid)
    r = await env.http.post("/miniapp/v1/login/wechat", json={"tenant": group.slug, "code": code})
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


async def bind(env: PayEnv, group: Group, auth: dict[str, str]) -> None:
    r = await env.http.post(
        "/miniapp/v1/bindings", json={"account": group.account, "phone": group.phone}, headers=auth
    )
    assert r.status_code == 201, r.text


async def order(env: PayEnv, group: Group, auth: dict[str, str], amount: str = "30.00") -> Any:
    r = await env.http.post(
        "/miniapp/v1/orders", json={"account": group.account, "amount": amount}, headers=auth
    )
    assert r.status_code == 201, r.text
    return r.json()


async def wallet(db: Database, group: Group) -> Decimal:
    async with db.tenant(group.seeded.tenant_id) as conn:
        value = await conn.scalar(
            sa.text(
                "SELECT la.balance FROM account a JOIN ledger_account la ON la.id = a.wallet_id "
                "WHERE a.number = :n"
            ),
            {"n": group.account},
        )
    assert isinstance(value, Decimal)
    return value


async def credits(db: Database, group: Group, out_trade_no: str) -> int:
    """Journal entries crediting this payment (exactly one when credited)."""
    async with db.tenant(group.seeded.tenant_id) as conn:
        n = await conn.scalar(
            sa.text("SELECT count(*) FROM journal_entry WHERE idempotency_key = :k"),
            {"k": f"pay:{out_trade_no}"},
        )
    return int(n or 0)


def pdf_text(pdf: bytes) -> str:
    """The text of a PDF (poppler's pdftotext, which ``make test`` installs)."""
    out = subprocess.run(
        ["pdftotext", "-raw", "-", "-"], input=pdf, capture_output=True, check=True
    )
    return out.stdout.decode()
