"""The WeChat stand-ins spoken to by the client libraries we use: wechatpy's code2session
against ``WeChatStandIn``, and wechatpayv3's async client against ``WeChatPayStandIn``."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from wechatpayv3.async_ import AsyncWeChatPay
from wechatpayv3.async_.type import WeChatPayType  # not wechatpayv3.WeChatPayType: another Enum
from wechatpy.exceptions import WeChatClientException

from notifications.providers.wechat import RoutedWeChatClient
from standins import serve
from standins.launch import WeChatTestMerchants, start_wechat
from standins.wechat import WeChatStandIn
from standins.wechatpay import BAD_KINDS, MerchantKeys, WeChatPayStandIn


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


# ---- WeChat Pay API v3 through wechatpayv3's async client ------------------------------

SP, SUB, OTHER_SP, OTHER_SUB, DIRECT = (
    "1900000100",
    "1900000109",
    "1900000200",
    "1900000209",
    "1900000001",
)
APP = "wx-platform-app"


class Receiver:
    """Our side of the notifications in miniature: wechatpayv3's callback() decides."""

    def __init__(self, wxpay: AsyncWeChatPay) -> None:
        self.wxpay = wxpay
        self.accepted: list[dict] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _notify(self, request: web.Request) -> web.Response:
        body = await request.text()
        result = self.wxpay.callback(request.headers, body)
        if not result:
            return web.json_response({"code": "FAIL", "message": "签名错误"}, status=401)
        self.accepted.append(result)
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/notify", self._notify)
        self._runner, base = await serve(app, "127.0.0.1", 0)
        self.url = f"{base}/notify"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def pay() -> AsyncIterator[WeChatPayStandIn]:
    stand_in = WeChatPayStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def _client(
    pay: WeChatPayStandIn,
    mchid: str,
    keys: MerchantKeys,
    *,
    partner: bool,
    public_key: bool,
    notify_url: str = "https://example.invalid/notify",
) -> AsyncWeChatPay:
    verify: dict = (
        {"public_key": pay.public_key_pem, "public_key_id": pay.public_key_id} if public_key else {}
    )
    client = AsyncWeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=mchid,
        private_key=keys.private_key_pem,
        cert_serial_no=keys.cert_serial_no,
        appid=APP,
        apiv3_key=keys.apiv3_key,
        notify_url=notify_url,
        partner_mode=partner,
        **verify,
    )
    client._core._gate_way = pay.url
    return client


def _setup(pay: WeChatPayStandIn, partner: bool, public_key: bool) -> tuple[str, MerchantKeys]:
    serial = "public_key" if public_key else "certificate"
    keys = MerchantKeys.generate(SP if partner else DIRECT)
    if partner:
        pay.add_merchant(SP, keys, [APP], platform_serial=serial)
        pay.add_sub_merchant(SP, SUB, sub_appid="wx-group-own")
        pay.add_merchant(OTHER_SP, MerchantKeys.generate(OTHER_SP), [APP])
        pay.add_sub_merchant(OTHER_SP, OTHER_SUB)
        return SP, keys
    pay.add_merchant(DIRECT, keys, [APP], platform_serial=serial)
    return DIRECT, keys


def _order_args(partner: bool, no: str, total: int = 1250) -> dict:
    args: dict = {"description": "电费充值", "out_trade_no": no, "amount": {"total": total}}
    if partner:
        return {**args, "sub_mchid": SUB, "payer": {"sp_openid": "o-sp-1"}}
    return {**args, "payer": {"openid": "o-direct-1"}}


def _bill_rows(text: str) -> tuple[list[list[str]], list[str], list[str]]:
    lines = [line for line in text.split("\r\n") if line]
    header, summary_header, summary = lines[0], lines[-2], lines[-1]
    assert header.startswith("交易时间,公众账号ID,商户号,特约商户号")
    assert summary_header.startswith("总交易单数,应结订单总金额,退款总金额")
    rows = [[cell.removeprefix("`") for cell in line.split(",")] for line in lines[1:-2]]
    assert all(cell.startswith("`") for line in lines[1:-2] for cell in line.split(","))
    return rows, header.split(","), [c.removeprefix("`") for c in summary.split(",")]


