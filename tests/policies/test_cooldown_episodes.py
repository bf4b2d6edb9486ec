"""Cooldowns escalate by failure episode, not by failure: failures while an endpoint already sits
out (the other requests that were in flight when it opened) leave its cooldown alone; only a failure
once the cooldown has run out, or of the one trial request, opens the next, longer episode."""
from __future__ import annotations

import dataclasses

from policies.health import (
    COOLING,
    PROBE,
    PROBING,
    EndpointHealth,
    after_failure,
    after_success,
    begin_probe,
    cooldown_state,
    end_probe,
)

T0 = 1_780_000_000.0
BREAKER = {"threshold": 3, "base": 30.0, "cap": 300.0}


def fail(health: EndpointHealth, now: float, **kwargs) -> EndpointHealth:
    return after_failure(health, now, reason="503", **{**BREAKER, **kwargs})


def test_a_burst_of_concurrent_failures_opens_one_cooldown_of_the_first_step():
    health = EndpointHealth()
    for i in range(5):  # 5 failed attempts of 3 concurrent requests within 250 ms
        health = fail(health, T0 + i * 0.05)
    assert health.failures == 5 and health.episodes == 1
    assert health.cooldown_until == T0 + 0.1 + 30.0  # opened by the third, untouched after


def test_a_failure_while_cooling_does_not_extend_the_cooldown():
    health = EndpointHealth()
    for _ in range(3):
        health = fail(health, T0)
    assert fail(health, T0 + 20).cooldown_until == T0 + 30.0


def test_a_longer_retry_after_while_cooling_extends_without_escalating():
    health = EndpointHealth()
    for _ in range(3):
        health = fail(health, T0)
    later = fail(health, T0 + 1, retry_after=60.0)
    assert later.cooldown_until == T0 + 61.0 and later.episodes == 1
    assert fail(health, T0 + 1, retry_after=5.0).cooldown_until == T0 + 30.0


def test_the_failed_trial_opens_the_next_episode_once_however_many_fail_with_it():
    health = EndpointHealth()
    for _ in range(3):
        health = fail(health, T0)
    trial = begin_probe(health, T0 + 30)
    assert cooldown_state(trial, T0 + 31) == COOLING and trial.cooldown_reason == PROBING
    reopened = fail(trial, T0 + 31)
    assert reopened.episodes == 2 and reopened.cooldown_until == T0 + 31 + 60.0
    assert fail(reopened, T0 + 31.1) == dataclasses.replace(reopened, failures=5)


def test_a_failure_after_the_cooldown_ran_out_opens_the_next_episode():
    health = EndpointHealth()
    for _ in range(3):
        health = fail(health, T0)
    assert cooldown_state(health, T0 + 30) == PROBE
    assert fail(health, T0 + 30).episodes == 2


def test_a_trial_that_proves_nothing_hands_the_endpoint_back_to_half_open():
    health = EndpointHealth()
    for _ in range(3):
        health = fail(health, T0)
    trial = begin_probe(health, T0 + 30)
    assert cooldown_state(end_probe(trial, T0 + 31), T0 + 31) == PROBE
    assert end_probe(health, T0 + 1) is health  # not a trial: nothing to hand back


def test_a_success_starts_the_escalation_over():
    health = EndpointHealth()
    for _ in range(3):
        health = fail(health, T0)
    health = after_success(fail(begin_probe(health, T0 + 30), T0 + 31))
    assert health.episodes == 0
    for _ in range(3):
        health = fail(health, T0 + 100)
    assert health.cooldown_until == T0 + 130.0
