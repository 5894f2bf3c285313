"""``/miniapp/v1``: the tenant app's API (the WeChat mini-program and the H5 page). Routes
parse, call one service of ``cloud.tenant_app`` or ``cloud.payments.wechat``, and answer;
every route but login and WeChat's notifications needs the user's session, and every
answer is the user's own bound accounts only (404 for anything else)."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import ServicesDep
from cloud.api.fields import Key, PathKey, Written
from cloud.api.problems import problems
from cloud.errors import DomainError
from cloud.payments.wechat.orders import NotificationRefused, OrderView
from cloud.payments.wechat.refunds import refund_notified
from cloud.tenant_app.accounts import AccountSummary, masked
from cloud.tenant_app.login import phone_of
from miniapp_api.deps import UserDep, bearer

log = logging.getLogger(__name__)
router = APIRouter(prefix="/miniapp/v1", tags=["tenant app"], responses=problems(401))

Amount = Annotated[Decimal, Written(digits=7, places=2, above_zero=True, example="30.00")]
Phone = Annotated[str, Field(min_length=6, max_length=20, pattern=r"^\+?[0-9 ()-]{6,20}$")]
Code = Annotated[str, Field(min_length=4, max_length=8, pattern=r"^[0-9]{4,8}$")]
WxCode = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
OrderNo = Annotated[str, Field(min_length=6, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
Template = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
TenantPath = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeChatLogin(Strict):
    tenant: Key
    code: WxCode


class CodeRequest(Strict):
    tenant: Key
    phone: Phone


class PhoneLogin(Strict):
    tenant: Key
    phone: Phone
    code: Code


class LoginOut(BaseModel):
    token: str
    phone: str | None
    wechat: bool


class CodeSent(BaseModel):
    sent_to: str
    dev_code: str | None = Field(
        default=None, description="development and the demo only: the code that was sent"
    )


class BindIn(Strict):
    account: Key
    phone: Phone | None = None
    code: Code | None = None


class BindCodeIn(Strict):
    account: Key


class PointOut(BaseModel):
    name: str
    utility: str
    premises: str | None
    supply: str | None
    pending: bool
    alarm_level: int
    emergency: bool
    keep_power: bool


class AccountOut(BaseModel):
    number: str
    customer: str
    status: str
    balance: str
    days_left: str | None
    points: list[PointOut]
    topup_min: str
    topup_max: str
    quick_amounts: list[str]
    timezone: str


class UsageOut(BaseModel):
    period: str
    used: str
    spent: str


class TopUpOut(BaseModel):
    at: datetime | None
    amount: str
    channel: str
    reference: str
    status: str


class PreferencesIn(Strict):
    channels: list[Literal["sms", "wechat"]] = Field(min_length=1, max_length=2)
    muted: list[Key] = Field(default_factory=list, max_length=20)
    language: Literal["zh_CN", "en"] = "zh_CN"


class PreferencesOut(BaseModel):
    channels: list[str]
    muted: list[str]
    language: str


class AcceptIn(Strict):
    template_ids: list[Template] = Field(min_length=1, max_length=20)


class OrderIn(Strict):
    account: Key
    amount: Amount


class OrderOut(BaseModel):
    out_trade_no: str
    account: str
    amount: str
    status: str
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    balance: str | None
    pay: dict[str, str] | None


def _account(a: AccountSummary) -> AccountOut:
    return AccountOut(
        number=a.number,
        customer=a.customer,
        status=a.status,
        balance=f"{a.balance:.2f}",
        days_left=None if a.days_left is None else str(a.days_left),
        points=[
            PointOut(
                name=p.name,
                utility=p.utility,
                premises=p.premises,
                supply=p.supply,
                pending=p.pending,
                alarm_level=p.alarm_level,
                emergency=p.emergency,
                keep_power=p.keep_power,
            )
            for p in a.points
        ],
        topup_min=f"{a.topup_min:.2f}",
        topup_max=f"{a.topup_max:.2f}",
        quick_amounts=[f"{q:.2f}" for q in a.quick_amounts],
        timezone=a.timezone,
    )


# --- login -------------------------------------------------------------------------------


@router.post("/login/wechat", responses=problems(404, 503))
async def login_wechat(body: WeChatLogin, svc: ServicesDep) -> LoginOut:
    """``wx.login``'s code → code2session → a session of ours."""
    done = await svc.tenant_login.wechat(body.tenant, body.code)
    return LoginOut(token=done.token, phone=done.phone, wechat=True)


