"""A property group's WeChat Pay merchant: service-provider mode (the platform's
``sp_mchid``/``sp_appid``, the group's ``sub_mchid``) or direct mode (the group's own
``mchid``/``appid``). Set by the platform operator (``prepay merchant set``); the private
key, the APIv3 key and the mini-program's secret are sealed at rest. ``Clients`` keeps one
``wechatpayv3`` client per merchant."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from wechatpayv3.async_ import AsyncWeChatPay
from wechatpayv3.async_.type import WeChatPayType

from cloud import audit
from cloud.db import Database
from cloud.errors import Invalid, NotFound, Unavailable
from cloud.payments.wechat.secrets import SecretBox

log = logging.getLogger(__name__)
MODES = ("partner", "direct")


@dataclass(frozen=True)
class MerchantSettings:
    """What ``prepay merchant set`` stores (secrets in the clear here, sealed in the row)."""

    mode: str  # partner | direct
    mchid: str  # sp_mchid in partner mode
    appid: str  # sp_appid in partner mode
    cert_serial_no: str
    private_key: str  # PEM
    apiv3_key: str  # 32 characters
    sub_mchid: str | None = None
    sub_appid: str | None = None  # the group's own mini-program, in partner mode
    app_secret: str | None = None  # the mini-program's AppSecret (code2session)
    public_key: str | None = None  # WeChat Pay public key (PEM); none: platform certificates
    public_key_id: str | None = None

    def __repr__(self) -> str:  # never show a secret
        return f"MerchantSettings(mode={self.mode!r}, mchid={self.mchid!r}, …)"

    def check(self) -> None:
        if self.mode not in MODES:
            raise Invalid("mode must be partner or direct")
        if (self.mode == "partner") != bool(self.sub_mchid):
            raise Invalid("a sub_mchid is needed in partner mode, and only there")
        if self.mode == "direct" and self.sub_appid:
            raise Invalid("sub_appid is only for partner mode")
        if len(self.apiv3_key.encode()) != 32:
            raise Invalid("the APIv3 key must be 32 bytes")
        if "PRIVATE KEY" not in self.private_key:
            raise Invalid("the merchant private key must be a PEM private key")
        if bool(self.public_key) != bool(self.public_key_id):
            raise Invalid("the WeChat Pay public key and its id go together")
        if self.public_key and "PUBLIC KEY" not in self.public_key:
            raise Invalid("the WeChat Pay public key must be a PEM public key")
        for name in ("mchid", "appid", "cert_serial_no"):
            if not getattr(self, name).strip():
                raise Invalid(f"{name} is required")


@dataclass(frozen=True)
class Merchant:
    """A tenant's merchant as the payment code uses it (secrets opened)."""

    tenant_id: uuid.UUID
    settings: MerchantSettings
    updated_at: datetime

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def partner(self) -> bool:
        return self.settings.mode == "partner"

    @property
    def login_appid(self) -> str:
        """The mini-program tenants log in with (and whose openid pays)."""
        return self.settings.sub_appid or self.settings.appid

    @property
    def clearing_code(self) -> str:
        return clearing_channel(self.settings.mode, self.settings.mchid, self.settings.sub_mchid)


def clearing_channel(mode: str, mchid: str, sub_mchid: str | None) -> str:
    """The channel whose clearing account holds a merchant's money: the sub-merchant's in
    partner mode (each group's own), the merchant's in direct mode."""
    return f"wechat:{sub_mchid}" if mode == "partner" else f"wechat:{mchid}"


async def set_merchant(
    db: Database,
    box: SecretBox,
    tenant_id: uuid.UUID,
    settings: MerchantSettings,
    actor: str,
    now: datetime,
) -> None:
    """Store (or replace) a tenant's merchant settings, secrets sealed."""
    settings.check()
    seal = box.seal
    values = {
        "t": tenant_id,
        "mode": settings.mode,
        "mchid": settings.mchid,
        "sub": settings.sub_mchid,
        "appid": settings.appid,
        "subapp": settings.sub_appid,
        "serial": settings.cert_serial_no,
        "pk": seal(settings.private_key),
        "v3": seal(settings.apiv3_key),
        "secret": seal(settings.app_secret) if settings.app_secret else None,
        "pub": settings.public_key,
        "pubid": settings.public_key_id,
        "now": now,
        "by": actor,
    }
    async with db.tenant(tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO merchant (tenant_id, mode, mchid, sub_mchid, appid, sub_appid, "
                "cert_serial_no, private_key, apiv3_key, app_secret, public_key, "
                "public_key_id, updated_at, updated_by) VALUES (:t, :mode, :mchid, :sub, "
                ":appid, :subapp, :serial, :pk, :v3, :secret, :pub, :pubid, :now, :by) "
                "ON CONFLICT (tenant_id) DO UPDATE SET mode = EXCLUDED.mode, "
                "mchid = EXCLUDED.mchid, sub_mchid = EXCLUDED.sub_mchid, "
                "appid = EXCLUDED.appid, sub_appid = EXCLUDED.sub_appid, "
                "cert_serial_no = EXCLUDED.cert_serial_no, private_key = "
                "EXCLUDED.private_key, apiv3_key = EXCLUDED.apiv3_key, app_secret = "
                "EXCLUDED.app_secret, public_key = EXCLUDED.public_key, public_key_id = "
                "EXCLUDED.public_key_id, updated_at = EXCLUDED.updated_at, "
                "updated_by = EXCLUDED.updated_by"
            ),
            values,
        )
        detail = {"mode": settings.mode, "mchid": settings.mchid}
        if settings.sub_mchid:
            detail["sub_mchid"] = settings.sub_mchid
        await audit.record(conn, tenant_id, actor, "merchant.set", "merchant", now, detail)


