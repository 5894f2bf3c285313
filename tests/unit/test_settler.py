"""The settler's batching (cloud/payments/wechat/orders.py::Settler): settlements arriving
while a batch runs form the next batch, at most ``size`` each, per property group; a batch
that fails is run again one settlement at a time, so only the bad one fails."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from cloud.payments.wechat.orders import Outcome, Settler

A, B = uuid.uuid4(), uuid.uuid4()


class Recorder:
    def __init__(self, poison: str | None = None) -> None:
        self.batches: list[tuple[uuid.UUID, list[str]]] = []
        self.poison = poison
        self.release = asyncio.Event()

    async def run(self, tenant_id: uuid.UUID, items: list[tuple[dict[str, Any], str]]) -> Any:
        nos = [r["out_trade_no"] for r, _ in items]
        self.batches.append((tenant_id, nos))
        await self.release.wait()
        if self.poison in nos:
            raise RuntimeError("a database error")
        return [Outcome("credited", n) for n in nos]


def _item(no: str) -> dict[str, Any]:
    return {"out_trade_no": no}


async def test_what_arrives_during_a_batch_is_the_next_batch_and_groups_stay_apart() -> None:
    rec = Recorder()
    settler = Settler(rec.run, size=3)
    first = asyncio.ensure_future(settler.submit(A, _item("a0"), "notify"))
    await asyncio.sleep(0)
    later = [
        asyncio.ensure_future(settler.submit(A, _item(f"a{i}"), "notify")) for i in range(1, 6)
    ]
    other = asyncio.ensure_future(settler.submit(B, _item("b0"), "query"))
    await asyncio.sleep(0)
    rec.release.set()
    outcomes = await asyncio.gather(first, *later, other)
    assert [o.out_trade_no for o in outcomes] == ["a0", "a1", "a2", "a3", "a4", "a5", "b0"]
    assert rec.batches == [
        (A, ["a0"]),
        (B, ["b0"]),
        (A, ["a1", "a2", "a3"]),
        (A, ["a4", "a5"]),
    ]


async def test_a_failing_batch_fails_only_its_bad_settlement() -> None:
    rec = Recorder(poison="x2")
    rec.release.set()
    settler = Settler(rec.run)
    tasks = [asyncio.ensure_future(settler.submit(A, _item(f"x{i}"), "notify")) for i in range(4)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r.result for r in results if isinstance(r, Outcome)] == ["credited"] * 3
    assert isinstance(results[2], RuntimeError)
    assert rec.batches[0] == (A, ["x0", "x1", "x2", "x3"])
    assert sorted(b[1][0] for b in rec.batches[1:]) == ["x0", "x1", "x2", "x3"]
    # and the settler is idle again: the next settlement runs
    assert (await settler.submit(A, _item("x9"), "notify")).out_trade_no == "x9"


@pytest.mark.parametrize("size", [1, 64])
async def test_every_settlement_is_answered(size: int) -> None:
    rec = Recorder()
    rec.release.set()
    settler = Settler(rec.run, size=size)
    got = await asyncio.gather(*(settler.submit(A, _item(f"n{i}"), "notify") for i in range(200)))
    assert sorted(o.out_trade_no for o in got) == sorted(f"n{i}" for i in range(200))
    assert all(len(nos) <= size for _, nos in rec.batches)
