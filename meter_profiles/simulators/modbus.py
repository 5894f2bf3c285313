"""Modbus meter side: a profile's registers from a simulated meter, and the PDU answers
(functions 03, 04, 06, 16) of the meters on one bus. Framing (MBAP for Modbus TCP, RTU for
serial lines) is added by :mod:`modbus_tcp` and :mod:`modbus_rtu`."""

from __future__ import annotations

import struct
from decimal import Decimal

from meter_profiles.decode import encode_value
from meter_profiles.schema import ModbusProfile
from meter_profiles.simulators.line import Faults
from meter_profiles.simulators.meter import MeterRefused, SimulatedMeter


def registers(meter: SimulatedMeter) -> dict[tuple[int, int], int]:
    """Every mapped register of ``meter`` as (function, address) → 16-bit value."""
    profile = meter.profile
    assert isinstance(profile, ModbusProfile)
    meter.advance()
    out: dict[tuple[int, int], int] = {}
    for ch in meter.channels:
        values = meter.values(ch)
        for name, q in profile.quantities.items():
            if ch > 1 and name in profile.shared:
                continue
            base = profile.register_of(name, ch)
            for i, w in enumerate(encode_value(q, values.get(name, Decimal(0)))):
                out[(q.function, base + i)] = w
    return out


def write_register(meter: SimulatedMeter, address: int, value: int) -> None:
    """Function 06: a control action is a write of its value to its register."""
    profile = meter.profile
    assert isinstance(profile, ModbusProfile)
    meter.writes.append((address, value))
    for ch in meter.channels:
        for action in profile.controls:
            ctl = profile.control_register(action, ch)
            if ctl is not None and ctl.address == address and ctl.value == value:
                meter.control(action, ch)
                return
    raise MeterRefused(0x02, f"no writable register {address:#06x} = {value}")


def write_registers(meter: SimulatedMeter, address: int, words: list[int]) -> None:
    """Function 16: the recharge block (amount, then purchase count)."""
    profile = meter.profile
    assert isinstance(profile, ModbusProfile)
    rc = profile.recharge
    if rc is None or address != rc.address or len(words) != 3:
        raise MeterRefused(0x02, f"no writable block at {address:#06x} of {len(words)} words")
    amount = Decimal(words[0] << 16 | words[1]) * rc.amount_scale
    meter.recharge(amount, words[2])


class ModbusDevices:
    """The meters of one bus by unit id, answering request PDUs."""

    def __init__(self, meters: list[SimulatedMeter], faults: Faults | None = None) -> None:
        self.meters = {m.unit: m for m in meters}
        self.faults = faults or Faults()

    def answer(self, unit: int, pdu: bytes) -> bytes | None:
        """The reply PDU for a request PDU, or None when the meter stays silent."""
        meter = self.meters.get(unit)
        if meter is None or unit in self.faults.silent or not pdu:
            return None
        fn = pdu[0]
        if unit in self.faults.exception:
            return bytes([fn | 0x80, self.faults.exception[unit]])
        try:
            if fn in (3, 4) and len(pdu) == 5:
                start, count = struct.unpack(">HH", pdu[1:5])
                if not 1 <= count <= 125:
                    raise MeterRefused(0x03, "bad register count")
                regs = registers(meter)
                words = []
                for a in range(start, start + count):
                    if (fn, a) not in regs and (
                        unit in self.faults.strict or not _in_gap(regs, fn, a)
                    ):
                        raise MeterRefused(0x02, f"illegal address {a:#06x}")
                    words.append(regs.get((fn, a), 0))
                return bytes([fn, 2 * count]) + b"".join(struct.pack(">H", w) for w in words)
            if fn == 6 and len(pdu) == 5:
                address, value = struct.unpack(">HH", pdu[1:5])
                write_register(meter, address, value)
                return pdu
            if fn == 16 and len(pdu) >= 6:
                address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
                data = pdu[6:]
                if nbytes != 2 * count or len(data) != nbytes:
                    raise MeterRefused(0x03, "byte count disagrees with register count")
                words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, nbytes, 2)]
                write_registers(meter, address, words)
                return pdu[:5]
            raise MeterRefused(0x01, f"illegal function {fn}")
        except MeterRefused as exc:
            return bytes([fn | 0x80, exc.code])


def _in_gap(regs: dict[tuple[int, int], int], fn: int, address: int, span: int = 4) -> bool:
    """Real meters answer small unmapped holes inside a register block with zeros (a
    ``strict`` meter refuses them)."""
    return any((fn, address - d) in regs for d in range(1, span + 1)) and any(
        (fn, address + d) in regs for d in range(1, span + 1)
    )