async def load_merchant(conn: AsyncConnection, box: SecretBox, tenant_id: uuid.UUID) -> Merchant:
    """The tenant's merchant (``conn`` under its tenant); NotFound when none is set."""
    row = (
        await conn.execute(sa.text("SELECT * FROM merchant WHERE tenant_id = :t"), {"t": tenant_id})
    ).first()
    if row is None:
        raise NotFound("this property group does not take WeChat payments yet")
    return Merchant(
        tenant_id,
        MerchantSettings(
            mode=row.mode,
            mchid=row.mchid,
            appid=row.appid,
            cert_serial_no=row.cert_serial_no,
            private_key=box.open(row.private_key),
            apiv3_key=box.open(row.apiv3_key),
            sub_mchid=row.sub_mchid,
            sub_appid=row.sub_appid,
            app_secret=box.open(row.app_secret) if row.app_secret else None,
            public_key=row.public_key,
            public_key_id=row.public_key_id,
        ),
        row.updated_at,
    )


class Clients:
    """One ``wechatpayv3`` async client per merchant, made on first use (the platform
    certificates fetched then, where the merchant has no WeChat Pay public key) and made
    again when the merchant's settings change."""

    def __init__(self, base_url: str | None, notify_base: str, timeout_s: float) -> None:
        self.base_url = base_url
        self.notify_base = notify_base.rstrip("/")
        self.timeout_s = timeout_s
        self._clients: dict[uuid.UUID, tuple[datetime, AsyncWeChatPay]] = {}
        self._lock = asyncio.Lock()

    def notify_url(self, tenant_id: uuid.UUID) -> str:
        return f"{self.notify_base}/miniapp/v1/pay/notify/{tenant_id}"

    def refund_notify_url(self, tenant_id: uuid.UUID) -> str:
        return f"{self.notify_base}/miniapp/v1/pay/refund-notify/{tenant_id}"

    async def of(self, merchant: Merchant) -> AsyncWeChatPay:
        held = self._clients.get(merchant.tenant_id)
        if held is not None and held[0] == merchant.updated_at:
            return held[1]
        async with self._lock:
            held = self._clients.get(merchant.tenant_id)
            if held is not None and held[0] == merchant.updated_at:
                return held[1]
            s = merchant.settings
            client = AsyncWeChatPay(
                wechatpay_type=WeChatPayType.MINIPROG,
                mchid=s.mchid,
                private_key=s.private_key,
                cert_serial_no=s.cert_serial_no,
                appid=s.appid,
                apiv3_key=s.apiv3_key,
                notify_url=self.notify_url(merchant.tenant_id),
                partner_mode=merchant.partner,
                timeout=self.timeout_s,
                public_key=s.public_key,
                public_key_id=s.public_key_id,
                logger=None,  # (its debug lines would print the keys' use and the bodies)
            )
            if self.base_url:
                client._core._gate_way = self.base_url.rstrip("/")
            try:
                await client.__aenter__()
            except Exception as exc:
                raise PayUnavailable(f"WeChat Pay could not be reached: {exc}") from exc
            if held is not None:
                await _close(held[1])
            self._clients[merchant.tenant_id] = (merchant.updated_at, client)
            return client

    async def close(self) -> None:
        for _, client in self._clients.values():
            await _close(client)
        self._clients.clear()


async def _close(client: AsyncWeChatPay) -> None:
    try:
        await client.__aexit__(None, None, None)
    except Exception:
        log.warning("closing a WeChat Pay client failed", exc_info=True)


class PayUnavailable(Unavailable):
    """WeChat Pay did not answer, or answered with an error we cannot act on."""


def answer(code: int, message: Any) -> dict[str, Any]:
    """A wechatpayv3 answer's JSON body ({} when empty)."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    if not message:
        return {}
    try:
        doc = json.loads(message)
    except ValueError:
        return {"raw": str(message)[:500], "http_status": code}
    return doc if isinstance(doc, dict) else {"raw": doc}
