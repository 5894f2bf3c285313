"""The schedule of a seed: what the workload does and which fault strikes when.

Pure: ``random.Random(seed)`` decides everything, so a seed's schedule is the same on every
run and a failure is replayed with ``prepay chaos --seed N``. Times are seconds from the
start of the run."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

TENANTS = 2  # one gateway and one bus each: two buses, and each other's "foreign" ids
METERS = 3  # per bus
PROCESSES = ("ingest-1", "ingest-2", "worker", "api", "gateway-1", "gateway-2")

WORKLOAD = (  # (kind, weight)
    ("sale", 6),
    ("sale_replay", 2),  # the same Idempotency-Key sent again (a client retrying)
    ("reversal", 2),
    ("trip", 2),  # an operator's trip (refused unless the point is in arrears)
    ("bad_payload", 1),  # malformed MQTT on a gateway's topic
    ("forged_telemetry", 1),  # a batch naming another gateway, on this one's topic
    ("foreign_sale", 1),  # a sale to the other tenant's account
    ("foreign_trip", 1),  # a trip of the other tenant's point
    ("bad_sale", 1),  # a malformed sale (negative, non-numeric, huge amount)
    ("wechat_pay", 4),  # a tenant pays by WeChat: notified once, twice, late or never
    ("forged_notification", 1),  # a notification WeChat did not sign, or for another group
)
FAULTS = (
    ("kill", 4),  # SIGKILL a process, restart it after `down` seconds
    ("broker_restart", 1),
    ("pg_terminate", 2),  # pg_terminate_backend of the app's connections
    ("gateway_offline", 1),  # the agent runs without a broker, then comes back with its backlog
    ("meter_mute", 2),  # a meter stops answering for `down` seconds
    ("meter_garbage", 1),  # a meter answers garbage for `down` seconds
)


@dataclass(frozen=True)
class Step:
    at: float
    kind: str
    tenant: int = 0
    meter: int = 1  # 1..METERS
    target: str = ""  # a process, for a kill
    down: float = 0.0  # how long a fault lasts
    amount: str = ""
    variant: int = 0  # picks among alternatives (which bad input, which earlier sale)

    def describe(self) -> str:
        parts = [f"{self.at:7.2f}s {self.kind}", f"tenant {self.tenant}"]
        if self.target:
            parts.append(self.target)
        if self.kind.startswith("meter") or self.kind in ("sale", "trip", "foreign_trip"):
            parts.append(f"m{self.meter}")
        if self.amount:
            parts.append(f"¥{self.amount}")
        if self.down:
            parts.append(f"for {self.down:.1f}s")
        return " ".join(parts)


@dataclass(frozen=True)
class Schedule:
    seed: int
    seconds: float
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def faults(self) -> list[Step]:
        names = {k for k, _ in FAULTS}
        return [s for s in self.steps if s.kind in names]


def _pick(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _amount(rng: random.Random, kind: str) -> str:
    if kind == "sale":
        return f"{rng.choice([1, 2, 3, 5, 10])}.00"
    if kind == "wechat_pay":  # (a site's smallest WeChat top-up is ¥10)
        return f"{rng.choice([10, 20, 30])}.00"
    return ""


def make_schedule(seed: int, seconds: float) -> Schedule:
    """About one workload step a second and a fault every few seconds, over the first
    ``seconds``; faults end by then (the run then waits for everything to converge)."""
    rng = random.Random(seed)
    steps: list[Step] = []
    t = rng.uniform(0.5, 1.5)
    while t < seconds:
        kind = _pick(rng, WORKLOAD)
        steps.append(
            Step(
                at=round(t, 3),
                kind=kind,
                tenant=rng.randrange(TENANTS),
                meter=rng.randint(1, METERS),
                amount=_amount(rng, kind),
                variant=rng.randrange(1000),
            )
        )
        t += rng.expovariate(1.0)
    t = rng.uniform(1.0, 4.0)
    while t < seconds * 0.8:
        kind = _pick(rng, FAULTS)
        down = round(min(rng.uniform(0.5, 6.0), seconds * 0.9 - t), 3)
        steps.append(
            Step(
                at=round(t, 3),
                kind=kind,
                tenant=rng.randrange(TENANTS),
                meter=rng.randint(1, METERS),
                target=rng.choice(PROCESSES) if kind == "kill" else "",
                down=max(down, 0.2),
                variant=rng.randrange(1000),
            )
        )
        t += rng.expovariate(1 / 4.0)
    steps.sort(key=lambda s: (s.at, s.kind))
    return Schedule(seed, seconds, tuple(steps))
