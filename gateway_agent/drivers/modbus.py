"""Modbus driver (pymodbus 3.16 client): block reads planned from the profile, control
writes (function 06), recharge as one function-16 write.

Transports (``bus.transport``):

- ``modbus_tcp``: Modbus TCP (MBAP header), :class:`AsyncModbusTcpClient`.
- ``tcp``: Modbus RTU frames through a serial-to-Ethernet converter,
  :class:`AsyncModbusTcpClient` with ``framer=FramerType.RTU``.
- ``serial``: Modbus RTU on a local RS-485 port, :class:`AsyncModbusSerialClient`; line
  settings from the bus, else from its first device's profile.

A block a meter refuses with exception 2 (illegal data address), typically because it spans
registers the meter does not have (the profile's ``max_read_gap``), is split into its runs
of listed registers, then into single quantities, and the split is remembered.

What pymodbus 3.16 does not do, and this driver adds (found by reading its source):

- **Inter-frame silence.** The async client writes a request as soon as it is asked, with
  no 3.5-character gap after the previous reply (the ``FramerRTU`` docstring names the
  gap; nothing in ``TransactionManager.execute`` or ``SerialTransport`` keeps it). The
  driver waits until ``silence_s`` has passed since the last byte received (serial
  default: 3.5 characters, 1.75 ms above 19200 baud, as the Modbus serial-line spec says).
  Serial reception itself is event-driven (``loop.add_reader`` on the port; the 0.5 ms
  polling task is only used on Windows), so it adds no latency of its own.
- **Broken replies.** ``FramerRTU.decode`` drops a frame with a bad CRC and keeps waiting,
  so a corrupted or garbage reply would surface only as a timeout. The driver watches the
  received bytes (it wraps the client protocol's ``data_received``): when at least 4 bytes
  have arrived, no valid reply has been decoded and the line has then been quiet for
  ``frame_gap_s`` (the RTU end-of-frame rule, with a margin for USB adapters and
  converters), the transaction ends with :class:`DecodeFailure` carrying the bytes seen.
  Fewer than 4 bytes and silence until the timeout is :class:`DeviceTimeout`. A reply
  that decodes but carries the wrong number of registers is a :class:`DecodeFailure` too.
- **Reconnection.** pymodbus's own reconnect task is switched off (``reconnect_delay=0``)
  so that exactly one party reconnects: the driver, on the next transaction after a drop
  (a lost connection also ends a pending transaction at once with :class:`DeviceTimeout`
  instead of waiting out the timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from gateway_agent.config import BusConfig, DeviceConfig
from gateway_agent.drivers import (
    Answer,
    DecodeFailure,
    DeviceException,
    DeviceTimeout,
    DriverError,
    Unsupported,
    Values,
)
from gateway_agent.drivers.factory import serial_settings
from gateway_agent.drivers.refusals import Refusals
from meter_profiles.decode import (
    Block,
    ProfileDecodeError,
    decode_block,
    plan_blocks,
    split_block,
)
from meter_profiles.schema import AnyProfile, ModbusProfile

log = logging.getLogger(__name__)

#: Fewer bytes than this cannot be an RTU frame (unit, function, CRC).
MIN_FRAME = 4
#: Modbus exception 2: a register of the request is not there.
ILLEGAL_DATA_ADDRESS = 2


def _modbus(profile: AnyProfile) -> ModbusProfile:
    if not isinstance(profile, ModbusProfile):
        raise Unsupported(f"profile {profile.model} is not a Modbus profile")
    return profile


def rtu_silence_s(baudrate: int, bits_per_char: int) -> float:
    """The RTU inter-frame silence: 3.5 characters, fixed 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * bits_per_char / baudrate


