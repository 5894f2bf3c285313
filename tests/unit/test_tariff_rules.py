"""The rules of tariff management: valid plans, start dates, the margin rule, assignment."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.tariffs.core import Flat, Tariff, TariffVersion, plan_from_spec
from cloud.tariffs.rules import (
    SKEW,
    Ceiling,
    MarginExceeded,
    PointFacts,
    RuleError,
    TariffFacts,
    VersionDraft,
    accept_version,
    check_assignment,
    highest_price,
    margin_reason,
    start_of,
    valid_monthly_fee,
    valid_plan,
)

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
TIERED: dict[str, Any] = {
    "cycle": "month",
    "blocks": [
        {"up_to": "200", "price": "0.5600"},
        {"up_to": "400", "price": "0.6100"},
        {"up_to": None, "price": "0.8600"},
    ],
}
TOU: dict[str, Any] = {
    "prices": {"peak": "1.1000", "flat": "0.7000", "valley": "0.3000"},
    "windows": [
        {"start": "00:00", "period": "valley"},
        {"start": "08:00", "period": "peak"},
        {"start": "12:00", "period": "flat"},
        {"start": "18:00", "period": "peak"},
        {"start": "22:00", "period": "valley"},
    ],
}
CEILING = Ceiling("Riverside", Decimal("1.0000"), Decimal("0.15"))


@pytest.mark.parametrize(
    ("utility", "kind", "spec"),
    [
        ("electricity", "flat", {"unit_price": "1.2345"}),
        ("electricity", "tiered", TIERED),
        ("electricity", "tou", TOU),
        ("water", "flat", {"unit_price": "3.5"}),
        ("water", "tiered", {**TIERED, "cycle": "year"}),
    ],
)
def test_valid_plans_are_accepted(utility: str, kind: str, spec: dict[str, Any]) -> None:
    valid_plan(utility, kind, spec)


def _blocks(*blocks: tuple[str | None, str]) -> dict[str, Any]:
    return {"cycle": "month", "blocks": [{"up_to": u, "price": p} for u, p in blocks]}


@pytest.mark.parametrize(
    ("utility", "kind", "spec", "message"),
    [
        ("gas", "flat", {"unit_price": "1"}, "utility must be"),
        ("electricity", "flat", {"unit_price": "0"}, "unit_price must be above zero"),
        ("electricity", "flat", {"unit_price": "-1"}, "non-negative"),
        ("electricity", "flat", {"unit_price": "1.23456"}, "more than 4 decimals"),
        ("electricity", "flat", {"unit_price": "abc"}, "not a number"),
        ("electricity", "flat", {"unit_price": "NaN"}, "non-negative"),
        ("electricity", "flat", {}, "not a number"),
        ("electricity", "bogus", {}, "unknown tariff kind"),
        ("water", "tou", TOU, "water is priced per m³"),
        ("electricity", "tiered", _blocks(("400", "0.5"), ("200", "0.6"), (None, "0.8")), "asc"),
        ("electricity", "tiered", _blocks(("200", "0.5"), ("400", "0.6")), "open-ended"),
        ("electricity", "tiered", _blocks(("200", "0.5"), ("200", "0.6"), (None, "1")), "asc"),
        ("electricity", "tiered", _blocks(("0", "0.5"), (None, "0.6")), "positive"),
        ("electricity", "tiered", _blocks(("200", "0"), (None, "0.6")), "block 1 price"),
        ("electricity", "tiered", _blocks(("1.2345", "1"), (None, "2")), "3 decimals"),
        (
            "electricity",
            "tiered",
            _blocks(*[(str(i), "1") for i in range(1, 11)], (None, "2")),
            "10",
        ),
        ("electricity", "tiered", {"blocks": []}, "cycle and blocks"),
        ("electricity", "tiered", {**TIERED, "cycle": "week"}, "cycle and blocks"),
        ("electricity", "tou", {**TOU, "windows": TOU["windows"][1:]}, "starts at 00:00"),
        (
            "electricity",
            "tou",
            {**TOU, "windows": [TOU["windows"][0], TOU["windows"][2], TOU["windows"][1]]},
            "ascending",
        ),
        ("electricity", "tou", {**TOU, "prices": {"peak": "1", "flat": "0.7"}}, "without a price"),
        (
            "electricity",
            "tou",
            {**TOU, "prices": {**TOU["prices"], "sharp": "2"}},
            "no window uses",
        ),
        ("electricity", "tou", {**TOU, "prices": {**TOU["prices"], "flat": "0"}}, "flat price"),
        (
            "electricity",
            "tou",
            {**TOU, "windows": [TOU["windows"][0], {"start": "08:00:30", "period": "peak"}]},
            "whole minute",
        ),
        ("electricity", "tou", {**TOU, "windows": [{"start": "25:00", "period": "peak"}]}, "tou"),
        ("electricity", "tou", {**TOU, "prices": {"noon": "1"}}, "tou spec"),
    ],
)
def test_invalid_plans_are_refused_with_the_reason(
    utility: str, kind: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(RuleError, match=message):
        valid_plan(utility, kind, spec)


def test_highest_price_of_each_kind() -> None:
    assert highest_price(valid_plan("electricity", "flat", {"unit_price": "1.2"})) == Decimal("1.2")
    assert highest_price(valid_plan("electricity", "tiered", TIERED)) == Decimal("0.86")
    assert highest_price(valid_plan("electricity", "tou", TOU)) == Decimal("1.1")


@pytest.mark.parametrize("fee", ["0", "12.50", "100"])
def test_monthly_fee_accepted(fee: str) -> None:
    assert valid_monthly_fee(Decimal(fee)) == Decimal(fee)


@pytest.mark.parametrize(("fee", "message"), [("-1", "zero or more"), ("1.005", "2 decimals")])
def test_monthly_fee_refused(fee: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        valid_monthly_fee(Decimal(fee))


def test_monthly_fee_not_finite_refused() -> None:
    with pytest.raises(RuleError, match="zero or more"):
        valid_monthly_fee(Decimal("Infinity"))


def test_a_version_starts_now_or_later() -> None:
    assert start_of(None, NOW, ()) == NOW
    later = NOW + timedelta(days=30)
    assert start_of(later, NOW, ()) == later
    # within the clock skew: starts now, never before
    assert start_of(NOW - SKEW, NOW, ()) == NOW
    assert start_of(NOW - timedelta(seconds=5), NOW, ()) == NOW


def test_a_start_in_the_past_is_refused() -> None:
    with pytest.raises(RuleError, match="in the past"):
        start_of(NOW - SKEW - timedelta(microseconds=1), NOW, ())
    with pytest.raises(RuleError, match="in the past"):
        start_of(datetime(2020, 1, 1, tzinfo=UTC), NOW, ())


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(RuleError, match="time zone"):
        start_of(datetime(2027, 1, 1), NOW, ())


def test_two_versions_never_share_a_start() -> None:
    later = NOW + timedelta(days=1)
    with pytest.raises(RuleError, match="already has a version"):
        start_of(later, NOW, (later,))
    with pytest.raises(RuleError, match="already has a version"):
        start_of(NOW - timedelta(seconds=1), NOW, (NOW,))  # clamped to now, which is taken


def test_margin_within_the_ceiling_needs_no_reason() -> None:
    assert margin_reason("electricity", Decimal("1.15"), [CEILING], None) is None
    # a reason given where none is needed is not kept
    assert margin_reason("electricity", Decimal("1.10"), [CEILING], "because") is None
    assert margin_reason("electricity", Decimal("9"), [], None) is None


def test_margin_above_the_ceiling_is_refused_without_a_reason() -> None:
    for reason in (None, "", "   "):
        with pytest.raises(MarginExceeded) as err:
            margin_reason("electricity", Decimal("1.1501"), [CEILING], reason)
        text = str(err.value)
        assert "1.1501" in text and "1.1500" in text and "15% margin" in text
        assert "reason" in text and "Riverside" in text


def test_margin_above_the_ceiling_is_accepted_with_a_reason() -> None:
    assert margin_reason("electricity", Decimal("2"), [CEILING], " transformer losses ") == (
        "transformer losses"
    )


def test_margin_rule_is_for_electricity_only() -> None:
    assert margin_reason("water", Decimal("9"), [CEILING], None) is None


def test_margin_names_the_lowest_ceiling_exceeded() -> None:
    low = Ceiling("Harbour", Decimal("0.8000"), Decimal("0.10"))
    with pytest.raises(MarginExceeded, match="Harbour"):
        margin_reason("electricity", Decimal("1.2"), [CEILING, low], None)


def test_accept_version_checks_the_highest_price_of_any_plan() -> None:
    tou = {**TOU, "prices": {**TOU["prices"], "peak": "1.5000"}}
    draft = VersionDraft("tou", tou, Decimal("10.00"), NOW + timedelta(days=1))
    with pytest.raises(MarginExceeded, match=r"1\.5000"):
        accept_version("electricity", draft, NOW, (), [CEILING])
    ok = accept_version(
        "electricity",
        VersionDraft("tou", tou, Decimal("10.00"), NOW + timedelta(days=1), "agreed by tenants"),
        NOW,
        (),
        [CEILING],
    )
    assert ok.margin_reason == "agreed by tenants" and ok.highest_price == Decimal("1.5")
    assert ok.kind == "tou" and ok.unit_price is None and ok.monthly_fee == Decimal("10.00")
    assert ok.spec["prices"]["peak"] == "1.5000"


def test_accept_flat_version_keeps_its_unit_price() -> None:
    ok = accept_version(
        "electricity", VersionDraft("flat", {"unit_price": "1.1"}), NOW, (), [CEILING]
    )
    assert ok.unit_price == Decimal("1.1") and ok.effective_from == NOW
    assert ok.spec == {"unit_price": "1.1"} and ok.margin_reason is None


SITE = uuid.uuid4()


def _tariff(**kw: Any) -> TariffFacts:
    values: dict[str, Any] = {
        "name": "Shops",
        "utility": "electricity",
        "site_id": SITE,
        "active": True,
        "starts": (NOW - timedelta(days=1),),
    }
    return TariffFacts(**{**values, **kw})


def _point(**kw: Any) -> PointFacts:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": "Shop 1",
        "utility": "electricity",
        "site_id": SITE,
        "removed": False,
    }
    return PointFacts(**{**values, **kw})


def test_assignment_accepted() -> None:
    check_assignment(_tariff(), [_point(), _point(name="Shop 2")], NOW)
    check_assignment(_tariff(site_id=None), [_point(site_id=uuid.uuid4())], NOW)
    check_assignment(_tariff(starts=(NOW,)), [_point()], NOW)


@pytest.mark.parametrize(
    ("tariff", "points", "message"),
    [
        (_tariff(), [], "no service points"),
        (_tariff(active=False), [_point()], "not active"),
        (_tariff(starts=(NOW + timedelta(seconds=1),)), [_point()], "no version in force"),
        (_tariff(starts=()), [_point()], "no version in force"),
        (_tariff(), [_point(), _point(name="Tap", utility="water")], "Tap is water"),
        (_tariff(), [_point(removed=True)], "is removed"),
        (_tariff(), [_point(site_id=uuid.uuid4())], "another site"),
    ],
)
def test_assignment_refused(tariff: TariffFacts, points: list[PointFacts], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        check_assignment(tariff, points, NOW)


def test_readings_before_a_tariffs_first_version_are_priced_at_it() -> None:
    # a point moved to a new tariff still sends a reading taken before its first version
    first = TariffVersion(NOW, Flat(Decimal("1.1")))
    second = TariffVersion(NOW + timedelta(days=30), Flat(Decimal("1.3")))
    tariff = Tariff((first, second))
    assert tariff.at(NOW - timedelta(hours=1)) is first
    assert tariff.at(NOW) is first
    assert tariff.for_interval(NOW + timedelta(days=30)) is first
    assert tariff.at(NOW + timedelta(days=30)) is second


prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("20"), places=4)


@given(
    price=prices,
    catalogue=prices,
    margin=st.decimals(min_value=Decimal(0), max_value=Decimal("0.5"), places=4),
    reason=st.one_of(st.none(), st.just(""), st.just("agreed")),
)
def test_margin_rule_property(
    price: Decimal, catalogue: Decimal, margin: Decimal, reason: str | None
) -> None:
    """A flat price is accepted exactly when it is within the ceiling or acknowledged, and
    the reason is kept exactly when it was needed."""
    ceiling = Ceiling("S", catalogue, margin)
    draft = VersionDraft("flat", {"unit_price": str(price)}, margin_reason=reason)
    above = price > catalogue * (1 + margin)
    if above and not reason:
        with pytest.raises(MarginExceeded):
            accept_version("electricity", draft, NOW, (), [ceiling])
        return
    ok = accept_version("electricity", draft, NOW, (), [ceiling])
    assert ok.margin_reason == (reason if above else None)
    assert plan_from_spec(ok.kind, ok.spec, None) == Flat(price)


@given(
    bounds=st.lists(st.integers(min_value=1, max_value=10_000), min_size=0, max_size=9),
    block_prices=st.lists(prices, min_size=10, max_size=10),
)
def test_tiered_plans_round_trip_and_bounds_must_strictly_ascend(
    bounds: list[int], block_prices: list[Decimal]
) -> None:
    blocks = [
        {"up_to": str(b), "price": str(p)}
        for b, p in zip(bounds, block_prices[: len(bounds)], strict=True)
    ]
    blocks.append({"up_to": None, "price": str(block_prices[-1])})
    spec = {"cycle": "month", "blocks": blocks}
    if bounds != sorted(set(bounds)):
        with pytest.raises(RuleError):
            valid_plan("water", "tiered", spec)
        return
    ok = accept_version("water", VersionDraft("tiered", spec), NOW, (), [])
    assert plan_from_spec(ok.kind, ok.spec, None) == valid_plan("water", "tiered", spec)
    assert ok.highest_price == max(Decimal(b["price"]) for b in blocks)
