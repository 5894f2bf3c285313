"""DL/T 645 meter side (2007 and 1997 editions) for a simulated RS-485 line.

Each :class:`SimulatedMeter` on the bus answers at its own address as a real meter would:

- read data (2007 C = 11, 1997 C = 01) by data identifier from the meter's profile, each
  element encoded per its ``format`` (truncated to the format's decimals, like a meter's
  register); several quantities on one DI make a block reply; replies longer than
  ``max_data`` bytes go out in follow-up frames (flag 0x20, read with C = 12); every 2007 meter
  also answers its communication address (04000401, used by ``scan``) and its clock
  (04000101 date, 04000102 time); a profile's block DI (``0001FF00``) is also answered
  one member at a time (``00010000``…); an unknown DI gets error reply b1 "no such data";
- read address (C = 13) to a wildcard address;
- remote control (C = 1C): the password level and password are checked (b2 on mismatch),
  an expired validity deadline is refused (b0), keep-power refuses trip (b2);
- write data (C = 14) to the profile's recharge DI: amount then purchase count; a repeated
  or skipped count is refused (b0);
- broadcast time sync (C = 08 to ``999999999999``) sets every meter's clock, no reply.

A frame with a bad checksum or end byte is dropped in silence (a real meter ignores it).
If a request addresses several meters (wildcards) they all answer at once: their replies
are combined byte by byte with AND (a line driven low by either transmitter reads low),
which garbles the frame as a real collision does. Replies start with ``FE FE FE FE`` when
the profile uses wake-up bytes.

Faults (by meter address): ``silent`` (no reply), ``corrupt`` (the reply's checksum is
wrong), ``exception`` (an error reply with that error byte), ``garbage`` (random bytes that
are no frame at all), ``strict`` (block and tariff identifiers get "no such data").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from gateway_agent.protocols import dlt645 as dlt
from gateway_agent.protocols.errors import FrameError
from meter_profiles.schema import Dlt645Profile, DltQuantity
from meter_profiles.simulators.line import Faults, collide
from meter_profiles.simulators.meter import MeterRefused, SimulatedMeter

OTHER = dlt.ErrorFlag.OTHER
NO_SUCH_DATA = dlt.ErrorFlag.NO_SUCH_DATA
UNAUTHORISED = dlt.ErrorFlag.WRONG_PASSWORD_OR_UNAUTHORISED
DI_ADDRESS = 0x04000401
DI_DATE = 0x04000101
DI_TIME = 0x04000102


def encode_element(q: DltQuantity, value: Decimal) -> bytes:
    """``value`` as the meter sends it for ``q``: BCD truncated to the format's decimals
    (rolling over past the top digit, as a register does), or a little-endian bit word."""
    if q.kind == "bits":
        return (int(value) % (1 << (8 * q.size))).to_bytes(q.size, "little")
    digits = 2 * q.size
    units = int(value.scaleb(q.decimals).to_integral_value(rounding=ROUND_DOWN))
    if q.signed:
        limit = 8 * 10 ** (digits - 1) - 1
        units = max(-limit, min(limit, units))
    else:
        units = max(0, units) % 10**digits
    return dlt.encode_bcd_decimal(
        Decimal(units).scaleb(-q.decimals), q.size, q.decimals, signed=q.signed
    )


def expected_value(q: DltQuantity, value: Decimal) -> Decimal:
    """What a driver should decode from ``value`` served for ``q`` (for tests)."""
    raw = encode_element(q, value)
    if q.kind == "bits":
        return Decimal(int.from_bytes(raw, "little"))
    return dlt.decode_bcd_decimal(raw, q.decimals, signed=q.signed)


def is_tariff_di(di: int) -> bool:
    """An energy identifier of one tariff (DI3 = 00, energy kind DI2 <= 0A, tariff DI1
    1..63): ``00010100`` is forward active energy, tariff 1."""
    return di >> 24 == 0 and (di >> 16) & 0xFF <= 0x0A and 1 <= (di >> 8) & 0xFF <= 0x3F


def _profile(meter: SimulatedMeter) -> Dlt645Profile:
    profile = meter.profile
    assert isinstance(profile, Dlt645Profile)
    return profile


def _matches(pattern: str, address: str) -> bool:
    return all(p == "A" or p == a for p, a in zip(pattern, address, strict=True))


class Dlt645Responder:
    """The meters of one DL/T 645 bus. ``passwords`` (by meter address) replaces the
    profile's password for that meter; ``now`` is true time (each meter's clock adds its
    ``clock_offset_s``)."""

    def __init__(
        self,
        meters: list[SimulatedMeter],
        faults: Faults | None = None,
        *,
        passwords: dict[str, str] | None = None,
        max_data: int = 200,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        seed: int = 0,
    ) -> None:
        self.meters = {m.address.upper(): m for m in meters}
        self.faults = faults or Faults()
        self.passwords = {k.upper(): v.upper() for k, v in (passwords or {}).items()}
        self.max_data = max_data
        self.now = now
        self._rng = random.Random(seed)
        self._pending: dict[tuple[str, int], list[bytes]] = {}  # follow-up chunks to send
        self._singles: dict[str, dict[int, list[tuple[str, DltQuantity]]]] = {}

    # -- the line -------------------------------------------------------------------------
    def respond(self, buffer: bytes) -> tuple[int, bytes | None] | None:
        if dlt.START not in buffer:
            return (len(buffer), None) if buffer.strip(bytes([dlt.WAKEUP_BYTE])) else None
        try:
            frame, consumed = dlt.extract_frame(buffer)
        except FrameError as exc:
            return max(1, exc.consumed), None  # a real meter ignores a broken frame
        if frame is None:
            return None
        if frame.is_reply:
            return consumed, None
        if dlt.is_broadcast(frame.address):
            self._broadcast(frame)
            return consumed, None
        replies = [
            r for m in self._addressed(frame.address) if (r := self._answer(m, frame)) is not None
        ]
        if not replies:
            return consumed, None
        return consumed, collide(replies)

    def _addressed(self, pattern: str) -> list[SimulatedMeter]:
        return [m for address, m in self.meters.items() if _matches(pattern, address)]

    def _broadcast(self, frame: dlt.Frame) -> None:
        if frame.function != dlt.ControlCode.BROADCAST_TIME:
            return
        try:
            when = dlt.parse_broadcast_time(frame)
        except FrameError:
            return
        offset = (when - self.now()).total_seconds()
        for meter in self.meters.values():
            # the meter's clock becomes the broadcast time (to the second it carries)
            meter.set_time(offset if abs(offset) >= 1 else 0.0)

    def _answer(self, meter: SimulatedMeter, frame: dlt.Frame) -> bytes | None:
        address = meter.address.upper()
        profile = _profile(meter)
        faults = self.faults
        if address in faults.silent:
            return None
        if address in faults.garbage:
            junk = [b for b in range(256) if b not in (dlt.START, dlt.WAKEUP_BYTE)]
            return bytes(self._rng.choice(junk) for _ in range(self._rng.randint(20, 40)))
        if address in faults.exception:  # refuses without carrying the request out
            reply: dlt.Frame | None = dlt.error_reply(
                address, frame.function, faults.exception[address]
            )
        else:
            reply = self._reply(meter, profile, frame)
        if reply is None:
            return None
        wire = bytearray(
            dlt.encode_frame(
                dlt.Frame(reply.address, reply.control, reply.data, wakeup=profile.wakeup)
            )
        )
        if address in faults.corrupt:
            wire[-2] ^= 0x5A
        return bytes(wire)

    # -- requests ---------------------------------------------------------------------------
    def _reply(
        self, meter: SimulatedMeter, profile: Dlt645Profile, frame: dlt.Frame
    ) -> dlt.Frame | None:
        address = meter.address.upper()
        fn = frame.function
        if profile.edition == "1997":
            if fn != dlt.ControlCode1997.READ_DATA:
                return None  # a 1997 meter does not understand 2007 function codes
            try:
                di = dlt.parse_read_request_1997(frame)
            except FrameError:
                return dlt.error_reply(address, fn, OTHER)
            value = self._value(meter, profile, di)
            if value is None:
                return dlt.error_reply(address, fn, NO_SUCH_DATA)
            return dlt.read_data_reply_1997(address, di, value)
        try:
            if fn == dlt.ControlCode.READ_DATA:
                return self._read(meter, profile, dlt.parse_read_request(frame))
            if fn == dlt.ControlCode.READ_FOLLOWUP:
                return self._followup(address, frame)
            if fn == dlt.ControlCode.READ_ADDRESS:
                return dlt.read_address_reply(address)
            if fn == dlt.ControlCode.REMOTE_CONTROL:
                return self._control(meter, profile, frame)
            if fn == dlt.ControlCode.WRITE_DATA:
                return self._write(meter, profile, frame)
        except FrameError:
            return dlt.error_reply(address, fn, OTHER)
        except MeterRefused as exc:
            return dlt.error_reply(address, fn, UNAUTHORISED if exc.unauthorised else OTHER)
        return dlt.error_reply(address, fn, OTHER)

    def _reads(self, profile: Dlt645Profile) -> dict[int, list[tuple[str, DltQuantity]]]:
        """The profile's DIs, and the single DIs its block DIs stand for (one quantity each)."""
        reads = self._singles.get(profile.model)
        if reads is None:
            reads = dict(profile.reads())
            if profile.edition == "2007":
                for di, items in profile.reads().items():
                    for name, q in items:
                        single = dlt.block_member(di, q.element)
                        if single is not None and dlt.is_block_di(di):
                            reads.setdefault(single, [(name, q.model_copy(update={"element": 0}))])
            self._singles[profile.model] = reads
        return reads

    def _value(self, meter: SimulatedMeter, profile: Dlt645Profile, di: int) -> bytes | None:
        if meter.address.upper() in self.faults.strict and profile.edition == "2007":
            if dlt.is_block_di(di) or is_tariff_di(di):
                return None
        items = self._reads(profile).get(di)
        if items is None:
            return self._builtin(meter, profile, di)
        meter.advance()
        values = meter.values(1)
        size = items[0][1].size
        elements = [bytes(size)] * (items[-1][1].element + 1)
        for name, q in items:
            elements[q.element] = encode_element(q, values.get(name, Decimal(0)))
        return b"".join(elements)

    def _builtin(self, meter: SimulatedMeter, profile: Dlt645Profile, di: int) -> bytes | None:
        """What every 2007 meter answers whatever its profile maps: its communication
        address (04000401, used by ``scan``), date and time (04000101 / 04000102)."""
        if profile.edition != "2007":
            return None
        if di == DI_ADDRESS:
            return dlt.encode_address(meter.address)
        local = (self.now() + timedelta(seconds=meter.clock_offset_s)).astimezone(
            dlt.CHINA_STANDARD_TIME
        )
        if di == DI_DATE:
            weekday = local.isoweekday() % 7  # 0 = Sunday
            return dlt.encode_item(
                dlt.DATA_ITEMS[di], dlt.MeterDate(day=local.date(), weekday=weekday)
            )
        if di == DI_TIME:
            return dlt.encode_item(dlt.DATA_ITEMS[di], local.time().replace(microsecond=0))
        return None

    def _read(self, meter: SimulatedMeter, profile: Dlt645Profile, di: int) -> dlt.Frame:
        address = meter.address.upper()
        value = self._value(meter, profile, di)
        if value is None:
            return dlt.error_reply(address, dlt.ControlCode.READ_DATA, NO_SUCH_DATA)
        room = max(1, self.max_data - 4)
        chunks = [value[i : i + room] for i in range(0, len(value), room)] or [b""]
        self._pending.pop((address, di), None)
        if len(chunks) > 1:
            self._pending[(address, di)] = chunks[1:]
        return dlt.read_data_reply(address, di, chunks[0], followup=len(chunks) > 1)

    def _followup(self, address: str, frame: dlt.Frame) -> dlt.Frame:
        fn = dlt.ControlCode.READ_FOLLOWUP
        if len(frame.data) != 5:
            return dlt.error_reply(address, fn, OTHER)
        di, seq = dlt.decode_di(frame.data[:4]), frame.data[4]
        chunks = self._pending.get((address, di))
        if not chunks or not 1 <= seq <= len(chunks):
            return dlt.error_reply(address, fn, NO_SUCH_DATA)
        more = seq < len(chunks)
        control = fn | dlt.REPLY_FLAG | (dlt.FOLLOWUP_FLAG if more else 0)
        if not more:
            del self._pending[(address, di)]
        return dlt.Frame(address, control, dlt.encode_di(di) + chunks[seq - 1] + bytes([seq]))

    def _authorised(self, meter: SimulatedMeter, creds: dlt.Credentials) -> bool:
        profile = _profile(meter)
        expected = self.passwords.get(meter.address.upper(), profile.password.upper())
        return creds.password == expected and creds.password_level == profile.password_level

    def _control(
        self, meter: SimulatedMeter, profile: Dlt645Profile, frame: dlt.Frame
    ) -> dlt.Frame:
        address = meter.address.upper()
        fn = dlt.ControlCode.REMOTE_CONTROL
        rc = dlt.parse_remote_control_request(frame)
        if not self._authorised(meter, rc.credentials):
            return dlt.error_reply(address, fn, UNAUTHORISED)
        meter_now = self.now() + timedelta(seconds=meter.clock_offset_s)
        if rc.deadline < meter_now.replace(microsecond=0):
            return dlt.error_reply(address, fn, OTHER)
        meter.control(rc.command.name.lower(), 1)
        return dlt.ok_reply(address, fn)

    def _write(self, meter: SimulatedMeter, profile: Dlt645Profile, frame: dlt.Frame) -> dlt.Frame:
        address = meter.address.upper()
        fn = dlt.ControlCode.WRITE_DATA
        wr = dlt.parse_write_request(frame)
        if not self._authorised(meter, wr.credentials):
            return dlt.error_reply(address, fn, UNAUTHORISED)
        rc = profile.recharge
        if rc is None or wr.di != rc.di:
            return dlt.error_reply(address, fn, NO_SUCH_DATA)
        digits = rc.amount_format.replace(".", "")
        width = len(digits) // 2
        if len(wr.value) != width + rc.count_width:
            return dlt.error_reply(address, fn, OTHER)
        amount = dlt.decode_bcd_decimal(wr.value[:width], len(rc.amount_format.partition(".")[2]))
        count = dlt.bcd_to_int(wr.value[width:])
        meter.recharge(amount, count)
        return dlt.ok_reply(address, fn)
