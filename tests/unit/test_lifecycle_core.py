"""Lifecycle rules: every refusal, and what each accepted step decides."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cloud.errors import Conflict, Forbidden, Invalid
from cloud.lifecycle import core
from cloud.lifecycle.core import (
    AccountState,
    LifecycleConflict,
    LifecycleInvalid,
    LivePoint,
    Money,
    PointState,
    PointWish,
    Reading,
    Settlement,
)

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
OPEN = AccountState("A000001", "active", Decimal("20.00"))
CLOSED = AccountState("A000009", "closed", Decimal("0.00"))
OTHER = AccountState("A000002", "active", Decimal("5.00"))


def point(**kw: object) -> PointState:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "name": "A-1-101 electricity",
        "utility": "electricity",
        "account": OPEN,
        "metered": True,
        "removed": False,
        "in_flight": 0,
        "last": Reading(T0, Decimal("100.00")),
    }
    values.update(kw)
    return PointState(**values)  # type: ignore[arg-type]


def test_refusals_are_conflicts_or_invalid() -> None:
    assert issubclass(LifecycleConflict, Conflict) and LifecycleConflict.status == 409
    assert issubclass(LifecycleInvalid, Invalid) and LifecycleInvalid.status == 422


# -- open -------------------------------------------------------------------------------------


def test_open_two_utilities_at_a_free_premises() -> None:
    core.check_open([PointWish("electricity"), PointWish("water", "meter")], [])


def test_open_where_the_previous_account_is_closed() -> None:
    core.check_open([PointWish("electricity")], [LivePoint("electricity", CLOSED)])


def test_open_a_premises_point_already_open_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="already open on account A000001"):
        core.check_open([PointWish("electricity")], [LivePoint("electricity", OPEN)])


def test_open_other_utility_at_a_premises_with_an_open_point() -> None:
    core.check_open([PointWish("water")], [LivePoint("electricity", OPEN)])


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ([], "at least one"),
        ([PointWish("gas")], "unknown utility"),
        ([PointWish("electricity", "prepay")], "unknown control mode"),
        ([PointWish("water"), PointWish("water")], "two water points"),
    ],
)
def test_open_bad_points_are_refused(wanted: list[PointWish], message: str) -> None:
    with pytest.raises(LifecycleInvalid, match=message):
        core.check_open(wanted, [])


# -- install ----------------------------------------------------------------------------------


def test_install_returns_the_register() -> None:
    p = point(metered=False, last=None)
    assert core.check_install(p, None, Decimal("5"), Reading(T0, Decimal("5"))) == Decimal("5")


def test_install_on_a_point_that_has_a_meter_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="already has a meter"):
        core.check_install(point(), None, Decimal("5"), None)


def test_install_a_channel_bound_elsewhere_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="already bound"):
        core.check_install(point(metered=False), uuid.uuid4(), Decimal("5"), None)


def test_install_below_the_last_known_reading_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match=r"below the meter's last reading 12\.5"):
        core.check_install(point(metered=False), None, Decimal("12"), Reading(T0, Decimal("12.5")))


def test_install_read_without_any_reading_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="no reading of this meter"):
        core.check_install(point(metered=False), None, None, None)


@pytest.mark.parametrize("register", [Decimal("-1"), Decimal("NaN"), Decimal("Infinity")])
def test_install_a_bad_register_is_refused(register: Decimal) -> None:
    with pytest.raises(LifecycleInvalid, match="at least 0"):
        core.check_install(point(metered=False), None, register, None)


def test_install_on_a_removed_point_or_closed_account_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="is removed"):
        core.check_install(point(metered=False, removed=True), None, Decimal(1), None)
    with pytest.raises(LifecycleConflict, match="account A000009 is closed"):
        core.check_install(point(metered=False, account=CLOSED), None, Decimal(1), None)


# -- swap -------------------------------------------------------------------------------------


def test_swap_accepted() -> None:
    core.check_swap(point(), None, Decimal("100.00"), Decimal("0"))


def test_swap_a_point_with_no_meter_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="no meter to swap"):
        core.check_swap(point(metered=False), None, Decimal(100), Decimal(0))


def test_swap_with_a_command_in_flight_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="in flight"):
        core.check_swap(point(in_flight=1), None, Decimal(100), Decimal(0))


def test_swap_to_a_bound_channel_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="already bound"):
        core.check_swap(point(), uuid.uuid4(), Decimal(100), Decimal(0))


def test_swap_final_below_last_reading_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="below the last reading"):
        core.check_swap(point(), None, Decimal("99.99"), Decimal(0))


def test_swap_on_a_closed_account_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="closed"):
        core.check_swap(point(account=CLOSED), None, Decimal(100), Decimal(0))


# -- remove -----------------------------------------------------------------------------------


def test_remove_with_a_typed_final_reading() -> None:
    later = T0 + timedelta(hours=1)
    assert core.check_remove(point(), Decimal("101"), later) == Reading(later, Decimal("101"))


def test_remove_with_the_newest_reading_as_final() -> None:
    assert core.check_remove(point(), None, T0 + timedelta(hours=1)) is None
    assert core.check_remove(point(), Decimal("100.00"), T0) is None  # the same reading


def test_remove_a_point_with_no_meter_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="no meter to remove"):
        core.check_remove(point(metered=False), None, T0)


def test_remove_with_a_command_in_flight_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="2 command"):
        core.check_remove(point(in_flight=2), None, T0)


def test_remove_final_below_last_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="below the last reading"):
        core.check_remove(point(), Decimal("99"), T0 + timedelta(hours=1))


def test_remove_final_when_a_newer_reading_arrived_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="newer than now"):
        core.check_remove(point(), Decimal("105"), T0 - timedelta(minutes=1))


# -- settle (cancel, transfer) ----------------------------------------------------------------


def settle(account: AccountState = OPEN, **kw: object) -> Money:
    args: dict[str, object] = {
        "how": None,
        "target": None,
        "refund_amount": None,
        "write_off": False,
        "may_write_off": False,
        "reason": None,
    }
    args.update(kw)
    return core.settle(account, **args)  # type: ignore[arg-type]


def test_refund_the_whole_balance() -> None:
    assert settle(how=Settlement.REFUND) == Money(refund=Decimal("20.00"))
    assert settle(how=Settlement.REFUND, refund_amount=Decimal("20.00")).refund == Decimal("20")


def test_refunding_more_than_the_balance_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="more than the balance"):
        settle(how=Settlement.REFUND, refund_amount=Decimal("20.01"))


def test_refunding_less_than_the_balance_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match=r"would leave 5\.00"):
        settle(how=Settlement.REFUND, refund_amount=Decimal("15.00"))


def test_refund_in_fractions_of_a_fen_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="yuan and fen"):
        settle(how=Settlement.REFUND, refund_amount=Decimal("1.001"))


def test_move_the_balance() -> None:
    assert settle(how=Settlement.MOVE, target=OTHER) == Money(moved=Decimal("20.00"))


def test_move_to_itself_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="to itself"):
        settle(how=Settlement.MOVE, target=OPEN)


def test_move_to_a_closed_account_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="A000009 is closed"):
        settle(how=Settlement.MOVE, target=CLOSED)


def test_move_without_a_target_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="needs the account"):
        settle(how=Settlement.MOVE)


def test_a_credit_needs_a_choice() -> None:
    with pytest.raises(LifecycleInvalid, match="refund it or move it"):
        settle()


def test_zero_balance_needs_nothing() -> None:
    assert settle(AccountState("A1", "active", Decimal("0.00"))) == Money()


DEBT = AccountState("A000003", "active", Decimal("-7.50"))


def test_closing_in_debt_without_write_off_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match=r"owes 7\.50"):
        settle(DEBT, how=Settlement.REFUND)


def test_write_off_needs_its_permission() -> None:
    with pytest.raises(Forbidden, match=r"account\.write_off"):
        settle(DEBT, write_off=True, reason="tenant left the country")


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_write_off_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(LifecycleInvalid, match="needs a reason"):
        settle(DEBT, write_off=True, may_write_off=True, reason=reason)


def test_write_off_the_debt() -> None:
    money = settle(DEBT, write_off=True, may_write_off=True, reason="uncollectable")
    assert money == Money(written_off=Decimal("7.50"))


def test_write_off_without_debt_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="not in debt"):
        settle(write_off=True, may_write_off=True, reason="why not")


def test_settling_a_closed_account_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="closed"):
        settle(CLOSED, how=Settlement.REFUND)


# -- cancel, transfer -------------------------------------------------------------------------


def test_cancel_with_a_command_in_flight_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="in flight"):
        core.check_cancel([point(), point(in_flight=1)])
    core.check_cancel([point(), point(in_flight=1, removed=True)])  # a removed point: done


def test_transfer_accepted() -> None:
    core.check_transfer(OPEN, [point()], same_customer=False)


def test_transfer_with_a_command_in_flight_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="in flight"):
        core.check_transfer(OPEN, [point(in_flight=1)], same_customer=False)


def test_transfer_to_the_same_customer_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="another customer"):
        core.check_transfer(OPEN, [point()], same_customer=True)


def test_transfer_without_points_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="no service point"):
        core.check_transfer(OPEN, [point(removed=True)], same_customer=False)


def test_transfer_of_a_closed_account_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="closed"):
        core.check_transfer(CLOSED, [point()], same_customer=False)


def test_installable_checks_the_point_before_the_device() -> None:
    core.check_installable(point(metered=False))
    with pytest.raises(LifecycleConflict, match="already has a meter"):
        core.check_installable(point())
    with pytest.raises(LifecycleConflict, match="is removed"):
        core.check_installable(point(metered=False, removed=True))


# -- 开户's first sale (issue 14) -------------------------------------------------------------


def test_first_sale_accepted() -> None:
    core.check_first_sale(Decimal("50.00"), "cash", ["cloud", "cloud"])
    core.check_first_sale(Decimal("0.01"), "transfer", ["cloud"])


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (Decimal("0"), "must be more than 0"),
        (Decimal("-5.00"), "must be more than 0"),
        (Decimal("1.005"), "yuan and fen"),
        (Decimal("NaN"), "yuan and fen"),
    ],
)
def test_first_sale_of_a_bad_amount_is_refused(amount: Decimal, message: str) -> None:
    with pytest.raises(LifecycleInvalid, match=message):
        core.check_first_sale(amount, "cash", ["cloud"])


def test_first_sale_by_an_unknown_method_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="not one of cash, card, transfer"):
        core.check_first_sale(Decimal("5.00"), "wechat", ["cloud"])


def test_first_sale_to_a_meter_controlled_point_before_its_meter_is_refused() -> None:
    with pytest.raises(LifecycleInvalid, match="after its meter is installed"):
        core.check_first_sale(Decimal("5.00"), "cash", ["cloud", "meter"])


# -- 过户 in debt (issue 14) -------------------------------------------------------------------


@pytest.mark.parametrize("how", [Settlement.MOVE, Settlement.REFUND, None])
def test_a_transfer_never_moves_a_debt(how: Settlement | None) -> None:
    with pytest.raises(LifecycleConflict, match=r"owes 7\.50: a transfer never moves a debt"):
        settle(DEBT, how=how, target=OTHER, transfer=True, may_write_off=True)


def test_a_transfer_in_debt_writes_it_off_with_permission_and_reason() -> None:
    with pytest.raises(Forbidden, match=r"account\.write_off"):
        settle(DEBT, how=Settlement.MOVE, target=OTHER, transfer=True, write_off=True, reason="x")
    money = settle(
        DEBT,
        how=Settlement.MOVE,
        target=OTHER,
        transfer=True,
        write_off=True,
        may_write_off=True,
        reason="left owing, unreachable",
    )
    assert money == Money(written_off=Decimal("7.50"))  # nothing moved to the new account


# -- the credit on a meter-controlled meter (issue 14) ----------------------------------------


def credit(**kw: object) -> core.MeterCredit:
    values: dict[str, object] = {
        "point": "A-1-101 electricity",
        "balance": Decimal("0.00"),
        "read_at": T0,
        "recharged_at": T0 - timedelta(days=1),
    }
    values.update(kw)
    return core.MeterCredit(**values)  # type: ignore[arg-type]


def test_a_meter_read_back_empty_since_its_last_recharge_may_close() -> None:
    core.check_meter_credit([])
    core.check_meter_credit([credit(), credit(balance=Decimal("-1.20"), recharged_at=None)])


def test_a_meter_still_holding_credit_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match=r"still holds 12\.30 of credit: deduct it"):
        core.check_meter_credit([credit(), credit(balance=Decimal("12.30"))])


def test_a_meter_not_read_back_since_its_last_recharge_is_refused() -> None:
    with pytest.raises(LifecycleConflict, match="since its last recharge"):
        core.check_meter_credit([credit(recharged_at=T0 + timedelta(seconds=1))])


@pytest.mark.parametrize("kw", [{"balance": None}, {"read_at": None}])
def test_a_meter_that_never_reported_its_credit_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(LifecycleConflict, match="has not reported the credit it holds"):
        core.check_meter_credit([credit(**kw)])


# -- control orders on points that move in 过户 (issue 14) -------------------------------------


def test_no_orders_or_expired_ones_let_a_transfer_go() -> None:
    core.check_no_orders([], T0)
    core.check_no_orders(
        [
            core.ControlOrder("p", "keep_power", "admin", T0),  # ended at T0
            core.ControlOrder("p", "override", "admin", T0 - timedelta(hours=1)),
        ],
        T0,
    )


@pytest.mark.parametrize(
    ("kind", "until", "what"),
    [
        ("keep_power", None, "keep-power"),
        ("keep_power", T0 + timedelta(seconds=1), "keep-power"),
        ("override", None, "a manual override"),
    ],
)
def test_an_order_in_force_refuses_the_transfer(
    kind: str, until: datetime | None, what: str
) -> None:
    with pytest.raises(LifecycleConflict, match=f"A-1-101 电 is under {what} set by admin"):
        core.check_no_orders([core.ControlOrder("A-1-101 电", kind, "admin", until)], T0)