@router.post("/login/sms", responses=problems(404, 429, 503))
async def login_code(body: CodeRequest, svc: ServicesDep) -> CodeSent:
    """Send a login code by SMS to the phone (outside WeChat)."""
    code = await svc.tenant_login.send_code(body.tenant, body.phone)
    return CodeSent(sent_to=masked(phone_of(body.phone)), dev_code=code)


@router.post("/login/phone", responses=problems(404))
async def login_phone(body: PhoneLogin, svc: ServicesDep) -> LoginOut:
    done = await svc.tenant_login.phone(body.tenant, body.phone, body.code)
    return LoginOut(token=done.token, phone=done.phone, wechat=False)


@router.post("/logout", status_code=204)
async def logout(request: Request, user: UserDep, svc: ServicesDep) -> Response:
    await svc.app_sessions.revoke(bearer(request) or "")
    return Response(status_code=204)


# --- bindings ----------------------------------------------------------------------------


@router.post("/bindings", status_code=201, responses=problems(404))
async def bind(body: BindIn, user: UserDep, svc: ServicesDep) -> AccountOut:
    """Bind an account by its number and the phone on file, or the code sent to it."""
    await svc.tenant_accounts.bind(user, body.account, body.phone, body.code)
    return _account(await svc.tenant_accounts.summary(user, body.account))


@router.post("/binding-codes", responses=problems(404, 429, 503))
async def bind_code(body: BindCodeIn, user: UserDep, svc: ServicesDep) -> CodeSent:
    """Send a code to the phone on file of the account (answered with it masked)."""
    sent_to = await svc.tenant_accounts.send_bind_code(user, body.account)
    return CodeSent(sent_to=sent_to)


@router.delete("/bindings/{number}", status_code=204, responses=problems(404))
async def unbind(number: PathKey, user: UserDep, svc: ServicesDep) -> Response:
    await svc.tenant_accounts.unbind(user, number)
    return Response(status_code=204)


# --- accounts ----------------------------------------------------------------------------


@router.get("/accounts")
async def accounts(user: UserDep, svc: ServicesDep) -> list[AccountOut]:
    return [_account(a) for a in await svc.tenant_accounts.accounts(user)]


@router.get("/accounts/{number}", responses=problems(404))
async def account(number: PathKey, user: UserDep, svc: ServicesDep) -> AccountOut:
    """Balance, supply per point, days of credit left, the site's top-up amounts."""
    return _account(await svc.tenant_accounts.summary(user, number))


@router.get("/accounts/{number}/usage", responses=problems(404))
async def usage(
    number: PathKey,
    user: UserDep,
    svc: ServicesDep,
    period: Annotated[Literal["day", "month"], Query()] = "day",
) -> list[UsageOut]:
    rows = await svc.tenant_accounts.usage(user, number, period)
    return [UsageOut(period=r.period, used=str(r.used), spent=f"{r.spent:.2f}") for r in rows]


@router.get(
    "/accounts/{number}/receipts/{reference}",
    responses={**problems(404), 200: {"content": {"application/pdf": {}}}},
    response_class=Response,
)
async def receipt(number: PathKey, reference: PathKey, user: UserDep, svc: ServicesDep) -> Response:
    """A top-up's receipt (PDF): a WeChat payment's ``out_trade_no`` or a counter sale's
    receipt number, as ``/topups`` lists them."""
    pdf = await svc.tenant_accounts.receipt(user, number, reference)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="receipt-{reference}.pdf"'},
    )


@router.get("/accounts/{number}/topups", responses=problems(404))
async def topups(number: PathKey, user: UserDep, svc: ServicesDep) -> list[TopUpOut]:
    rows = await svc.tenant_accounts.topups(user, number)
    return [
        TopUpOut(
            at=r.at,
            amount=f"{r.amount:.2f}",
            channel=r.channel,
            reference=r.reference,
            status=r.status,
        )
        for r in rows
    ]


@router.get("/accounts/{number}/preferences", responses=problems(404))
async def preferences(number: PathKey, user: UserDep, svc: ServicesDep) -> PreferencesOut:
    p = await svc.tenant_accounts.preferences(user, number)
    return PreferencesOut(channels=p.channels, muted=p.muted, language=p.language)


