"""Legacy import rules (DESIGN §12 onboarding): one spreadsheet row is a customer, an
account (the legacy number kept), a premises, a service point with its meter (profile,
gateway, bus, address, channel, installation register) and an opening balance.

Pure: the tenant's facts (accounts, tariffs, gateways, devices, meter profiles) come in as
plain values, rows as lists of text. Every refusal names the row as the spreadsheet shows
it (the header is row 1), the column and the reason, in Chinese and in English.

Several rows may share one account (a shop's electricity and water: its opening balance is
the sum of its rows') or one customer (the same ID number, or the same name and phone)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

MAX_ROWS = 50_000


@dataclass(frozen=True)
class Column:
    key: str
    zh: str
    required: bool
    example: str

    @property
    def header(self) -> str:
        """The template's header cell: Chinese label, then the English key."""
        return f"{self.zh} {self.key}"


COLUMNS: tuple[Column, ...] = (
    Column("customer_name", "客户名称", True, "张三"),
    Column("phone", "联系电话", False, "13800138000"),
    Column("id_number", "证件号码", False, ""),
    Column("account_number", "户号", True, "000012"),
    Column("building", "楼栋", True, "A栋"),
    Column("floor", "楼层", True, "1"),
    Column("premises_number", "房号", True, "A-101"),
    Column("premises_kind", "房屋类型", False, "shop"),
    Column("floor_area", "建筑面积", False, "35.50"),
    Column("utility", "能源类型", True, "electricity"),
    Column("tariff", "电价方案", True, "Commercial flat"),
    Column("meter_profile", "表型号", True, "acrel-ddsy1352-modbus"),
    Column("gateway_code", "网关编号", True, "gw-demo-1"),
    Column("bus", "总线", True, "bus1"),
    Column("address", "表地址", True, "1"),
    Column("channel", "通道", False, "1"),
    Column("meter_number", "表号", False, ""),
    Column("install_register", "装表读数", False, "1234.50"),
    Column("opening_balance", "期初余额", False, "50.00"),
)
_BY_KEY = {c.key: c for c in COLUMNS}

