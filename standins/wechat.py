"""A local stand-in of WeChat's server API for the mini-program: ``GET cgi-bin/token``
(client credential → access token), ``GET sns/jscode2session`` (a ``wx.login`` code →
``openid``, ``session_key`` and ``unionid`` when the user has one; 40029 for an unknown or
expired code, 40163 for a code used before, 40013 / 40125 for a bad appid / secret; a code
comes from ``issue_code`` and works once, for the app it was issued for) and
``POST cgi-bin/message/subscribe/send``
(subscribeMessage.send: JSON ``touser``, ``template_id``, ``page``, ``data``), answering
with WeChat's ``errcode``/``errmsg`` bodies: 40001 for a bad token, 43101 for a user who
has not subscribed (``refuse``: openids, or (openid, template) pairs), 0 and a ``msgid``
otherwise. What it accepted is in ``messages``.

Several apps: ``appid``/``secret`` is the first, ``apps`` (appid → secret) the others (the
platform's mini-program and property groups' own).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from standins import serve


@dataclass
class WeChatStandIn:
    appid: str = "wx-standin-app"
    secret: str = "standin-app-secret"  # noqa: S105 - a stand-in
    refuse: set[Any] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    url: str = ""
    apps: dict[str, str] = field(default_factory=dict)
    code_ttl_s: float = 300.0  # a wx.login code is good for five minutes
    clock: Callable[[], float] = time.monotonic
    sessions: list[dict[str, Any]] = field(default_factory=list)
    _codes: dict[str, tuple[str, str, str | None, float]] = field(default_factory=dict)
    _used: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _next_msgid: int = 1_000_000

    def __post_init__(self) -> None:
        self.apps.setdefault(self.appid, self.secret)

    def add_app(self, appid: str, secret: str) -> None:
        self.apps[appid] = secret

    def issue_code(self, openid: str, unionid: str | None = None, appid: str | None = None) -> str:
        """A fresh code as ``wx.login`` in ``appid`` (default the first app) gives it."""
        app = appid or self.appid
        if app not in self.apps:
            raise KeyError(f"unknown appid {app}")
        code = secrets.token_urlsafe(24)
        self._codes[code] = (app, openid, unionid, self.clock() + self.code_ttl_s)
        return code

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_get("/sns/jscode2session", self._jscode2session)
        app.router.add_post("/cgi-bin/message/subscribe/send", self._send)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner, self.url = await serve(self.app(), host, port)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("grant_type") != "client_credential":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        if q.get("appid") not in self.apps:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        if q.get("secret") != self.apps[q["appid"]]:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def _jscode2session(self, request: web.Request) -> web.Response:
        q = request.query
        appid, code = q.get("appid", ""), q.get("js_code", "")
        if appid not in self.apps:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        if q.get("secret") != self.apps[appid]:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        if q.get("grant_type") != "authorization_code":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        if code in self._used:
            return web.json_response({"errcode": 40163, "errmsg": "code been used"})
        issued = self._codes.get(code)
        if issued is None or issued[0] != appid or issued[3] < self.clock():
            return web.json_response({"errcode": 40029, "errmsg": "invalid code"})
        del self._codes[code]
        self._used.add(code)
        _, openid, unionid, _ = issued
        answer: dict[str, Any] = {
            "openid": openid,
            "session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
        }
        if unionid is not None:
            answer["unionid"] = unionid
        self.sessions.append({"appid": appid, **answer})
        return web.json_response(answer)

    async def _send(self, request: web.Request) -> web.Response:
        if request.query.get("access_token") not in self.tokens:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        try:
            body = await request.json(loads=__import__("json").loads)
        except ValueError:
            return web.json_response({"errcode": 47001, "errmsg": "data format error"})
        user, template = body.get("touser"), body.get("template_id")
        if not user or not template or not isinstance(body.get("data"), dict):
            return web.json_response({"errcode": 47003, "errmsg": "argument invalid!"})
        if user in self.refuse or (user, template) in self.refuse:
            return web.json_response({"errcode": 43101, "errmsg": "user refuse to accept the msg"})
        self._next_msgid += 1
        self.messages.append({**body, "msgid": self._next_msgid})
        await asyncio.sleep(0)
        return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": self._next_msgid})
