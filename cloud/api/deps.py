"""Shared route dependencies: the services bundle and the authenticated operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud.auth import Principal, Sessions
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.errors import Unauthorized
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
    # tenant users' sessions (miniapp_api), signed with the same key as operators'
    app_sessions: AppSessions = field(init=False)

    def __post_init__(self) -> None:
        self.app_sessions = AppSessions(self.db, self.sessions.secret)


def services(request: Request) -> Services:
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