UTILITIES = {"electricity": "electricity", "电": "electricity", "电表": "electricity"}
UTILITIES |= {"water": "water", "水": "water", "水表": "water"}
KINDS = {"shop": "shop", "flat": "flat", "office": "office", "unit": "unit"}
KINDS |= {"商铺": "shop", "住宅": "flat", "办公": "office", "单元": "unit"}
_UTILITY_ZH = {"electricity": "电", "water": "水"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_HEX = re.compile(r"^[0-9A-Fa-f]+\Z")
_MAX_LEN = {
    "customer_name": 100,
    "phone": 32,
    "id_number": 32,
    "account_number": 20,
    "building": 64,
    "floor": 16,
    "premises_number": 32,
    "tariff": 100,
    "meter_profile": 64,
    "gateway_code": 64,
    "meter_number": 64,
}
_MONEY_LIMIT = Decimal("1000000000000")  # NUMERIC(14, 2)
_AREA_LIMIT = Decimal("10000000000")  # NUMERIC(12, 2)
_REGISTER_LIMIT = Decimal("10000000000000")  # NUMERIC(16, 3)
_MILLI = Decimal("0.001")


@dataclass(frozen=True)
class Refusal:
    row: int  # as the spreadsheet shows it: the header is row 1
    column: str  # the column's key ("" for the whole row)
    zh: str
    en: str

    def as_dict(self) -> dict[str, object]:
        return {"row": self.row, "column": self.column, "zh": self.zh, "en": self.en}


@dataclass(frozen=True)
class TariffFact:
    id: uuid.UUID
    utility: str
    site_id: uuid.UUID | None  # None: the tariff applies at every site


@dataclass(frozen=True)
class GatewayFact:
    id: uuid.UUID
    site_id: uuid.UUID


@dataclass(frozen=True)
class ProfileFact:
    utility: str
    protocol: str  # modbus | dlt645 | cjt188
    channels: int


@dataclass(frozen=True)
class Facts:
    """What the tenant already holds, as the importer sees it."""

    accounts: frozenset[str]  # account numbers taken
    tariffs: Mapping[str, tuple[TariffFact, ...]]  # active tariffs by name
    gateways: Mapping[str, GatewayFact]  # the tenant's gateways (within scope) by code
    profiles: Mapping[str, ProfileFact]  # meter profiles by model
    device_keys: frozenset[tuple[uuid.UUID, str]] = frozenset()  # (gateway, key) taken
    device_addresses: frozenset[tuple[uuid.UUID, str, str]] = frozenset()  # (gw, bus, addr)


@dataclass(frozen=True)
class CustomerIn:
    name: str
    phone: str | None
    id_number: str | None


@dataclass(frozen=True)
class PremisesIn:
    site_id: uuid.UUID
    building: str
    number: str
    floor: str
    kind: str
    floor_area: Decimal | None


@dataclass(frozen=True)
class DeviceIn:
    gateway_id: uuid.UUID
    key: str
    profile: str
    bus: str
    address: str
    serial: str | None


@dataclass(frozen=True)
class PointIn:
    row: int
    account_number: str
    premises: tuple[uuid.UUID, str, str]  # (site, building, number)
    site_id: uuid.UUID
    name: str
    utility: str
    tariff_id: uuid.UUID
    device: tuple[uuid.UUID, str]  # (gateway, key)
    channel: int
    install_register: Decimal | None


@dataclass(frozen=True)
class AccountIn:
    number: str
    customer: CustomerIn
    opening_balance: Decimal  # the sum of its rows'; negative = arrears


@dataclass
class Plan:
    """What a file would write, in file order, or why it would not."""

    rows: int = 0  # data rows read (blank rows not counted)
    customers: list[CustomerIn] = field(default_factory=list)
    accounts: dict[str, AccountIn] = field(default_factory=dict)
    premises: dict[tuple[uuid.UUID, str, str], PremisesIn] = field(default_factory=dict)
    devices: dict[tuple[uuid.UUID, str], DeviceIn] = field(default_factory=dict)
    points: list[PointIn] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def refused_rows(self) -> int:
        return len({r.row for r in self.refusals})


class _Refused(Exception):
    def __init__(self, column: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.column, self.zh, self.en = column, zh, en


def _label(key: str) -> str:
    return _BY_KEY[key].zh


def header_keys(header: Sequence[str]) -> tuple[list[str | None], list[Refusal]]:
    """Each header cell's column key (None for a blank one), or the refusals of row 1: an
    unknown or repeated column, a required one missing. A cell may be the template's
    "客户名称 customer_name", the key alone or the Chinese label alone."""
    by_text = {c.key: c.key for c in COLUMNS} | {c.zh: c.key for c in COLUMNS}
    keys: list[str | None] = []
    refusals: list[Refusal] = []
    for i, cell in enumerate(header):
        text = cell.strip()
        if not text:
            keys.append(None)
            continue
        key = by_text.get(text) or by_text.get(text.split()[-1]) or by_text.get(text.split()[0])
        if key is None:
            refusals.append(
                Refusal(1, text, f"第{i + 1}列“{text}”不是模板中的列", f"unknown column {text!r}")
            )
        elif key in keys:
            refusals.append(Refusal(1, key, f"列“{_label(key)}”重复", f"column {key} is repeated"))
        keys.append(key)
    for c in COLUMNS:
        if c.required and c.key not in keys:
            refusals.append(Refusal(1, c.key, f"缺少必填列“{c.header}”", f"column {c.key} missing"))
    return keys, refusals


def _text(cells: Mapping[str, str], key: str) -> str | None:
    value = cells.get(key, "").strip()
    if not value:
        if _BY_KEY[key].required:
            raise _Refused(key, f"{_label(key)}为必填项", f"{key} is required")
        return None
    if _CONTROL.search(value):
        raise _Refused(key, f"{_label(key)}含有控制字符", f"{key} holds a control character")
    limit = _MAX_LEN.get(key)
    if limit is not None and len(value) > limit:
        raise _Refused(
            key, f"{_label(key)}超过{limit}个字符", f"{key} is longer than {limit} characters"
        )
    return value


def _required(cells: Mapping[str, str], key: str) -> str:
    value = _text(cells, key)
    assert value is not None  # a required column refuses an empty cell
    return value


def _decimal(
    cells: Mapping[str, str], key: str, places: int, limit: Decimal, *, negative: bool = False
) -> Decimal | None:
    raw = _text(cells, key)
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _Refused(
            key, f"{_label(key)}“{raw}”不是数字", f"{key} {raw!r} is not a number"
        ) from None
    if not value.is_finite():
        raise _Refused(key, f"{_label(key)}“{raw}”不是数字", f"{key} {raw!r} is not a number")
    if abs(value) >= limit:
        raise _Refused(key, f"{_label(key)}“{raw}”超出范围", f"{key} {raw} is out of range")
    step = Decimal(1).scaleb(-places)
    if value != value.quantize(step):
        raise _Refused(
            key,
            f"{_label(key)}“{raw}”最多{places}位小数",
            f"{key} {raw} has more than {places} decimals",
        )
    if value < 0 and not negative:
        raise _Refused(key, f"{_label(key)}不能为负数", f"{key} must not be negative")
    return value.quantize(step)


def _address(raw: str, profile: ProfileFact) -> str:
    if profile.protocol == "modbus":
        if not raw.isdigit() or not 0 < int(raw) <= 247:
            raise _Refused(
                "address",
                f"Modbus表地址“{raw}”应为1到247的整数",
                f"Modbus address {raw!r} must be a whole number from 1 to 247",
            )
        return str(int(raw))
    digits = 14 if profile.protocol == "cjt188" else 12
    if len(raw) != digits or not _HEX.match(raw):
        raise _Refused(
            "address",
            f"表地址“{raw}”应为{digits}位数字",
            f"{profile.protocol} address {raw!r} must be {digits} digits",
        )
    return raw.upper()


def _tariff(name: str, utility: str, site_id: uuid.UUID, facts: Facts) -> uuid.UUID:
    fits = [
        t
        for t in facts.tariffs.get(name, ())
        if t.utility == utility and t.site_id in (None, site_id)
    ]
    if not fits:
        if not facts.tariffs.get(name):
            raise _Refused("tariff", f"电价方案“{name}”不存在", f"tariff {name!r} does not exist")
        raise _Refused(
            "tariff",
            f"电价方案“{name}”不适用于该站点的{_UTILITY_ZH[utility]}",
            f"tariff {name!r} is not a {utility} tariff of the gateway's site",
        )
    if len(fits) > 1:
        raise _Refused(
            "tariff",
            f"电价方案“{name}”有多个同名方案",
            f"several tariffs are named {name!r}",
        )
    return fits[0].id


@dataclass
class _Seen:
    """What earlier rows of the file said, to check later rows against."""

    account_rows: dict[str, tuple[int, CustomerIn]] = field(default_factory=dict)
    customer_by_id: dict[str, tuple[int, CustomerIn]] = field(default_factory=dict)
    customers: set[CustomerIn] = field(default_factory=set)
    premises_rows: dict[tuple[uuid.UUID, str, str], int] = field(default_factory=dict)
    device_rows: dict[tuple[uuid.UUID, str], int] = field(default_factory=dict)
    device_at: dict[tuple[uuid.UUID, str, str], str] = field(default_factory=dict)
    channels: dict[tuple[uuid.UUID, str, int], int] = field(default_factory=dict)


def _row(n: int, cells: Mapping[str, str], facts: Facts, seen: _Seen, plan: Plan) -> None:
    """Validate row ``n`` and add what it writes to ``plan``; raise the first refusal."""
    name = _required(cells, "customer_name")
    customer = CustomerIn(name, _text(cells, "phone"), _text(cells, "id_number"))
    number = _required(cells, "account_number")
    if number in facts.accounts:
        raise _Refused(
            "account_number",
            f"户号{number}已存在",
            f"account {number} already exists",
        )
    if customer.id_number is not None:
        earlier = seen.customer_by_id.get(customer.id_number)
        if earlier is not None and earlier[1] != customer:
            raise _Refused(
                "id_number",
                f"证件号码{customer.id_number}在第{earlier[0]}行属于另一位客户",
                f"ID number {customer.id_number} is another customer's in row {earlier[0]}",
            )
    prior = seen.account_rows.get(number)
    if prior is not None and prior[1] != customer:
        raise _Refused(
            "customer_name",
            f"户号{number}在第{prior[0]}行属于另一位客户",
            f"account {number} belongs to another customer in row {prior[0]}",
        )

    building = _required(cells, "building")
    floor = _required(cells, "floor")
    premises_number = _required(cells, "premises_number")
    kind_raw = _text(cells, "premises_kind") or "shop"
    kind = KINDS.get(kind_raw.lower())
    if kind is None:
        raise _Refused(
            "premises_kind",
            f"房屋类型“{kind_raw}”应为商铺、住宅、办公或单元",
            f"premises kind {kind_raw!r} must be shop, flat, office or unit",
        )
    area = _decimal(cells, "floor_area", 2, _AREA_LIMIT)
    if area is not None and area == 0:
        raise _Refused("floor_area", "建筑面积必须大于0", "floor_area must be above zero")

    utility_raw = _required(cells, "utility")
    utility = UTILITIES.get(utility_raw.lower())
    if utility is None:
        raise _Refused(
            "utility",
            f"能源类型“{utility_raw}”应为电或水",
            f"utility {utility_raw!r} must be electricity or water",
        )
    model = _required(cells, "meter_profile")
    profile = facts.profiles.get(model)
    if profile is None:
        raise _Refused(
            "meter_profile", f"表型号“{model}”不存在", f"unknown meter profile {model!r}"
        )
    if profile.utility != utility:
        raise _Refused(
            "meter_profile",
            f"表型号“{model}”是{_UTILITY_ZH[profile.utility]}表，不是{_UTILITY_ZH[utility]}表",
            f"meter profile {model!r} is a {profile.utility} meter, not {utility}",
        )
    code = _required(cells, "gateway_code")
    gateway = facts.gateways.get(code)
    if gateway is None:
        raise _Refused("gateway_code", f"网关“{code}”不存在", f"gateway {code!r} not found")
    tariff_id = _tariff(_required(cells, "tariff"), utility, gateway.site_id, facts)
    bus = _required(cells, "bus")
    if not _ID.match(bus):
        raise _Refused(
            "bus",
            f"总线名“{bus}”只能含字母、数字和 . _ -",
            f"bus {bus!r} may hold only letters, digits, '.', '_' and '-'",
        )
    address = _address(_required(cells, "address"), profile)
    channel_raw = _text(cells, "channel") or "1"
    if not channel_raw.isdigit() or not 1 <= int(channel_raw) <= profile.channels:
        raise _Refused(
            "channel",
            f"通道“{channel_raw}”应为1到{profile.channels}",
            f"channel {channel_raw!r} must be from 1 to {profile.channels} for {model}",
        )
    channel = int(channel_raw)
    serial = _text(cells, "meter_number")
    key = serial or f"{bus}-{address}"
    if not _ID.match(key):
        raise _Refused(
            "meter_number",
            f"表号“{key}”只能含字母、数字和 . _ -（最多64个字符）",
            f"meter number {key!r} may hold only letters, digits, '.', '_' and '-' (64 at most)",
        )
    register = _decimal(cells, "install_register", 3, _REGISTER_LIMIT)
    balance = _decimal(cells, "opening_balance", 2, _MONEY_LIMIT, negative=True) or Decimal(0)

    # the meter: new to the tenant; a second channel of a meter named in an earlier row
    at = (gateway.id, bus, address)
    if (gateway.id, key) in facts.device_keys or at in facts.device_addresses:
        raise _Refused(
            "address",
            f"网关{code}的总线{bus}上地址{address}的表已登记",
            f"a meter at address {address} on {code} {bus} is already registered",
        )
    dev_key = (gateway.id, key)
    known_key = seen.device_at.get(at)
    if known_key is not None and known_key != key:
        where = seen.device_rows[(gateway.id, known_key)]
        raise _Refused(
            "meter_number",
            f"地址{address}的表在第{where}行的表号是{known_key}",
            f"the meter at address {address} is {known_key} in row {where}",
        )
    device = plan.devices.get(dev_key)
    if device is not None and (device.bus, device.address) != (bus, address):
        raise _Refused(
            "meter_number",
            f"表号{key}在第{seen.device_rows[dev_key]}行是另一只表",
            f"meter number {key} is another meter in row {seen.device_rows[dev_key]}",
        )
    if device is not None and device.profile != model:
        raise _Refused(
            "meter_profile",
            f"该表在第{seen.device_rows[dev_key]}行的型号是{device.profile}",
            f"the same meter is a {device.profile} in row {seen.device_rows[dev_key]}",
        )
    used = seen.channels.get((gateway.id, key, channel))
    if used is not None:
        raise _Refused(
            "channel",
            f"该表的通道{channel}已在第{used}行使用",
            f"channel {channel} of this meter is already used in row {used}",
        )

    # the premises: one per (site, building, number); later rows must agree with the first
    premises = PremisesIn(gateway.site_id, building, premises_number, floor, kind, area)
    pkey = (gateway.site_id, building, premises_number)
    first = plan.premises.get(pkey)
    if first is not None and first != premises:
        raise _Refused(
            "premises_number",
            f"{building} {premises_number}的楼层、类型或面积与第{seen.premises_rows[pkey]}行不同",
            f"{building} {premises_number}: floor, kind or area differ from row "
            f"{seen.premises_rows[pkey]}",
        )

    # every check passed: record the row
    if customer.id_number is not None:
        seen.customer_by_id.setdefault(customer.id_number, (n, customer))
    if customer not in seen.customers:
        seen.customers.add(customer)
        plan.customers.append(customer)
    seen.account_rows.setdefault(number, (n, customer))
    held = plan.accounts.get(number)
    plan.accounts[number] = AccountIn(
        number, customer, (held.opening_balance if held else Decimal(0)) + balance
    )
    if first is None:
        plan.premises[pkey] = premises
        seen.premises_rows[pkey] = n
    if device is None:
        plan.devices[dev_key] = DeviceIn(gateway.id, key, model, bus, address, serial)
        seen.device_rows[dev_key] = n
        seen.device_at[at] = key
    seen.channels[(gateway.id, key, channel)] = n
    plan.points.append(
        PointIn(
            row=n,
            account_number=number,
            premises=pkey,
            site_id=gateway.site_id,
            name=f"{building} {premises_number} {_UTILITY_ZH[utility]}",
            utility=utility,
            tariff_id=tariff_id,
            device=dev_key,
            channel=channel,
            install_register=register,
        )
    )


def validate(header: Sequence[str], rows: Iterable[Sequence[str]], facts: Facts) -> Plan:
    """Check every row of a file against the file's earlier rows and the tenant's facts.
    ``rows`` are the data rows after the header (row 2 onwards); blank rows are skipped.
    The plan holds every refusal (at most one per row: its first) and, when there is none,
    everything the import writes."""
    plan = Plan()
    keys, plan.refusals = header_keys(header)
    if plan.refusals:
        return plan
    seen = _Seen()
    for n, raw in enumerate(rows, start=2):
        cells = {k: v for k, v in zip(keys, raw, strict=False) if k is not None and v}
        if not any(v.strip() for v in cells.values()):
            continue
        plan.rows += 1
        try:
            _row(n, cells, facts, seen, plan)
        except _Refused as r:
            plan.refusals.append(Refusal(n, r.column, r.zh, r.en))
    if plan.rows == 0 and not plan.refusals:
        plan.refusals.append(Refusal(2, "", "文件中没有数据行", "the file has no data rows"))
    return plan