@pytest.mark.parametrize(
    ("partner", "public_key"), [(True, True), (True, False), (False, True), (False, False)]
)
async def test_order_query_close_refund_and_bill_through_wechatpayv3(
    pay: WeChatPayStandIn, partner: bool, public_key: bool
) -> None:
    mchid, keys = _setup(pay, partner, public_key)
    sub = {"sub_mchid": SUB} if partner else {}
    async with _client(pay, mchid, keys, partner=partner, public_key=public_key) as wxpay:
        code, message = await wxpay.pay(**_order_args(partner, "P20261203000001"))
        assert code == 200, message
        prepay_id = json.loads(message)["prepay_id"]
        assert prepay_id.startswith("wx") and len(prepay_id) == 36
        # the same order again is the same prepay_id; other content under the number is not
        code, again = await wxpay.pay(**_order_args(partner, "P20261203000001"))
        assert (code, json.loads(again)["prepay_id"]) == (200, prepay_id)
        code, used = await wxpay.pay(**_order_args(partner, "P20261203000001", total=999))
        assert (code, json.loads(used)["code"]) == (400, "OUT_TRADE_NO_USED")

        code, message = await wxpay.query(out_trade_no="P20261203000001", **sub)
        assert code == 200 and json.loads(message)["trade_state"] == "NOTPAY"
        await pay.pay("P20261203000001", notify=False, payer_total=1200)
        code, message = await wxpay.query(out_trade_no="P20261203000001", **sub)
        paid = json.loads(message)
        assert paid["trade_state"] == "SUCCESS"
        assert paid["amount"] == {
            "total": 1250,
            "payer_total": 1200,
            "currency": "CNY",
            "payer_currency": "CNY",
        }
        assert paid["transaction_id"].startswith("42000") and len(paid["transaction_id"]) == 28
        assert paid["success_time"].endswith("+08:00")
        assert paid["sub_mchid" if partner else "mchid"] == (SUB if partner else DIRECT)
        code, message = await wxpay.query(transaction_id=paid["transaction_id"], **sub)
        assert (code, json.loads(message)["out_trade_no"]) == (200, "P20261203000001")
        code, message = await wxpay.close("P20261203000001", **sub)
        assert (code, json.loads(message)["code"]) == (400, "ORDERPAID")
        code, message = await wxpay.query(out_trade_no="NOSUCHORDER1", **sub)
        assert (code, json.loads(message)["code"]) == (404, "ORDER_NOT_EXIST")

        # an unpaid order closes (204, an empty signed answer)
        await wxpay.pay(**_order_args(partner, "P20261203000002"))
        code, message = await wxpay.close("P20261203000002", **sub)
        assert code == 204
        code, message = await wxpay.query(out_trade_no="P20261203000002", **sub)
        assert json.loads(message)["trade_state"] == "CLOSED"

        # refunds: stable out_refund_no, never more than what is left
        refund_args = {"out_trade_no": "P20261203000001", "notify_url": "https://example.invalid/r"}
        code, message = await wxpay.refund(
            "R20261203000001",
            {"refund": 1000, "total": 1250, "currency": "CNY"},
            **refund_args,
            **sub,
        )
        assert code == 200, message
        first = json.loads(message)
        assert first["status"] == "PROCESSING" and first["amount"]["refund"] == 1000
        code, message = await wxpay.refund(
            "R20261203000001",
            {"refund": 1000, "total": 1250, "currency": "CNY"},
            **refund_args,
            **sub,
        )
        assert json.loads(message)["refund_id"] == first["refund_id"]
        code, message = await wxpay.refund(
            "R20261203000002",
            {"refund": 251, "total": 1250, "currency": "CNY"},
            transaction_id=paid["transaction_id"],
            **sub,
        )
        assert (code, json.loads(message)["code"]) == (403, "NOT_ENOUGH")
        await pay.settle_refund("R20261203000001", notify=False)
        code, message = await wxpay.query_refund("R20261203000001", **sub)
        assert code == 200 and json.loads(message)["status"] == "SUCCESS"

        # the day's bill: one payment and one refund, hash checked by us
        today = pay.clock().astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
        code, message = await wxpay.trade_bill(today, tar_type="GZIP", **sub)
        assert code == 200, message
        bill = json.loads(message)
        code, raw = await wxpay.download_bill(bill["download_url"])
        assert code == 200
        text = gzip.decompress(raw)
        assert hashlib.sha1(text).hexdigest() == bill["hash_value"]
        rows, header, summary = _bill_rows(text.decode())
        col = {name: i for i, name in enumerate(header)}
        assert [(r[col["商户订单号"]], r[col["交易状态"]]) for r in rows] == [
            ("P20261203000001", "SUCCESS"),
            ("P20261203000001", "REFUND"),
        ]
        assert rows[0][col["应结订单金额"]] == "12.50"
        assert rows[1][col["退款金额"]] == "10.00"
        assert rows[0][col["特约商户号"]] == (SUB if partner else "0")
        assert summary[:3] == ["2", "12.50", "10.00"]


