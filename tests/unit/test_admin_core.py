"""The registry administrator's rules: every refusal of admin_core, and what is accepted."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.auth import PERMISSIONS
from cloud.errors import Forbidden, Invalid
from cloud.registry import admin_core as core

SITE = core.SiteSettings(name="Riverside Market")
S1, S2 = uuid.uuid4(), uuid.uuid4()
O1, O2, O3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
OUTLETS = {O1: S1, O2: S1, O3: S2}
NOW = datetime(2026, 12, 2, 9, tzinfo=UTC)


def test_defaults_of_a_new_site_are_accepted() -> None:
    assert core.site(SITE) == SITE


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "Asia/Hong_Kong", "UTC", "Europe/London"])
def test_zoneinfo_keys_are_accepted(zone: str) -> None:
    assert core.site(replace(SITE, timezone=zone)).timezone == zone


@pytest.mark.parametrize(
    "zone",
    [
        "",
        "CST+8",
        "UTC+8",
        "Asia/Nowhere",
        "../etc/passwd",
        "x" * 70,
        "localtime",
        "posixrules",
        "a\x00b",
    ],
)
def test_a_time_zone_must_be_a_zoneinfo_key(zone: str) -> None:
    with pytest.raises(Invalid, match="unknown time zone"):
        core.site(replace(SITE, timezone=zone))


def test_friendly_night_is_both_ends_or_neither() -> None:
    assert core.site(replace(SITE, friendly_night_start=None, friendly_night_end=None))
    with pytest.raises(Invalid, match="both a start and an end"):
        core.site(replace(SITE, friendly_night_end=None))
    with pytest.raises(Invalid, match="both a start and an end"):
        core.site(replace(SITE, friendly_night_start=None))
    with pytest.raises(Invalid, match="must differ"):
        core.site(replace(SITE, friendly_night_start=time(8), friendly_night_end=time(8)))


def test_local_times_take_no_zone_and_lose_microseconds() -> None:
    with pytest.raises(Invalid, match="without a zone"):
        core.site(replace(SITE, business_day_cutoff=time(1, tzinfo=UTC)))
    checked = core.site(replace(SITE, business_day_cutoff=time(1, 30, 0, 500)))
    assert checked.business_day_cutoff == time(1, 30)


@pytest.mark.parametrize("minutes", [0, 1, 10080])
def test_notice_minutes_in_range(minutes: int) -> None:
    assert core.site(replace(SITE, notice_minutes=minutes)).notice_minutes == minutes


@pytest.mark.parametrize("minutes", [-1, 10081])
def test_notice_minutes_out_of_range(minutes: int) -> None:
    with pytest.raises(Invalid, match="notice minutes"):
        core.site(replace(SITE, notice_minutes=minutes))


@pytest.mark.parametrize("value", ["0", "0.50", "1000", "1000.00", "2.5"])
def test_hysteresis_accepted(value: str) -> None:
    checked = core.site(replace(SITE, alarm_hysteresis=Decimal(value)))
    assert checked.alarm_hysteresis == Decimal(value)
    assert checked.alarm_hysteresis.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("-0.01", "at least 0"),
        ("1000.01", "at most"),
        ("0.001", "decimal places"),
        ("NaN", "a number"),
        ("Infinity", "a number"),
    ],
)
def test_hysteresis_refused(value: str, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        core.site(replace(SITE, alarm_hysteresis=Decimal(value)))


def test_catalogue_price_positive_with_four_decimals() -> None:
    assert core.site(replace(SITE, catalogue_price=Decimal("0.6543"))).catalogue_price == Decimal(
        "0.6543"
    )
    assert core.site(replace(SITE, catalogue_price=None)).catalogue_price is None
    for bad, why in [
        ("0", "more than 0"),
        ("-1", "more than 0"),
        ("0.12345", "decimal places"),
        ("100000000", "at most"),
    ]:
        with pytest.raises(Invalid, match=why):
            core.site(replace(SITE, catalogue_price=Decimal(bad)))


def test_price_margin_between_zero_and_one() -> None:
    for ok in ("0", "0.15", "1"):
        assert core.site(replace(SITE, price_margin=Decimal(ok))).price_margin == Decimal(ok)
    for bad, why in [("-0.01", "at least"), ("1.01", "at most"), ("0.12345", "decimal")]:
        with pytest.raises(Invalid, match=why):
            core.site(replace(SITE, price_margin=Decimal(bad)))


def test_names_are_trimmed_non_empty_short_and_one_line() -> None:
    assert core.name("  Block A ") == "Block A"
    assert core.name("一号楼") == "一号楼"
    assert core.name("x" * 100) == "x" * 100
    with pytest.raises(Invalid, match="empty"):
        core.name("   ")
    with pytest.raises(Invalid, match="longer than 100"):
        core.name("x" * 101)
    with pytest.raises(Invalid, match="control"):
        core.name("a\x00b")
    with pytest.raises(Invalid, match="site name"):
        core.site(replace(SITE, name=""))


def test_site_change_merges_and_checks_the_whole() -> None:
    changed = core.site_change(SITE, {"notice_minutes": 30, "catalogue_price": Decimal("0.8")})
    assert changed.notice_minutes == 30 and changed.name == SITE.name
    with pytest.raises(Invalid, match="both a start"):  # the stored end is kept
        core.site_change(SITE, {"friendly_night_start": None})
    with pytest.raises(Invalid, match="unknown site setting"):
        core.site_change(SITE, {"colour": "red"})


def test_slug() -> None:
    assert core.slug("green-court-2") == "green-court-2"
    for bad in ("a", "x" * 41, "Green", "green_court", "green court", "绿苑"):
        with pytest.raises(Invalid, match="slug"):
            core.slug(bad)


def test_username_and_password() -> None:
    assert core.username("clerk.a@01") == "clerk.a@01"
    for bad in ("a", "-clerk", "clerk one", "x" * 65):
        with pytest.raises(Invalid, match="username"):
            core.username(bad)
    assert core.password("12345678") == "12345678"
    with pytest.raises(Invalid, match="at least 8"):
        core.password("1234567")
    with pytest.raises(Invalid, match="control"):
        core.password("12345678\n")
    with pytest.raises(Invalid, match="at most"):
        core.password("x" * 257)


def test_premises() -> None:
    ok = core.premises(core.PremisesDraft(" 3 ", "A-301", "flat", Decimal("85.5")))
    assert ok == core.PremisesDraft("3", "A-301", "flat", Decimal("85.50"))
    assert core.premises(core.PremisesDraft("1", "101")).floor_area is None
    for draft, why in [
        (core.PremisesDraft("1", "101", "garage"), "kind"),
        (core.PremisesDraft("", "101"), "floor"),
        (core.PremisesDraft("1", " "), "number"),
        (core.PremisesDraft("1", "101", floor_area=Decimal(0)), "more than 0"),
        (core.PremisesDraft("1", "101", floor_area=Decimal("1000000.01")), "at most"),
        (core.PremisesDraft("1", "101", floor_area=Decimal("1.005")), "decimal places"),
    ]:
        with pytest.raises(Invalid, match=why):
            core.premises(draft)
    assert core.floor_area(Decimal(1_000_000)) == Decimal("1000000.00")


def test_permissions_are_known_and_ordered() -> None:
    assert core.permissions(["sale.create", "registry.view", "sale.create"]) == (
        "registry.view",
        "sale.create",
    )
    assert core.permissions(PERMISSIONS) == PERMISSIONS
    with pytest.raises(Invalid, match=r"unknown permission.*root"):
        core.permissions(["registry.view", "root"])


def test_scope_ids_exist_and_are_of_the_right_kind() -> None:
    sites = {S1, S2}
    assert core.scope("tenant", [], sites, OUTLETS) == ("tenant", ())
    assert core.scope("site", [S1, S1], sites, OUTLETS) == ("site", (S1,))
    assert core.scope("outlet", [O1, O3], sites, OUTLETS) == ("outlet", (O1, O3))
    with pytest.raises(Invalid, match="takes no scope ids"):
        core.scope("tenant", [S1], sites, OUTLETS)
    with pytest.raises(Invalid, match="at least one site"):
        core.scope("site", [], sites, OUTLETS)
    with pytest.raises(Invalid, match="no such site"):
        core.scope("site", [O1], sites, OUTLETS)  # an outlet's id is not a site's
    with pytest.raises(Invalid, match="no such outlet"):
        core.scope("outlet", [S1], sites, OUTLETS)
    with pytest.raises(Invalid, match="scope must be"):
        core.scope("building", [S1], sites, OUTLETS)


TENANT = core.reach("tenant", [], OUTLETS)
SITE1 = core.reach("site", [S1], OUTLETS)
OUTLET1 = core.reach("outlet", [O1], OUTLETS)


def test_reach_and_covers() -> None:
    assert OUTLET1.sites == frozenset({S1})
    assert core.covers(TENANT, TENANT) and core.covers(TENANT, SITE1)
    assert core.covers(SITE1, SITE1) and core.covers(SITE1, OUTLET1)
    assert not core.covers(SITE1, TENANT)
    assert not core.covers(SITE1, core.reach("site", [S1, S2], OUTLETS))
    assert not core.covers(SITE1, core.reach("outlet", [O3], OUTLETS))
    assert core.covers(OUTLET1, OUTLET1)
    assert not core.covers(OUTLET1, SITE1)  # a whole site is more than one outlet
    assert not core.covers(OUTLET1, core.reach("outlet", [O2], OUTLETS))


def test_no_privilege_escalation() -> None:
    mine = {"registry.view", "operator.manage", "sale.create"}
    core.delegation(mine, SITE1, {"sale.create"}, OUTLET1)
    with pytest.raises(Forbidden, match=r"do not hold: sale\.reverse"):
        core.delegation(mine, SITE1, {"sale.create", "sale.reverse"}, OUTLET1)
    with pytest.raises(Forbidden, match="wider than your own"):
        core.delegation(mine, SITE1, {"sale.create"}, TENANT)
    with pytest.raises(Forbidden, match="wider than your own"):
        core.delegation(mine, SITE1, {"sale.create"}, core.reach("site", [S2], OUTLETS))


def _draft(
    hours: float = 8, start: datetime = NOW, reason: str = "covering leave"
) -> core.GrantDraft:
    return core.GrantDraft(O2, start, start + timedelta(hours=hours), reason)


def test_grant_accepted_and_reason_trimmed() -> None:
    assert core.grant(_draft(reason="  covering leave "), NOW, OUTLET1, S1).reason == (
        "covering leave"
    )
    assert core.grant(_draft(hours=31 * 24), NOW, OUTLET1, S1)
    # started in the past, still running
    assert core.grant(_draft(start=NOW - timedelta(hours=1)), NOW, OUTLET1, S1)


def test_grant_refusals() -> None:
    for draft, why in [
        (_draft(hours=0), "end after it starts"),
        (_draft(hours=-1), "end after it starts"),
        (_draft(hours=31 * 24 + 1), "at most 31 days"),
        (_draft(start=NOW - timedelta(days=2)), "end in the future"),
        (_draft(reason="  "), "needs a reason"),
        (core.GrantDraft(O2, NOW.replace(tzinfo=None), NOW.replace(tzinfo=None), "x"), "zone"),
    ]:
        with pytest.raises(Invalid, match=why):
            core.grant(draft, NOW, OUTLET1, S1)


def test_a_grant_of_an_outlet_already_in_scope_is_refused() -> None:
    with pytest.raises(Invalid, match="already in this operator's scope"):
        core.grant(replace(_draft(), outlet_id=O1), NOW, OUTLET1, S1)
    with pytest.raises(Invalid, match="already in this operator's scope"):
        core.grant(_draft(), NOW, SITE1, S1)
    with pytest.raises(Invalid, match="already in this operator's scope"):
        core.grant(_draft(), NOW, TENANT, S1)
    assert core.grant(replace(_draft(), outlet_id=O3), NOW, SITE1, S2)


_reaches = st.one_of(
    st.just(TENANT),
    st.sets(st.sampled_from([S1, S2]), min_size=1).map(lambda s: core.reach("site", s, OUTLETS)),
    st.sets(st.sampled_from([O1, O2, O3]), min_size=1).map(
        lambda o: core.reach("outlet", o, OUTLETS)
    ),
)


@given(_reaches, _reaches, _reaches)
def test_covers_is_a_preorder_with_the_tenant_on_top(
    a: core.Reach, b: core.Reach, c: core.Reach
) -> None:
    assert core.covers(a, a)
    assert core.covers(TENANT, a)
    if core.covers(a, b) and core.covers(b, c):
        assert core.covers(a, c)
    if a.sites is not None:
        assert not core.covers(a, TENANT)


@given(_reaches, _reaches)
def test_what_is_covered_lies_within_the_coverers_sites(a: core.Reach, b: core.Reach) -> None:
    if core.covers(a, b) and a.sites is not None:
        assert b.sites is not None and b.sites <= a.sites
