"""Bus drivers: one per protocol, each owning one bus link (the bus scheduler runs one
transaction at a time on it). Every driver distinguishes timeout, device exception / error
reply (with its code) and decode failure, and never answers ``None`` for all three."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway_agent.config import DeviceConfig
    from gateway_agent.drivers.refusals import Refusals
    from meter_profiles.schema import AnyProfile

#: Decoded values of one read, by (quantity name, channel).
Values = dict[tuple[str, int], Decimal]
#: The meter's own answer to a command, for the ack (strings only: it goes into JSON).
Answer = dict[str, str]


class DriverError(Exception):
    """Base of bus driver errors."""


class DeviceTimeout(DriverError):
    """The device did not answer in time (or the bus link is down)."""


class DeviceException(DriverError):
    """The device answered with an exception / error reply; ``code`` is its code (Modbus
    exception code, DL/T 645 error byte, CJ/T 188 status)."""

    def __init__(self, code: int, message: str, answer: Answer | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.answer = answer or {"exception_code": str(code)}


class DecodeFailure(DriverError):
    """The device answered something that cannot be decoded as its profile says."""


class Unsupported(DriverError):
    """The profile has no mapping for this action (nothing was sent to the meter)."""


class MeterDriver(Protocol):
    """What the bus scheduler asks of a protocol driver. ``refusals``: what the bus's meters
    refused to answer (skipped quantities, counted in the heartbeat)."""

    refusals: Refusals

    async def read(self, device: DeviceConfig, profile: AnyProfile) -> Values:
        """Every quantity of every channel, with the fewest requests the protocol allows."""
        ...

    async def control(
        self,
        device: DeviceConfig,
        profile: AnyProfile,
        action: str,
        channel: int,
        deadline: datetime,
    ) -> Answer:
        """Carry out a control action (profile control names); ``deadline`` bounds the
        command's validity where the protocol carries one (DL/T 645 N3..N8)."""
        ...

    async def recharge(
        self, device: DeviceConfig, profile: AnyProfile, amount: Decimal, purchase_count: int
    ) -> Answer:
        """Add ``amount`` to a meter-prepaid meter's balance under ``purchase_count``."""
        ...

    async def time_sync(self, now: datetime) -> Answer:
        """Set the clocks of the bus's meters (broadcast where the protocol has one)."""
        ...

    async def close(self) -> None: ...
