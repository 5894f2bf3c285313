"""A local stand-in of WeChat Pay API v3 (``api.mch.weixin.qq.com``), direct and
service-provider (partner) mode, checked against ``wechatpayv3``'s async client.

Keys: a platform key pair named by a WeChat Pay public key id (``PUB_KEY_ID_…``) and a
second one in a self-signed platform certificate (serial in hex), served encrypted with
the merchant's APIv3 key at ``GET /v3/certificates``; each merchant is set to be answered
under one or the other (``platform_serial``). Merchants' test keys: ``MerchantKeys``.

Every request's ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,serial_no=..`` is
verified over ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (401 ``SIGN_ERROR``), every
answer is signed (``Wechatpay-Timestamp/Nonce/Serial/Signature/Signature-Type``,
``Request-ID``). Endpoints: JSAPI orders (direct and partner), query, close, refunds and
their query, the trade bill and its download. Test control (Python, and HTTP under
``/standin/`` with CORS): ``pay`` (notifications as WeChat sends them, duplicates,
silence), ``resend``, ``send_bad`` (forged, tampered, other key, stale, probe, amount),
``settle_refund``, ``tamper_bill`` (also ``POST /standin/tamper-bill``: a bill with an
extra payment, one left out, an amount or a refund changed, a wrong hash). Every
notification sent and what our side answered is kept in ``deliveries``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import hashlib
import html
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from standins import serve
from standins.wechatpay.bill import BillFaults, render_trade_bill
from standins.wechatpay.keys import (
    MerchantKeys,
    aes_gcm_encrypt,
    new_key,
    public_pem,
    sign,
    verify,
)
from standins.wechatpay.model import (
    BAD_KINDS,
    CST,
    OUT_NO,
    PROBE_PREFIX,
    SIGN_TYPE,
    Delivery,
    Merchant,
    Order,
    PayError,
    Refund,
    cst,
)

MERCHANT = web.RequestKey("merchant", Merchant)
BODY = web.RequestKey("body", str)


@dataclass
class WeChatPayStandIn:
    """The stand-in. ``add_merchant`` / ``add_sub_merchant`` before use; ``start()``."""

    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    fee_rate: Decimal = Decimal("0.006")
    deliveries: list[Delivery] = field(default_factory=list)
    bill_faults: BillFaults = field(default_factory=BillFaults)
    url: str = ""
    public_key_id: str = field(
        default_factory=lambda: "PUB_KEY_ID_" + secrets.token_hex(16).upper()
    )

    def __post_init__(self) -> None:
        self.platform_key = new_key()  # named by public_key_id
        self.cert_key = new_key()  # in the platform certificate
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA stand-in")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.cert_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=5 * 365))
            .sign(self.cert_key, hashes.SHA256())
        )
        self.certificate_serial = format(self.certificate.serial_number, "X")
        self.merchants: dict[str, Merchant] = {}
        self.orders: dict[tuple[str, str], Order] = {}
        self.refunds: dict[tuple[str, str], Refund] = {}
        self._bills: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # ---- keys and merchants -------------------------------------------------------------

    @property
    def public_key_pem(self) -> str:
        return public_pem(self.platform_key.public_key())

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def add_merchant(
        self,
        mchid: str,
        keys: MerchantKeys,
        appids: list[str] | None = None,
        *,
        platform_serial: str = "public_key",
    ) -> Merchant:
        """A direct merchant or a service provider (its appids are the sp_appids)."""
        if platform_serial not in ("public_key", "certificate"):
            raise ValueError("platform_serial is 'public_key' or 'certificate'")
        merchant = Merchant(mchid, keys, set(appids or ()), platform_serial)
        self.merchants[mchid] = merchant
        return merchant

    def add_sub_merchant(self, sp_mchid: str, sub_mchid: str, sub_appid: str | None = None) -> None:
        sp = self.merchants[sp_mchid]
        known = self.merchants.get(sub_mchid)
        if known is not None and known.sp_mchid != sp_mchid:
            raise ValueError(f"{sub_mchid} is not a sub-merchant of {sp_mchid}")
        self.merchants[sub_mchid] = Merchant(
            sub_mchid, sp.keys, set(), sp.platform_serial, sp_mchid, sub_appid
        )

    # ---- lifecycle ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._cors])
        r = app.router
        r.add_get("/v3/certificates", self._certificates)
        r.add_post("/v3/pay/transactions/jsapi", self._jsapi)
        r.add_post("/v3/pay/partner/transactions/jsapi", self._jsapi)
        r.add_post("/v3/pay/transactions/h5", self._jsapi)
        r.add_post("/v3/pay/partner/transactions/h5", self._jsapi)
        r.add_get("/standin/cashier", self._cashier)
        r.add_post("/standin/cashier", self._cashier_pay)
        r.add_get("/v3/pay/transactions/out-trade-no/{no}", self._query)
        r.add_get("/v3/pay/partner/transactions/out-trade-no/{no}", self._query)
        r.add_get("/v3/pay/transactions/id/{no}", self._query)
        r.add_get("/v3/pay/partner/transactions/id/{no}", self._query)
        r.add_post("/v3/pay/transactions/out-trade-no/{no}/close", self._close)
        r.add_post("/v3/pay/partner/transactions/out-trade-no/{no}/close", self._close)
        r.add_post("/v3/refund/domestic/refunds", self._refund)
        r.add_get("/v3/refund/domestic/refunds/{no}", self._refund_query)
        r.add_get("/v3/bill/tradebill", self._tradebill)
        r.add_get("/v3/billdownload/file", self._billdownload)
        r.add_post("/standin/pay", self._http_pay)
        r.add_post("/standin/resend", self._http_resend)
        r.add_post("/standin/bad", self._http_bad)
        r.add_post("/standin/settle-refund", self._http_settle)
        r.add_get("/standin/orders", self._http_orders)
        r.add_post("/standin/tamper-bill", self._http_tamper)
        r.add_get("/standin/deliveries", self._http_deliveries)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._runner, self.url = await serve(self.app(), host, port)
        return self.url

    async def drain(self) -> None:
        """Wait for delayed notifications under way."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    # ---- signing ------------------------------------------------------------------------

    def _signing(self, merchant: Merchant | None) -> tuple[rsa.RSAPrivateKey, str]:
        if merchant is not None and merchant.platform_serial == "certificate":
            return self.cert_key, self.certificate_serial
        return self.platform_key, self.public_key_id

    def signed_headers(
        self,
        body: str,
        merchant: Merchant | None,
        *,
        timestamp: int | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> dict[str, str]:
        """WeChat's signature headers over ``timestamp\\nnonce\\nbody\\n``."""
        own_key, serial = self._signing(merchant)
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = secrets.token_hex(16).upper()
        return {
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature": sign(key or own_key, f"{ts}\n{nonce}\n{body}\n"),
            "Wechatpay-Signature-Type": SIGN_TYPE,
            "Request-ID": str(uuid.uuid4()),
        }

    def _answer(
        self, merchant: Merchant | None, status: int = 200, data: Any = None
    ) -> web.Response:
        body = "" if data is None else json.dumps(data, ensure_ascii=False)
        response = web.Response(
            status=status,
            text=body if body else None,
            content_type="application/json" if body else None,
            headers=self.signed_headers(body, merchant),
        )
        return response

    def _error(self, merchant: Merchant | None, error: PayError) -> web.Response:
        return self._answer(merchant, error.status, {"code": error.code, "message": error.message})

    async def _authenticate(self, request: web.Request) -> tuple[Merchant, str]:
        body = await request.text()
        auth = request.headers.get("Authorization", "")
        if not auth.startswith(SIGN_TYPE + " "):
            raise PayError(401, "SIGN_ERROR", "错误的签名类型")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', auth[len(SIGN_TYPE) + 1 :]))
        merchant = self.merchants.get(fields.get("mchid", ""))
        if merchant is None or merchant.sp_mchid is not None:
            raise PayError(401, "SIGN_ERROR", "商户号不存在或未开通")
        if fields.get("serial_no", "").upper() != merchant.keys.cert_serial_no:
            raise PayError(401, "SIGN_ERROR", "商户证书序列号有误")
        ts, nonce = fields.get("timestamp", ""), fields.get("nonce_str", "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
            raise PayError(401, "SIGN_ERROR", "请求时间戳与当前时间相差过大")
        message = f"{request.method}\n{request.raw_path}\n{ts}\n{nonce}\n{body}\n"
        if not verify(merchant.keys.public_key(), message, fields.get("signature", "")):
            raise PayError(401, "SIGN_ERROR", "签名错误")
        return merchant, body

    # ---- middleware and the v3 handlers -------------------------------------------------

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/standin/"):
            return await self._v3(request, handler)
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
        else:
            try:
                response = await handler(request)
            except (KeyError, ValueError, PayError) as exc:
                response = web.json_response({"error": str(exc)}, status=400)
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        return response

    async def _v3(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            merchant, body = await self._authenticate(request)
        except PayError as exc:
            return self._error(None, exc)
        request[MERCHANT], request[BODY] = merchant, body
        try:
            result: web.StreamResponse = await handler(request)
        except PayError as exc:
            return self._error(merchant, exc)
        return result

    def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            data = json.loads(request[BODY] or "{}")
        except ValueError:
            raise PayError(400, "PARAM_ERROR", "请求体不是有效的JSON") from None
        if not isinstance(data, dict):
            raise PayError(400, "PARAM_ERROR", "请求体不是有效的JSON")
        return data

    async def _certificates(self, request: web.Request) -> web.Response:
        merchant: Merchant = request[MERCHANT]
        encrypted = aes_gcm_encrypt(merchant.keys.apiv3_key, self.certificate_pem, "certificate")
        cert = self.certificate
        data = {
            "data": [
                {
                    "serial_no": self.certificate_serial,
                    "effective_time": cst(cert.not_valid_before_utc),
                    "expire_time": cst(cert.not_valid_after_utc),
                    "encrypt_certificate": encrypted,
                }
            ]
        }
        # WeChat signs this answer with the certificate it carries
        body = json.dumps(data)
        headers = self.signed_headers(body, None, key=self.cert_key)
        headers["Wechatpay-Serial"] = self.certificate_serial
        return web.Response(text=body, content_type="application/json", headers=headers)

    def _receiver(self, merchant: Merchant, partner: bool, sub_mchid: Any) -> Merchant:
        """The merchant the money goes to: the caller, or its sub-merchant."""
        if not partner:
            return merchant
        if not isinstance(sub_mchid, str) or not sub_mchid:
            raise PayError(
                400, "PARAM_ERROR", "输入源“/body/sub_mchid”映射到字段“子商户号”必填性规则校验失败"
            )
        sub = self.merchants.get(sub_mchid)
        if sub is None or sub.sp_mchid != merchant.mchid:
            raise PayError(400, "INVALID_REQUEST", "特约商户与服务商的受理关系不存在")
        return sub

    async def _jsapi(self, request: web.Request) -> web.Response:
        merchant: Merchant = request[MERCHANT]
        partner = "/partner/" in request.path
        data = self._json(request)
        self._check_order(merchant, partner, data, request.path.endswith("/h5"))
        receiver = self._receiver(merchant, partner, data.get("sub_mchid"))
        if partner and data.get("sub_appid") and receiver.sub_appid != data["sub_appid"]:
            raise PayError(400, "APPID_MCHID_NOT_MATCH", "sub_appid与sub_mchid不匹配")
        key = (receiver.mchid, str(data["out_trade_no"]))
        order = self.orders.get(key)
        if order is not None:
            if order.state == "SUCCESS" or order.state == "REFUND":
                raise PayError(400, "ORDERPAID", "该订单已支付")
            if order.state == "CLOSED":
                raise PayError(400, "ORDER_CLOSED", "该订单已关闭")
            if order.request != data:
                raise PayError(400, "OUT_TRADE_NO_USED", "商户订单号重复")
            return self._answer(merchant, 200, self._prepaid(request, order.prepay_id))
        now = self.clock()
        prepay_id = "wx" + now.astimezone(CST).strftime("%d%H%M%S") + secrets.token_hex(13)
        self.orders[key] = Order(receiver.mchid, data, partner, prepay_id, now)
        return self._answer(merchant, 200, self._prepaid(request, prepay_id))

    def _prepaid(self, request: web.Request, prepay_id: str) -> dict[str, str]:
        """JSAPI answers the prepay_id; H5 the cashier page's address (h5_url), to which
        the payer's browser goes (with ``redirect_url`` to come back)."""
        if request.path.endswith("/h5"):
            return {"h5_url": f"{self.url}/standin/cashier?prepay_id={prepay_id}"}
        return {"prepay_id": prepay_id}

    async def _cashier(self, request: web.Request) -> web.Response:
        """WeChat's H5 cashier as a payer sees it: the amount, the payee, 确认支付."""
        try:
            order = self.order(prepay_id=request.query.get("prepay_id", ""))
        except KeyError:
            return web.Response(status=404, text="订单不存在")
        amount = f"{order.total / 100:.2f}"
        back = html.escape(request.query.get("redirect_url", ""), quote=True)
        page = (
            "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<title>微信支付</title><style>body{font-family:sans-serif;text-align:center;"
            "padding:40px 16px;background:#f2f2f2}strong{font-size:40px;display:block;"
            "margin:16px}button{background:#07c160;color:#fff;border:0;border-radius:8px;"
            "font-size:18px;padding:14px;width:100%;max-width:360px}</style></head><body>"
            f"<p>{html.escape(str(order.request.get('description', '')))}</p>"
            f"<strong>¥{amount}</strong><p>微信支付（测试替身）</p>"
            "<form method='post' action='/standin/cashier'>"
            f"<input type='hidden' name='prepay_id' value='{html.escape(order.prepay_id)}'>"
            f"<input type='hidden' name='redirect_url' value='{back}'>"
            "<button type='submit'>确认支付</button></form></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def _cashier_pay(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            order = self.order(prepay_id=str(form.get("prepay_id", "")))
        except KeyError:
            return web.Response(status=404, text="订单不存在")
        if order.state == "NOTPAY":
            await self.pay(order.out_trade_no, mchid=order.receiver)
        back = str(form.get("redirect_url", ""))
        if back.startswith(("http://", "https://")):
            raise web.HTTPSeeOther(back)
        return web.Response(text="支付成功", content_type="text/plain")

    def _check_order(
        self, merchant: Merchant, partner: bool, data: dict[str, Any], h5: bool = False
    ) -> None:
        def missing(name: str) -> PayError:
            return PayError(400, "PARAM_ERROR", f"输入源“/body/{name}”映射到字段必填性规则校验失败")

        mchid_field, appid_field = ("sp_mchid", "sp_appid") if partner else ("mchid", "appid")
        for name in (appid_field, mchid_field, "description", "out_trade_no", "notify_url"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise missing(name)
        if data[mchid_field] != merchant.mchid:
            raise PayError(400, "MCH_NOT_EXISTS", f"{mchid_field}与请求签名的商户号不一致")
        if data[appid_field] not in merchant.appids:
            raise PayError(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        if not OUT_NO.match(data["out_trade_no"]):
            raise PayError(400, "PARAM_ERROR", "out_trade_no字段规则校验失败")
        if len(data["description"]) > 127:
            raise PayError(400, "PARAM_ERROR", "description字段长度超过限制")
        if not re.match(r"^https?://[^?]+$", data["notify_url"]):
            raise PayError(400, "PARAM_ERROR", "notify_url格式不正确")
        amount = data.get("amount")
        if not isinstance(amount, dict):
            raise missing("amount")
        total = amount.get("total")
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise PayError(400, "PARAM_ERROR", "amount.total字段规则校验失败")
        if amount.get("currency", "CNY") != "CNY":
            raise PayError(400, "PARAM_ERROR", "amount.currency字段取值有误")
        if h5:
            scene = data.get("scene_info")
            if not isinstance(scene, dict) or not scene.get("payer_client_ip"):
                raise missing("scene_info/payer_client_ip")
            if not isinstance(scene.get("h5_info"), dict) or not scene["h5_info"].get("type"):
                raise missing("scene_info/h5_info/type")
            return
        payer = data.get("payer")
        if not isinstance(payer, dict):
            raise missing("payer")
        ids = ("sp_openid", "sub_openid") if partner else ("openid",)
        if not any(isinstance(payer.get(i), str) and payer[i] for i in ids):
            raise missing("payer/" + ids[0])
        if partner and payer.get("sub_openid") and not data.get("sub_appid"):
            raise PayError(400, "PARAM_ERROR", "传入sub_openid时sub_appid必填")

    def _find(self, merchant: Merchant, request: web.Request, no: str) -> Order:
        partner = "/partner/" in request.path
        if partner:
            query = dict(request.query)
            if request.method == "POST":
                query.update({k: str(v) for k, v in self._json(request).items()})
            if query.get("sp_mchid") != merchant.mchid:
                raise PayError(400, "PARAM_ERROR", "sp_mchid与请求签名的商户号不一致")
            receiver = self._receiver(merchant, True, query.get("sub_mchid"))
        else:
            mchid = request.query.get("mchid")
            if request.method == "POST":
                mchid = self._json(request).get("mchid")
            if mchid != merchant.mchid:
                raise PayError(400, "PARAM_ERROR", "mchid与请求签名的商户号不一致")
            receiver = merchant
        if "/id/" in request.path:  # by WeChat's transaction_id (a paid order)
            order = next(
                (
                    o
                    for o in self.orders.values()
                    if o.receiver == receiver.mchid and o.transaction_id == no
                ),
                None,
            )
        else:
            order = self.orders.get((receiver.mchid, no))
        if order is None:
            raise PayError(404, "ORDER_NOT_EXIST", "订单不存在")
        return order

    def transaction(self, order: Order) -> dict[str, Any]:
        """The order as WeChat answers a query (and encrypts in a payment notification)."""
        req = order.request
        out: dict[str, Any] = {}
        if order.partner:
            sub = self.merchants[order.receiver]
            out.update(sp_appid=req["sp_appid"], sp_mchid=req["sp_mchid"], sub_mchid=sub.mchid)
            if req.get("sub_appid"):
                out["sub_appid"] = req["sub_appid"]
        else:
            out.update(appid=req["appid"], mchid=req["mchid"])
        out.update(
            out_trade_no=order.out_trade_no,
            trade_type="MWEB" if "scene_info" in req and "payer" not in req else "JSAPI",
            trade_state=order.state,
            trade_state_desc={
                "NOTPAY": "未支付",
                "SUCCESS": "支付成功",
                "CLOSED": "订单已关闭",
                "REFUND": "转入退款",
            }[order.state],
            attach=req.get("attach", ""),
        )
        amount: dict[str, Any] = {"total": order.total, "currency": "CNY"}
        if order.transaction_id is not None:
            assert order.success_time is not None
            out.update(
                transaction_id=order.transaction_id,
                bank_type="OTHERS",
                success_time=cst(order.success_time),
                payer=dict(req.get("payer") or {"openid": "o-h5-" + order.prepay_id[-12:]}),
            )
            amount.update(
                payer_total=order.payer_total if order.payer_total is not None else order.total,
                payer_currency="CNY",
            )
        else:
            out["payer"] = {}
        out["amount"] = amount
        out["promotion_detail"] = []
        return out

    async def _query(self, request: web.Request) -> web.Response:
        merchant: Merchant = request[MERCHANT]
        order = self._find(merchant, request, request.match_info["no"])
        return self._answer(merchant, 200, self.transaction(order))

    async def _close(self, request: web.Request) -> web.Response:
        merchant: Merchant = request[MERCHANT]
        order = self._find(merchant, request, request.match_info["no"])
        if order.state in ("SUCCESS", "REFUND"):
            raise PayError(400, "ORDERPAID", "订单已支付，不能关闭")
        order.state = "CLOSED"
        return self._answer(merchant, 204)

    def _refund_receiver(self, merchant: Merchant, data: dict[str, Any]) -> Merchant:
        sub = data.get("sub_mchid")
        if sub is None:
            return merchant
        return self._receiver(merchant, True, sub)

    def refund_view(self, refund: Refund) -> dict[str, Any]:
        order = refund.order
        out: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": cst(refund.created),
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": order.total,
                "refund": refund.amount,
                "payer_total": order.payer_total if order.payer_total is not None else order.total,
                "payer_refund": refund.amount,
                "settlement_refund": refund.amount,
                "settlement_total": order.total,
                "discount_refund": 0,
                "currency": "CNY",
                "refund_fee": 0,
            },
            "promotion_detail": [],
        }
        if refund.success_time is not None:
            out["success_time"] = cst(refund.success_time)
        return out

    async def _refund(self, request: web.Request) -> web.Response:
        merchant: Merchant = request[MERCHANT]
        data = self._json(request)
        receiver = self._refund_receiver(merchant, data)
        no = data.get("out_refund_no")
        if not isinstance(no, str) or not OUT_NO.match(no):
            raise PayError(400, "PARAM_ERROR", "out_refund_no字段规则校验失败")
        existing = self.refunds.get((receiver.mchid, no))
        if existing is not None:
            return self._answer(merchant, 200, self.refund_view(existing))
        order: Order | None = None
        if data.get("transaction_id"):
            order = next(
                (
                    o
                    for o in self.orders.values()
                    if o.receiver == receiver.mchid and o.transaction_id == data["transaction_id"]
                ),
                None,
            )
        elif data.get("out_trade_no"):
            order = self.orders.get((receiver.mchid, str(data["out_trade_no"])))
        else:
            raise PayError(400, "PARAM_ERROR", "transaction_id和out_trade_no必须填一个")
        if order is None:
            raise PayError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        if order.state not in ("SUCCESS", "REFUND"):
            raise PayError(400, "INVALID_REQUEST", "订单未支付，不能退款")
        amount = data.get("amount")
        if not isinstance(amount, dict):
            raise PayError(400, "PARAM_ERROR", "amount必填")
        fen, total = amount.get("refund"), amount.get("total")
        if not isinstance(fen, int) or isinstance(fen, bool) or fen <= 0:
            raise PayError(400, "PARAM_ERROR", "amount.refund字段规则校验失败")
        if total != order.total:
            raise PayError(400, "PARAM_ERROR", "订单金额与原订单金额不一致")
        if order.refunded >= order.total:
            raise PayError(400, "INVALID_REQUEST", "订单已全额退款")
        if fen > order.total - order.refunded:
            raise PayError(403, "NOT_ENOUGH", "申请退款金额超过订单可退金额")
        now = self.clock()
        refund = Refund(
            order,
            no,
            "50" + now.astimezone(CST).strftime("%Y%m%d") + f"{secrets.randbelow(10**20):020d}",
            fen,
            now,
            data.get("notify_url"),
            data.get("reason"),
        )
        order.refunded += fen
        order.state = "REFUND"
        self.refunds[(receiver.mchid, no)] = refund
        return self._answer(merchant, 200, self.refund_view(refund))

    async def _refund_query(self, request: web.Request) -> web.Response:
        merchant: Merchant = request[MERCHANT]
        receiver = self._refund_receiver(merchant, dict(request.query))
        refund = self.refunds.get((receiver.mchid, request.match_info["no"]))
        if refund is None:
            raise PayError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return self._answer(merchant, 200, self.refund_view(refund))

    # ---- the trade bill -----------------------------------------------------------------

    def trade_bill(
        self,
        merchant: Merchant,
        bill_date: dt.date,
        sub_mchid: str | None = None,
        bill_type: str = "ALL",
    ) -> str:
        """The day's trade bill (``ALL``) as WeChat writes it, with ``bill_faults`` applied."""
        receivers = {merchant.mchid}
        if sub_mchid:
            receivers = {self._receiver(merchant, True, sub_mchid).mchid}
        else:
            receivers |= {m.mchid for m in self.merchants.values() if m.sp_mchid == merchant.mchid}
        return render_trade_bill(
            self.orders.values(),
            self.refunds.values(),
            receivers,
            merchant,
            bill_date,
            bill_type,
            self.bill_faults,
            self.fee_rate,
            self.clock(),
        )

    async def _tradebill(self, request: web.Request) -> web.Response:
        merchant: Merchant = request[MERCHANT]
        q = request.query
        try:
            bill_date = dt.date.fromisoformat(q.get("bill_date", ""))
        except ValueError:
            raise PayError(400, "PARAM_ERROR", "bill_date格式不正确") from None
        if q.get("bill_type", "ALL") not in ("ALL", "SUCCESS", "REFUND"):
            raise PayError(400, "PARAM_ERROR", "bill_type取值有误")
        tar_type = q.get("tar_type")
        if tar_type not in (None, "GZIP"):  # absent: a plain file
            raise PayError(400, "PARAM_ERROR", "tar_type取值有误，只支持GZIP")
        text = self.trade_bill(merchant, bill_date, q.get("sub_mchid"), q.get("bill_type", "ALL"))
        raw = text.encode()
        digest = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        if self.bill_faults.wrong_hash:
            digest = hashlib.sha1(raw + b"x", usedforsecurity=False).hexdigest()
        token = secrets.token_urlsafe(16)
        self._bills[token] = gzip.compress(raw) if tar_type == "GZIP" else raw
        query = urlencode({"token": token, "tartype": "gzip" if tar_type == "GZIP" else "plain"})
        return self._answer(
            merchant,
            200,
            {
                "hash_type": "SHA1",
                "hash_value": digest,
                "download_url": f"{self.url}/v3/billdownload/file?{query}",
            },
        )

    async def _billdownload(self, request: web.Request) -> web.Response:
        data = self._bills.get(request.query.get("token", ""))
        if data is None:
            raise PayError(400, "INVALID_REQUEST", "token无效或已过期")
        return web.Response(body=data, content_type="application/octet-stream")

    def tamper_bill(
        self,
        *,
        extra_rows: int = 0,
        missing: tuple[str, ...] = (),
        amounts: dict[str, int] | None = None,
        states: dict[str, str] | None = None,
        wrong_hash: bool = False,
        refunds: dict[str, int] | None = None,
        bad_lines: tuple[str, ...] = (),
    ) -> None:
        """Differences for the next bills (``BillFaults()`` clears them): ``extra_rows``
        payments we never made, ``missing`` orders left out, ``amounts`` and ``states``
        shown otherwise (by out_trade_no), ``refunds`` amounts shown otherwise (by
        out_refund_no), ``wrong_hash`` a hash_value that is not the file's, ``bad_lines``
        raw lines among the rows."""
        self.bill_faults = BillFaults(
            extra_rows,
            set(missing),
            dict(amounts or {}),
            dict(states or {}),
            wrong_hash,
            dict(refunds or {}),
            list(bad_lines),
        )

    # ---- test control: payments and notifications ---------------------------------------

    def order(
        self,
        out_trade_no: str | None = None,
        *,
        prepay_id: str | None = None,
        mchid: str | None = None,
    ) -> Order:
        found = [
            o
            for o in self.orders.values()
            if (out_trade_no is None or o.out_trade_no == out_trade_no)
            and (prepay_id is None or o.prepay_id == prepay_id)
            and (mchid is None or o.receiver == mchid)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} orders match {out_trade_no or prepay_id}")
        return found[0]

    def _notification(
        self, event_type: str, original_type: str, plain: dict[str, Any], key: str, summary: str
    ) -> str:
        resource = aes_gcm_encrypt(key, json.dumps(plain, ensure_ascii=False), original_type)
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": cst(self.clock()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {"original_type": original_type, **resource},
        }
        return json.dumps(envelope, ensure_ascii=False)

    def _owner(self, order: Order) -> Merchant:
        receiver = self.merchants[order.receiver]
        return self.merchants[receiver.sp_mchid] if receiver.sp_mchid else receiver

    async def _post(self, delivery: Delivery) -> Delivery:
        assert self._http is not None, "start() first"
        try:
            async with self._http.post(
                delivery.url,
                data=delivery.body.encode(),
                headers={**delivery.headers, "Content-Type": "application/json"},
            ) as response:
                delivery.status = response.status
                delivery.answer = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        self.deliveries.append(delivery)
        return delivery

    async def _send_copies(
        self, make: Callable[[], Delivery], copies: int, concurrent: bool
    ) -> list[Delivery]:
        if concurrent:
            return list(await asyncio.gather(*(self._post(make()) for _ in range(copies))))
        return [await self._post(make()) for _ in range(copies)]

    def _later(self, delay_s: float, work: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay_s)
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def pay(
        self,
        out_trade_no: str,
        *,
        notify: bool = True,
        duplicates: int = 0,
        concurrent: bool = False,
        delay_s: float = 0,
        payer_total: int | None = None,
        mchid: str | None = None,
    ) -> list[Delivery]:
        """The payer pays: SUCCESS, then the notification (1 + ``duplicates`` copies) to the
        order's ``notify_url``; ``delay_s`` > 0 sends it later (``drain()`` waits)."""
        order = self.order(out_trade_no, mchid=mchid)
        if order.state != "NOTPAY":
            raise ValueError(f"order {out_trade_no} is {order.state}")
        now = self.clock()
        order.state = "SUCCESS"
        order.success_time = now
        order.payer_total = payer_total
        order.transaction_id = (
            "42000" + now.astimezone(CST).strftime("%Y%m%d") + f"{secrets.randbelow(10**15):015d}"
        )
        owner = self._owner(order)
        order.notification = self._notification(
            "TRANSACTION.SUCCESS",
            "transaction",
            self.transaction(order),
            owner.keys.apiv3_key,
            "支付成功",
        )
        if not notify:
            return []
        copies = self._send_copies(
            lambda: self._delivery(order, order.notification or ""), 1 + duplicates, concurrent
        )
        if delay_s > 0:
            self._later(delay_s, copies)
            return []
        return await copies

    def signed_notifications(
        self, out_trade_no: str, copies: int = 1, *, mchid: str | None = None
    ) -> list[Delivery]:
        """The paid order's notification as ``copies`` signed deliveries, not yet sent
        (``post`` sends one): a load driver signs ahead so that its own signing is not
        what it measures."""
        order = self.order(out_trade_no, mchid=mchid)
        if order.notification is None:
            raise ValueError(f"order {out_trade_no} is not paid")
        body = order.notification
        return [self._delivery(order, body) for _ in range(copies)]

    async def post(self, delivery: Delivery) -> Delivery:
        """Send one delivery (from ``signed_notifications`` or ``bad_notification``)."""
        return await self._post(delivery)

    def _delivery(self, order: Order, body: str, kind: str = "genuine", **sign: Any) -> Delivery:
        owner = self._owner(order)
        return Delivery(
            "TRANSACTION.SUCCESS",
            str(order.request["notify_url"]),
            self.signed_headers(body, owner, **sign),
            body,
            kind,
            out_trade_no=order.out_trade_no,
        )

    async def resend(self, out_trade_no: str, *, mchid: str | None = None) -> Delivery:
        """WeChat's re-send of the same notification (same id and body, signed anew)."""
        order = self.order(out_trade_no, mchid=mchid)
        if order.notification is None:
            raise ValueError(f"order {out_trade_no} is not paid")
        return await self._post(self._delivery(order, order.notification))

    def bad_notification(
        self, out_trade_no: str, kind: str, *, mchid: str | None = None
    ) -> Delivery:
        """A notification that must be refused: one of ``BAD_KINDS``."""
        order = self.order(out_trade_no, mchid=mchid)
        if order.notification is None:
            raise ValueError(f"order {out_trade_no} is not paid")
        body = order.notification
        if kind == "forged_signature":
            d = self._delivery(order, body, kind)
            d.headers["Wechatpay-Signature"] = base64.b64encode(secrets.token_bytes(256)).decode()
        elif kind == "tampered_body":
            d = self._delivery(order, body, kind)
            envelope = json.loads(body)
            envelope["summary"] = "支付成功 "
            d.body = json.dumps(envelope, ensure_ascii=False)
        elif kind == "other_key":
            d = self._delivery(order, body, kind, key=new_key())
        elif kind == "stale_timestamp":
            d = self._delivery(order, body, kind, timestamp=int(time.time()) - 600)
        elif kind == "probe":
            d = self._delivery(order, body, kind)
            d.headers["Wechatpay-Signature"] = PROBE_PREFIX + secrets.token_urlsafe(32)
        elif kind == "amount_differs":
            plain = self.transaction(order)
            plain["amount"]["total"] += 1
            plain["amount"]["payer_total"] += 1
            owner = self._owner(order)
            forged = self._notification(
                "TRANSACTION.SUCCESS", "transaction", plain, owner.keys.apiv3_key, "支付成功"
            )
            d = self._delivery(order, forged, kind)
        else:
            raise ValueError(f"kind is one of {', '.join(BAD_KINDS)}")
        return d

    async def send_bad(self, out_trade_no: str, kind: str, *, mchid: str | None = None) -> Delivery:
        return await self._post(self.bad_notification(out_trade_no, kind, mchid=mchid))

    def refund(self, out_refund_no: str, mchid: str | None = None) -> Refund:
        found = [
            r
            for (receiver, no), r in self.refunds.items()
            if no == out_refund_no and (mchid is None or receiver == mchid)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} refunds match {out_refund_no}")
        return found[0]

    async def settle_refund(
        self, out_refund_no: str, *, notify: bool = True, mchid: str | None = None
    ) -> Delivery | None:
        """The refund reaches the payer: SUCCESS, and REFUND.SUCCESS to its notify_url."""
        refund = self.refund(out_refund_no, mchid)
        refund.status = "SUCCESS"
        refund.success_time = self.clock()
        order = refund.order
        if not notify or not refund.notify_url:
            return None
        owner = self._owner(order)
        plain: dict[str, Any] = {}
        if order.partner:
            plain.update(sp_mchid=owner.mchid, sub_mchid=order.receiver)
        else:
            plain["mchid"] = order.receiver
        view = self.refund_view(refund)
        plain.update(
            out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id,
            out_refund_no=refund.out_refund_no,
            refund_id=refund.refund_id,
            refund_status="SUCCESS",
            success_time=view["success_time"],
            user_received_account="支付用户零钱",
            amount={
                k: view["amount"][k] for k in ("total", "refund", "payer_total", "payer_refund")
            },
        )
        body = self._notification(
            "REFUND.SUCCESS", "refund", plain, owner.keys.apiv3_key, "退款成功"
        )
        return await self._post(
            Delivery(
                "REFUND.SUCCESS",
                refund.notify_url,
                self.signed_headers(body, owner),
                body,
                out_trade_no=order.out_trade_no,
                out_refund_no=refund.out_refund_no,
            )
        )

    # ---- test control over HTTP ---------------------------------------------------------

    def _state(self, order: Order) -> dict[str, Any]:
        return {
            "out_trade_no": order.out_trade_no,
            "prepay_id": order.prepay_id,
            "mchid": order.receiver,
            "trade_state": order.state,
            "transaction_id": order.transaction_id,
            "total": order.total,
            "refunded": order.refunded,
        }

    @staticmethod
    def _view(d: Delivery) -> dict[str, Any]:
        return {
            "event_type": d.event_type,
            "kind": d.kind,
            "out_trade_no": d.out_trade_no,
            "out_refund_no": d.out_refund_no,
            "url": d.url,
            "status": d.status,
            "answer": d.answer,
            "error": d.error,
        }

    async def _control_body(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json() if request.can_read_body else {}
        return body

    async def _http_pay(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        order = self.order(
            body.get("out_trade_no"), prepay_id=body.get("prepay_id"), mchid=body.get("mchid")
        )
        sent = await self.pay(
            order.out_trade_no,
            mchid=order.receiver,
            notify=bool(body.get("notify", True)),
            duplicates=int(body.get("duplicates", 0)),
            concurrent=bool(body.get("concurrent", False)),
            delay_s=float(body.get("delay_s", 0)),
            payer_total=body.get("payer_total"),
        )
        return web.json_response(
            {**self._state(order), "deliveries": [self._view(d) for d in sent]}
        )

    async def _http_resend(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        d = await self.resend(body["out_trade_no"], mchid=body.get("mchid"))
        return web.json_response(self._view(d))

    async def _http_bad(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        d = await self.send_bad(body["out_trade_no"], body["kind"], mchid=body.get("mchid"))
        return web.json_response(self._view(d))

    async def _http_settle(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        d = await self.settle_refund(body["out_refund_no"], mchid=body.get("mchid"))
        refund = self.refund(body["out_refund_no"], body.get("mchid"))
        return web.json_response(
            {**self.refund_view(refund), "delivery": self._view(d) if d else None}
        )

    async def _http_tamper(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        self.tamper_bill(
            extra_rows=int(body.get("extra_rows", 0)),
            missing=tuple(body.get("missing", ())),
            amounts={str(k): int(v) for k, v in (body.get("amounts") or {}).items()},
            states={str(k): str(v) for k, v in (body.get("states") or {}).items()},
            wrong_hash=bool(body.get("wrong_hash", False)),
            refunds={str(k): int(v) for k, v in (body.get("refunds") or {}).items()},
            bad_lines=tuple(str(line) for line in body.get("bad_lines", ())),
        )
        return web.json_response({"ok": True})

    async def _http_orders(self, request: web.Request) -> web.Response:
        return web.json_response([self._state(o) for o in self.orders.values()])

    async def _http_deliveries(self, request: web.Request) -> web.Response:
        return web.json_response([self._view(d) for d in self.deliveries])
