"""Logging a tenant in: ``wx.login``'s code through ``code2session`` (wechatpy) to the
openid of the property group's mini-program, or, outside WeChat, a phone number and a
six-digit code sent to it by SMS (the notifications' provider; the log provider in
development). Either ends in an ``app_user`` and a session of our own."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import Database
from cloud.errors import Invalid, NotFound, TooManyAttempts, Unauthorized, Unavailable
from cloud.payments.wechat.merchant import load_merchant
from cloud.payments.wechat.secrets import SecretBox
from miniapp_api.identity import AppSessions
from notifications.providers import Message, Outcome, Provider
from notifications.rules import BadPhone, e164

log = logging.getLogger(__name__)
CODE_MINUTES = 5
CODE_ATTEMPTS = 5  # wrong guesses before a code is spent
CODES_PER_HOUR = 5  # codes sent to one phone in an hour


@dataclass(frozen=True)
class Login:
    token: str
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    phone: str | None
    openid: str | None


def phone_of(text: str) -> str:
    try:
        return e164(text)
    except BadPhone:
        raise Invalid(
            "phone number is not a mobile number (11 digits, or + and country code)"
        ) from None


def _hash(tenant_id: uuid.UUID, phone: str, code: str) -> str:
    return hashlib.sha256(f"{tenant_id}:{phone}:{code}".encode()).hexdigest()


class TenantLogin:
    def __init__(
        self,
        db: Database,
        sessions: AppSessions,
        box: SecretBox,
        sms: Provider,
        wechat_base_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reveal_codes: bool = False,
    ) -> None:
        self.db = db
        self.sessions = sessions
        self.box = box
        self.sms = sms
        self.wechat_base_url = wechat_base_url
        self.clock = clock
        # development and the demo: the code is also returned, so one can log in
        # without a phone (never in production: cloud.settings)
        self.reveal_codes = reveal_codes

    async def tenant(self, slug: str) -> uuid.UUID:
        async with self.db.platform() as conn:
            found = await conn.scalar(sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": slug})
        if found is None:
            raise NotFound(f"no property group {slug!r}")
        assert isinstance(found, uuid.UUID)
        return found

    # --- WeChat ---------------------------------------------------------------------------

    async def wechat(self, slug: str, code: str) -> Login:
        tenant_id = await self.tenant(slug)
        async with self.db.tenant(tenant_id) as conn:
            merchant = await load_merchant(conn, self.box, tenant_id)
        appid, secret = merchant.login_appid, merchant.settings.app_secret
        if not secret:
            raise NotFound("this property group's mini-program is not set up for login")
        session = await asyncio.to_thread(self._code2session, appid, secret, code)
        openid = session.get("openid")
        if not openid:
            raise Unauthorized("WeChat did not accept this login code; log in again")
        now = self.clock()
        async with self.db.tenant(tenant_id) as conn:
            user_id = await conn.scalar(
                sa.text(
                    "INSERT INTO app_user (id, tenant_id, appid, openid, created_at) VALUES "
                    "(gen_random_uuid(), :t, :app, :o, :now) ON CONFLICT (tenant_id, appid, "
                    "openid) WHERE openid IS NOT NULL DO UPDATE SET openid = EXCLUDED.openid "
                    "RETURNING id"
                ),
                {"t": tenant_id, "app": appid, "o": openid, "now": now},
            )
            phone = await conn.scalar(
                sa.text("SELECT phone FROM app_user WHERE id = :u"), {"u": user_id}
            )
        token = await self.sessions.issue(tenant_id, user_id)
        return Login(token, user_id, tenant_id, phone, openid)

    def _code2session(self, appid: str, secret: str, code: str) -> dict[str, Any]:
        from wechatpy import WeChatClientException

        from notifications.providers.wechat import RoutedWeChatClient

        client = RoutedWeChatClient(appid, secret, self.wechat_base_url, 10.0)
        try:
            result: dict[str, Any] = client.wxa.code_to_session(code)
        except WeChatClientException as exc:
            if exc.errcode in (40029, 40163, 40226):
                raise Unauthorized("WeChat did not accept this login code; log in again") from None
            raise Unavailable(f"WeChat login failed ({exc.errcode})") from None
        except Exception as exc:  # requests' errors: WeChat unreachable
            raise Unavailable(f"WeChat could not be reached: {type(exc).__name__}") from None
        return result

    # --- phone and SMS code ---------------------------------------------------------------

    async def send_code(self, slug: str, phone_text: str) -> str | None:
        """Send a six-digit code to the phone (returned too when codes are revealed)."""
        tenant_id = await self.tenant(slug)
        phone = phone_of(phone_text)
        return await self.code_to(tenant_id, phone)

    async def code_to(self, tenant_id: uuid.UUID, phone: str) -> str | None:
        now = self.clock()
        code = f"{secrets.randbelow(1_000_000):06d}"
        async with self.db.tenant(tenant_id) as conn:
            sent = await conn.scalar(
                sa.text("SELECT count(*) FROM login_code WHERE phone = :p AND created_at > :since"),
                {"p": phone, "since": now - timedelta(hours=1)},
            )
            if int(sent or 0) >= CODES_PER_HOUR:
                raise TooManyAttempts("too many codes sent to this phone; try again later", 3600)
            code_id = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO login_code (id, tenant_id, phone, code_hash, created_at, "
                    "expires_at) VALUES (:id, :t, :p, :h, :now, :exp)"
                ),
                {
                    "id": code_id,
                    "t": tenant_id,
                    "p": phone,
                    "h": _hash(tenant_id, phone, code),
                    "now": now,
                    "exp": now + timedelta(minutes=CODE_MINUTES),
                },
            )
        text = f"【预付费】验证码 {code}，{CODE_MINUTES} 分钟内有效。请勿告诉他人。"
        result = await self.sms.send(Message(tenant_id, code_id, "login_code", phone, text))
        if result.outcome is not Outcome.ACCEPTED:
            raise Unavailable("the code could not be sent; try again in a minute")
        return code if self.reveal_codes else None

    async def check_code(
        self, conn: AsyncConnection, tenant_id: uuid.UUID, phone: str, code: str
    ) -> None:
        """Spend the phone's live code if ``code`` is it; Unauthorized otherwise."""
        now = self.clock()
        row = (
            await conn.execute(
                sa.text(
                    "SELECT id, code_hash, attempts FROM login_code WHERE phone = :p AND "
                    "used_at IS NULL AND expires_at > :now ORDER BY created_at DESC LIMIT 1 "
                    "FOR UPDATE"
                ),
                {"p": phone, "now": now},
            )
        ).first()
        if row is None or row.attempts >= CODE_ATTEMPTS:
            raise Unauthorized("the code has expired; ask for a new one")
        if not hmac.compare_digest(row.code_hash, _hash(tenant_id, phone, code.strip())):
            await conn.execute(
                sa.text("UPDATE login_code SET attempts = attempts + 1 WHERE id = :id"),
                {"id": row.id},
            )
            raise Unauthorized("the code is wrong")
        await conn.execute(
            sa.text("UPDATE login_code SET used_at = :now WHERE id = :id"),
            {"now": now, "id": row.id},
        )

    async def phone(self, slug: str, phone_text: str, code: str) -> Login:
        tenant_id = await self.tenant(slug)
        phone = phone_of(phone_text)
        now = self.clock()
        failed: Unauthorized | None = None
        async with self.db.tenant(tenant_id) as conn:
            try:
                await self.check_code(conn, tenant_id, phone, code)
            except Unauthorized as exc:
                failed = exc  # (the attempt is counted: this transaction commits)
            else:
                user_id = await conn.scalar(
                    sa.text(
                        "INSERT INTO app_user (id, tenant_id, phone, created_at) VALUES "
                        "(gen_random_uuid(), :t, :p, :now) ON CONFLICT (tenant_id, phone) WHERE "
                        "phone IS NOT NULL DO UPDATE SET phone = EXCLUDED.phone RETURNING id"
                    ),
                    {"t": tenant_id, "p": phone, "now": now},
                )
        if failed is not None:
            raise failed
        token = await self.sessions.issue(tenant_id, user_id)
        return Login(token, user_id, tenant_id, phone, None)
