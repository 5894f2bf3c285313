"""Modbus RTU framing for simulated meters on a serial line (pty pair or TCP converter).

The line has no frame markers: a slave finds a request's end from its function code
(03/04/06: 8 bytes; 16: 9 + byte count) and checks the CRC. A frame with a bad CRC is
consumed silently, as real slaves do; bytes that do not start a known request are dropped
one at a time until a request lines up again. Unit 0 is the broadcast address: writes are
carried out by every meter and nobody answers.

Faults (by unit id, from :class:`~meter_profiles.simulators.line.Faults`): ``silent`` (no
reply), ``corrupt`` (the reply's CRC is flipped), ``exception`` (an exception reply with the
given code) and ``garbage`` (random bytes instead of a reply).
"""

from __future__ import annotations

import random

from gateway_agent.protocols.modbus_rtu import crc16
from meter_profiles.simulators.line import Faults
from meter_profiles.simulators.modbus import ModbusDevices

BROADCAST = 0
_FIXED_REQUEST = {3: 8, 4: 8, 6: 8}


def request_length(buffer: bytes) -> int | None:
    """The length of the request at the head of ``buffer``: ``None`` when more bytes are
    needed to tell, 0 when the head cannot start a request this simulator knows."""
    if len(buffer) < 2:
        return None
    fn = buffer[1]
    if fn in _FIXED_REQUEST:
        return _FIXED_REQUEST[fn]
    if fn == 16:
        if len(buffer) < 7:
            return None
        return 9 + buffer[6]
    return 0


class ModbusRtuResponder:
    """Answers RTU request frames for the meters of :class:`ModbusDevices`."""

    def __init__(self, devices: ModbusDevices, *, seed: int = 0) -> None:
        self.devices = devices
        self._rng = random.Random(seed)
        self.dropped_bytes = 0
        self.bad_crc = 0

    @property
    def faults(self) -> Faults:
        return self.devices.faults

    def respond(self, buffer: bytes) -> tuple[int, bytes | None] | None:
        size = request_length(buffer)
        if size is None:
            return None
        if size == 0:
            self.dropped_bytes += 1
            return 1, None  # not a request we know: drop a byte and hunt again
        if len(buffer) < size:
            return None
        frame = buffer[:size]
        if crc16(frame[:-2]).to_bytes(2, "little") != frame[-2:]:
            self.bad_crc += 1
            return size, None
        unit, pdu = frame[0], frame[1:-2]
        if unit == BROADCAST:
            if pdu[0] in (6, 16):
                for u in list(self.devices.meters):
                    self.devices.answer(u, pdu)
            return size, None
        reply = self.devices.answer(unit, pdu)
        if reply is None:
            return size, None
        if unit in self.faults.garbage:
            return size, self._rng.randbytes(self._rng.randint(3, 2 * len(reply) + 5))
        wire = bytes([unit]) + reply
        crc = crc16(wire)
        if unit in self.faults.corrupt:
            crc ^= 0xFFFF
        return size, wire + crc.to_bytes(2, "little")
