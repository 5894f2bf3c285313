"""One scheduler per bus. RS-485 is half-duplex: the scheduler's task is the only thing
that talks to the bus's driver, so a bus carries one transaction at a time (the driver keeps
the protocol's inter-frame silence). Commands preempt polling: a queued command runs before
the next poll. Polls are staggered over the interval at start, keep their phase afterwards,
and a device that stops answering backs off (doubling, capped) without delaying the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway_agent.config import BusConfig, DeviceConfig
from gateway_agent.drivers import DeviceTimeout, DriverError, MeterDriver, Values
from meter_profiles.schema import AnyProfile

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF_S = 600.0


@dataclass
class DeviceHealth:
    due: float = 0.0
    failures: int = 0
    last_error: str | None = None

    @property
    def backing_off(self) -> bool:
        return self.failures > 0


@dataclass
class BusCounters:
    transactions: int = 0
    timeouts: int = 0
    errors: int = 0
    busy_s: float = 0.0
    since: float = 0.0


@dataclass
class _Job:
    run: Callable[[], Awaitable[object]]
    done: asyncio.Future[object] = field(repr=False, default_factory=lambda: asyncio.Future())


class BusScheduler:
    """Owns one bus driver. ``on_values(device, values, at)`` receives every good poll;
    ``on_health(device, online)`` is told when a device stops or starts answering."""

    def __init__(
        self,
        cfg: BusConfig,
        driver: MeterDriver,
        profiles: dict[str, AnyProfile],
        interval_s: float,
        on_values: Callable[[DeviceConfig, Values], object],
        on_health: Callable[[DeviceConfig, bool, str], None] | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self.profiles = {d.key: profiles[d.profile] for d in cfg.devices}
        self.devices = {d.key: d for d in cfg.devices}
        self.interval_s = interval_s
        self.on_values = on_values
        self.on_health = on_health
        self.max_backoff_s = max_backoff_s
        self.health = {d.key: DeviceHealth() for d in cfg.devices}
        self.counters = BusCounters()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._wake = asyncio.Event()

    def interval_of(self, dev: DeviceConfig) -> float:
        return dev.poll_interval_s or self.interval_s

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.counters.since = start
        n = max(1, len(self.cfg.devices))
        for i, dev in enumerate(self.cfg.devices):  # stagger the first round over the interval
            self.health[dev.key].due = start + self.interval_of(dev) * i / n
        try:
            while True:
                if self._jobs:
                    job = self._jobs.popleft()
                    await self._run_job(job)
                    continue
                nxt = self._next_device()
                now = loop.time()
                wait = (self.health[nxt.key].due - now) if nxt else 1.0
                if wait > 0:
                    self._wake.clear()
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    continue
                assert nxt is not None
                await self.poll(nxt)
        finally:
            for job in self._jobs:
                if not job.done.done():
                    job.done.cancel()
            await self.driver.close()

    def _next_device(self) -> DeviceConfig | None:
        if not self.cfg.devices:
            return None
        return min(self.cfg.devices, key=lambda d: self.health[d.key].due)

    async def _run_job(self, job: _Job) -> None:
        try:
            result = await job.run()
        except Exception as exc:  # the caller gets it; the bus carries on
            if not job.done.done():
                job.done.set_exception(exc)
            return
        if not job.done.done():
            job.done.set_result(result)

    async def submit(self, run: Callable[[], Awaitable[T]]) -> T:
        """Run ``run`` on the bus before the next poll (commands preempt polling)."""
        job = _Job(run)
        self._jobs.append(job)
        self._wake.set()
        return await job.done  # type: ignore[return-value]

    # -- transactions -----------------------------------------------------------------------
    async def transaction(self, dev: DeviceConfig, call: Callable[[], Awaitable[T]]) -> T:
        """One driver call, counted and timed; errors update the device's health."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.counters.transactions += 1
        try:
            result = await call()
        except DriverError as exc:
            self._failed(dev, exc)
            raise
        finally:
            self.counters.busy_s += loop.time() - t0
        self._answered(dev)
        return result

    async def read(self, dev: DeviceConfig) -> Values | None:
        """Read every quantity of ``dev`` (None when it did not answer properly)."""
        profile = self.profiles[dev.key]
        try:
            return await self.transaction(dev, lambda: self.driver.read(dev, profile))
        except DriverError:
            return None

    async def poll(self, dev: DeviceConfig) -> Values | None:
        loop = asyncio.get_running_loop()
        h = self.health[dev.key]
        values = await self.read(dev)
        interval = self.interval_of(dev)
        now = loop.time()
        if values is not None:
            self.on_values(dev, values)
            h.due = h.due + interval if h.due + interval > now else now + interval
        else:
            backoff = min(interval * 2 ** min(h.failures - 1, 16), self.max_backoff_s)
            h.due = now + max(interval, backoff)
        return values

    def _failed(self, dev: DeviceConfig, exc: DriverError) -> None:
        if isinstance(exc, DeviceTimeout):
            self.counters.timeouts += 1
        else:
            self.counters.errors += 1
        h = self.health[dev.key]
        h.failures += 1
        message = str(exc)
        if h.last_error != message:  # log once, then count
            log.warning("bus %s, device %s: %s", self.cfg.name, dev.key, message)
            h.last_error = message
        if h.failures == 1 and self.on_health is not None:
            self.on_health(dev, False, message)

    def _answered(self, dev: DeviceConfig) -> None:
        h = self.health[dev.key]
        if h.failures and self.on_health is not None:
            self.on_health(dev, True, f"answering again after {h.failures} failure(s)")
        h.failures = 0
        h.last_error = None

    # -- statistics ---------------------------------------------------------------------------
    def take_stats(self) -> dict[str, float | int]:
        """Counters since the previous call, and the line's utilisation over that time."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        c = self.counters
        span = max(1e-9, now - c.since) if c.since else 0.0
        stats: dict[str, float | int] = {
            "transactions": c.transactions,
            "timeouts": c.timeouts,
            "errors": c.errors,
            "utilisation": round(min(1.0, c.busy_s / span), 4) if span else 0.0,
            "devices_backing_off": sum(1 for h in self.health.values() if h.backing_off),
            "refused": self.driver.refusals.take(),
            "refused_items": self.driver.refusals.skipping(),
        }
        self.counters = BusCounters(since=now)
        return stats
