"""`prepay chaos`: a seed's schedule is the same every time (a failure replays), seeds
differ, and every schedule holds workload, bad input and faults that end in time."""

from __future__ import annotations

from cloud.chaos.schedule import FAULTS, PROCESSES, make_schedule

BAD = {"bad_payload", "forged_telemetry", "foreign_sale", "foreign_trip", "bad_sale"}


def test_the_schedule_of_a_seed_is_identical_twice() -> None:
    for seed in (1, 2, 77, 1000):
        assert make_schedule(seed, 30) == make_schedule(seed, 30)


def test_seeds_differ_and_cover_the_faults_and_bad_input() -> None:
    schedules = [make_schedule(seed, 30) for seed in range(1, 41)]
    assert len({s.steps for s in schedules}) == 40
    kinds = {step.kind for s in schedules for step in s.steps}
    assert {k for k, _ in FAULTS} <= kinds and kinds >= BAD | {"sale", "reversal", "trip"}
    assert {f.target for s in schedules for f in s.faults() if f.kind == "kill"} == set(PROCESSES)
    for s in schedules:
        assert all(0 < step.at < 30 for step in s.steps)
        assert all(f.at + f.down <= 30 * 0.9 + 0.2 for f in s.faults())
        assert [step.at for step in s.steps] == sorted(step.at for step in s.steps)
