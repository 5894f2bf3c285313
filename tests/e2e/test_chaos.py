"""The short chaos run of `make test` (issue 20): three seeds of 30 s over the real
processes (broker, two ingest workers, the worker, the API, two gateway agents, simulated
meters on two buses), faults and bad input included; no invariant may break. The long run
is `prepay chaos --seeds 1000` (README)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloud.chaos.run import replay_command, run_seed

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="the chaos run restarts a Mosquitto of its own",
    ),
]

SEEDS = (1, 2, 3)
SECONDS = 30.0


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_seed_keeps_every_invariant(seed: int, admin_url: str, tmp_path: Path) -> None:
    report = await run_seed(seed, SECONDS, admin_url, tmp_path / f"seed-{seed}", log=None)
    assert sum(report.faults.values()) > 0 and sum(report.workload.values()) > 0
    assert report.violations == [], (
        f"seed {seed} broke invariants; replay: {replay_command(seed, SECONDS)}\n"
        + "\n".join(report.violations)
    )
