"""Modbus driver (pymodbus client): block reads planned from the profile, control writes,
recharge as one function-16 write. Modbus TCP today; RTU over serial and over TCP next."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from gateway_agent.config import BusConfig, DeviceConfig
from gateway_agent.drivers import (
    Answer,
    DecodeFailure,
    DeviceException,
    DeviceTimeout,
    Unsupported,
    Values,
)
from meter_profiles.decode import Block, ProfileDecodeError, decode_block, plan_blocks
from meter_profiles.schema import AnyProfile, ModbusProfile

log = logging.getLogger(__name__)


def _modbus(profile: AnyProfile) -> ModbusProfile:
    if not isinstance(profile, ModbusProfile):
        raise Unsupported(f"profile {profile.model} is not a Modbus profile")
    return profile


class ModbusDriver:
    """One Modbus bus. Not safe for concurrent use: the bus scheduler owns it."""

    def __init__(self, bus: BusConfig) -> None:
        self.bus = bus
        self.client = AsyncModbusTcpClient(
            bus.host, port=bus.port, timeout=bus.timeout_s, retries=0
        )
        self._plans: dict[str, list[Block]] = {}

    async def close(self) -> None:
        self.client.close()

    async def _ensure(self) -> None:
        if not self.client.connected and not await self.client.connect():
            raise DeviceTimeout(f"bus {self.bus.name}: connection failed")

    async def read(self, device: DeviceConfig, profile: AnyProfile) -> Values:
        mp = _modbus(profile)
        await self._ensure()
        unit = device.unit
        plan = self._plans.setdefault(mp.model, plan_blocks(mp))
        values: Values = {}
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
                values.update(decode_block(mp, block, list(rr.registers)))
            except ProfileDecodeError as exc:
                raise DecodeFailure(f"unit {unit}: {exc}") from exc
        return values

    async def control(
        self,
        device: DeviceConfig,
        profile: AnyProfile,
        action: str,
        channel: int,
        deadline: datetime,
    ) -> Answer:
        mp = _modbus(profile)
        ctl = mp.control_register(action, channel)
        if ctl is None:
            raise Unsupported(f"profile {mp.model} has no control {action!r}")
        await self._ensure()
        unit = device.unit
        try:
            rr = await self.client.write_register(ctl.address, ctl.value, device_id=unit)
        except (ModbusIOException, ConnectionException, TimeoutError) as exc:
            raise DeviceTimeout(f"unit {unit}: no answer to {action} ({exc})") from exc
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise DeviceException(code, f"unit {unit}: {action} refused with exception {code}")
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
        await self._ensure()
        unit = device.unit
        try:
            rr = await self.client.write_registers(
                rc.address, [n >> 16, n & 0xFFFF, purchase_count], device_id=unit
            )
        except (ModbusIOException, ConnectionException, TimeoutError) as exc:
            raise DeviceTimeout(f"unit {unit}: no answer to recharge ({exc})") from exc
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise DeviceException(code, f"unit {unit}: recharge refused with exception {code}")
        return {"amount": str(amount), "purchase_count": str(purchase_count)}

    async def time_sync(self, now: datetime) -> Answer:
        raise Unsupported("Modbus profiles here have no clock register")
