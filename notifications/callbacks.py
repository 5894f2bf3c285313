"""Providers' status callbacks: Twilio's ``StatusCallback`` for each message.

``POST /api/v1/notify/twilio/status/{tenant_id}/{notification_id}`` is accepted only with
a valid ``X-Twilio-Signature`` (the library's ``RequestValidator``, over the URL Twilio
called — ``PREPAY_NOTIFY_PUBLIC_BASE_URL`` plus the path when set, as a proxy in front
changes what the app sees — and the form fields); anything else is a 403 and changes
nothing. A status never moves backwards: queued/sending → sent → delivered |
undelivered | failed, so a late ``sent`` after ``delivered`` is ignored.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from twilio.request_validator import RequestValidator

from cloud.api.deps import ServicesDep
from cloud.errors import Forbidden, NotFound
from notifications.settings import NotifySettings

router = APIRouter(tags=["notifications"])

#: Twilio's MessageStatus → (our status, its rank); others (queued, accepted, sending,
#: scheduled) are steps before "sent" that change nothing here
TWILIO_STATUS = {
    "sent": ("sent", 1),
    "delivered": ("delivered", 2),
    "undelivered": ("undelivered", 2),
    "failed": ("failed", 2),
}
_RANK = (
    "CASE status WHEN 'queued' THEN 0 WHEN 'sending' THEN 0 WHEN 'sent' THEN 1 "
    "WHEN 'skipped' THEN 9 ELSE 2 END"
)
_APPLY = sa.text(
    f"UPDATE notification SET status = :s, status_at = :now, updated_at = :now, "
    f"provider_id = coalesce(provider_id, :sid), "
    f"error = CASE WHEN CAST(:err AS jsonb) IS NULL THEN error ELSE CAST(:err AS jsonb) END "
    f"WHERE id = :id AND {_RANK} < :rank"
)


def signed_url(settings: NotifySettings, request: Request) -> str:
    if settings.public_base_url:
        url = settings.public_base_url.rstrip("/") + request.url.path
        return f"{url}?{request.url.query}" if request.url.query else url
    return str(request.url)


@router.post(
    "/api/v1/notify/twilio/status/{tenant_id}/{notification_id}",
    status_code=204,
    responses={
        403: {"description": "missing or invalid X-Twilio-Signature"},
        404: {"description": "no such notification"},
    },
    summary="Twilio's status callback of one message",
)
async def twilio_status(
    tenant_id: uuid.UUID, notification_id: uuid.UUID, request: Request, svc: ServicesDep
) -> Response:
    settings: NotifySettings = svc.notify_settings
    form = await request.form()
    params = {k: str(v) for k, v in form.multi_items()}
    signature = request.headers.get("x-twilio-signature", "")
    token = settings.twilio_auth_token
    if (
        token is None
        or not signature
        or not RequestValidator(token.get_secret_value()).validate(
            signed_url(settings, request), params, signature
        )
    ):
        raise Forbidden("invalid X-Twilio-Signature")
    mapped = TWILIO_STATUS.get(params.get("MessageStatus", "").lower())
    code = params.get("ErrorCode")
    async with svc.db.tenant(tenant_id) as conn:
        exists = await conn.scalar(
            sa.text("SELECT 1 FROM notification WHERE id = :id"), {"id": notification_id}
        )
        if not exists:
            raise NotFound("no such notification")
        if mapped is not None:
            status, rank = mapped
            await conn.execute(
                _APPLY,
                {
                    "s": status,
                    "rank": rank,
                    "now": datetime.now(UTC),
                    "sid": params.get("MessageSid") or params.get("SmsSid"),
                    "err": json.dumps({"ErrorCode": code, "MessageStatus": status})
                    if code
                    else None,
                    "id": notification_id,
                },
            )
    return Response(status_code=204)