class ModbusDriver:
    """One Modbus bus. Not safe for concurrent use: the bus scheduler owns it.

    ``refused_retry_s`` (default: the bus's ``refused_retry_s``): registers a meter refused
    with exception 2 are not asked again for this long."""

    def __init__(
        self,
        bus: BusConfig,
        profiles: dict[str, AnyProfile] | None = None,
        *,
        refused_retry_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.refusals = Refusals(
            bus.refused_retry_s if refused_retry_s is None else refused_retry_s
        )
        self.where = f"bus {bus.name}"
        common = {
            "timeout": bus.timeout_s,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_connect": self._trace_connect,
        }
        self.client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if bus.transport == "serial":
            line = serial_settings(bus, profiles or {})
            bits = 1 + line.bytesize + (0 if line.parity == "N" else 1) + line.stopbits
            self.silence_s = (
                bus.silence_s if bus.silence_s is not None else rtu_silence_s(line.baudrate, bits)
            )
            self.frame_gap_s = max(3.5 * bits / line.baudrate, 0.05)
            self.client = AsyncModbusSerialClient(
                line.port,
                framer=FramerType.RTU,
                baudrate=line.baudrate,
                bytesize=line.bytesize,
                parity=line.parity,
                stopbits=line.stopbits,
                **common,  # type: ignore[arg-type]
            )
            self.where = f"serial {line.port}"
        else:
            framer = FramerType.RTU if bus.transport == "tcp" else FramerType.SOCKET
            self.silence_s = bus.silence_s or 0.0
            self.frame_gap_s = 0.1
            self.client = AsyncModbusTcpClient(
                bus.host,
                port=bus.port,
                framer=framer,
                **common,  # type: ignore[arg-type]
            )
            self.where = f"{bus.transport} {bus.host}:{bus.port}"
        self.frame_gap_s = min(self.frame_gap_s, bus.timeout_s)
        self._plans: dict[str, list[Block]] = {}
        #: blocks a device refused with exception 2, by (device key, block): their parts
        self._splits: dict[tuple[str, Block], list[Block]] = {}
        # the transaction in flight (one at a time)
        self._abort: asyncio.Future[DriverError] | None = None
        self.hard_timeout_s = 2 * bus.timeout_s + 2.0
        self._rx_count = 0
        self._rx_seen = b""
        self._gap: asyncio.TimerHandle | None = None
        self._last_rx = 0.0
        self._watch_received_bytes()

    # -- pymodbus hooks -------------------------------------------------------------------
    def _watch_received_bytes(self) -> None:
        """See every received chunk before pymodbus does. ``trace_packet`` is not enough: it
        shows pymodbus's receive buffer, and pymodbus silently empties that buffer without
        calling it when more than 264 bytes pile up (a babbling device)."""
        ctx = self.client.ctx
        pymodbus_data_received = ctx.data_received

        def data_received(data: bytes) -> None:
            self._received(data)
            pymodbus_data_received(data)

        ctx.data_received = data_received  # type: ignore[method-assign]

    def _received(self, data: bytes) -> None:
        if self._abort is None or self._abort.done():
            return
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._rx_count += len(data)
        if len(self._rx_seen) < 32:
            self._rx_seen = (self._rx_seen + data)[:32]
        if self._gap is not None:
            self._gap.cancel()
        self._gap = loop.call_later(self.frame_gap_s, self._frame_ended)

    def _frame_ended(self) -> None:
        self._gap = None
        if self._abort is None or self._abort.done() or self._rx_count < MIN_FRAME:
            return
        self._abort.set_result(
            DecodeFailure(
                f"{self.where}: {self._rx_count} byte(s) but no valid reply "
                f"(bad CRC, wrong length or garbage): {self._rx_seen.hex(' ')}"
            )
        )

    def _trace_connect(self, connected: bool) -> None:
        if connected or self._abort is None or self._abort.done():
            return
        if self._rx_count >= MIN_FRAME:
            # pymodbus raises inside data_received when a checksum-valid frame does not
            # decode, and asyncio then closes a TCP connection: the reply was the problem
            self._abort.set_result(
                DecodeFailure(
                    f"{self.where}: undecodable reply, connection reset: {self._rx_seen.hex(' ')}"
                )
            )
        else:
            self._abort.set_result(DeviceTimeout(f"{self.where}: connection lost"))

    # -- connection -------------------------------------------------------------------------
    async def close(self) -> None:
        self.client.close()

    async def _ensure(self) -> None:
        if self.client.connected:
            return
        try:
            async with asyncio.timeout(self.hard_timeout_s):  # never trust a library to return
                connected = await self.client.connect()
        except TimeoutError:
            connected = False
        if not connected:
            self.client.close()
            raise DeviceTimeout(f"{self.where}: cannot connect")

    async def _transact(
        self, unit: int, what: str, call: Callable[[], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        """One request/reply with the bus's silence before it; errors mapped to ours."""
        await self._ensure()
        loop = asyncio.get_running_loop()
        wait = self._last_rx + self.silence_s - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._rx_count = 0
        self._rx_seen = b""
        abort: asyncio.Future[DriverError] = loop.create_future()
        self._abort = abort
        task = asyncio.ensure_future(call())
        try:
            # pymodbus times the request out itself; the outer bound only guards against a
            # request future it never resolves (seen once: a hung test run)
            await asyncio.wait(
                (task, abort), timeout=self.hard_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not task.done() and not abort.done():
                abort.set_result(DeviceTimeout(f"{self.where}: no answer (hard timeout)"))
                self.client.close()
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            if self._gap is not None:
                self._gap.cancel()
                self._gap = None
            self._abort = None
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # (a cancel of ours still ends us)
            error = abort.result()
            error.args = (f"unit {unit}: {what}: {error}",)
            raise error
        abort.cancel()
        try:
            reply = task.result()
        except (ModbusException, TimeoutError, OSError) as exc:
            if isinstance(exc, ConnectionException):
                self.client.close()
            partial = (
                f" ({self._rx_count} byte(s): {self._rx_seen.hex(' ')})" if self._rx_count else ""
            )
            raise DeviceTimeout(f"unit {unit}: {what}: no answer{partial} ({exc})") from exc
        if reply.isError():
            code = int(getattr(reply, "exception_code", 0))
            raise DeviceException(code, f"unit {unit}: {what}: exception {code}")
        return reply

    # -- MeterDriver ------------------------------------------------------------------------
    def plan(self, profile: ModbusProfile) -> list[Block]:
        plan = self._plans.get(profile.model)
        if plan is None:
            plan = self._plans[profile.model] = plan_blocks(profile)
        return plan

    async def read_block(self, unit: int, profile: ModbusProfile, block: Block) -> Values:
        what = f"read {block.count} at {block.start:#06x}"
        if block.function == 3:
            reply = await self._transact(
                unit,
                what,
                lambda: self.client.read_holding_registers(
                    block.start, count=block.count, device_id=unit
                ),
            )
        else:
            reply = await self._transact(
                unit,
                what,
                lambda: self.client.read_input_registers(
                    block.start, count=block.count, device_id=unit
                ),
            )
        try:
            return decode_block(profile, block, list(reply.registers))
        except ProfileDecodeError as exc:
            raise DecodeFailure(f"unit {unit}: {what}: {exc}") from exc

    async def read(self, device: DeviceConfig, profile: AnyProfile) -> Values:
        """Every planned block. A block refused with exception 2 (illegal data address) is
        split (:func:`split_block`) and the split remembered for the device; a read that
        cannot be split further costs only its quantities (skipped until :attr:`refusals`
        asks again). DeviceException only when nothing was answered."""
        mp = _modbus(profile)
        values: Values = {}
        refused: list[DeviceException] = []
        for block in self.plan(mp):
            await self._read_planned(device, mp, block, values, refused)
        if not values and refused:
            self.refusals.forget(device.key)  # ask everything again next time
            for key in [k for k in self._splits if k[0] == device.key]:
                del self._splits[key]
            last = refused[-1]
            raise DeviceException(
                last.code,
                f"unit {device.unit} refused every register of profile {mp.model} (last: {last})",
                last.answer,
            )
        return values

    async def _read_planned(
        self,
        device: DeviceConfig,
        mp: ModbusProfile,
        block: Block,
        values: Values,
        refused: list[DeviceException],
    ) -> None:
        key = device.key
        parts = self._splits.get((key, block))
        if parts is None:
            if self.refusals.skip(key, block):
                return
            try:
                values.update(await self.read_block(device.unit, mp, block))
            except DeviceException as exc:
                if exc.code != ILLEGAL_DATA_ADDRESS:
                    raise
                refused.append(exc)
                names = ", ".join(name for name, _ in block.members)
                what = (
                    f"unit {device.unit} refused {block.count} register(s) at "
                    f"{block.start:#06x} ({names}) with exception 2 (illegal data address)"
                )
                parts = split_block(mp, block)
                if not parts:
                    self.refusals.refused(key, block, what)
                    return
                self.refusals.refused(
                    key, block, f"{what}: reading them as {len(parts)} blocks", remember=False
                )
                self._splits[(key, block)] = parts
            else:
                self.refusals.answered(key, block)
                return
        for part in parts:
            await self._read_planned(device, mp, part, values, refused)

    async def control(
        self,
        device: DeviceConfig,
        profile: AnyProfile,
        action: str,
        channel: int,
        deadline: datetime,
    ) -> Answer:
        mp = _modbus(profile)
        if not 1 <= channel <= mp.channels:
            raise Unsupported(f"profile {mp.model} has no channel {channel}")
        ctl = mp.control_register(action, channel)
        if ctl is None:
            raise Unsupported(f"profile {mp.model} has no control {action!r}")
        unit = device.unit
        reply = await self._transact(
            unit,
            action,
            lambda: self.client.write_register(ctl.address, ctl.value, device_id=unit),
        )
        echoed = (getattr(reply, "address", None), list(getattr(reply, "registers", [])))
        if echoed != (ctl.address, [ctl.value]):
            raise DecodeFailure(f"unit {unit}: {action}: the meter echoed {echoed}")
        return {"register": f"{ctl.address:#06x}", "value": str(ctl.value)}

    async def recharge(
        self, device: DeviceConfig, profile: AnyProfile, amount: Decimal, purchase_count: int
    ) -> Answer:
        mp = _modbus(profile)
        rc = mp.recharge
        if rc is None:
            raise Unsupported(f"profile {mp.model} has no recharge mapping")
        units = amount / rc.amount_scale
        if units != units.to_integral_value() or not 0 < units < 1 << 32:
            raise Unsupported(f"amount {amount} is not a whole number of {rc.amount_scale}")
        if not 0 < purchase_count <= 0xFFFF:
            raise Unsupported(f"purchase count {purchase_count} out of range")
        n = int(units)
        unit = device.unit
        words = [n >> 16, n & 0xFFFF, purchase_count]
        await self._transact(
            unit,
            "recharge",
            lambda: self.client.write_registers(rc.address, words, device_id=unit),
        )
        return {"amount": str(amount), "purchase_count": str(purchase_count)}

    async def time_sync(self, now: datetime) -> Answer:
        raise Unsupported("Modbus profiles here have no clock register")
