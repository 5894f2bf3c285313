"""The WeChat stand-ins spoken to by the client libraries we use: wechatpy's code2session
against ``WeChatStandIn``, and wechatpayv3's async client against ``WeChatPayStandIn``."""

from __future__ import annotations

import asyncio

import pytest
from wechatpy.exceptions import WeChatClientException

from notifications.providers.wechat import RoutedWeChatClient
from standins.wechat import WeChatStandIn


async def _code2session(wx: WeChatStandIn, appid: str, secret: str, code: str) -> dict:
    client = RoutedWeChatClient(appid, secret, wx.url, timeout=5)
    # wechatpy adds an access token to every call, fetching one first; jscode2session needs
    # none, so a given token keeps the refusals below the endpoint's own
    client.session.set(client.access_token_key, "not-needed")
    return await asyncio.to_thread(client.wxa.code_to_session, code)


async def test_code2session_answers_the_openid_once_per_code_and_per_app() -> None:
    wx = WeChatStandIn(apps={"wx-group-own": "group-secret"})
    await wx.start()
    try:
        code = wx.issue_code("o-tenant-1", unionid="u-1")
        answer = await _code2session(wx, wx.appid, wx.secret, code)
        assert answer["openid"] == "o-tenant-1"
        assert answer["unionid"] == "u-1"
        assert len(answer["session_key"]) == 24
        with pytest.raises(WeChatClientException) as used:
            await _code2session(wx, wx.appid, wx.secret, code)
        assert used.value.errcode == 40163
        # a group's own mini-program: its code is not the platform app's
        own = wx.issue_code("o-own-7", appid="wx-group-own")
        with pytest.raises(WeChatClientException) as other_app:
            await _code2session(wx, wx.appid, wx.secret, own)
        assert other_app.value.errcode == 40029
        answer = await _code2session(wx, "wx-group-own", "group-secret", own)
        assert answer["openid"] == "o-own-7"
        assert "unionid" not in answer
    finally:
        await wx.stop()


async def test_code2session_refuses_bad_code_appid_and_secret() -> None:
    wx = WeChatStandIn()
    await wx.start()
    try:
        code = wx.issue_code("o-1")
        for appid, secret, js_code, errcode in (
            (wx.appid, wx.secret, "not-a-code", 40029),
            ("wx-unknown", wx.secret, code, 40013),
            (wx.appid, "wrong-secret", code, 40125),
        ):
            with pytest.raises(WeChatClientException) as err:
                await _code2session(wx, appid, secret, js_code)
            assert err.value.errcode == errcode
        wx.clock = lambda: 1e12  # five minutes and more later
        with pytest.raises(WeChatClientException) as stale:
            await _code2session(wx, wx.appid, wx.secret, code)
        assert stale.value.errcode == 40029
    finally:
        await wx.stop()
