"""Which DL/T 645 profile a meter's answers fit (pure: answers in, ranking out)."""

from __future__ import annotations

from decimal import Decimal

from gateway_agent.scan import Answers, dis_to_ask, fit_dlt645
from meter_profiles.loader import load_profiles
from meter_profiles.schema import Dlt645Profile
from meter_profiles.simulators.dlt645 import encode_element

PROFILES = {
    k: p for k, p in load_profiles().items() if isinstance(p, Dlt645Profile) and p.edition == "2007"
}


def answers_of(model: str) -> Answers:
    """What a meter of ``model`` answers for every DI of every 2007 profile."""
    own = PROFILES[model].reads()
    answers: Answers = {}
    for p in PROFILES.values():
        for di in p.reads():
            items = own.get(di)
            answers[di] = (
                None if items is None else b"".join(encode_element(q, Decimal(1)) for _, q in items)
            )
    return answers


def test_every_profile_fits_its_own_meter_best() -> None:
    for model in PROFILES:
        answers = answers_of(model)
        fits = sorted(
            (fit_dlt645(p, answers) for p in PROFILES.values()), key=lambda f: f.rank, reverse=True
        )
        assert fits[0].model == model, [(f.model, f.rank) for f in fits]
        assert fits[0].refused == ()
        assert len(fits[0].answered) == len(PROFILES[model].quantities)


def test_a_refused_block_is_judged_by_its_members() -> None:
    block = PROFILES["dlt645-2007-prepaid"]
    # a single-phase meter answering single identifiers only
    answers = answers_of("acrel-ddsy1352-dlt645")
    assert answers[0x0001FF00] is None
    assert dis_to_ask(block, answers) == []  # the members are DIs of the other profiles
    fit = fit_dlt645(block, answers)
    assert "tou_valley" in fit.answered and fit.refused == ()
    assert fit.refused_dis == 1  # the block itself
    assert fit.requests == len(block.reads()) - 1 + 5


def test_members_of_a_refused_block_are_asked_next() -> None:
    block = PROFILES["dlt645-2007-prepaid"]
    answers: Answers = {di: None for di in block.reads()}
    assert dis_to_ask(block, answers) == [
        0x00010000,
        0x00010100,
        0x00010200,
        0x00010300,
        0x00010400,
    ]


def test_short_or_undecodable_answers_do_not_fit() -> None:
    p = PROFILES["acrel-ddsy1352-dlt645"]
    answers = answers_of("acrel-ddsy1352-dlt645")
    answers[0x02010100] = b"\x01"  # voltage needs 2 bytes
    answers[0x00900200] = b"\xff\xff\xff\xff"  # not BCD
    fit = fit_dlt645(p, answers)
    assert set(fit.refused) == {"voltage", "remaining_amount"}
