"""What the console says of notifications (issue 16 item 5): a status, a channel and the
worker's reason in the operator's language; the pages of a customer's messages, the
delivery overview per day and channel (under 报表), and the templates in both languages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cloud.api.deps import ServicesDep
from cloud.console import i18n, lists
from cloud.console.format import when
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_in
from cloud.lifecycle import accounts
from cloud.notify import queries
from cloud.notify import settings as ns
from notifications import templates

router = APIRouter(prefix="/console", include_in_schema=False)

STATUS = {
    "queued": N_("waiting"),
    "sending": N_("sending"),
    "sent": N_("sent"),
    "delivered": N_("delivered"),
    "undelivered": N_("not delivered"),
    "failed": N_("failed"),
    "skipped": N_("not sent"),
}
CHANNEL = {"sms": N_("SMS"), "wechat": N_("WeChat"), "log": N_("log"), "none": N_("no channel")}

# The worker's reasons (English, as stored), each with its words for the operator.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), m)
    for p, m in (
        (r"^waiting: quiet hours at the site$", N_("waiting: quiet hours at the site")),
        (
            r"^waiting: at most (?P<n>\d+) messages an hour to a customer$",
            N_("waiting: at most %(n)s messages an hour to a customer"),
        ),
        (r"^no phone number on file$", N_("no phone number on file")),
        (
            r"^phone number (?P<phone>.*) is not E\.164 \(\+ country code and number\)$",
            N_("phone number %(phone)s is not in international form (+86…)"),
        ),
        (r"^the customer has no notification channel$", N_("the customer has no channel")),
        (
            r"^the customer turned this kind of message off$",
            N_("the customer turned this kind of message off"),
        ),
        (r"^no WeChat acceptance left; sent by SMS$", N_("no WeChat acceptance left; sent by SMS")),
        (r"^WeChat is not set up here; sent by SMS$", N_("WeChat is not set up here; sent by SMS")),
        (r"^template variable missing: (?P<name>\w+)$", N_("the message lacks %(name)s")),
        (
            r"^provider unavailable \(try (?P<n>\d+)\); retrying$",
            N_("the provider is unavailable (try %(n)s); retrying"),
        ),
        (r"^gave up after (?P<n>\d+) tries", N_("given up after %(n)s tries")),
        (
            r"^the worker sending it stopped; sending again$",
            N_("the worker sending it stopped; sending again"),
        ),
    )
)


def status_words(status: str) -> str:
    return _(STATUS.get(status, status))


def channel_words(channel: str | None) -> str:
    return _(CHANNEL.get(channel or "none", channel or "none"))


def reason_words(reason: str | None) -> str:
    """The worker's reason in the operator's language (as stored when it has no words)."""
    if not reason:
        return ""
    for pattern, words in _REASONS:
        found = pattern.match(reason)
        if found:
            return _(words) % found.groupdict()
    return reason


def title_words(msgid: str) -> str:
    """A template's title (the notifications domain) in the operator's language."""
    return templates.translations(i18n.current.get()).gettext(msgid)


def kind_title(kind: str) -> str:
    """A message kind's title (its template's) in the operator's language."""
    t = templates.TEMPLATES.get(kind)
    return title_words(t.title) if t else kind


WORDS = {
    "status_words": status_words,
    "channel_words": channel_words,
    "reason_words": reason_words,
    "title_words": title_words,
}

Text = Annotated[str, Query(max_length=10)]