async def test_a_sub_merchant_of_another_provider_and_a_bad_signature_are_refused(
    pay: WeChatPayStandIn,
) -> None:
    mchid, keys = _setup(pay, partner=True, public_key=True)
    async with _client(pay, mchid, keys, partner=True, public_key=True) as wxpay:
        args = {**_order_args(True, "P20261203000009"), "sub_mchid": OTHER_SUB}
        code, message = await wxpay.pay(**args)
        assert (code, json.loads(message)["code"]) == (400, "INVALID_REQUEST")
    stranger = MerchantKeys.generate(SP)  # right mchid and serial, another key
    wrong = MerchantKeys(stranger.private_key_pem, keys.cert_serial_no, keys.apiv3_key, "")
    async with _client(pay, mchid, wrong, partner=True, public_key=True) as wxpay:
        code, message = await wxpay.pay(**_order_args(True, "P20261203000010"))
        assert (code, json.loads(message)["code"]) == (401, "SIGN_ERROR")
    assert not pay.orders
    with pytest.raises(ValueError):  # a sub-merchant has one service provider
        pay.add_sub_merchant(OTHER_SP, SUB)


async def test_bill_differences_and_a_wrong_hash(pay: WeChatPayStandIn) -> None:
    mchid, keys = _setup(pay, partner=False, public_key=True)
    async with _client(pay, mchid, keys, partner=False, public_key=True) as wxpay:
        for no in ("P20261203000021", "P20261203000022", "P20261203000023"):
            await wxpay.pay(**_order_args(False, no, total=500))
            await pay.pay(no, notify=False)
        pay.tamper_bill(
            extra_rows=1,
            missing=("P20261203000021",),
            amounts={"P20261203000022": 499},
            states={"P20261203000023": "REVOKED"},
            wrong_hash=True,
        )
        today = pay.clock().astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
        # wechatpayv3's trade_bill(tar_type=None) sends "tar_type=None"; a plain bill is one
        # without tar_type
        code, message = await wxpay.trade_bill(today, tar_type=None)
        assert (code, json.loads(message)["code"]) == (400, "PARAM_ERROR")
        code, message = await wxpay._core.request(f"/v3/bill/tradebill?bill_date={today}")
        assert code == 200, message
        bill = json.loads(message)
        code, raw = await wxpay.download_bill(bill["download_url"])
        assert code == 200 and not raw.startswith(gzip.compress(b"")[:2])  # plain
        assert hashlib.sha1(raw).hexdigest() != bill["hash_value"]
        rows, header, _ = _bill_rows(raw.decode())
        col = {name: i for i, name in enumerate(header)}
        seen = {r[col["商户订单号"]]: (r[col["应结订单金额"]], r[col["交易状态"]]) for r in rows}
        assert "P20261203000021" not in seen
        assert seen["P20261203000022"] == ("4.99", "SUCCESS")
        assert seen["P20261203000023"] == ("5.00", "REVOKED")
        assert len(seen) == 3  # one row WeChat has and we do not


@pytest.mark.parametrize(("partner", "public_key"), [(True, False), (False, True)])
async def test_payment_notifications_verify_with_wechatpayv3_and_the_bad_ones_do_not(
    pay: WeChatPayStandIn, partner: bool, public_key: bool
) -> None:
    mchid, keys = _setup(pay, partner, public_key)
    receiver_client = _client(pay, mchid, keys, partner=partner, public_key=public_key)
    async with receiver_client:
        receiver = Receiver(receiver_client)
        url = await receiver.start()
        try:
            async with _client(
                pay, mchid, keys, partner=partner, public_key=public_key, notify_url=url
            ) as wxpay:
                await wxpay.pay(**_order_args(partner, "P20261203000031"))
            sent = await pay.pay("P20261203000031", duplicates=2, concurrent=True)
            assert [d.status for d in sent] == [204, 204, 204]
            assert len(receiver.accepted) == 3
            note = receiver.accepted[0]
            assert note["event_type"] == "TRANSACTION.SUCCESS"
            assert note["resource"]["out_trade_no"] == "P20261203000031"
            assert note["resource"]["trade_state"] == "SUCCESS"
            assert note["resource"]["amount"]["total"] == 1250
            assert {n["id"] for n in receiver.accepted} == {note["id"]}  # one notification
            assert (await pay.resend("P20261203000031")).status == 204

            refused = {k: (await pay.send_bad("P20261203000031", k)).status for k in BAD_KINDS}
            assert refused["forged_signature"] == 401
            assert refused["tampered_body"] == 401
            assert refused["other_key"] == 401
            assert refused["probe"] == 401
            # wechatpayv3 does not look at the timestamp, nor at the order: our side must
            assert refused["stale_timestamp"] == 204
            assert refused["amount_differs"] == 204
            assert receiver.accepted[-1]["resource"]["amount"]["total"] == 1251
            assert len(pay.deliveries) == 3 + 1 + len(BAD_KINDS)
        finally:
            await receiver.stop()


