"""A property group's merchant: direct mode (its own mchid and appid) paid and credited, with
WeChat Pay's public key or with platform certificates fetched from /v3/certificates; the
secrets sealed at rest; ``prepay merchant set`` reading them from files."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.payments.wechat.cli import run_merchant
from cloud.payments.wechat.merchant import MerchantSettings, set_merchant
from cloud.registry.service import seed_group
from standins.wechatpay import MerchantKeys
from tests.conftest import group_spec
from tests.integration.pay_helpers import (
    Group,
    PayEnv,
    bind,
    credits,
    order,
    pay_env,
    wallet,
    wechat_login,
)

DIRECT = "1230000109"
APPID = "wx-direct-group"
SECRET = "direct-group-secret"


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[PayEnv]:
    async with pay_env(db_url) as e:
        yield e


async def _direct_group(env: PayEnv, db: Database, verify: str) -> tuple[Group, MerchantKeys]:
    spec = group_spec()
    seeded = await seed_group(db, spec)
    keys = MerchantKeys.generate(DIRECT)
    env.pay.add_merchant(DIRECT, keys, [APPID], platform_serial=verify)
    env.wx.add_app(APPID, SECRET)
    async with db.tenant(seeded.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE customer SET phone = '13800139999'"))
    public = verify == "public_key"
    await set_merchant(
        db,
        env.service.box,
        seeded.tenant_id,
        MerchantSettings(
            mode="direct",
            mchid=DIRECT,
            appid=APPID,
            cert_serial_no=keys.cert_serial_no,
            private_key=keys.private_key_pem,
            apiv3_key=keys.apiv3_key,
            app_secret=SECRET,
            public_key=env.pay.public_key_pem if public else None,
            public_key_id=env.pay.public_key_id if public else None,
        ),
        "test",
        datetime.now(UTC),
    )
    return Group(seeded, spec.slug, DIRECT, "13800139999"), keys


@pytest.mark.parametrize("verify", ["public_key", "certificate"])
async def test_a_direct_merchant_is_paid_and_credited(
    env: PayEnv, db: Database, verify: str
) -> None:
    g, _ = await _direct_group(env, db, verify)
    auth = await wechat_login(env, g, appid=APPID)
    await bind(env, g, auth)
    before = await wallet(db, g)
    o = await order(env, g, auth, "30.00")
    placed = env.pay.order(o["out_trade_no"], mchid=DIRECT)
    assert placed.request["mchid"] == DIRECT and "openid" in placed.request["payer"]
    deliveries = await env.pay.pay(o["out_trade_no"], mchid=DIRECT, duplicates=1)
    assert [d.status for d in deliveries] == [204, 204]
    assert await credits(db, g, o["out_trade_no"]) == 1
    assert await wallet(db, g) == before + Decimal("30.00")
    async with db.tenant(g.seeded.tenant_id) as conn:
        clearing = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = :c"),
            {"c": f"clearing:wechat:{DIRECT}"},
        )
    assert clearing == Decimal("30.00")


async def test_merchant_secrets_are_sealed_at_rest(env: PayEnv, db: Database) -> None:
    g, keys = await _direct_group(env, db, "public_key")
    async with db.tenant(g.seeded.tenant_id) as conn:
        row = (
            await conn.execute(sa.text("SELECT private_key, apiv3_key, app_secret FROM merchant"))
        ).one()
    assert "PRIVATE KEY" not in row.private_key
    assert keys.apiv3_key not in row.apiv3_key and SECRET not in row.app_secret
    merchant = await env.service.merchant(g.seeded.tenant_id)
    assert merchant.settings.apiv3_key == keys.apiv3_key
    assert keys.apiv3_key not in repr(merchant) and "PRIVATE" not in repr(merchant.settings)


async def test_prepay_merchant_set_reads_the_secrets_from_files(
    env: PayEnv, db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = group_spec()
    seeded = await seed_group(db, spec)
    keys = MerchantKeys.generate("1900000100")
    (tmp_path / "key.pem").write_text(keys.private_key_pem)
    (tmp_path / "v3").write_text(keys.apiv3_key + "\n")
    (tmp_path / "pub.pem").write_text(env.pay.public_key_pem)
    args = argparse.Namespace(
        merchant_cmd="set",
        tenant=spec.slug,
        mode="partner",
        mchid="1900000100",
        sub_mchid="1900000177",
        appid="wx-sp",
        sub_appid=None,
        serial=keys.cert_serial_no,
        private_key=tmp_path / "key.pem",
        apiv3_key_file=tmp_path / "v3",
        app_secret_file=None,
        public_key=tmp_path / "pub.pem",
        public_key_id=env.pay.public_key_id,
    )
    assert await run_merchant(env.wiring, args) == 0
    m = await env.service.merchant(seeded.tenant_id)
    assert m.settings.sub_mchid == "1900000177" and m.settings.apiv3_key == keys.apiv3_key
    show = argparse.Namespace(merchant_cmd="show", tenant=spec.slug)
    assert await run_merchant(env.wiring, show) == 0
    out = capsys.readouterr().out
    assert "1900000177" in out and keys.apiv3_key not in out and "PRIVATE" not in out
    # a partner merchant without its sub_mchid is refused, and nothing changes
    bad = argparse.Namespace(**{**vars(args), "sub_mchid": None})
    assert await run_merchant(env.wiring, bad) == 1
    assert (await env.service.merchant(seeded.tenant_id)).settings.sub_mchid == "1900000177"
