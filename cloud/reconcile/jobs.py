"""The reconciliation job in ``prepay worker``: every few minutes, yesterday's trade bill
of each merchant once it is ready (10:00 China time), and the runs due again (a wrong hash,
WeChat unreachable, a run left pending)."""

from __future__ import annotations

import asyncio
import logging

from cloud.aio import raise_if_cancelled
from cloud.reconcile.service import Reconciler

log = logging.getLogger(__name__)


async def reconcile_forever(reconciler: Reconciler, every_s: float = 300.0) -> None:
    while True:
        try:
            counts = await reconciler.morning()
            if any(counts.values()):
                log.info("reconciliation: %s", counts)
        except Exception:
            raise_if_cancelled()
            log.exception("reconciliation failed; retrying in %s s", every_s)
        await asyncio.sleep(every_s)
