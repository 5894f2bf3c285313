"""asyncio helpers for the cloud's long-running loops."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Call first in a broad ``except``: re-raise a cancellation another error replaced.

    Cancelled in the middle of a query, the driver's clean-up (the rollback) can fail and
    raise ``OperationalError`` in ``CancelledError``'s place; a loop that logs and carries
    on after errors would then swallow the cancel, and the task would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
