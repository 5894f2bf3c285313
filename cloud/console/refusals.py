"""The services' refusals in the clerk's language (DESIGN §16): services word their
refusals in English and name what was entered; here each is matched against its pattern
and worded again from the catalogue with those values, after a title for its kind (a
refusal that names nothing is looked up as it is). One table for every console page."""

from __future__ import annotations

import re

from cloud.console import i18n
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.errors import DomainError

TITLES = {
    400: N_("Request not understood"),
    401: N_("Please log in"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("Conflicts with what is already recorded"),
    422: N_("Please correct the input"),
    429: N_("Too many attempts"),
}


MARGIN_HINT = N_("Tick the box below and give the reason to keep this price.")
_MARGIN_TEXT = re.compile(
    r"unit price (?P<price>\S+) is above the ceiling (?P<ceiling>\S+) at site (?P<site>.+) "
    r"\(catalogue price (?P<catalogue>\S+) plus (?P<margin>\S+)% margin\)"
)

# The refusals a clerk meets at the counter and in 营业, worded with what was entered: the
# pattern finds the values, the catalogue holds the sentence (static ones are looked up as
# they are).
_WORDED = (
    (r"account (?P<a>\S+) is closed", N_("account %(a)s is closed")),
    (r"account (?P<a>\S+) not found", N_("account %(a)s not found")),
    (r"sale (?P<r>\S+) not found", N_("sale %(r)s not found")),
    (r"sale (?P<r>\S+) is already reversed", N_("sale %(r)s is already reversed")),
    (
        r"sale (?P<r>\S+) belongs to business day (?P<d>\S+), which has closed: only a "
        r"same-day sale can be reversed",
        N_(
            "sale %(r)s belongs to business day %(d)s, which has closed: only a same-day sale "
            "can be reversed"
        ),
    ),
    (
        r"the cash of business day (?P<d>\S+) has been handed over: sale (?P<r>\S+) can no "
        r"longer be reversed",
        N_(
            "the cash of business day %(d)s has been handed over: sale %(r)s can no longer "
            "be reversed"
        ),
    ),
    (
        r"the meter has already taken the recharge of sale (?P<r>\S+): it cannot be "
        r"reversed \(refund it with a deduction at the meter\)",
        N_(
            "the meter has already taken the recharge of sale %(r)s: it cannot be reversed "
            "(refund it with a deduction at the meter)"
        ),
    ),
    (
        r"the recharge of sale (?P<r>\S+) is on its way to the meter: wait for the meter's "
        r"answer before reversing",
        N_(
            "the recharge of sale %(r)s is on its way to the meter: wait for the meter's "
            "answer before reversing"
        ),
    ),
    (r"service point (?P<p>.+) already has a meter", N_("service point %(p)s already has a meter")),
    (
        r"service point (?P<p>.+) has no meter to (swap|remove)",
        N_("service point %(p)s has no meter"),
    ),
    (r"service point (?P<p>.+) is removed", N_("service point %(p)s is removed")),
    (
        r"account (?P<a>\S+) owes (?P<m>\S+): collect it first, or write it off",
        N_("account %(a)s owes ¥%(m)s: collect it first, or write it off"),
    ),
    (
        r"refund (?P<m>\S+) is more than the balance (?P<b>\S+) of account (?P<a>\S+)",
        N_("the refund ¥%(m)s is more than the balance ¥%(b)s of account %(a)s"),
    ),
    (
        r"installation register (?P<r>\S+) is below the meter's last reading (?P<l>\S+) .*",
        N_("the installation register %(r)s is below the meter's last reading %(l)s"),
    ),
    (
        r"final register (?P<r>\S+) is below the last reading (?P<l>\S+)",
        N_("the final register %(r)s is below the last reading %(l)s"),
    ),
    (
        r"the premises' (?P<u>\w+) is already open on account (?P<a>\S+)",
        N_("this premises' supply is already open on account %(a)s"),
    ),
    (
        r"account (?P<a>\S+) is not in debt: nothing to write off",
        N_("account %(a)s is not in debt: nothing to write off"),
    ),
    (
        r"the first sale (?P<m>\S+) must be more than 0",
        N_("the first sale ¥%(m)s must be more than ¥0"),
    ),
    (
        r"first sale (?P<m>\S+) is not an amount in yuan and fen",
        N_("the first sale %(m)s is not an amount in yuan and fen"),
    ),
    (
        r"refund (?P<m>\S+) is not an amount in yuan and fen",
        N_("the refund %(m)s is not an amount in yuan and fen"),
    ),
    (
        r"payment method (?P<m>.+) is not one of cash, card, transfer",
        N_("payment method %(m)s is not one of cash, card, transfer"),
    ),
    (r"outlet (?P<o>\S+) not found", N_("outlet %(o)s not found")),
    (
        r"idempotency key (?P<k>.+) was already used for a different sale",
        N_("this form was already used for a different sale: open the form again"),
    ),
    (
        r"account (?P<a>\S+) owes (?P<m>\S+): a transfer never moves a debt to the new "
        r"customer; collect it first, or write it off",
        N_(
            "account %(a)s owes ¥%(m)s: a transfer never moves a debt to the new customer; "
            "collect it first, or write it off"
        ),
    ),
    (
        r"the meter of service point (?P<p>.+) has not reported the credit it holds: read the "
        r"meter, then try again",
        N_(
            "the meter of service point %(p)s has not reported the credit it holds: read the "
            "meter, then try again"
        ),
    ),
    (
        r"the meter of service point (?P<p>.+) has not reported its credit since its last "
        r"recharge: read the meter, then try again",
        N_(
            "the meter of service point %(p)s has not reported its credit since its last "
            "recharge: read the meter, then try again"
        ),
    ),
    (
        r"the meter of service point (?P<p>.+) still holds (?P<m>\S+) of credit: deduct it at "
        r"the meter and read it back, or remove the meter first",
        N_(
            "the meter of service point %(p)s still holds ¥%(m)s of credit: deduct it at the "
            "meter and read it back, or remove the meter first"
        ),
    ),
    (
        r"service point (?P<p>.+) is under keep-power set by (?P<b>\S+) for the current "
        r"customer: end it before the transfer, and set it again for the new customer if "
        r"still needed",
        N_(
            "service point %(p)s is under keep-power set by %(b)s for the current customer: "
            "end it before the transfer, and set it again for the new customer if still needed"
        ),
    ),
    (
        r"service point (?P<p>.+) is under a manual override set by (?P<b>\S+) for the "
        r"current customer: end it before the transfer, and set it again for the new "
        r"customer if still needed",
        N_(
            "service point %(p)s is under a manual override set by %(b)s for the current "
            "customer: end it before the transfer, and set it again for the new customer if "
            "still needed"
        ),
    ),
)
# Refusals of the Settings pages that name what was entered, worded again for the catalogue.
_NAMED = (
    (
        r"premises (?P<number>.+) already exists in (?P<building>.+)",
        N_("Premises %(number)s already exists in %(building)s."),
    ),
    (
        r"building '(?P<name>.+)' already exists at this site",
        N_("Building %(name)s already exists at this site."),
    ),
    (
        r"outlet '(?P<name>.+)' already exists at this site",
        N_("Outlet %(name)s already exists at this site."),
    ),
    (r"role '(?P<name>.+)' already exists", N_("Role %(name)s already exists.")),
    (r"username '(?P<name>.+)' is taken", N_("The user name %(name)s is taken.")),
    (
        r"a (?P<utility>\w+) tariff named (?P<name>.+) already exists",
        N_("A tariff named %(name)s already exists for this utility."),
    ),
    (
        r"operator (?P<name>\S+) holds permissions you do not: (?P<perms>.+)",
        N_("Operator %(name)s holds permissions you do not: %(perms)s."),
    ),
    (
        r"tariff (?P<name>.+) is used by (?P<n>\d+) service point\(s\): assign them "
        r"another tariff first",
        N_("Tariff %(name)s is used by %(n)s service point(s): assign them another tariff first."),
    ),
    (
        r"tariff (?P<name>.+) is not active",
        N_("Tariff %(name)s is not active: activate it on its page first."),
    ),
    (
        r"you cannot grant permissions you do not hold: (?P<perms>.+)",
        N_("You cannot grant permissions you do not hold: %(perms)s."),
    ),
)
_PATTERNS = tuple((re.compile(f"^{p}$"), msg) for p, msg in (*_WORDED, *_NAMED))
STATIC = (
    N_("a reversal needs a reason"),
    N_("a write-off needs a reason"),
    N_("choose the outlet the sale is made at"),
    N_("moving the balance needs the account it moves to"),
    N_("this outlet is outside your scope and no grant for it is in force"),
    N_("writing off arrears needs permission 'account.write_off'"),
    N_("this meter channel is already bound to another service point"),
    N_("the new meter channel is already bound to a service point"),
    N_("no reading of this meter has arrived from its gateway yet: type the register in"),
    N_("permission 'sale.create' required"),
    N_("permission 'sale.reverse' required"),
    N_("permission 'account.open' required"),
    N_("permission 'account.close' required"),
    N_("permission 'meter.install' required"),
    N_("permission 'gateway.commission' required"),
    N_("permission 'gateway.configure' required"),
    N_("claim code already used, revoked or expired"),
    N_("choose at least one point to share the common meter"),
    N_("the common meter cannot share its own charge"),
    N_("the points sharing a common meter are at its site"),
    N_("a common meter cannot share another common meter's charge"),
    N_("a member point has no floor area"),
    N_("a month is shared out once it has ended"),
    N_("permission 'import.run' required"),
    N_(
        "a meter-controlled point's first sale is made after its meter is installed, "
        "so that the credit is sent to the meter"
    ),
    N_("a transfer goes to another customer"),
)


def _translated(message: str) -> str:
    for pattern, msgid in _PATTERNS:
        if m := pattern.match(message):
            return _(msgid) % m.groupdict()
    return _(message)


def explain(exc: DomainError) -> str:
    """A service's refusal in the operator's language: the catalogue's translation of the
    message (or of its pattern, with the values it names), after a title for its kind. The
    tariff margin's refusal ends with the hint that shows its acknowledgement box."""
    title = _(TITLES.get(exc.status, "Refused"))
    sep = "：" if i18n.current.get() == "zh_CN" else ": "
    found = _MARGIN_TEXT.search(str(exc))
    if found is not None:
        text = _(
            "Unit price %(price)s is above the ceiling %(ceiling)s at site %(site)s "
            "(catalogue price %(catalogue)s plus %(margin)s%% margin)."
        )
        return f"{title}{sep}{text % found.groupdict()} {_(MARGIN_HINT)}"
    return f"{title}{sep}{_translated(str(exc))}"


# The services' refusals a clerk meets on these pages, for the catalogue (explain()
# translates a message it finds there; the others are shown as the service words them).
SERVICE_MESSAGES = (
    N_("permission 'registry.view' required"),
    N_("permission 'registry.edit' required"),
    N_("permission 'operator.manage' required"),
    N_("permission 'tariff.edit' required"),
    N_("permission 'dunning.send' required"),
    N_("Give both ends of the quiet hours, or neither (no quiet hours)."),
    N_("The quiet hours must start and end at different times."),
    N_("A gateway may be offline 1 to 1440 minutes before staff are told."),
    N_("The hourly limit per customer is 1 to 100 messages."),
    N_("Give the staff member's name (at most 100 characters)."),
    N_("Give a mobile number: 11 digits (13800138000) or with its country code (+86…)."),
    N_("Staff are told by SMS, in Chinese or English."),
    N_("Choose at least one kind of staff message."),
    N_("Choose the channels from the list."),
    N_("Choose Chinese or English."),
    N_("Supply cuts and top-ups received are always told."),
    N_("choose at least one account to remind"),
    N_("at most 2000 accounts in one sending"),
    N_("only a tenant-wide operator can add a site"),
    N_("only a tenant-wide operator can manage roles"),
    N_("an operator scoped to outlets cannot add outlets"),
    N_("a tariff of the whole group is changed only by a group operator"),
    N_("you cannot give an operator a scope wider than your own"),
    N_("you cannot deactivate yourself"),
    N_("friendly night needs both a start and an end (or neither)"),
    N_("friendly night start and end must differ"),
    N_("the readings' allowed age must be between 1 and 3650 days"),
    N_("site name must not be empty"),
    N_("building name must not be empty"),
    N_("outlet name must not be empty"),
    N_("role name must not be empty"),
    N_("display name must not be empty"),
    N_("floor must not be empty"),
    N_("premises number must not be empty"),
    N_("name must not be blank"),
    N_("password must be at least 8 characters"),
    N_("a site scope needs at least one site id"),
    N_("a outlet scope needs at least one outlet id"),
    N_("a grant must end after it starts"),
    N_("a grant must end in the future"),
    N_("a grant lasts at most 31 days"),
    N_("a grant starts and ends at most 366 days ahead"),
    N_("a grant needs a reason (at least 3 characters)"),
)
