"""A Modbus TCP server for simulated meters (functions 03, 04, 06).

Written here rather than with pymodbus's server so that the simulator controls every byte:
reply delays and fault injection (no reply, exception codes) for tests and training.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass, field

from meter_profiles.simulators.meter import MeterRefused, SimulatedMeter

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Injected faults per unit id: silence, or a fixed exception code."""

    silent_units: set[int] = field(default_factory=set)
    exception_units: dict[int, int] = field(default_factory=dict)
    reply_delay_s: float = 0.0


class ModbusTcpSimulator:
    def __init__(
        self, meters: list[SimulatedMeter], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.meters = {m.unit: m for m in meters}
        self.host = host
        self.port = port
        self.faults = Faults()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "Modbus TCP simulator with %d meter(s) on %s:%d", len(self.meters), self.host, self.port
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, pid, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                reply = self.answer(unit, pdu)
                if reply is None:
                    continue
                if self.faults.reply_delay_s:
                    await asyncio.sleep(self.faults.reply_delay_s)
                writer.write(struct.pack(">HHHB", tid, pid, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(self, unit: int, pdu: bytes) -> bytes | None:
        """The reply PDU for a request PDU, or None when the meter stays silent."""
        meter = self.meters.get(unit)
        if meter is None or unit in self.faults.silent_units or not pdu:
            return None
        fn = pdu[0]
        if unit in self.faults.exception_units:
            return bytes([fn | 0x80, self.faults.exception_units[unit]])
        try:
            if fn in (3, 4) and len(pdu) == 5:
                start, count = struct.unpack(">HH", pdu[1:5])
                if not 1 <= count <= 125:
                    raise MeterRefused(0x03, "bad register count")
                regs = meter.registers()
                words = []
                for a in range(start, start + count):
                    if (fn, a) not in regs and not _in_gap(regs, fn, a):
                        raise MeterRefused(0x02, f"illegal address {a:#06x}")
                    words.append(regs.get((fn, a), 0))
                return bytes([fn, 2 * count]) + b"".join(struct.pack(">H", w) for w in words)
            if fn == 6 and len(pdu) == 5:
                address, value = struct.unpack(">HH", pdu[1:5])
                meter.write_register(address, value)
                return pdu
            raise MeterRefused(0x01, f"illegal function {fn}")
        except MeterRefused as exc:
            return bytes([fn | 0x80, exc.code])


def _in_gap(regs: dict[tuple[int, int], int], fn: int, address: int, span: int = 4) -> bool:
    """Real meters answer small unmapped holes inside a register block with zeros."""
    return any((fn, address - d) in regs for d in range(1, span + 1)) and any(
        (fn, address + d) in regs for d in range(1, span + 1)
    )
