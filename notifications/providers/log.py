"""The log provider (development, the demo without stand-ins): a message is "sent" by
logging it, and counted as delivered at once."""

from __future__ import annotations

import logging
import uuid

from notifications.providers import Message, Outcome, Result
from notifications.segments import segments

log = logging.getLogger("notifications.log")


class LogProvider:
    channel = "log"

    async def send(self, message: Message) -> Result:
        log.info("notification %s to %s: %s", message.notification_id, message.to, message.text)
        return Result(
            Outcome.ACCEPTED, f"log-{uuid.uuid4().hex[:16]}", segments(message.text), {"log": True}
        )

    async def close(self) -> None:
        return None
