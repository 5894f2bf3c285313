"""CJ/T 188 driver (valve-controlled water meters): one read-data request (DI 90 1F) per
meter, valve open/close (DI A0 17), read address for scans.

The codec (:mod:`gateway_agent.protocols.cjt188`) builds and parses the frames; this module
adds what belongs to a bus transaction: the sequence number SER (checked on every reply),
the reply's address, meter type and DI, the profile's status-bit layout, decimals and DI
byte order, and unit conversion (a meter reporting litres read into a profile kept in m³,
exactly, with Decimal). Valve-controlled water meters are prepaid in the cloud: there is no
meter-side recharge. The standard has no broadcast time sync, so time sync is unsupported.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from gateway_agent.config import DeviceConfig
from gateway_agent.drivers import (
    Answer,
    DecodeFailure,
    DeviceException,
    DeviceTimeout,
    Unsupported,
    Values,
)
from gateway_agent.drivers.link import Link
from gateway_agent.drivers.refusals import Refusals
from gateway_agent.protocols import cjt188
from gateway_agent.protocols.cjt188 import (
    ControlCode,
    Frame,
    MeterStatus,
    StatusLayout,
    ValveCommand,
    ValveState,
)
from gateway_agent.protocols.errors import FrameError
from meter_profiles.schema import AnyProfile, Cjt188Profile

log = logging.getLogger(__name__)

#: The valve state as a number, whatever the maker's status layout: the codes of the
#: default layout (00 open, 01 closed, 11 abnormal); 2 (10) for a code the layout leaves
#: undefined.
VALVE_CODES: dict[ValveState, int] = {
    ValveState.OPEN: 0,
    ValveState.CLOSED: 1,
    ValveState.UNKNOWN: 2,
    ValveState.ABNORMAL: 3,
}

#: Units the driver converts between, as (family, factor to the family's base unit).
_UNIT_SPELLINGS = {"m3": "m³", "m^3": "m³", "l": "L", "m3/h": "m³/h", "l/h": "L/h"}
_CONVERTIBLE: dict[str, tuple[str, Decimal]] = {
    "m³": ("volume", Decimal(1)),
    "L": ("volume", Decimal("0.001")),
    "m³/h": ("flow", Decimal(1)),
    "L/h": ("flow", Decimal("0.001")),
}


def _cjt188(profile: AnyProfile) -> Cjt188Profile:
    if not isinstance(profile, Cjt188Profile):
        raise Unsupported(f"profile {profile.model} is not a CJ/T 188 profile")
    return profile


def layout_of(profile: Cjt188Profile) -> StatusLayout:
    """The codec's status layout from the profile's (same fields, by name)."""
    return StatusLayout(**profile.status.model_dump())


def valve_code(status: MeterStatus) -> int:
    return VALVE_CODES[status.valve]


def _canonical_unit(unit: str) -> str:
    return _UNIT_SPELLINGS.get(unit.strip().lower(), unit.strip())


def convert_flow(value: Decimal, unit_code: int, target: str | None) -> Decimal:
    """``value`` as reported in ``unit_code``, expressed in the profile's ``target`` unit.

    Exact (Decimal): 1234.5 L is 1.2345 m³. An unknown unit code, or a unit that cannot be
    converted to ``target`` (kWh for m³), raises DecodeFailure. With no target unit the value
    is taken as reported."""
    reported = cjt188.unit_name(unit_code)
    if reported is None:
        raise DecodeFailure(f"unknown unit code {unit_code:02X}")
    if target is None:
        return value
    want = _canonical_unit(target)
    if reported == want:
        return value
    have_family = _CONVERTIBLE.get(reported)
    want_family = _CONVERTIBLE.get(want)
    if have_family is None or want_family is None or have_family[0] != want_family[0]:
        raise DecodeFailure(f"meter reports {reported}, the profile expects {target}")
    return value * have_family[1] / want_family[1]


def _status_answer(status: MeterStatus) -> Answer:
    return {
        "status_word": f"0x{status.raw:04X}",
        "valve": status.valve.value,
        "battery_low": "true" if status.battery_low else "false",
    }


def _replies_only(buffer: bytes) -> tuple[Frame | None, int]:
    """The first reply frame in ``buffer``; requests (an adapter's echo) are skipped."""
    offset = 0
    while True:
        frame, consumed = cjt188.extract_frame(buffer[offset:])
        if frame is None:
            return None, 0
        if frame.is_reply:
            return frame, offset + consumed
        offset += consumed


class Cjt188Driver:
    """One bus of CJ/T 188 meters. Not safe for concurrent use: the bus scheduler owns it."""

    def __init__(self, link: Link, timeout_s: float) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self.refusals = Refusals()  # one metering-data DI: nothing to skip, kept for stats
        self._ser = 0

    def _next_ser(self) -> int:
        self._ser = (self._ser + 1) & 0xFF
        return self._ser

    async def close(self) -> None:
        await self.link.close()

    # -- one transaction --------------------------------------------------------------------
    async def _transact(self, request: Frame, what: str) -> Frame:
        try:
            return await self.link.transact(
                cjt188.encode_frame(request), _replies_only, self.timeout_s
            )
        except DeviceTimeout as exc:
            raise DeviceTimeout(f"{what}: {exc}") from exc
        except DecodeFailure as exc:
            raise DecodeFailure(f"{what}: {exc}") from exc

    def _check_reply(
        self,
        reply: Frame,
        request: Frame,
        ser: int,
        di: int,
        layout: StatusLayout,
        what: str,
        *,
        di_low_first: bool,
    ) -> cjt188.Payload:
        """Address, type, function, SER and DI of ``reply``; an error reply raises
        DeviceException with the status word as its code."""
        if reply.address != request.address:
            raise DecodeFailure(f"{what}: reply from address {reply.address}")
        if request.meter_type != cjt188.MeterType.WILDCARD and (
            reply.meter_type != request.meter_type
        ):
            raise DecodeFailure(
                f"{what}: reply for meter type {reply.meter_type:02X}, "
                f"asked {request.meter_type:02X}"
            )
        if reply.function != request.function:
            raise DecodeFailure(f"{what}: reply control byte {reply.control:02X}")
        try:
            if reply.is_error:
                err = cjt188.parse_error_reply(reply, layout)
                if err.ser != ser:
                    raise DecodeFailure(f"{what}: error reply SER {err.ser}, expected {ser}")
                raise DeviceException(
                    err.status.raw,
                    f"{what}: error reply, status {err.status.raw:04X} "
                    f"(valve {err.status.valve.value})",
                    {"exception_code": str(err.status.raw), **_status_answer(err.status)},
                )
            payload = cjt188.split_payload(reply.data, di_low_first=di_low_first)
        except FrameError as exc:
            raise DecodeFailure(f"{what}: {exc}") from exc
        if payload.ser != ser:
            raise DecodeFailure(f"{what}: reply SER {payload.ser}, expected {ser}")
        if payload.di != di:
            raise DecodeFailure(f"{what}: reply DI {payload.di:04X}, expected {di:04X}")
        return payload

    # -- MeterDriver --------------------------------------------------------------------------
    async def read(self, device: DeviceConfig, profile: AnyProfile) -> Values:
        cp = _cjt188(profile)
        address = self._address(device)
        layout = layout_of(cp)
        ser = self._next_ser()
        request = cjt188.read_data_request(
            cp.meter_type,
            address,
            ser=ser,
            wakeup=cp.wakeup,
            di_low_first=cp.di_low_first,
        )
        what = f"meter {address}"
        reply = await self._transact(request, what)
        payload = self._check_reply(
            reply,
            request,
            ser,
            cjt188.DI_METERING_DATA,
            layout,
            what,
            di_low_first=cp.di_low_first,
        )
        try:
            data = cjt188.parse_metering_data(payload.body, decimals=cp.decimals, layout=layout)
        except FrameError as exc:
            raise DecodeFailure(f"{what}: {exc}") from exc
        values: Values = {}
        for name, q in cp.quantities.items():
            if q.field == "current_flow":
                value = convert_flow(data.current_flow, data.current_unit, q.unit)
            elif q.field == "settlement_flow":
                value = convert_flow(data.settlement_flow, data.settlement_unit, q.unit)
            elif q.field == "status_word":
                value = Decimal(data.status.raw)
            elif q.field == "valve_state":
                value = Decimal(valve_code(data.status))
            else:  # battery_low
                value = Decimal(int(data.status.battery_low))
            values[(name, 1)] = value
        return values

    async def control(
        self,
        device: DeviceConfig,
        profile: AnyProfile,
        action: str,
        channel: int,
        deadline: datetime,
    ) -> Answer:
        cp = _cjt188(profile)
        ctl = cp.controls.get(action)  # type: ignore[call-overload]
        if ctl is None:
            raise Unsupported(f"profile {cp.model} has no control {action!r}")
        if channel != 1:
            raise Unsupported(f"CJ/T 188 meters have one channel, not {channel}")
        address = self._address(device)
        command = ValveCommand.OPEN if ctl.valve == "open" else ValveCommand.CLOSE
        ser = self._next_ser()
        data = cjt188.join_payload(
            cjt188.DI_VALVE_CONTROL, ser, bytes([command]), di_low_first=cp.di_low_first
        )
        request = Frame(cp.meter_type, address, ControlCode.WRITE_DATA, data, cp.wakeup)
        what = f"meter {address}: {action}"
        layout = layout_of(cp)
        reply = await self._transact(request, what)
        payload = self._check_reply(
            reply,
            request,
            ser,
            cjt188.DI_VALVE_CONTROL,
            layout,
            what,
            di_low_first=cp.di_low_first,
        )
        if len(payload.body) != 2:
            raise DecodeFailure(f"{what}: valve reply carries {len(payload.body)} status byte(s)")
        status = layout.decode(int.from_bytes(payload.body, "little"))
        return {"command": f"{command.value:02X}", **_status_answer(status)}

    async def recharge(
        self, device: DeviceConfig, profile: AnyProfile, amount: Decimal, purchase_count: int
    ) -> Answer:
        raise Unsupported(
            "CJ/T 188 valve-controlled water meters are prepaid in the cloud: no meter recharge"
        )

    async def time_sync(self, now: datetime) -> Answer:
        raise Unsupported("CJ/T 188 has no broadcast time sync (write time A0 15 not supported)")

    # -- scan -----------------------------------------------------------------------------------
    async def read_address(self, *, wakeup: bool = True) -> tuple[int, str]:
        """Read address (C=03, DI 81 0A) to the wildcard type and address: the (one) meter
        on the bus answers with its meter type and 14-digit address."""
        ser = self._next_ser()
        request = cjt188.read_address_request(ser=ser, wakeup=wakeup)
        what = "read address"
        reply = await self._transact(request, what)
        if reply.function != ControlCode.READ_ADDRESS:
            raise DecodeFailure(f"{what}: reply control byte {reply.control:02X}")
        if reply.is_error:
            try:
                err = cjt188.parse_error_reply(reply)
            except FrameError as exc:
                raise DecodeFailure(f"{what}: {exc}") from exc
            raise DeviceException(
                err.status.raw,
                f"{what}: error reply from {reply.address}, status {err.status.raw:04X}",
                {"exception_code": str(err.status.raw), **_status_answer(err.status)},
            )
        try:
            payload = cjt188.split_payload(reply.data)
        except FrameError as exc:
            raise DecodeFailure(f"{what}: {exc}") from exc
        if payload.ser != ser:
            raise DecodeFailure(f"{what}: reply SER {payload.ser}, expected {ser}")
        if payload.di not in (cjt188.DI_READ_ADDRESS, 0x0A81):
            raise DecodeFailure(f"{what}: reply DI {payload.di:04X}, expected 810A")
        return reply.meter_type, reply.address

    @staticmethod
    def _address(device: DeviceConfig) -> str:
        if device.address is None or len(device.address) != 2 * cjt188.ADDRESS_WIDTH:
            raise Unsupported(
                f"device {device.key}: a CJ/T 188 meter needs its 14-digit address, "
                f"got {device.address!r}"
            )
        return device.address.upper()
