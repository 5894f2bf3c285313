"""A simulated prepaid meter: registers from a load curve, a relay that really stops
consumption, keep-power, and a meter-side balance with recharge by purchase count."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from meter_profiles.decode import encode_value
from meter_profiles.schema import Profile

MODEL_IDS = {"acrel-ddsy1352-modbus": 7}


class MeterRefused(Exception):
    """The meter refuses a request; carries the Modbus exception code it answers with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class LoadCurve:
    """Power draw over the day: a base load, a daytime peak, and bounded noise (kW)."""

    base_kw: float = 0.4
    peak_kw: float = 2.0
    noise: float = 0.1
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def power_kw(self, sim_seconds: float) -> float:
        hour = (sim_seconds / 3600.0) % 24
        daytime = max(0.0, math.sin(math.pi * (hour - 7) / 14)) if 7 <= hour <= 21 else 0.0
        kw = self.base_kw + (self.peak_kw - self.base_kw) * daytime
        return max(0.0, kw * (1 + self._rng.uniform(-self.noise, self.noise)))


@dataclass
class ChannelState:
    energy_kwh: float = 0.0
    relay_closed: bool = True
    keep_power: bool = False
    power_kw: float = 0.0


class SimulatedMeter:
    """One meter on a bus. ``speed`` makes simulated time run faster than the wall clock."""

    def __init__(
        self,
        profile: Profile,
        unit: int,
        *,
        curve: LoadCurve | None = None,
        speed: float = 1.0,
        start_kwh: float = 0.0,
        start_hour: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.unit = unit
        self.curve = curve or LoadCurve(seed=unit)
        self.speed = speed
        self.clock = clock
        self.channels = {
            ch: ChannelState(energy_kwh=start_kwh) for ch in range(1, profile.channels + 1)
        }
        self.balance = Decimal("0.00")
        self.purchase_count = 0
        self._sim_s = start_hour * 3600.0
        self._last = clock()
        self.writes: list[tuple[int, int]] = []

    def advance(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self._last) * self.speed
        self._last = now
        self._sim_s += dt
        for st in self.channels.values():
            st.power_kw = self.curve.power_kw(self._sim_s) if st.relay_closed else 0.0
            st.energy_kwh += st.power_kw * dt / 3600.0

    def registers(self) -> dict[tuple[int, int], int]:
        """Every mapped register as (function, address) → 16-bit value."""
        self.advance()
        out: dict[tuple[int, int], int] = {}
        for ch, st in self.channels.items():
            values = self._values(ch, st)
            for name, q in self.profile.quantities.items():
                if name not in values:
                    continue
                base = self.profile.register_of(name, ch)
                for i, w in enumerate(encode_value(q, values[name])):
                    out[(q.function, base + i)] = w
        return out

    def _values(self, ch: int, st: ChannelState) -> dict[str, Decimal]:
        volts = 220.0 + 3.0 * math.sin(self._sim_s / 600.0) if st.relay_closed else 0.0
        amps = st.power_kw * 1000.0 / volts if volts else 0.0
        energy = Decimal(str(round(st.energy_kwh, 6)))
        relay_bits = (0 if st.relay_closed else 1) | (2 if st.keep_power else 0)
        return {
            "total_energy": energy,
            "tou_flat": energy,
            "tou_spike": Decimal(0),
            "tou_peak": Decimal(0),
            "tou_valley": Decimal(0),
            "voltage": Decimal(str(round(volts, 1))),
            "current": Decimal(str(round(amps, 2))),
            "power": Decimal(str(round(st.power_kw, 3))),
            "apparent_power": Decimal(str(round(st.power_kw, 3))),
            "pf": Decimal("1.000") if st.power_kw else Decimal(0),
            "model_id": Decimal(MODEL_IDS.get(self.profile.model, 0)),
            "remaining_amount": self.balance,
            "purchase_count": Decimal(self.purchase_count),
            "relay_state": Decimal(relay_bits),
        }

    def write_register(self, address: int, value: int) -> None:
        """Function 06: control actions are writes to their profile register."""
        self.writes.append((address, value))
        for ch in self.channels:
            for action, ctl in self.profile.controls.items():
                reg = ctl.address + (ch - 1) * self.profile.channel_stride
                if reg == address and ctl.value == value:
                    self.control(action, ch)
                    return
        raise MeterRefused(0x02, f"no writable register {address:#06x} = {value}")

    def control(self, action: str, channel: int = 1) -> None:
        self.advance()
        st = self.channels[channel]
        if action == "trip":
            if st.keep_power:
                raise MeterRefused(0x04, "keep-power is on: trip refused")
            st.relay_closed = False
        elif action in ("close", "close_allowed", "valve_open"):
            st.relay_closed = True
        elif action == "valve_close":
            st.relay_closed = False
        elif action == "keep_power_on":
            st.keep_power = True
            st.relay_closed = True
        elif action == "keep_power_off":
            st.keep_power = False
        else:
            raise MeterRefused(0x01, f"unsupported action {action}")
