"""Route dependencies of ``/miniapp/v1``: the signed-in tenant user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cloud.api.deps import ServicesDep
from cloud.errors import Unauthorized
from miniapp_api.identity import AppUser


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


async def current_user(request: Request, svc: ServicesDep) -> AppUser:
    token = bearer(request)
    if not token:
        raise Unauthorized("log in first")
    return await svc.app_sessions.user(token)


UserDep = Annotated[AppUser, Depends(current_user)]
