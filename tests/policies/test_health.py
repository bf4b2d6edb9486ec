"""Routing state: the circuit breaker's transitions, measured latency and throughput, and upstream
rate-limit headers as Anthropic and OpenAI send them."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies.health import (
    COOLING,
    HEALTHY,
    PROBE,
    EndpointHealth,
    ProviderLimits,
    RoutingView,
    after_failure,
    after_success,
    begin_probe,
    cooldown_state,
    moving_average,
    parse_ratelimit_headers,
)

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()
BREAKER = {"threshold": 3, "base": 10.0, "cap": 120.0}


def fail(health: EndpointHealth, now: float, times: int = 1, **kwargs) -> EndpointHealth:
    for _ in range(times):
        health = after_failure(health, now, reason="503", **{**BREAKER, **kwargs})
    return health


# -- circuit breaker ------------------------------------------------------------------------------

def test_an_endpoint_nothing_is_known_about_is_healthy():
    assert cooldown_state(EndpointHealth(), T0) == HEALTHY
    assert RoutingView.EMPTY.health("anthropic/claude-opus-4-8") == EndpointHealth()
    assert RoutingView.EMPTY.limits("anthropic") is None


def test_failures_below_the_threshold_keep_the_endpoint_healthy():
    health = fail(EndpointHealth(), T0, times=2)
    assert (health.failures, cooldown_state(health, T0)) == (2, HEALTHY)


def test_the_threshold_failure_opens_a_cooldown():
    health = fail(EndpointHealth(), T0, times=3)
    assert health.cooldown_until == T0 + 10.0 and health.cooldown_reason == "503"
    assert cooldown_state(health, T0 + 9.9) == COOLING


def test_an_elapsed_cooldown_becomes_half_open_until_cleared():
    health = fail(EndpointHealth(), T0, times=3)
    assert cooldown_state(health, T0 + 10.0) == PROBE
    assert cooldown_state(health, T0 + 3600.0) == PROBE


def test_a_trial_request_holds_the_half_open_endpoint_for_the_others():
    health = begin_probe(fail(EndpointHealth(), T0, times=3), T0 + 11, window_s=30)
    assert cooldown_state(health, T0 + 12) == COOLING
    assert cooldown_state(health, T0 + 41) == PROBE  # the trial never reported: another may go


def test_a_successful_trial_closes_the_breaker():
    health = begin_probe(fail(EndpointHealth(), T0, times=3), T0 + 11)
    health = after_success(health)
    assert cooldown_state(health, T0 + 12) == HEALTHY
    assert (health.failures, health.cooldown_reason) == (0, None)


def test_a_failed_trial_reopens_for_twice_as_long():
    health = fail(EndpointHealth(), T0, times=3)
    health = fail(begin_probe(health, T0 + 10), T0 + 10)
    assert health.cooldown_until == T0 + 10 + 20.0
    health = fail(health, T0 + 30)
    assert health.cooldown_until == T0 + 30 + 40.0


def test_cooldowns_grow_no_longer_than_the_cap():
    health, now = fail(EndpointHealth(), T0, times=3), T0
    for _ in range(6):  # each episode's cooldown runs out and the endpoint fails again
        now = health.cooldown_until
        health = fail(health, now)
    assert health.episodes == 7 and health.cooldown_until == now + 120.0


def test_retry_after_opens_the_cooldown_at_once_for_that_long():
    health = after_failure(EndpointHealth(), T0, reason="429", retry_after=7.0, **BREAKER)
    assert health.cooldown_until == T0 + 7.0 and health.cooldown_reason == "429"
    assert cooldown_state(health, T0 + 6) == COOLING and cooldown_state(health, T0 + 7) == PROBE


def test_a_failure_of_a_half_open_endpoint_below_the_threshold_still_reopens_it():
    health = after_failure(EndpointHealth(), T0, reason="429", retry_after=2.0, **BREAKER)
    health = fail(health, T0 + 5)
    assert health.failures == 2 and cooldown_state(health, T0 + 6) == COOLING


def test_a_success_keeps_the_measurements():
    health = EndpointHealth(failures=2, ttft_s=0.8, output_tps=70.0, samples=9)
    assert after_success(health) == EndpointHealth(ttft_s=0.8, output_tps=70.0, samples=9)


# -- measurements ---------------------------------------------------------------------------------

def test_the_first_measurement_is_taken_as_is():
    assert moving_average(None, 0.5) == 0.5


def test_later_measurements_move_the_average_by_their_weight():
    assert moving_average(1.0, 2.0, 0.25) == 1.25 and moving_average(100.0, 50.0, 0.25) == 87.5


def test_a_missing_figure_leaves_its_average_alone():
    assert moving_average(1.0, None, 0.5) == 1.0 and moving_average(None, None) is None


# -- rate-limit headers ---------------------------------------------------------------------------

def test_anthropic_headers():
    headers = {
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": "2026-06-01T12:00:06Z",
        "anthropic-ratelimit-tokens-limit": "2000000",
        "anthropic-ratelimit-tokens-remaining": "40000",
        "anthropic-ratelimit-tokens-reset": "2026-06-01T12:00:30Z",
        "anthropic-ratelimit-input-tokens-limit": "2000000",
        "anthropic-ratelimit-input-tokens-remaining": "40000",
        "anthropic-ratelimit-input-tokens-reset": "2026-06-01T12:00:30Z",
        "anthropic-ratelimit-output-tokens-limit": "400000",
        "anthropic-ratelimit-output-tokens-remaining": "399000",
        "anthropic-ratelimit-output-tokens-reset": "2026-06-01T12:00:01Z",
    }
    assert parse_ratelimit_headers(headers, T0) == {
        "requests_limit": 4000.0, "requests_remaining": 3999.0,
        "tokens_limit": 2_000_000.0, "tokens_remaining": 40_000.0,
        "reset_at": T0 + 30.0,  # the tokens limit is the tighter one (2 % left)
    }


def test_anthropic_input_and_output_tokens_stand_in_for_the_combined_headers():
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "100000",
        "anthropic-ratelimit-input-tokens-remaining": "90000",
        "anthropic-ratelimit-input-tokens-reset": "2026-06-01T12:00:10Z",
        "anthropic-ratelimit-output-tokens-limit": "20000",
        "anthropic-ratelimit-output-tokens-remaining": "500",
        "anthropic-ratelimit-output-tokens-reset": "2026-06-01T12:00:45.5Z",
    }
    assert parse_ratelimit_headers(headers, T0) == {
        "tokens_limit": 20_000.0, "tokens_remaining": 500.0, "reset_at": T0 + 45.5}


def test_anthropic_429_with_retry_after():
    headers = {"retry-after": "17", "anthropic-ratelimit-requests-limit": "50",
               "anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": "2026-06-01T12:00:05Z"}
    assert parse_ratelimit_headers(headers, T0) == {
        "requests_limit": 50.0, "requests_remaining": 0.0, "reset_at": T0 + 17.0}


def test_openai_headers_with_go_durations():
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_ratelimit_headers(headers, T0) == {
        "requests_limit": 60.0, "requests_remaining": 59.0,
        "tokens_limit": 150_000.0, "tokens_remaining": 149_984.0,
        "reset_at": T0 + 1.0,  # requests (98 % left) are tighter than tokens (99.99 %)
    }


def test_duration_forms():
    for text, seconds in [("20ms", 0.02), ("6m0s", 360.0), ("1h2m3.5s", 3723.5),
                          ("2m59.56s", 179.56), ("0.5", 0.5), ("750us", 0.00075)]:
        parsed = parse_ratelimit_headers({"x-ratelimit-limit-tokens": "10",
                                          "x-ratelimit-remaining-tokens": "1",
                                          "x-ratelimit-reset-tokens": text}, T0)
        assert parsed["reset_at"] - T0 == pytest.approx(seconds, abs=1e-5), text


def test_header_names_compare_case_insensitively():
    parsed = parse_ratelimit_headers({"X-RateLimit-Remaining-Requests": "3",
                                      "Retry-After-Ms": "1500"}, T0)
    assert parsed == {"requests_remaining": 3.0, "reset_at": T0 + 1.5}


def test_retry_after_as_an_http_date_counts_from_the_upstreams_date():
    headers = {"retry-after": "Mon, 01 Jun 2026 12:01:00 GMT",
               "date": "Mon, 01 Jun 2026 12:00:20 GMT"}
    assert parse_ratelimit_headers(headers, T0) == {"reset_at": T0 + 40.0}
    assert parse_ratelimit_headers({"retry-after": "Mon, 01 Jun 2026 12:01:00 GMT"}, T0) == {
        "reset_at": T0 + 60.0}


def test_unparseable_and_absent_values_are_left_out():
    headers = {"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "-4",
               "x-ratelimit-reset-requests": "soon", "retry-after": "later",
               "anthropic-ratelimit-tokens-reset": "yesterday", "x-ratelimit-limit-tokens": "nan"}
    assert parse_ratelimit_headers(headers, T0) == {}
    assert parse_ratelimit_headers({"content-type": "application/json"}, T0) == {}


# -- provider limits ------------------------------------------------------------------------------

def test_a_provider_under_five_percent_with_a_future_reset_is_near_exhaustion():
    limits = ProviderLimits.from_headers(parse_ratelimit_headers({
        "x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "20s"}, T0))
    assert limits == ProviderLimits(requests_remaining=4.0, requests_limit=100.0, reset_at=T0 + 20)
    assert limits.near_exhaustion(T0 + 1)
    assert not limits.near_exhaustion(T0 + 20)


def test_tokens_alone_can_bring_a_provider_near_exhaustion():
    limits = ProviderLimits(requests_remaining=90, requests_limit=100, tokens_remaining=100,
                            tokens_limit=10_000, reset_at=T0 + 5)
    assert limits.near_exhaustion(T0)


def test_five_percent_or_more_left_is_not_near_exhaustion():
    limits = ProviderLimits(requests_remaining=5, requests_limit=100, reset_at=T0 + 5)
    assert not limits.near_exhaustion(T0)


def test_figures_without_a_reset_time_are_not_trusted():
    assert not ProviderLimits(requests_remaining=0, requests_limit=100).near_exhaustion(T0)
