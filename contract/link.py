"""The MQTT client both ends use (aiomqtt), with one fix for Python 3.11.

aiomqtt waits for a QoS 1 publish's acknowledgement with ``asyncio.wait_for``; in 3.11 a
cancel that arrives together with that acknowledgement is swallowed, and the task that
published carries on as if never stopped (a consumer or a gateway that cannot be shut
down). :class:`Client` re-raises such a cancel once the publish returns."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt


class Client(aiomqtt.Client):
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        await super().publish(*args, **kwargs)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
