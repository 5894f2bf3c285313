"""WeChat mini-program subscribe messages through ``wechatpy``
(``subscribeMessage.send``: ``POST cgi-bin/message/subscribe/send``).

A one-time subscription allows one message: the worker spends a recorded acceptance
(``subscribe_acceptance``) before it sends, and WeChat's own "the user has not
subscribed" (errcode 43101) is taken as the same signal as none left: the worker falls
back to SMS. wechatpy is synchronous (requests); a send runs in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import requests
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from notifications.providers import Message, Outcome, Result

WECHAT_API = "https://api.weixin.qq.com"
NO_CONSENT_CODES = frozenset({43101})  # user refused / subscription used up
TRANSIENT_CODES = frozenset({-1, 45009, 45011, 40001, 42001})  # busy, rate-limited, token
PERMANENT_CODES = frozenset({40003, 40037, 47003, 41030})  # bad openid/template/data/page


class RoutedWeChatClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's client with its base URL replaceable (a stand-in)."""

    def __init__(self, appid: str, secret: str, base_url: str | None, timeout: float) -> None:
        super().__init__(appid, secret, timeout=timeout)
        self.base = (base_url or WECHAT_API).rstrip("/")
        self.API_BASE_URL = f"{self.base}/cgi-bin/"
        self.wxa.API_BASE_URL = f"{self.base}/"

    def fetch_access_token(self) -> Any:
        return self._fetch_access_token(
            url=f"{self.base}/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


class WeChatSubscribe:
    channel = "wechat"

    def __init__(
        self, appid: str, secret: str, base_url: str | None, page: str, timeout: float = 10.0
    ) -> None:
        self.client = RoutedWeChatClient(appid, secret, base_url, timeout)
        self.page = page

    def _send(self, message: Message) -> dict[str, Any]:
        result: dict[str, Any] = self.client.wxa.send_subscribe_message(
            message.to, message.template_id, message.data, page=self.page
        )
        return result

    async def send(self, message: Message) -> Result:
        try:
            answer = await asyncio.to_thread(self._send, message)
        except WeChatClientException as exc:
            code = exc.errcode
            answer = {"errcode": code, "errmsg": exc.errmsg}
            if code in NO_CONSENT_CODES:
                return Result(Outcome.NO_CONSENT, answer=answer)
            if code is None or code in TRANSIENT_CODES:
                return Result(Outcome.TRANSIENT, answer=answer)
            return Result(Outcome.PERMANENT, answer=answer)
        except (requests.RequestException, OSError) as exc:
            return Result(Outcome.TRANSIENT, answer={"error": f"{type(exc).__name__}: {exc}"})
        msgid = answer.get("msgid")
        return Result(Outcome.ACCEPTED, str(msgid) if msgid is not None else None, None, answer)

    async def close(self) -> None:
        return None
