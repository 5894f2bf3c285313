"""A Modbus TCP server (MBAP framing) for simulated meters.

Written here rather than with pymodbus's server so that the simulator controls every byte:
reply delays and fault injection (no reply, corrupted frames, exception codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from meter_profiles.simulators.line import Faults
from meter_profiles.simulators.meter import SimulatedMeter
from meter_profiles.simulators.modbus import ModbusDevices

log = logging.getLogger(__name__)


class ModbusTcpSimulator:
    def __init__(
        self, meters: list[SimulatedMeter], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.devices = ModbusDevices(meters)
        self.meters = self.devices.meters
        self.host = host
        self.port = port
        self.reply_delay_s = 0.0
        self._server: asyncio.Server | None = None

    @property
    def faults(self) -> Faults:
        return self.devices.faults

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
                reply = self.devices.answer(unit, pdu)
                if reply is None:
                    continue
                if unit in self.faults.corrupt:
                    reply = reply[:1]  # a truncated PDU the client cannot decode
                if self.reply_delay_s:
                    await asyncio.sleep(self.reply_delay_s)
                writer.write(struct.pack(">HHHB", tid, pid, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
