"""A local stand-in of WeChat's server API for the mini-program: ``GET cgi-bin/token``
(client credential → access token) and ``POST cgi-bin/message/subscribe/send``
(subscribeMessage.send: JSON ``touser``, ``template_id``, ``page``, ``data``), answering
with WeChat's ``errcode``/``errmsg`` bodies: 40001 for a bad token, 43101 for a user who
has not subscribed (``refuse``: openids, or (openid, template) pairs), 0 and a ``msgid``
otherwise. What it accepted is in ``messages``.
"""

from __future__ import annotations

import asyncio
import secrets
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
    _runner: web.AppRunner | None = None
    _next_msgid: int = 1_000_000

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
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
        if q.get("appid") != self.appid:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        if q.get("secret") != self.secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 7200})

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