@router.get("/accounts/{number}/notifications")
async def account_notifications(
    number: str,
    request: Request,
    svc: ServicesDep,
    offset: lists.Offset = 0,
    kind: Annotated[str, Query(max_length=40)] = "",
    export: lists.Export = "",
) -> Response:
    """The account's customer's messages (of one kind, or all), newest first, with their
    delivery status; the same as an Excel file."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    page = await accounts.account_page(svc.db, who, number[:20])  # (scope, 404)
    only = kind if kind in templates.TEMPLATES else None
    limit, start = (lists.EXPORT_LIMIT, 0) if export == "xlsx" else (lists.PAGE_SIZE, offset)
    async with svc.db.tenant(who.tenant_id) as conn:
        total, items = await queries.customer_notifications(
            conn, page.customer_id, limit, start, only
        )
        zone = await conn.scalar(
            sa.text(
                "SELECT s.timezone FROM service_point sp JOIN site s ON s.id = sp.site_id "
                "JOIN account a ON a.id = sp.account_id WHERE a.number = :n LIMIT 1"
            ),
            {"n": page.number},
        )
    zone = zone or "Asia/Shanghai"
    if export == "xlsx":
        headers = [
            _("Time"), _("Message kind"), _("Service point"), _("Message channel"),
            _("Recipient"), _("Status"), _("Status at"), _("Why"), _("SMS segments"),
        ]  # fmt: skip
        rows = [
            [when(n.created_at, zone), title_words(n.title_msgid), n.point or "",
             channel_words(n.channel), n.address or "", status_words(n.status),
             when(n.status_at, zone) if n.status_at else "", reason_words(n.reason),
             n.segments]
            for n in items
        ]  # fmt: skip
        return lists.xlsx(f"notifications-{page.number}.xlsx", headers, rows)
    done = request.query_params.get("done", "")
    ctx = {
        "who": who,
        "a": page,
        "kind": only or "",
        "kinds": list(templates.TEMPLATES),
        "pref": await ns.preference(svc.db, who, page.customer_id),
        "mutable": ns.MUTABLE,
        "kind_title": kind_title,
        "done": _("The customer's choice is saved.") if done == "preference" else None,
        "items": items,
        "zone": zone,
        "page": lists.page_of(offset, total),
        **WORDS,
    }
    return render(request, svc, "notifications_account.html", ctx, section="accounts")


@router.get("/reports")
async def reports(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return render(request, svc, "reports.html", {"who": who}, section="reports")


@router.get("/reports/notifications")
async def delivery_page(
    request: Request,
    svc: ServicesDep,
    first: Text = "",
    last: Text = "",
    export: lists.Export = "",
) -> Response:
    """Messages per day and channel: waiting, sent, delivered, failed, not sent, and what
    the SMS cost in segments; days in the group's first site's zone."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    who.require("registry.view")
    async with svc.db.tenant(who.tenant_id) as conn:
        zone = await conn.scalar(sa.text("SELECT timezone FROM site ORDER BY name LIMIT 1"))
        zone = zone or "Asia/Shanghai"
        today = datetime.now(UTC).astimezone(ZoneInfo(zone)).date()
        try:
            until = lists.day_param(last) or today
            since = lists.day_param(first) or until - timedelta(days=6)
        except ValueError:
            message = _("Give the days as year-month-day, e.g. 2026-12-01, between 2000 and 2099.")
            ctx = {"who": who, "message": message, "refused": True}
            return render(request, svc, "message.html", ctx, status=422, section="reports")
        if since > until:
            since, until = until, since
        if (until - since).days > 366:
            since = until - timedelta(days=366)
        days = await queries.delivery_overview(conn, since, until, zone)
    if export == "xlsx":
        headers = [
            _("Day"), _("Message channel"), _("waiting"), _("sent"), _("delivered"), _("failed"),
            _("not sent"), _("SMS segments"),
        ]  # fmt: skip
        rows = [
            [d.day.isoformat(), channel_words(d.channel), d.queued, d.sent, d.delivered,
             d.failed, d.skipped, d.segments]
            for d in days
        ]  # fmt: skip
        return lists.xlsx(f"notifications-{since:%Y%m%d}-{until:%Y%m%d}.xlsx", headers, rows)
    totals = {
        k: sum(getattr(d, k) for d in days)
        for k in ("queued", "sent", "delivered", "failed", "skipped", "segments")
    }
    filters = {"first": since.isoformat(), "last": until.isoformat()}
    ctx = {
        "who": who,
        "days": days,
        "totals": totals,
        "filters": filters,
        "keep": urlencode(filters),
        "zone": zone,
        **WORDS,
    }
    return render(request, svc, "notifications_overview.html", ctx, section="reports")


@router.get("/reports/notifications/templates")
async def templates_page(request: Request, svc: ServicesDep) -> Response:
    """Every message template as the customer reads it, in Chinese and in English."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    zh = templates.translations("zh_CN")
    rows = [
        (zh.gettext(title), title, zh_text, en_text)
        for _kind, title, en_text, zh_text in queries.template_texts()
    ]
    ctx = {"who": who, "rows": rows}
    return render(request, svc, "notifications_templates.html", ctx, section="reports")
