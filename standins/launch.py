"""``prepay wechat-standin``: WeChat's API stand-in and the WeChat Pay stand-in together,
with test merchants (one direct, one service provider with a sub-merchant) whose keys
are written where ``prepay merchant set`` can read them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from standins.wechat import WeChatStandIn
from standins.wechatpay import MerchantKeys, WeChatPayStandIn, write_keys


@dataclass(frozen=True)
class WeChatTestMerchants:
    appid: str = "wx-standin-app"
    direct_mchid: str = "1900000001"
    sp_mchid: str = "1900000100"
    sub_mchid: str = "1900000109"
    sub_appid: str = "wx-standin-group"


async def start_wechat(
    host: str, port: int, pay_port: int, keys_dir: Path, merchants: WeChatTestMerchants
) -> tuple[WeChatStandIn, WeChatPayStandIn, list[Path]]:
    """Both stand-ins started, the merchants added and their keys written."""
    wx = WeChatStandIn(appid=merchants.appid, apps={merchants.sub_appid: "standin-group-secret"})
    pay = WeChatPayStandIn()
    direct, sp = (
        MerchantKeys.generate(merchants.direct_mchid),
        MerchantKeys.generate(merchants.sp_mchid),
    )
    pay.add_merchant(merchants.direct_mchid, direct, [merchants.appid])
    pay.add_merchant(merchants.sp_mchid, sp, [merchants.appid])
    pay.add_sub_merchant(merchants.sp_mchid, merchants.sub_mchid, merchants.sub_appid)
    await wx.start(host, port)
    await pay.start(host, pay_port)
    written = [
        write_keys(keys_dir, pay, merchants.direct_mchid, direct, [merchants.appid], []),
        write_keys(keys_dir, pay, merchants.sp_mchid, sp, [merchants.appid], [merchants.sub_mchid]),
    ]
    return wx, pay, written


async def run_wechat(
    host: str,
    port: int,
    pay_port: int,
    keys_dir: Path,
    say: Callable[[str], None],
    merchants: WeChatTestMerchants | None = None,
) -> None:
    """Serve until cancelled."""
    wx, pay, written = await start_wechat(
        host, port, pay_port, keys_dir, merchants or WeChatTestMerchants()
    )
    apps = ", ".join(f"{appid} (secret {secret})" for appid, secret in wx.apps.items())
    say(f"WeChat API stand-in:  {wx.url}  apps: {apps}")
    say(f"WeChat Pay stand-in:  {pay.url}  (test control: {pay.url}/standin/...)")
    say(f"public key id {pay.public_key_id}, platform certificate serial {pay.certificate_serial}")
    for path in written:
        say(f"merchant keys: {path}")
    try:
        await asyncio.Event().wait()
    finally:
        await pay.stop()
        await wx.stop()
