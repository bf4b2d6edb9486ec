"""Retry arithmetic: which outcomes may be retried where, backoff with full jitter, cooldown growth,
and the retry budget that keeps an outage from multiplying the traffic."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.retry import (
    NEXT_ENDPOINT,
    NEXT_MODEL,
    RETRY,
    STOP,
    RetryBudget,
    allows_model_fallback,
    allows_next_endpoint,
    backoff_delay,
    cooldown_seconds,
    is_endpoint_failure,
    is_retryable_outcome,
    next_step,
    should_retry_same_endpoint,
)

# -- outcomes -----------------------------------------------------------------------------------

TRANSIENT = ["connect_error", "timeout", "read_error", "empty_stream", "stream_error", "error",
             "408", "429", "500", "502", "503", "504", "529"]


@pytest.mark.parametrize("outcome", TRANSIENT)
def test_transient_failures_are_retried_on_the_same_endpoint(outcome):
    assert is_retryable_outcome(outcome)
    assert should_retry_same_endpoint(outcome)
    assert next_step(outcome) == RETRY
    assert is_endpoint_failure(outcome)


def test_a_429_with_a_long_retry_after_moves_on_instead_of_waiting():
    assert should_retry_same_endpoint("429", retry_after=2.0)
    assert not should_retry_same_endpoint("429", retry_after=30.0)
    assert next_step("429", retry_after=30.0) == NEXT_ENDPOINT
    assert should_retry_same_endpoint("429", retry_after=30.0, max_wait=60.0)


@pytest.mark.parametrize("outcome", ["context_length", "moderation"])
def test_context_length_and_moderation_skip_to_the_next_model(outcome):
    assert not is_retryable_outcome(outcome)
    assert not should_retry_same_endpoint(outcome)
    assert not allows_next_endpoint(outcome)
    assert allows_model_fallback(outcome)
    assert next_step(outcome) == NEXT_MODEL
    assert not is_endpoint_failure(outcome)  # the request's size or content, not the endpoint


@pytest.mark.parametrize("outcome", ["401", "403", "bad_response", "unsupported"])
def test_a_broken_endpoint_is_not_retried_but_another_may_serve(outcome):
    assert not should_retry_same_endpoint(outcome)
    assert next_step(outcome) == NEXT_ENDPOINT
    assert allows_model_fallback(outcome) and is_endpoint_failure(outcome)


@pytest.mark.parametrize("outcome", ["400", "404", "413", "422", "501"])
def test_client_errors_are_the_final_answer(outcome):
    assert not is_retryable_outcome(outcome)
    assert not allows_next_endpoint(outcome) and not allows_model_fallback(outcome)
    assert next_step(outcome) == STOP
    assert not is_endpoint_failure(outcome)


# -- backoff --------------------------------------------------------------------------------------

def test_backoff_is_a_jittered_fraction_of_a_doubling_ceiling():
    assert backoff_delay(1, base=0.5, cap=10, rand=0.0) == 0.0
    assert backoff_delay(1, base=0.5, cap=10, rand=0.5) == 0.25
    assert backoff_delay(2, base=0.5, cap=10, rand=0.5) == 0.5
    assert backoff_delay(4, base=0.5, cap=10, rand=0.5) == 2.0


def test_backoff_ceiling_stops_at_the_cap():
    assert backoff_delay(10, base=0.5, cap=3.0, rand=0.5) == 1.5
    assert backoff_delay(10_000, base=0.5, cap=3.0, rand=0.999) < 3.0


def test_backoff_waits_at_least_the_upstreams_retry_after():
    assert backoff_delay(1, base=0.5, cap=10, rand=0.5, retry_after=2.0) == 2.0
    assert backoff_delay(5, base=0.5, cap=10, rand=0.9, retry_after=1.0) == pytest.approx(7.2)


@given(retry=st.integers(min_value=1, max_value=200),
       rand=st.floats(min_value=0, max_value=0.9999999),
       base=st.floats(min_value=0.01, max_value=5), cap=st.floats(min_value=0.01, max_value=60))
def test_backoff_stays_within_zero_and_its_ceiling(retry, rand, base, cap):
    delay = backoff_delay(retry, base=base, cap=cap, rand=rand)
    assert 0.0 <= delay <= min(cap, base * 2.0 ** (retry - 1))


@pytest.mark.parametrize("retry, rand", [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_backoff_refuses_arguments_outside_its_domain(retry, rand):
    with pytest.raises(ValueError):
        backoff_delay(retry, base=1, cap=2, rand=rand)


# -- cooldown -------------------------------------------------------------------------------------

def test_cooldown_doubles_with_each_episode_up_to_the_cap():
    growth = [cooldown_seconds(n, base=5, cap=60) for n in range(1, 7)]
    assert growth == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert cooldown_seconds(10_000, base=5, cap=60) == 60.0


def test_there_is_no_episode_zero():
    with pytest.raises(ValueError):
        cooldown_seconds(0)


# -- retry budget ---------------------------------------------------------------------------------

def test_a_quiet_gateway_still_gets_the_minimum_retries():
    budget = RetryBudget(ratio=0.2, min_per_second=0.5, window_s=10)
    granted = [budget.try_retry(100.0) for _ in range(7)]
    assert granted == [True] * 5 + [False] * 2


def test_retries_are_a_share_of_recent_requests():
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, window_s=10)
    for _ in range(10):
        budget.record_request(100.0)
    assert [budget.try_retry(100.5) for _ in range(3)] == [True, True, False]
    for _ in range(5):
        budget.record_request(101.0)
    assert budget.try_retry(101.0) is True
    assert budget.can_retry(101.0) is False


def test_retries_do_not_fund_more_retries():
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window_s=10)
    budget.record_request(0.0)
    budget.record_request(0.0)
    assert budget.try_retry(0.0) and not budget.try_retry(0.0)


def test_the_budget_refills_as_the_window_moves_on():
    budget = RetryBudget(ratio=0.0, min_per_second=0.2, window_s=10)  # two retries per 10 s
    assert budget.try_retry(50.0) and budget.try_retry(52.0) and not budget.try_retry(55.0)
    assert budget.try_retry(60.5)           # the retry of second 50 has left the window
    assert not budget.try_retry(61.0)       # the one of second 52 has not


def test_old_requests_stop_counting():
    budget = RetryBudget(ratio=1.0, min_per_second=0.0, window_s=5)
    budget.record_request(10.0)
    assert budget.can_retry(14.0)
    assert not budget.can_retry(16.0)


def test_can_retry_alone_spends_nothing():
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window_s=10)
    assert all(budget.can_retry(1.0) for _ in range(5))
    budget.record_retry(1.0)
    assert not budget.can_retry(1.0)


def test_a_clock_stepping_back_does_not_lose_counts():
    budget = RetryBudget(ratio=0.0, min_per_second=0.3, window_s=10)  # three retries per 10 s
    budget.record_retry(100.0)
    budget.record_retry(99.0)
    assert budget.try_retry(100.0)
    assert not budget.can_retry(99.5)


def test_a_budget_refuses_nonsense_settings():
    with pytest.raises(ValueError):
        RetryBudget(ratio=-0.1)
    with pytest.raises(ValueError):
        RetryBudget(window_s=0)
