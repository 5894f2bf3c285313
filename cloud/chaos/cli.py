"""`prepay chaos --seed N [--seconds S] [--seeds K]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def chaos_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chaos",
        help="seeded fault schedules over the real processes; invariants checked after each",
    )
    p.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--seeds", type=int, default=1, help="how many seeds from --seed on")
    p.add_argument("--seconds", type=float, default=30.0, help="schedule length per seed")
    p.add_argument("--keep", action="store_true", help="keep each seed's database and logs")


def run_chaos(args: argparse.Namespace) -> int:
    from cloud.chaos.run import replay_command, run_seed

    if not args.verbose:  # one line a seed; the processes' own logs are in their files
        logging.getLogger().setLevel(logging.WARNING)
    admin = os.environ.get("PREPAY_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not admin:
        sys.stderr.write("prepay chaos: set DATABASE_URL (a server it may create databases on)\n")
        return 2
    base = Path(tempfile.mkdtemp(prefix="prepay-chaos-"))
    faults: Counter[str] = Counter()
    failed: list[int] = []
    t0 = time.monotonic()
    for seed in range(args.seed, args.seed + args.seeds):
        root = base / f"seed-{seed}"
        try:
            report = asyncio.run(run_seed(seed, args.seconds, admin, root, keep=args.keep))
        except Exception as exc:  # the run broke: it is a failure of that seed
            _say(f"seed {seed}: the run failed: {exc!r}; logs in {root}")
            _say(f"  replay: {replay_command(seed, args.seconds)}")
            failed.append(seed)
            continue
        faults.update(report.faults)
        injected = sum(n for k, n in report.faults.items() if k != "pg_backends_terminated")
        line = (
            f"seed {seed}: {injected} faults, {sum(report.workload.values())} requests, "
            f"({', '.join(f'{k} {n}' for k, n in sorted(report.outcomes.items()))}), "
            f"converged in {report.converged_s}s, {report.elapsed}s"
        )
        if report.violations:
            failed.append(seed)
            _say(f"{line} — {len(report.violations)} VIOLATIONS (logs in {root})")
            for v in report.violations:
                _say(f"  ✗ {v}")
            _say(f"  replay: {replay_command(seed, args.seconds)}")
        else:
            _say(f"{line} — ok")
    total = time.monotonic() - t0
    _say(
        f"{args.seeds} seeds, {len(failed)} failed, {total:.0f}s "
        f"({total / max(args.seeds, 1):.1f}s a seed); faults: "
        + ", ".join(f"{k} {n}" for k, n in sorted(faults.items()))
    )
    return 1 if failed else 0
