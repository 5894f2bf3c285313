"""SMS through Twilio's Messages API with the ``twilio`` library (async client).

The library's requests go through :class:`RoutedHttpClient`, an aiohttp client that can
send them to another base URL than ``https://api.twilio.com`` (the local stand-in in tests
and the demo); everything else, the wire format included, is the library's. Each message
names its status callback, ``{public}/api/v1/notify/twilio/status/{tenant}/{id}``, which
Twilio signs (``notifications.callbacks``).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from notifications.providers import Message, Outcome, Result

log = logging.getLogger(__name__)
TWILIO_API = "https://api.twilio.com"
# Twilio error codes that no retry will mend (invalid or unreachable number, opted out…)
PERMANENT_CODES = frozenset({21211, 21408, 21610, 21612, 21614, 21606, 21617, 30003, 30005})


class RoutedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """Twilio's async client interface over one pooled aiohttp session, its requests sent
    to ``base_url`` when one is set (the library's own client passes ``auth=``, which
    aiohttp deprecates)."""

    def __init__(self, base_url: str | None, timeout: float = 10.0, pool: int = 100) -> None:
        super().__init__(pool_connections=False, timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library's signature
        allow_redirects: bool = False,
    ) -> Response:
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool),
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            )
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        self.log_request(
            {"method": method.upper(), "url": url, "params": params, "data": data, "headers": {}}
        )
        async with self._session.request(
            method.upper(),
            url,
            params=params,  # type: ignore[arg-type]
            data=data,
            headers=headers,
            allow_redirects=allow_redirects,
        ) as resp:
            text = await resp.text()
            self.log_response(resp.status, resp)
            return Response(resp.status, text, resp.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class TwilioSms:
    channel = "sms"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        callback_base: str | None,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.http = RoutedHttpClient(base_url, timeout)
        self.client = Client(account_sid, auth_token, http_client=self.http)
        self.sender = sender
        self.callback_base = callback_base.rstrip("/") if callback_base else None

    def callback_url(self, message: Message) -> str | None:
        if self.callback_base is None:
            return None
        return (
            f"{self.callback_base}/api/v1/notify/twilio/status/"
            f"{message.tenant_id}/{message.notification_id}"
        )

    async def send(self, message: Message) -> Result:
        kwargs: dict[str, Any] = {"to": message.to, "from_": self.sender, "body": message.text}
        if (cb := self.callback_url(message)) is not None:
            kwargs["status_callback"] = cb
        try:
            m = await self.client.messages.create_async(**kwargs)
        except TwilioRestException as exc:
            answer = {"status": exc.status, "code": exc.code, "message": exc.msg}
            permanent = exc.code in PERMANENT_CODES or (
                400 <= exc.status < 500 and exc.status != 429
            )
            return Result(Outcome.PERMANENT if permanent else Outcome.TRANSIENT, answer=answer)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Result(Outcome.TRANSIENT, answer={"error": f"{type(exc).__name__}: {exc}"})
        segments = int(m.num_segments) if m.num_segments not in (None, "") else None
        return Result(Outcome.ACCEPTED, m.sid, segments, {"sid": m.sid, "status": str(m.status)})

    async def close(self) -> None:
        await self.http.close()
