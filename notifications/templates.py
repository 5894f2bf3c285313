"""Message templates in zh-CN and English (DESIGN §8), one per cause kind.

msgids are English (``N_`` marks them for ``pybabel extract``); the Chinese is the Babel
domain ``notifications`` (``notifications/locale/zh_CN/LC_MESSAGES/notifications.po``,
compiled in memory on first use, as the console's). A template names the variables it
needs; a row without one of them is failed with the variable named, never sent half
filled. WeChat subscribe messages carry the same facts as keyword fields (``thing`` ≤ 20
characters, ``amount``), with the SMS text's first words as the title.
"""

from __future__ import annotations

import functools
import io
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

DOMAIN = "notifications"
LOCALES = ("zh_CN", "en")
DEFAULT = "zh_CN"
_DIR = Path(__file__).parent / "locale"


def N_(message: str) -> str:
    return message


@dataclass(frozen=True)
class Template:
    text: str  # the SMS / log text (msgid)
    title: str  # a short title (msgid): WeChat's thing3, the console's list


TEMPLATES: dict[str, Template] = {
    "low_balance_1": Template(
        N_(
            "{site}: credit of {point} (account {account}) is low: ¥{balance} left{days}. "
            "Top up in the WeChat mini-program or at the business office."
        ),
        N_("Low balance"),
    ),
    "low_balance_2": Template(
        N_(
            "{site}: credit of {point} (account {account}) is very low: ¥{balance} "
            "left{days}. Supply stops when it runs out; top up in the WeChat mini-program or "
            "at the business office."
        ),
        N_("Very low balance"),
    ),
    "emergency_credit": Template(
        N_(
            "{site}: {point} (account {account}) is on emergency credit, balance "
            "¥{balance}. Top up soon to keep the supply."
        ),
        N_("On emergency credit"),
    ),
    "arrears_notice": Template(
        N_(
            "{site}: {point} (account {account}) is in arrears (¥{balance}). Supply will be "
            "cut after the notice period unless you top up."
        ),
        N_("Arrears notice"),
    ),
    "cut_deferred": Template(
        N_(
            "{site}: {point} (account {account}) is in arrears (¥{balance}); supply will be "
            "cut when the friendly hours end. Top up to avoid it."
        ),
        N_("Cut after friendly hours"),
    ),
    "supply_cut": Template(
        N_(
            "{site}: supply to {point} (account {account}) has been cut, balance "
            "¥{balance}. It comes back as soon as you top up in the WeChat mini-program or "
            "at the business office."
        ),
        N_("Supply cut"),
    ),
    "supply_restored": Template(
        N_("{site}: supply to {point} (account {account}) is restored. Balance ¥{balance}."),
        N_("Supply restored"),
    ),
    "keep_power_expired": Template(
        N_(
            "{site}: keep-power for {point} (account {account}) has ended; the usual "
            "prepaid rules apply again. Balance ¥{balance}."
        ),
        N_("Keep-power ended"),
    ),
    "override_expired": Template(
        N_(
            "{site}: the operator's manual setting for {point} (account {account}) has "
            "ended. Balance ¥{balance}."
        ),
        N_("Manual setting ended"),
    ),
    "topup_received": Template(
        N_("{site}: ¥{amount} received for account {account}. Balance ¥{balance}. Thank you."),
        N_("Top-up received"),
    ),
    "refund_paid": Template(
        N_("{site}: ¥{amount} of account {account} has been refunded to you."),
        N_("Refund paid"),
    ),
    "recharge_failed": Template(
        N_(
            "{site}: the top-up of ¥{amount} did not reach the meter of {point} (account "
            "{account}). The money is safe in your account; staff will send it again."
        ),
        N_("Recharge not delivered"),
    ),
    "gateway_offline": Template(
        N_("{site}: gateway {gateway} ({code}) has been offline for {minutes} minutes."),
        N_("Gateway offline"),
    ),
    "arrears_reminder": Template(
        N_(
            "{site}: account {account} owes ¥{owed} and has been in arrears for {days_owed} "
            "days. Please top up in the WeChat mini-program or at the business office."
        ),
        N_("Arrears reminder"),
    ),
    "work_order_assigned": Template(
        N_("{site}: a work order ({work_order}) at {point} is assigned to you."),
        N_("Work order assigned"),
    ),
}
DAYS_LEFT = N_(", about {days_left} days of use")


class MissingVariable(KeyError):
    def __str__(self) -> str:
        return f"template variable missing: {self.args[0]}"


class UnknownTemplate(LookupError):
    pass


@functools.cache
def translations(locale: str) -> NullTranslations:
    po = _DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=locale, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf, domain=DOMAIN)


def _language(language: str) -> str:
    lang = language.replace("-", "_")
    return lang if lang in LOCALES else ("en" if lang.startswith("en") else DEFAULT)


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class _Strict(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise MissingVariable(key)


@dataclass(frozen=True)
class Rendered:
    text: str
    title: str
    variables: Mapping[str, str]


def render(template: str, language: str, variables: Mapping[str, str]) -> Rendered:
    """The message of ``template`` in ``language`` (zh_CN or en; others fall back to
    zh_CN). Raises :class:`MissingVariable` or :class:`UnknownTemplate`."""
    t = TEMPLATES.get(template)
    if t is None:
        raise UnknownTemplate(f"no template {template!r}")
    tr = translations(_language(language))
    values = _Strict({k: str(v) for k, v in variables.items() if v is not None and v != ""})
    days = values.get("days_left")
    values["days"] = tr.gettext(DAYS_LEFT).format(days_left=days) if days else ""
    text = tr.gettext(t.text).format_map(values)
    return Rendered(text, tr.gettext(t.title), values)


def wechat_data(r: Rendered) -> dict[str, dict[str, str]]:
    """A subscribe message's keyword fields: the point (thing1), the amount or balance
    (amount2) and the title (thing3); a ``thing`` holds at most 20 characters."""
    v = r.variables
    money = v.get("amount") or v.get("balance") or "0"
    return {
        "thing1": {"value": (v.get("point") or v.get("account") or v.get("site") or "-")[:20]},
        "amount2": {"value": f"¥{money}"},
        "thing3": {"value": r.title[:20]},
    }


def msgids() -> list[str]:
    """Every msgid the templates use (the catalogue must translate each)."""
    out = [DAYS_LEFT]
    for t in TEMPLATES.values():
        out += [t.text, t.title]
    return out
