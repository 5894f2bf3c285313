"""The payments' periodic job in ``prepay worker``: silent orders queried and credited,
expired ones closed, unanswered refunds asked again and processing ones queried."""

from __future__ import annotations

import asyncio
import logging

from cloud.aio import raise_if_cancelled
from cloud.payments.wechat.orders import WeChatPayments
from cloud.payments.wechat.refunds import sweep_refunds

log = logging.getLogger(__name__)


async def sweep_once(pay: WeChatPayments) -> dict[str, int]:
    counts = await pay.sweep()
    counts["refunds_moved"] = await sweep_refunds(pay)
    return counts


async def payments_forever(pay: WeChatPayments, every_s: float = 15.0) -> None:
    while True:
        try:
            counts = await sweep_once(pay)
            if any(counts.values()):
                log.info("payments sweep: %s", counts)
        except Exception:
            raise_if_cancelled()
            log.exception("payments sweep failed; retrying in %s s", every_s)
        await asyncio.sleep(every_s)
