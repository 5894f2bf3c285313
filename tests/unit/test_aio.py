"""A loop that carries on after errors must still end when cancelled, even when the
cancellation is replaced by another error (a failed rollback mid-query)."""

from __future__ import annotations

import asyncio

import pytest

from cloud.aio import raise_if_cancelled


async def _loop(guarded: bool) -> None:
    while True:
        try:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise RuntimeError("rollback failed: another command is in progress") from None
        except Exception:
            if guarded:
                raise_if_cancelled()


async def test_a_cancel_replaced_by_an_error_still_ends_the_loop() -> None:
    task = asyncio.create_task(_loop(guarded=True))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(2):
            await task
