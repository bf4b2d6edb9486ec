"""The order a plan's attempts are tried in: plan order, cooling endpoints of every model last."""
from __future__ import annotations

from policies.health import COOLING, HEALTHY, PROBE
from policies.preference import try_order


def states(attempts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return try_order(attempts, lambda attempt: attempt[1])


def test_cooling_attempts_go_after_every_other_attempt_of_every_model():
    plan = [("a1", HEALTHY), ("a2", COOLING), ("a3", PROBE), ("b1", HEALTHY), ("b2", COOLING)]
    assert states(plan) == [("a1", HEALTHY), ("a3", PROBE), ("b1", HEALTHY), ("a2", COOLING), ("b2", COOLING)]


def test_nothing_is_dropped_when_everything_is_cooling():
    plan = [("a1", COOLING), ("b1", COOLING)]
    assert states(plan) == plan


def test_a_plan_without_cooling_endpoints_keeps_its_order():
    plan = [("a1", PROBE), ("a2", HEALTHY)]
    assert states(plan) == plan
