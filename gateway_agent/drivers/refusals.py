"""What a meter refuses to answer: a DL/T 645 data identifier answered "no such data", a
Modbus register run answered exception 2 (illegal data address).

A refusal costs only the quantities asked for: the driver skips the item (per device) and
asks again after ``retry_s`` (hourly by default; firmware upgrades and meter swaps happen).
Each device + item is logged once until the meter answers it again; every refusal is
counted for the heartbeat (:meth:`Refusals.take`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

#: Default time before a refused item is asked again.
RETRY_S = 3600.0


class Refusals:
    """Refused items by (device key, item). ``clock`` is monotonic seconds."""

    def __init__(self, retry_s: float = RETRY_S, clock: Callable[[], float] = time.monotonic):
        self.retry_s = retry_s
        self.clock = clock
        self._until: dict[tuple[str, Hashable], float] = {}
        self._logged: set[tuple[str, Hashable]] = set()
        self._count = 0

    def skip(self, device: str, item: Hashable) -> bool:
        """Is ``item`` refused by ``device`` and not yet due to be asked again?"""
        until = self._until.get((device, item))
        return until is not None and self.clock() < until

    def refused(self, device: str, item: Hashable, what: str, *, remember: bool = True) -> None:
        """The meter refused ``item``: count it, log it (once per device + item) and, with
        ``remember``, skip it until ``retry_s`` has passed."""
        key = (device, item)
        self._count += 1
        if remember:
            self._until[key] = self.clock() + self.retry_s
        if key not in self._logged:
            self._logged.add(key)
            log.warning("device %s: %s; asking again every %gs", device, what, self.retry_s)

    def answered(self, device: str, item: Hashable) -> None:
        """The meter answered ``item`` (again): a later refusal is news worth a log line."""
        key = (device, item)
        self._until.pop(key, None)
        self._logged.discard(key)

    def forget(self, device: str) -> None:
        """Drop what ``device`` refused (its read got nothing: ask everything next time)."""
        for key in [k for k in self._until if k[0] == device]:
            del self._until[key]

    def skipping(self) -> int:
        """Items not asked now, over every device (a gauge for the heartbeat)."""
        now = self.clock()
        return sum(1 for until in self._until.values() if now < until)

    def take(self) -> int:
        """Refusals since the previous call."""
        count, self._count = self._count, 0
        return count
