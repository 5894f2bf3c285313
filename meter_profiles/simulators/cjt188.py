"""CJ/T 188 meter side: the valve-controlled water meters of one bus answering the real
frames (read metering data 90 1F, read address 81 0A, valve control A0 17).

Each meter answers in its own profile's terms: meter type, decimals, DI byte order, status
bit layout, and the unit of its ``current_flow`` quantity (``L`` makes it report litres,
unit code 29; otherwise m³, code 2C). The valve is the simulated meter's relay, so a closed
valve really stops the volume counting (:class:`SimulatedMeter` does that).

A wildcard request (``AA`` type or ``AA`` address bytes) is answered by every meter it
matches, all at once: their replies are combined byte by byte with AND (a line driven low by
either transmitter reads low), which garbles the frame as a real collision does.

Faults (by meter address): ``silent`` (no reply), ``corrupt`` (the reply's checksum is
flipped), ``exception`` (an error reply, C | 40, whose status word is the given code) and
``garbage`` (noise, then a frame start whose end byte is wrong).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from gateway_agent.protocols import cjt188
from gateway_agent.protocols.cjt188 import (
    ControlCode,
    Frame,
    MeteringData,
    StatusLayout,
    ValveCommand,
    ValveState,
)
from gateway_agent.protocols.errors import FrameError
from meter_profiles.schema import Cjt188Profile
from meter_profiles.simulators.line import Faults, collide
from meter_profiles.simulators.meter import MeterRefused, SimulatedMeter

log = logging.getLogger(__name__)

#: Unit codes a simulated meter reports in, by the profile's unit spelling.
_UNIT_CODES: dict[str, tuple[int, Decimal]] = {
    "m³": (0x2C, Decimal(1)),
    "m3": (0x2C, Decimal(1)),
    "L": (0x29, Decimal(1000)),
    "l": (0x29, Decimal(1000)),
}
#: Beyond this a receive buffer holds no frame we could still complete: drop a byte.
_MAX_PENDING = 4 + cjt188.FRAME_OVERHEAD + 0xFF
#: Status bits of an error reply to a request the meter does not know (maker-specific;
#: the valve and battery bits of the status word are left as they are).
_UNKNOWN_REQUEST_BIT = 1 << 15


def _matches(request: Frame, meter: SimulatedMeter) -> bool:
    profile = meter.profile
    assert isinstance(profile, Cjt188Profile)
    if request.meter_type not in (cjt188.MeterType.WILDCARD, profile.meter_type):
        return False
    want = request.address
    have = meter.address.upper()
    return all(want[i : i + 2] in ("AA", have[i : i + 2]) for i in range(0, len(want), 2))


class Cjt188Responder:
    """The meters of one bus by 14-digit address. ``faults`` are keyed by address."""

    def __init__(self, meters: list[SimulatedMeter], faults: Faults | None = None) -> None:
        for m in meters:
            if not isinstance(m.profile, Cjt188Profile):
                raise ValueError(f"meter {m.address}: profile {m.profile.model} is not CJ/T 188")
            cjt188.encode_address(m.address)  # 14 hex digits, or ValueError
        self.meters = meters
        self.faults = faults or Faults()

    # -- the line ----------------------------------------------------------------------------
    def respond(self, buffer: bytes) -> tuple[int, bytes | None] | None:
        try:
            request, consumed = cjt188.extract_frame(buffer)
        except FrameError as exc:
            log.debug("cjt188 sim: dropped a broken frame (%s)", exc)
            return max(1, exc.consumed), None
        if request is None:
            if cjt188.START not in buffer:
                # line noise (kept while it may still be a wake-up run before a frame)
                return (len(buffer), None) if buffer.strip(bytes([cjt188.WAKEUP_BYTE])) else None
            if len(buffer) > _MAX_PENDING:
                return 1, None
            return None
        if request.is_reply:
            return consumed, None  # another device's reply (or our own echo)
        replies = [
            r
            for m in self.meters
            if _matches(request, m) and (r := self._reply(m, request)) is not None
        ]
        if not replies:
            return consumed, None
        return consumed, collide(replies)

    # -- one meter --------------------------------------------------------------------------
    def _reply(self, meter: SimulatedMeter, request: Frame) -> bytes | None:
        key = meter.address.upper()
        faults = self.faults
        if key in faults.silent or meter.address in faults.silent:
            return None
        profile = meter.profile
        assert isinstance(profile, Cjt188Profile)
        layout = StatusLayout(**profile.status.model_dump())
        meter_type = profile.meter_type
        try:
            low_first = profile.di_low_first and request.function != ControlCode.READ_ADDRESS
            payload = cjt188.split_payload(request.data, di_low_first=low_first)
        except FrameError:
            return self._encode(
                meter, cjt188.error_reply(meter_type, key, request.function, _UNKNOWN_REQUEST_BIT)
            )
        ser = payload.ser
        code = faults.exception.get(key, faults.exception.get(meter.address))
        if code is not None:
            frame = cjt188.error_reply(meter_type, key, request.function, code, ser=ser)
            return self._encode(meter, frame)
        frame = self._answer(meter, profile, layout, request, payload)
        return self._encode(meter, frame)

    def _answer(
        self,
        meter: SimulatedMeter,
        profile: Cjt188Profile,
        layout: StatusLayout,
        request: Frame,
        payload: cjt188.Payload,
    ) -> Frame:
        key = meter.address.upper()
        meter_type = profile.meter_type
        ser = payload.ser
        fn = request.function
        if fn == ControlCode.READ_DATA and payload.di == cjt188.DI_METERING_DATA:
            return self._metering_reply(meter, profile, layout, ser)
        if fn == ControlCode.READ_ADDRESS and payload.di in (cjt188.DI_READ_ADDRESS, 0x0A81):
            return cjt188.read_address_reply(meter_type, key, ser=ser)
        if fn == ControlCode.WRITE_DATA and payload.di == cjt188.DI_VALVE_CONTROL:
            try:
                command = cjt188.parse_valve_command(payload.body)
                meter.control("valve_open" if command == ValveCommand.OPEN else "valve_close")
            except (FrameError, MeterRefused):
                status = self._status(meter, layout) | _UNKNOWN_REQUEST_BIT
                return cjt188.error_reply(meter_type, key, fn, status, ser=ser)
            data = cjt188.join_payload(
                cjt188.DI_VALVE_CONTROL,
                ser,
                self._status(meter, layout).to_bytes(2, "little"),
                di_low_first=profile.di_low_first,
            )
            return Frame(meter_type, key, fn | cjt188.REPLY_FLAG, data)
        status = self._status(meter, layout) | _UNKNOWN_REQUEST_BIT
        return cjt188.error_reply(meter_type, key, fn, status, ser=ser)

    @staticmethod
    def _status(meter: SimulatedMeter, layout: StatusLayout) -> int:
        valve = ValveState.OPEN if meter.supply_on(1) else ValveState.CLOSED
        return layout.encode(valve, battery_low=False)

    def _metering_reply(
        self, meter: SimulatedMeter, profile: Cjt188Profile, layout: StatusLayout, ser: int
    ) -> Frame:
        meter.advance()
        values = meter.values(1)
        current_unit = self._unit(profile, "current_flow")
        settlement_unit = self._unit(profile, "settlement_flow", current_unit)
        step = Decimal(1).scaleb(-profile.decimals)
        wrap = Decimal(10**8).scaleb(-profile.decimals)  # 4 BCD bytes roll over

        def reading(value: Decimal, factor: Decimal) -> Decimal:
            return (value * factor).quantize(step, rounding=ROUND_DOWN) % wrap

        now = datetime.now(UTC) + timedelta(seconds=meter.clock_offset_s)
        data = MeteringData(
            current_flow=reading(values.get("total_volume", Decimal(0)), current_unit[1]),
            current_unit=current_unit[0],
            settlement_flow=reading(
                values.get("settlement_volume", Decimal(0)), settlement_unit[1]
            ),
            settlement_unit=settlement_unit[0],
            real_time=now.replace(microsecond=0),
            status=layout.decode(self._status(meter, layout)),
        )
        payload = cjt188.join_payload(
            cjt188.DI_METERING_DATA,
            ser,
            cjt188.encode_metering_data(data, decimals=profile.decimals),
            di_low_first=profile.di_low_first,
        )
        return Frame(
            profile.meter_type, meter.address, ControlCode.READ_DATA | cjt188.REPLY_FLAG, payload
        )

    @staticmethod
    def _unit(
        profile: Cjt188Profile,
        field: str,
        default: tuple[int, Decimal] = (0x2C, Decimal(1)),
    ) -> tuple[int, Decimal]:
        """(unit code, factor from m³) the meter reports ``field`` in."""
        for q in profile.quantities.values():
            if q.field == field and q.unit is not None:
                if q.unit not in _UNIT_CODES:
                    raise ValueError(f"profile {profile.model}: cannot simulate unit {q.unit!r}")
                return _UNIT_CODES[q.unit]
        return default

    def _encode(self, meter: SimulatedMeter, frame: Frame) -> bytes:
        profile = meter.profile
        assert isinstance(profile, Cjt188Profile)
        raw = bytearray(cjt188.encode_frame(replace(frame, wakeup=profile.wakeup)))
        key = meter.address.upper()
        if key in self.faults.corrupt or meter.address in self.faults.corrupt:
            raw[-2] ^= 0xFF  # the checksum
        if key in self.faults.garbage or meter.address in self.faults.garbage:
            # noise, then what looks like a frame start but ends in the wrong byte
            body = bytes([cjt188.START, frame.meter_type]) + bytes(7) + bytes([0x81, 0x03])
            return b"\x00\x5a\xc3" + body + b"\x90\x1f\x00" + bytes([sum(body) & 0xFF, 0x00])
        return bytes(raw)
