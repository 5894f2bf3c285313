"""A local stand-in of Twilio's Messages API (``POST /2010-04-01/Accounts/{sid}/
Messages.json``, form-encoded, HTTP basic auth with the account SID and auth token),
answering as Twilio does (201, a Message resource: ``sid`` SM…, ``status`` queued,
``num_segments``), then calling the message's ``StatusCallback`` with ``sent`` and
``delivered``, signed as Twilio signs (``X-Twilio-Signature``: HMAC-SHA1 over the URL and
the sorted form fields, with the auth token).

On request (attributes, or ``POST /_standin/mode`` with JSON): ``outage`` (every send a
503 with Twilio's error body), ``bad_signature`` (callbacks signed with another key),
``out_of_order`` (``delivered`` before ``sent``), ``final_status`` (``undelivered``,
``failed``), ``callbacks`` off. ``GET /_standin/messages`` lists what it accepted.

Run alone: ``python -m standins.twilio --port 8701 --token T``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from notifications.segments import segments
from standins import serve

log = logging.getLogger(__name__)
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
INVALID_TO = "+15005550001"  # as with Twilio's test credentials: refused with 21211


@dataclass
class Accepted:
    sid: str
    to: str
    sender: str
    body: str
    segments: int
    callback: str | None
    at: datetime


@dataclass
class TwilioStandIn:
    account_sid: str = "AC00000000000000000000000000000000"
    auth_token: str = "standin-auth-token-0123456789abcdef"  # noqa: S105 - a stand-in
    outage: bool = False
    bad_signature: bool = False
    out_of_order: bool = False
    final_status: str = "delivered"
    callbacks: bool = True
    callback_delay: float = 0.02
    messages: list[Accepted] = field(default_factory=list)
    refused: int = 0  # sends answered 503 during an outage
    url: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        app.router.add_get("/_standin/messages", self._list)
        app.router.add_post("/_standin/mode", self._mode)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner, self.url = await serve(self.app(), host, port)
        return self.url

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorised(self, request: web.Request, sid: str) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == sid == self.account_sid and password == self.auth_token

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status=status,
        )

    async def _create(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        if not self._authorised(request, sid):
            return self._error(401, 20003, "Authenticate")
        if self.outage:
            self.refused += 1
            return self._error(503, 20500, "Service Unavailable")
        form = await request.post()
        to, sender, body = str(form.get("To", "")), str(form.get("From", "")), form.get("Body")
        if not _E164.match(to) or to == INVALID_TO:
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if body is None:
            return self._error(400, 21602, "Message body is required.")
        text = str(body)
        callback = form.get("StatusCallback")
        msg = Accepted(
            "SM" + uuid.uuid4().hex,
            to,
            sender,
            text,
            segments(text),
            str(callback) if callback else None,
            datetime.now(UTC),
        )
        self.messages.append(msg)
        log.info(
            "Twilio stand-in: SMS %s to %s (%d segment(s)): %s", msg.sid, to, msg.segments, text
        )
        if msg.callback and self.callbacks:
            task = asyncio.create_task(self._statuses(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        now = format_datetime(msg.at)
        return web.json_response(
            {
                "account_sid": self.account_sid,
                "api_version": "2010-04-01",
                "body": text,
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": sender,
                "messaging_service_sid": None,
                "num_media": "0",
                "num_segments": str(msg.segments),
                "price": None,
                "price_unit": "USD",
                "sid": msg.sid,
                "status": "queued",
                "subresource_uris": {
                    "media": f"/2010-04-01/Accounts/{sid}/Messages/{msg.sid}/Media.json"
                },
                "to": to,
                "uri": f"/2010-04-01/Accounts/{sid}/Messages/{msg.sid}.json",
            },
            status=201,
        )

    async def _statuses(self, msg: Accepted) -> None:
        order = ["sent", self.final_status]
        if self.out_of_order:
            order.reverse()
        for status in order:
            await asyncio.sleep(self.callback_delay)
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                await self.callback(msg, status)

    async def callback(self, msg: Accepted, status: str, forged: bool | None = None) -> int:
        """POST one status callback for ``msg`` as Twilio would; returns the HTTP status."""
        assert msg.callback is not None
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": msg.sender,
            "MessageSid": msg.sid,
            "MessageStatus": status,
            "SmsSid": msg.sid,
            "SmsStatus": status,
            "To": msg.to,
        }
        if status in ("undelivered", "failed"):
            params["ErrorCode"] = "30003"
        forge = self.bad_signature if forged is None else forged
        key = "not-the-auth-token" if forge else self.auth_token
        signature = RequestValidator(key).compute_signature(msg.callback, params)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self._session.post(
            msg.callback, data=params, headers={"X-Twilio-Signature": signature}
        ) as resp:
            return resp.status

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "refused": self.refused,
                "messages": [
                    {
                        "sid": m.sid,
                        "to": m.to,
                        "body": m.body,
                        "segments": m.segments,
                        "at": m.at.isoformat(),
                    }
                    for m in self.messages
                ],
            }
        )

    async def _mode(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        for key in ("outage", "bad_signature", "out_of_order", "callbacks"):
            if key in body:
                setattr(self, key, bool(body[key]))
        if "final_status" in body:
            self.final_status = str(body["final_status"])
        return web.json_response({"ok": True})


async def _serve(port: int, token: str, callbacks: bool) -> None:
    stand_in = TwilioStandIn(auth_token=token, callbacks=callbacks)
    url = await stand_in.start(port=port)
    print(f"Twilio stand-in on {url}", flush=True)  # noqa: T201 - a CLI
    try:
        await asyncio.Event().wait()
    finally:
        await stand_in.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="a local stand-in of Twilio's Messages API")
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--token", default=TwilioStandIn.auth_token)
    parser.add_argument("--no-callbacks", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.token, not args.no_callbacks))


if __name__ == "__main__":
    main()
