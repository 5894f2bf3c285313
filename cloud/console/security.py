"""Console protections: CSRF (a per-browser random token in a SameSite=Strict cookie that
every form echoes, plus an Origin check), security headers on every answer, and cookie
flags (HttpOnly, SameSite, Secure)."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "prepay_csrf"
CSRF_FIELD = "csrf_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's interactive docs load Swagger UI from a CDN: a looser policy on those pages only
_DOCS = ("/docs", "/redoc", "/openapi.json")


class SecurityHeaders:
    """The security headers on every answer. Plain ASGI (wrapping ``send``), not Starlette's
    BaseHTTPMiddleware, whose task and stream per request cost every WeChat Pay notification
    about a millisecond."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                h.setdefault("X-Content-Type-Options", "nosniff")
                h.setdefault("Referrer-Policy", "same-origin")
                h.setdefault("X-Frame-Options", "DENY")
                if not path.startswith(_DOCS):
                    h.setdefault("Content-Security-Policy", CSP)
                else:
                    h.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
                if path.startswith("/console") and "cache-control" not in h:
                    h["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


def secure_cookie(request: Request, always: bool) -> bool:
    """Secure in production; over https; and on localhost, which browsers treat as a
    secure origin (so the demo's cookies are Secure too)."""
    return (
        always
        or request.url.scheme == "https"
        or request.url.hostname in {"localhost", "127.0.0.1", "::1"}
    )


def csrf_token(request: Request) -> str:
    """This browser's token (a new one when it has none yet; ``ensure_csrf_cookie`` sets
    it on the answer)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) != 43:
        token = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(32))
    return token


def ensure_csrf_cookie(request: Request, response: Response, secure: bool) -> None:
    new = request.state.__dict__.get("new_csrf")
    if new:
        response.set_cookie(
            CSRF_COOKIE, new, httponly=True, samesite="strict", secure=secure, path="/console"
        )


async def csrf_ok(request: Request) -> bool:
    """The form's token equals the cookie's, and a browser's Origin (when sent) is ours."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin != own:
            return False
    cookie = request.cookies.get(CSRF_COOKIE, "")
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    return bool(cookie) and isinstance(sent, str) and hmac.compare_digest(cookie, sent)