@router.put("/accounts/{number}/preferences", responses=problems(404))
async def set_preferences(
    number: PathKey, body: PreferencesIn, user: UserDep, svc: ServicesDep
) -> PreferencesOut:
    p = await svc.tenant_accounts.set_preferences(
        user, number, list(body.channels), list(body.muted), body.language
    )
    return PreferencesOut(channels=p.channels, muted=p.muted, language=p.language)


@router.get("/subscriptions")
async def subscriptions(user: UserDep, svc: ServicesDep) -> dict[str, int]:
    """Subscribe-message acceptances left, per template (one message each)."""
    return await svc.tenant_accounts.acceptances(user)


@router.post("/subscriptions", responses=problems(400))
async def accept(body: AcceptIn, user: UserDep, svc: ServicesDep) -> dict[str, int]:
    """``wx.requestSubscribeMessage`` accepted these templates (once each)."""
    return await svc.tenant_accounts.accept(user, list(body.template_ids))


# --- top-ups -----------------------------------------------------------------------------


@router.post("/orders", status_code=201, responses=problems(404, 409, 503))
async def create_order(
    body: OrderIn, request: Request, user: UserDep, svc: ServicesDep
) -> OrderOut:
    """A WeChat Pay order to top up a bound account, with ``wx.requestPayment``'s signed
    parameters (``pay``); it expires in 15 minutes."""
    ip = request.client.host if request.client else "127.0.0.1"
    o = await svc.wechat_pay.create_order(user, body.account, body.amount, ip)
    return _order(o)


@router.get("/orders/{out_trade_no}", responses=problems(404))
async def order(out_trade_no: OrderNo, user: UserDep, svc: ServicesDep) -> OrderOut:
    """The order's state (the page polls it until paid) and, once paid, the balance."""
    return _order(await svc.wechat_pay.order(user, out_trade_no))


def _order(o: OrderView) -> OrderOut:
    return OrderOut(
        out_trade_no=o.out_trade_no,
        account=o.account_number,
        amount=f"{o.amount:.2f}",
        status=o.status,
        created_at=o.created_at,
        expires_at=o.expires_at,
        paid_at=o.paid_at,
        balance=None if o.balance is None else f"{o.balance:.2f}",
        pay=o.pay,
    )


# --- WeChat Pay's notifications (no session: the signature is the proof) -----------------

_WECHAT_FAIL = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        }
    }
}
_NOTIFY_DOC: dict[int | str, dict[str, Any]] = {
    400: {"description": "not a WeChat Pay notification, or not our order's", **_WECHAT_FAIL},
    401: {"description": "signature, timestamp or probe refused", **_WECHAT_FAIL},
    404: {"description": "no such property group or merchant", **_WECHAT_FAIL},
    503: {"description": "WeChat Pay unreachable (certificates)", **_WECHAT_FAIL},
}


@router.post("/pay/notify/{tenant}", status_code=204, responses=_NOTIFY_DOC)
async def pay_notify(tenant: TenantPath, request: Request, svc: ServicesDep) -> Response:
    """WeChat Pay's payment notification for the property group ``tenant`` (its id):
    204 once credited or already credited; 4xx (WeChat re-sends) when refused."""
    body = await request.body()
    try:
        await svc.wechat_pay.notified(tenant, dict(request.headers), body)
    except (NotificationRefused, DomainError) as exc:
        log.warning("payment notification for %s refused: %s", tenant, exc)
        return _fail(exc)
    return Response(status_code=204)


@router.post("/pay/refund-notify/{tenant}", status_code=204, responses=_NOTIFY_DOC)
async def refund_notify(tenant: TenantPath, request: Request, svc: ServicesDep) -> Response:
    body = await request.body()
    try:
        await refund_notified(svc.wechat_pay, tenant, dict(request.headers), body)
    except (NotificationRefused, DomainError) as exc:
        log.warning("refund notification for %s refused: %s", tenant, exc)
        return _fail(exc)
    return Response(status_code=204)


def _fail(exc: NotificationRefused | DomainError) -> Response:
    import json

    # WeChat's own answer shape: {"code": "FAIL", "message": "…"}
    return Response(
        json.dumps({"code": "FAIL", "message": str(exc)}, ensure_ascii=False),
        status_code=exc.status,
        media_type="application/json",
    )
