"""Legacy import rules: every refusal names the row, the column and the reason (zh, en)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from cloud.registry.import_core import (
    COLUMNS,
    Facts,
    GatewayFact,
    Plan,
    ProfileFact,
    TariffFact,
    header_keys,
    validate,
)

SITE, OTHER_SITE = uuid.uuid4(), uuid.uuid4()
GW, GW2 = uuid.uuid4(), uuid.uuid4()
ELEC, WATER, OTHER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
FACTS = Facts(
    accounts=frozenset({"000001"}),
    tariffs={
        "Commercial flat": (TariffFact(ELEC, "electricity", None),),
        "Water": (TariffFact(WATER, "water", SITE),),
        "Elsewhere": (TariffFact(OTHER, "electricity", OTHER_SITE),),
        "Twice": (
            TariffFact(uuid.uuid4(), "electricity", None),
            TariffFact(uuid.uuid4(), "electricity", SITE),
        ),
    },
    gateways={"gw-1": GatewayFact(GW, SITE), "gw-2": GatewayFact(GW2, SITE)},
    profiles={
        "acrel-ddsy1352-modbus": ProfileFact("electricity", "modbus", 1),
        "acrel-adf300l-4s": ProfileFact("electricity", "modbus", 4),
        "dlt645-2007-prepaid": ProfileFact("electricity", "dlt645", 1),
        "cjt188-valve-water": ProfileFact("water", "cjt188", 1),
    },
    device_keys=frozenset({(GW, "taken")}),
    device_addresses=frozenset({(GW, "bus1", "200")}),
)
HEADER = [c.header for c in COLUMNS]
KEYS = [c.key for c in COLUMNS]


def row(**over: str) -> list[str]:
    base = {c.key: c.example for c in COLUMNS} | {"gateway_code": "gw-1"}
    base |= over
    return [base[k] for k in KEYS]


def run(*rows: list[str], header: list[str] | None = None) -> Plan:
    return validate(header or HEADER, rows, FACTS)


def only_refusal(plan: Plan) -> tuple[int, str, str, str]:
    assert len(plan.refusals) == 1, plan.refusals
    r = plan.refusals[0]
    return r.row, r.column, r.zh, r.en


def test_the_template_example_is_accepted() -> None:
    plan = run(row())
    assert plan.ok and plan.rows == 1
    (account,) = plan.accounts.values()
    assert account.number == "000012" and account.opening_balance == Decimal("50.00")
    (point,) = plan.points
    assert point.tariff_id == ELEC and point.site_id == SITE and point.row == 2
    assert point.install_register == Decimal("1234.500")
    (device,) = plan.devices.values()
    assert (device.key, device.address, device.serial) == ("bus1-1", "1", None)
    (premises,) = plan.premises.values()
    assert (premises.kind, premises.floor_area) == ("shop", Decimal("35.50"))


def test_headers_by_key_by_label_or_both() -> None:
    keys, refusals = header_keys(["客户名称", "account_number", " 楼栋 building "])
    assert keys == ["customer_name", "account_number", "building"]
    assert {r.column for r in refusals} >= {"floor", "utility", "gateway_code"}
    assert all(r.row == 1 for r in refusals)


def test_unknown_and_repeated_columns_are_refused_in_row_1() -> None:
    plan = run(row(), header=[*HEADER, "备注 remarks", "户号"])
    refused = [(r.row, r.column) for r in plan.refusals]
    assert refused == [(1, "备注 remarks"), (1, "account_number")]
    assert not plan.points


def test_a_shop_with_electricity_and_water_shares_one_account() -> None:
    plan = run(
        row(opening_balance="30.00"),
        row(
            utility="水",
            tariff="Water",
            meter_profile="cjt188-valve-water",
            address="12345678901234",
            opening_balance="-5.50",
        ),
    )
    assert plan.ok, plan.refusals
    assert len(plan.customers) == 1 and len(plan.premises) == 1 and len(plan.points) == 2
    assert plan.accounts["000012"].opening_balance == Decimal("24.50")
    assert [p.utility for p in plan.points] == ["electricity", "water"]


def test_one_customer_with_two_accounts() -> None:
    plan = run(row(), row(account_number="000013", premises_number="A-102", address="2"))
    assert plan.ok and len(plan.customers) == 1 and len(plan.accounts) == 2


def test_channels_of_one_multi_channel_meter() -> None:
    plan = run(
        row(meter_profile="acrel-adf300l-4s", channel="1"),
        row(meter_profile="acrel-adf300l-4s", channel="2", account_number="2", premises_number="2"),
    )
    assert plan.ok and len(plan.devices) == 1 and [p.channel for p in plan.points] == [1, 2]
    again = run(
        row(meter_profile="acrel-adf300l-4s", channel="3"),
        row(meter_profile="acrel-adf300l-4s", channel="3", account_number="2", premises_number="2"),
    )
    assert only_refusal(again)[:2] == (3, "channel")
    assert "row 2" in again.refusals[0].en


@pytest.mark.parametrize(
    ("over", "column", "en"),
    [
        ({"opening_balance": "10.125"}, "opening_balance", "more than 2 decimals"),
        ({"opening_balance": "ten"}, "opening_balance", "is not a number"),
        ({"opening_balance": "NaN"}, "opening_balance", "is not a number"),
        ({"opening_balance": "1e20"}, "opening_balance", "out of range"),
        ({"account_number": "000001"}, "account_number", "already exists"),
        ({"account_number": "1" * 21}, "account_number", "longer than 20"),
        ({"customer_name": ""}, "customer_name", "is required"),
        ({"customer_name": "a\x00b"}, "customer_name", "control character"),
        ({"premises_kind": "castle"}, "premises_kind", "shop, flat, office or unit"),
        ({"floor_area": "0"}, "floor_area", "above zero"),
        ({"floor_area": "-3"}, "floor_area", "must not be negative"),
        ({"utility": "gas"}, "utility", "electricity or water"),
        ({"meter_profile": "no-such-meter"}, "meter_profile", "unknown meter profile"),
        ({"meter_profile": "cjt188-valve-water"}, "meter_profile", "water meter"),
        ({"gateway_code": "gw-other-group"}, "gateway_code", "not found"),
        ({"tariff": "Nope"}, "tariff", "does not exist"),
        ({"tariff": "Water"}, "tariff", "not a electricity tariff"),
        ({"tariff": "Elsewhere"}, "tariff", "gateway's site"),
        ({"tariff": "Twice"}, "tariff", "several tariffs"),
        ({"bus": "总线1"}, "bus", "letters, digits"),
        ({"address": "300"}, "address", "1 to 247"),
        ({"address": "x"}, "address", "1 to 247"),
        ({"address": "200"}, "address", "already registered"),
        ({"meter_number": "taken"}, "address", "already registered"),
        ({"meter_number": "表1"}, "meter_number", "letters, digits"),
        ({"meter_profile": "dlt645-2007-prepaid", "address": "12"}, "address", "12 digits"),
        ({"channel": "2"}, "channel", "from 1 to 1"),
        ({"channel": "0"}, "channel", "from 1 to 1"),
        ({"install_register": "1.0005"}, "install_register", "more than 3 decimals"),
        ({"install_register": "-1"}, "install_register", "must not be negative"),
    ],
)
def test_refusals_name_row_column_and_reason(over: dict[str, str], column: str, en: str) -> None:
    plan = run(row(account_number="000010", address="9"), row(**over))
    n, col, zh, message = only_refusal(plan)
    assert (n, col) == (3, column)
    assert en in message
    assert zh and any("\u4e00" <= ch <= "\u9fff" for ch in zh)


def test_a_balance_with_trailing_zeros_is_two_decimals() -> None:
    plan = run(row(opening_balance="12.500"), row(opening_balance="-0.10", address="2"))
    assert plan.ok
    assert plan.accounts["000012"].opening_balance == Decimal("12.40")


def test_a_row_of_an_account_must_name_the_same_customer() -> None:
    plan = run(row(), row(customer_name="李四", id_number="", address="2"))
    assert only_refusal(plan)[:2] == (3, "customer_name")
    assert "row 2" in plan.refusals[0].en


def test_an_id_number_belongs_to_one_customer() -> None:
    plan = run(
        row(id_number="X1"),
        row(id_number="X1", customer_name="李四", account_number="9", address="2"),
    )
    assert only_refusal(plan)[:2] == (3, "id_number")


def test_a_premises_in_two_rows_must_agree() -> None:
    plan = run(row(), row(floor="2", account_number="9", address="2"))
    assert only_refusal(plan)[:2] == (3, "premises_number")


def test_one_meter_number_is_one_meter() -> None:
    plan = run(row(meter_number="M1"), row(meter_number="M1", address="2", account_number="9"))
    assert only_refusal(plan)[:2] == (3, "meter_number")
    plan = run(row(), row(address="1", meter_number="M2", account_number="9"))
    assert only_refusal(plan)[:2] == (3, "meter_number")


def test_a_meter_in_two_rows_has_one_profile() -> None:
    plan = run(
        row(meter_profile="acrel-adf300l-4s"),
        row(account_number="9", channel="1"),
    )
    assert only_refusal(plan)[:2] == (3, "meter_profile")


def test_every_bad_row_is_reported_and_blank_rows_are_skipped() -> None:
    rows = [row(account_number=str(i), address=str(i)) for i in range(1, 200)]
    rows[5] = row(account_number="6", address="6", opening_balance="1.001")
    rows[50] = [""] * len(KEYS)
    rows[120] = row(account_number="121", address="121", utility="steam")
    plan = run(*rows)
    assert [(r.row, r.column) for r in plan.refusals] == [
        (7, "opening_balance"),
        (122, "utility"),
    ]
    assert plan.rows == 198 and plan.refused_rows == 2


def test_a_short_row_is_refused_on_its_missing_cells() -> None:
    plan = run(row()[:4])
    assert only_refusal(plan)[:2] == (2, "building")


def test_a_file_without_data_is_refused() -> None:
    assert only_refusal(run())[:2] == (2, "")


def test_aliases_of_kinds_and_utilities() -> None:
    plan = run(row(premises_kind="住宅", utility="电表"))
    assert plan.ok and next(iter(plan.premises.values())).kind == "flat"


def test_dlt645_addresses_are_kept_upper_case() -> None:
    plan = run(row(meter_profile="dlt645-2007-prepaid", address="0000000000ab"))
    assert plan.ok and next(iter(plan.devices.values())).address == "0000000000AB"


def test_the_committed_templates_are_the_generated_ones_and_their_example_passes() -> None:
    from cloud.registry import import_template
    from cloud.registry.importer import read_table

    here = import_template.HERE
    assert (here / "import_template.csv").read_bytes() == import_template.csv_bytes()
    facts = Facts(
        accounts=frozenset(),
        tariffs={"Commercial flat": (TariffFact(ELEC, "electricity", None),)},
        gateways={"gw-demo-1": GatewayFact(GW, SITE)},
        profiles=FACTS.profiles,
    )
    for name in ("import_template.csv", "import_template.xlsx"):
        table = read_table(name, (here / name).read_bytes())
        assert table[0] == HEADER
        assert table == read_table(name, getattr(import_template, name[16:] + "_bytes")())
        plan = validate(table[0], table[1:], facts)
        assert plan.ok and plan.rows == 1, plan.refusals
        assert next(iter(plan.accounts)) == "000012"  # a text cell keeps its zeros


def test_spreadsheet_numbers_read_as_typed() -> None:
    import io

    from openpyxl import Workbook

    from cloud.registry.importer import read_table

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["期初余额", "户号", "装表读数"])
    sheet.append([12.5, 1001, 0.1 + 0.2])
    buf = io.BytesIO()
    book.save(buf)
    assert read_table("a.xlsx", buf.getvalue())[1] == ["12.5", "1001", "0.3"]
