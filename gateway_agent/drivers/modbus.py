"""Modbus driver (pymodbus client): block reads planned from the profile, control writes."""

from __future__ import annotations

import logging
from decimal import Decimal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from gateway_agent.drivers import DecodeFailure, DeviceException, DeviceTimeout
from meter_profiles.decode import Block, ProfileDecodeError, decode_block, plan_blocks
from meter_profiles.schema import Profile

log = logging.getLogger(__name__)


class ModbusTcpBus:
    """One Modbus TCP bus (or serial-to-Ethernet converter). Not safe for concurrent use:
    the bus scheduler owns it and runs one transaction at a time."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        self._plans: dict[str, list[Block]] = {}

    async def close(self) -> None:
        self.client.close()

    async def _ensure(self) -> None:
        if not self.client.connected and not await self.client.connect():
            raise DeviceTimeout("bus connection failed")

    async def read(self, unit: int, profile: Profile) -> dict[tuple[str, int], Decimal]:
        await self._ensure()
        plan = self._plans.setdefault(profile.model, plan_blocks(profile))
        values: dict[tuple[str, int], Decimal] = {}
        for block in plan:
            try:
                if block.function == 3:
                    rr = await self.client.read_holding_registers(
                        block.start, count=block.count, device_id=unit
                    )
                else:
                    rr = await self.client.read_input_registers(
                        block.start, count=block.count, device_id=unit
                    )
            except (ModbusIOException, ConnectionException, TimeoutError) as exc:
                raise DeviceTimeout(f"unit {unit}: no answer ({exc})") from exc
            if rr.isError():
                code = int(getattr(rr, "exception_code", 0))
                raise DeviceException(code, f"unit {unit}: exception {code} at {block.start:#06x}")
            try:
                values.update(decode_block(profile, block, list(rr.registers)))
            except ProfileDecodeError as exc:
                raise DecodeFailure(f"unit {unit}: {exc}") from exc
        return values

    async def control(self, unit: int, profile: Profile, action: str, channel: int) -> None:
        ctl = profile.controls.get(action)  # type: ignore[call-overload]
        if ctl is None:
            raise DeviceException(0x01, f"profile {profile.model} has no control {action!r}")
        await self._ensure()
        address = ctl.address + (channel - 1) * profile.channel_stride
        try:
            rr = await self.client.write_register(address, ctl.value, device_id=unit)
        except (ModbusIOException, ConnectionException, TimeoutError) as exc:
            raise DeviceTimeout(f"unit {unit}: no answer to {action} ({exc})") from exc
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise DeviceException(code, f"unit {unit}: {action} refused with exception {code}")
