"""Shared route dependencies: the services bundle and the authenticated operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud.auth import Principal, Sessions
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.errors import Unauthorized
from cloud.payments.wechat.orders import WeChatPayments
from cloud.payments.wechat.settings import PaySettings
from cloud.tenant_app.accounts import TenantAccounts
from cloud.tenant_app.login import TenantLogin
from miniapp_api.identity import AppSessions
from notifications.settings import NotifySettings

SESSION_COOKIE = "prepay_session"


@dataclass
class Services:
    db: Database
    sessions: Sessions
    timing: CommandTiming
    broker_url: str = "mqtt://127.0.0.1:1883"  # what commissioned gateways connect to
    mqtt_prefix: str = "prepay"
    cloud_mqtt_url: str | None = None  # the cloud's own broker account (config pushes)
    # cookies marked Secure everywhere (production); otherwise only over https and on
    # localhost, which browsers treat as secure (tests' in-process clients speak http)
    secure_cookies: bool = False
    draw_receipts_ahead: bool = False  # (cloud.documents.receipt.draw_ahead)
    # notification providers' settings (the Twilio status callback's auth token)
    notify_settings: NotifySettings = field(default_factory=NotifySettings)
    # WeChat Pay (the tenant app's top-ups) and where merchants' secrets are sealed
    pay_settings: PaySettings = field(default_factory=PaySettings)
    data_dir: Path = Path(".prepay")
    environment: str = "development"
    # tenant users' sessions (miniapp_api), signed with the same key as operators'
    app_sessions: AppSessions = field(init=False)
    wechat_pay: WeChatPayments = field(init=False)
    tenant_login: TenantLogin = field(init=False)
    tenant_accounts: TenantAccounts = field(init=False)

    def __post_init__(self) -> None:
        from cloud.payments.wechat.secrets import box_for
        from notifications.worker import providers_from

        self.app_sessions = AppSessions(self.db, self.sessions.secret)
        key = self.pay_settings.merchant_key
        box = box_for(key.get_secret_value() if key else None, self.data_dir, self.environment)
        self.wechat_pay = WeChatPayments(self.db, box, self.pay_settings, self.timing)
        self.tenant_login = TenantLogin(
            self.db,
            self.app_sessions,
            box,
            providers_from(self.notify_settings)["sms"],
            self.pay_settings.wechat_api_base_url,
            reveal_codes=self.environment == "development",
        )
        self.tenant_accounts = TenantAccounts(self.db, self.tenant_login)


async def services(request: Request) -> Services:
    # (async: a plain def dependency costs every request a hop to the thread pool)
    svc: Services = request.app.state.services
    return svc


ServicesDep = Annotated[Services, Depends(services)]


def session_token(request: Request) -> str | None:
    """The bearer token, or the console's session cookie."""
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else request.cookies.get(SESSION_COOKIE)


# Named in the OpenAPI document as the routes' security scheme; the console's cookie
# works too (session_token).
_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/auth/token")


async def operator(
    request: Request,
    svc: ServicesDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal:
    token = session_token(request)
    if not token:
        raise Unauthorized("log in first")
    return await svc.sessions.principal(token)


OperatorDep = Annotated[Principal, Depends(operator)]
