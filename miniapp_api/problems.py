"""The tenant app's refusals in the tenant's language (``?lang=`` or the cookie; Chinese by
default): every problem of ``/miniapp/v1`` carries a ``message`` the page shows as is. The
tenant app's own refusals are worded here; the others as the console words them."""

from __future__ import annotations

import re
from typing import Any

from cloud.console import i18n
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.refusals import explain
from cloud.errors import DomainError

PREFIX = "/miniapp/"

_FIELDS = {
    "amount": N_("Amount"),
    "phone": N_("Mobile number"),
    "code": N_("Verification code"),
    "account": N_("Account number"),
    "tenant": N_("Property group"),
    "channels": N_("Alert channels"),
    "muted": N_("Muted alerts"),
    "template_ids": N_("Subscriptions"),
}

_WORDED = tuple(
    (re.compile(p + "$"), m)
    for p, m in (
        (r"account (?P<a>\S+) is not bound to you", N_("Account %(a)s is not bound to you.")),
        (r"account (?P<a>\S+) is closed", N_("Account %(a)s is closed.")),
        (r"order (?P<o>\S+) not found", N_("Order %(o)s was not found.")),
        (r"no property group '(?P<g>[^']*)'", N_("There is no property group %(g)s.")),
        (
            r"the smallest top-up at this site is (?P<x>\S+)",
            N_("The smallest top-up here is ¥%(x)s."),
        ),
        (
            r"the largest top-up at this site is (?P<x>\S+)",
            N_("The largest top-up here is ¥%(x)s."),
        ),
        (
            r"WeChat Pay refused the order \((?P<c>[^)]*)\)",
            N_("WeChat Pay refused the order (%(c)s). Try again later."),
        ),
        (
            r"WeChat Pay could not be reached.*",
            N_("WeChat Pay cannot be reached right now. Try again in a minute."),
        ),
        (
            r"WeChat could not be reached.*",
            N_("WeChat cannot be reached right now. Try again in a minute."),
        ),
        (r"WeChat login failed.*", N_("WeChat login failed. Try again in a minute.")),
        (r"unknown alert kinds: .*", N_("Some of the alerts named do not exist.")),
    )
)
_STATIC = {
    "no open account with this number and phone": N_(
        "The account number and the phone on file do not match (or the account is closed)."
    ),
    "give the phone on file or the code sent to it": N_(
        "Enter the phone on file, or the code sent to it."
    ),
    "amount has more than two decimals (fen)": N_("An amount has at most two decimals."),
    "amount must be greater than zero": N_("The amount must be more than zero."),
    "this property group does not take WeChat payments yet": N_(
        "This property group does not take WeChat payments yet; pay at the office."
    ),
    "the code has expired; ask for a new one": N_("The code has expired; ask for a new one."),
    "the code is wrong": N_("The code is wrong."),
    "too many codes sent to this phone; try again later": N_(
        "Too many codes were sent to this phone; try again in an hour."
    ),
    "the code could not be sent; try again in a minute": N_(
        "The code could not be sent; try again in a minute."
    ),
    "phone number is not a mobile number (11 digits, or + and country code)": N_(
        "Enter an 11-digit mobile number (or + and the country code)."
    ),
    "WeChat did not accept this login code; log in again": N_(
        "WeChat did not accept the login; try again."
    ),
    "log in first": N_("Please log in first."),
    "this session has ended; log in again": N_("Your session has ended; log in again."),
    "session invalid or expired; log in again": N_("Your session has ended; log in again."),
    "channels are sms and/or wechat, each once, at least one": N_(
        "Choose SMS, WeChat or both for alerts."
    ),
    "the supply-cut notice cannot be muted": N_("The supply-cut notice cannot be turned off."),
    "one to twenty template ids": N_("Choose one to twenty subscriptions."),
    "this property group's mini-program is not set up for login": N_(
        "This property group's mini-program is not set up yet; log in with your phone."
    ),
}


def domain_message(exc: DomainError) -> str:
    text = str(exc)
    for pattern, msgid in _WORDED:
        if m := pattern.match(text):
            return _(msgid) % m.groupdict()
    if text in _STATIC:
        return _(_STATIC[text])
    return explain(exc)


def invalid_message(errors: list[dict[str, Any]]) -> str:
    names: list[str] = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if not isinstance(x, int)]
        field = next((x for x in reversed(loc) if x in _FIELDS), loc[-1] if loc else "")
        label = _(_FIELDS[field]) if field in _FIELDS else field
        if label and label not in names:
            names.append(label)
    sep = "、" if i18n.current.get() == "zh_CN" else ", "
    return _("Please check: %(fields)s") % {"fields": sep.join(names)}