async def test_refund_notification_and_the_http_control(pay: WeChatPayStandIn) -> None:
    mchid, keys = _setup(pay, partner=True, public_key=True)
    async with _client(pay, mchid, keys, partner=True, public_key=True) as receiver_client:
        receiver = Receiver(receiver_client)
        url = await receiver.start()
        try:
            async with _client(
                pay, mchid, keys, partner=True, public_key=True, notify_url=url
            ) as w:
                _, message = await w.pay(**_order_args(True, "P20261203000041"))
                prepay_id = json.loads(message)["prepay_id"]
                async with aiohttp.ClientSession() as http:
                    async with http.options(f"{pay.url}/standin/pay") as pre:
                        assert pre.headers["Access-Control-Allow-Origin"] == "*"
                    async with http.post(
                        f"{pay.url}/standin/pay", json={"prepay_id": prepay_id}
                    ) as answer:
                        state = await answer.json()
                    assert answer.status == 200
                    assert state["trade_state"] == "SUCCESS"
                    assert [d["status"] for d in state["deliveries"]] == [204]
                    code, _ = await w.refund(
                        "R20261203000041",
                        {"refund": 1250, "total": 1250, "currency": "CNY"},
                        out_trade_no="P20261203000041",
                        notify_url=url,
                        sub_mchid=SUB,
                    )
                    assert code == 200
                    async with http.post(
                        f"{pay.url}/standin/settle-refund",
                        json={"out_refund_no": "R20261203000041"},
                    ) as answer:
                        settled = await answer.json()
                assert settled["status"] == "SUCCESS" and settled["delivery"]["status"] == 204
                note = receiver.accepted[-1]
                assert note["event_type"] == "REFUND.SUCCESS"
                assert note["resource"]["refund_status"] == "SUCCESS"
                assert note["resource"]["sub_mchid"] == SUB
                assert note["resource"]["amount"]["refund"] == 1250
        finally:
            await receiver.stop()


async def test_the_written_keys_are_enough_for_wechatpayv3(tmp_path: Path) -> None:
    merchants = WeChatTestMerchants()
    wx, pay, written = await start_wechat("127.0.0.1", 0, 0, tmp_path, merchants)
    try:
        meta = json.loads((tmp_path / f"{merchants.sp_mchid}.json").read_text())
        assert tmp_path / f"{merchants.sp_mchid}.json" in written
        for public_key in (True, False):
            verify: dict = (
                {
                    "public_key": (tmp_path / meta["public_key_file"]).read_text(),
                    "public_key_id": meta["public_key_id"],
                }
                if public_key
                else {}
            )
            client = AsyncWeChatPay(
                wechatpay_type=WeChatPayType.MINIPROG,
                mchid=meta["mchid"],
                private_key=(tmp_path / meta["private_key_file"]).read_text(),
                cert_serial_no=meta["cert_serial_no"],
                appid=meta["appids"][0],
                apiv3_key=meta["apiv3_key"],
                notify_url="https://example.invalid/n",
                partner_mode=True,
                **verify,
            )
            client._core._gate_way = meta["base_url"]
            async with client:
                code, message = await client.query(
                    out_trade_no="NOSUCHORDER", sub_mchid=meta["sub_mchids"][0]
                )
            assert (code, json.loads(message)["code"]) == (404, "ORDER_NOT_EXIST")
    finally:
        await pay.stop()
        await wx.stop()


async def test_late_sequential_notifications_are_recorded_with_what_our_side_answered(
    pay: WeChatPayStandIn,
) -> None:
    mchid, keys = _setup(pay, partner=False, public_key=True)
    answers = iter([500, 204, 204])
    statuses: list[int] = []

    async def flaky(request: web.Request) -> web.Response:
        statuses.append(next(answers))
        return web.Response(status=statuses[-1])

    app = web.Application()
    app.router.add_post("/n", flaky)
    runner, base = await serve(app, "127.0.0.1", 0)
    try:
        async with _client(
            pay, mchid, keys, partner=False, public_key=True, notify_url=f"{base}/n"
        ) as w:
            await w.pay(**_order_args(False, "P20261203000051"))
        assert await pay.pay("P20261203000051", duplicates=1, delay_s=0.05) == []
        assert pay.deliveries == []  # not yet
        await pay.drain()
        assert [d.status for d in pay.deliveries] == [500, 204]
        assert (await pay.resend("P20261203000051")).status == 204
        with pytest.raises(ValueError):
            await pay.pay("P20261203000051")  # paid once
    finally:
        await runner.cleanup()
