"""A simulated prepaid meter, independent of the protocol it is served over.

Per channel: a load curve, a cumulative register, a relay (or valve) that really stops
consumption, keep-power (trip refused while on). Per meter: a meter-side balance that a
meter-prepaid model deducts and trips itself on, recharged by purchase count (a repeated or
skipped count is refused). The protocol adapters (Modbus registers, DL/T 645 data
identifiers, CJ/T 188 metering data) read :meth:`SimulatedMeter.values` by quantity name.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from meter_profiles.schema import AnyProfile

#: Model ids answered in the first word of Acrel's prepaid block (unverified, PROTOCOLS.md).
MODEL_IDS = {"acrel-ddsy1352": 7, "acrel-dtsy1352": 5, "acrel-adf300l": 10}

CENT = Decimal("0.01")
TOU_REGISTERS = ("tou_spike", "tou_peak", "tou_flat", "tou_valley")


class MeterRefused(Exception):
    """The meter refuses a request. ``code`` is a Modbus exception code; ``reason`` says why
    (protocol adapters map it to their own error replies)."""

    def __init__(self, code: int, reason: str, *, unauthorised: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.unauthorised = unauthorised


@dataclass
class LoadCurve:
    """Draw over the day in units per hour (kW for electricity, m³/h for water): a base
    load, a daytime peak, and bounded noise."""

    base: float = 0.4
    peak: float = 2.0
    noise: float = 0.1
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def rate(self, sim_seconds: float) -> float:
        hour = (sim_seconds / 3600.0) % 24
        daytime = max(0.0, math.sin(math.pi * (hour - 7) / 14)) if 7 <= hour <= 21 else 0.0
        level = self.base + (self.peak - self.base) * daytime
        return max(0.0, level * (1 + self._rng.uniform(-self.noise, self.noise)))


def tou_period(sim_seconds: float) -> str:
    """The TOU register a simulated meter counts into at this simulated hour (a typical
    Chinese commercial schedule: valley 23–07, spike 19–21, peak 08–11 and 17–19)."""
    hour = (sim_seconds / 3600.0) % 24
    if hour >= 23 or hour < 7:
        return "tou_valley"
    if 19 <= hour < 21:
        return "tou_spike"
    if 8 <= hour < 11 or 17 <= hour < 19:
        return "tou_peak"
    return "tou_flat"


@dataclass
class ChannelState:
    total: float = 0.0  # kWh or m³
    tou: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("tou_spike", "tou_peak", "tou_flat", "tou_valley"), 0.0
        )
    )
    relay_closed: bool = True
    keep_power: bool = False
    rate: float = 0.0  # kW or m³/h now
    curve: LoadCurve = field(default_factory=LoadCurve)


class SimulatedMeter:
    """One meter on a bus. ``speed`` makes simulated time run faster than the wall clock.

    ``unit`` is the Modbus unit id; ``address`` the DL/T 645 / CJ/T 188 meter number (by
    default derived from the unit). With ``meter_prepaid`` (default: the profile's setting)
    the meter deducts ``price`` per unit from its balance and trips itself at zero.
    """

    def __init__(
        self,
        profile: AnyProfile,
        unit: int,
        *,
        address: str | None = None,
        curve: LoadCurve | None = None,
        speed: float = 1.0,
        start_total: float = 0.0,
        start_hour: float = 10.0,
        price: Decimal = Decimal("1.00"),
        meter_prepaid: bool | None = None,
        balance: Decimal = Decimal("0.00"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.unit = unit
        width = 14 if profile.protocol == "cjt188" else 12
        self.address = address or f"{unit:0{width}d}"
        self.speed = speed
        self.clock = clock
        self.price = price
        self.meter_prepaid = profile.meter_prepaid if meter_prepaid is None else meter_prepaid
        water = profile.utility == "water"
        self.channels: dict[int, ChannelState] = {}
        for ch in range(1, profile.channels + 1):
            c = curve or LoadCurve(
                base=0.05 if water else 0.4,
                peak=0.6 if water else 2.0,
                seed=unit * 100 + ch,
            )
            if curve is not None and profile.channels > 1:
                c = LoadCurve(curve.base, curve.peak, curve.noise, seed=curve.seed * 100 + ch)
            st = ChannelState(total=start_total, curve=c)
            st.tou["tou_flat"] = start_total
            self.channels[ch] = st
        self.balance = balance
        self.purchase_count = 0
        self.purchases: list[tuple[int, Decimal]] = []
        self.clock_offset_s = 0.0  # the meter's clock minus true time (time sync sets it 0)
        self._sim_s = start_hour * 3600.0
        self._last = clock()
        self._spent = 0.0  # consumption not yet deducted from the balance
        self.writes: list[tuple[int, int]] = []
        self.controls: list[tuple[str, int]] = []

    # -- time and consumption -----------------------------------------------------------
    def advance(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self._last) * self.speed
        self._last = now
        if dt == 0.0:
            return
        period = tou_period(self._sim_s)
        self._sim_s += dt
        for st in self.channels.values():
            st.rate = st.curve.rate(self._sim_s) if st.relay_closed else 0.0
            used = st.rate * dt / 3600.0
            st.total += used
            st.tou[period] += used
            self._spent += used
        if self.meter_prepaid:
            self._deduct()

    def _deduct(self) -> None:
        cost = (Decimal(repr(self._spent)) * self.price).quantize(CENT, rounding=ROUND_DOWN)
        if cost > 0:
            self.balance -= cost
            self._spent -= float(cost / self.price)
        if self.balance <= 0:
            for st in self.channels.values():
                if not st.keep_power:
                    st.relay_closed = False

    # -- what adapters read -------------------------------------------------------------
    def values(self, channel: int) -> dict[str, Decimal]:
        """Every quantity this meter knows, by canonical name. Call :meth:`advance` first."""
        st = self.channels[channel]
        volts = 220.0 + 3.0 * math.sin(self._sim_s / 600.0) if st.relay_closed else 0.0
        amps = st.rate * 1000.0 / volts if volts else 0.0
        total = _dec(st.total, 6)
        supply_raw = 0
        if self.profile.supply is not None:
            supply_raw = self.profile.supply.raw(st.relay_closed, st.keep_power)
        out = {
            "total_energy": total,
            "total_volume": total,
            "settlement_volume": total,
            "voltage": _dec(volts, 1),
            "current": _dec(amps, 3),
            "power": _dec(st.rate, 4),
            "apparent_power": _dec(st.rate, 4),
            "flow_rate": _dec(st.rate, 4),
            "pf": Decimal("1.000") if st.rate else Decimal(0),
            "frequency": _dec(50.0 + 0.02 * math.sin(self._sim_s / 60.0), 2),
            "model_id": Decimal(_model_id(self.profile.model)),
            "remaining_amount": max(self.balance, Decimal(0)),
            "overdraft_amount": max(-self.balance, Decimal(0)),
            "purchase_count": Decimal(self.purchase_count),
            "relay_state": Decimal(supply_raw),
            "valve_state": Decimal(supply_raw),
            "keep_power": Decimal(int(st.keep_power)),
        }
        for name, used in st.tou.items():
            out[name] = _dec(used, 6)
        for phase in "abc":
            out[f"voltage_{phase}"] = out["voltage"]
            out[f"current_{phase}"] = _dec(amps / 3, 3)
        if self.profile.supply is not None:
            out[self.profile.supply.quantity] = Decimal(supply_raw)
        return out

    def supply_on(self, channel: int = 1) -> bool:
        return self.channels[channel].relay_closed

    # -- control --------------------------------------------------------------------------
    def control(self, action: str, channel: int = 1) -> None:
        """Carry out a control action (names as in profiles); raises :class:`MeterRefused`."""
        self.advance()
        if channel not in self.channels:
            raise MeterRefused(0x02, f"no channel {channel}")
        st = self.channels[channel]
        self.controls.append((action, channel))
        if action in ("trip", "valve_close"):
            if st.keep_power:
                raise MeterRefused(0x04, "keep-power is on: trip refused", unauthorised=True)
            st.relay_closed = False
        elif action in ("close", "close_allowed", "close_immediately", "valve_open"):
            if self.meter_prepaid and self.balance <= 0 and not st.keep_power:
                raise MeterRefused(0x04, "no credit on the meter: close refused")
            st.relay_closed = True
        elif action in ("keep_power_on", "keep_power"):
            st.keep_power = True
            st.relay_closed = True
        elif action in ("keep_power_off", "keep_power_release"):
            st.keep_power = False
        elif action in ("alarm", "alarm_release"):
            pass
        else:
            raise MeterRefused(0x01, f"unsupported action {action}")

    def recharge(self, amount: Decimal, purchase_count: int) -> None:
        """Add ``amount`` to the meter's balance if ``purchase_count`` is the next one."""
        self.advance()
        if amount <= 0:
            raise MeterRefused(0x03, f"recharge amount must be positive, got {amount}")
        if purchase_count <= self.purchase_count:
            raise MeterRefused(
                0x04,
                f"purchase count {purchase_count} already used (meter is at {self.purchase_count})",
            )
        if purchase_count != self.purchase_count + 1:
            raise MeterRefused(
                0x04, f"purchase count {purchase_count} skips ahead of {self.purchase_count + 1}"
            )
        self.purchase_count = purchase_count
        self.balance += amount
        self.purchases.append((purchase_count, amount))

    def set_time(self, offset_s: float = 0.0) -> None:
        self.clock_offset_s = offset_s


def _dec(value: float, places: int) -> Decimal:
    return Decimal(repr(round(value, places)))


def _model_id(model: str) -> int:
    for prefix, mid in MODEL_IDS.items():
        if model.startswith(prefix):
            return mid
    return 0
