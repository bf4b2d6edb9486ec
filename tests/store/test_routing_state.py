"""Routing state written by one replica and read by every other one."""
from __future__ import annotations

import pytest

from gateway.store.base import EndpointStats
from policies.health import MEASUREMENT_WEIGHT, moving_average
from tests.store.conftest import ALL_BACKENDS, NOW

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_cooldown_set_by_one_replica_is_seen_by_another(store, replica):
    await store.set_cooldown("anthropic/claude-sonnet-4.5@anthropic", NOW + 30, "529")
    snapshot = await replica.routing_snapshot()
    assert snapshot.cooldowns == {"anthropic/claude-sonnet-4.5@anthropic": (NOW + 30, "529", 1)}
    await replica.clear_cooldown("anthropic/claude-sonnet-4.5@anthropic")
    assert (await store.routing_snapshot()).cooldowns == {}


async def test_a_later_cooldown_replaces_the_earlier_one(store, replica):
    await store.set_cooldown("e1", NOW + 30, "429")
    await replica.set_cooldown("e1", NOW + 90, "connect_error", 2)
    assert (await store.routing_snapshot()).cooldowns == {"e1": (NOW + 90, "connect_error", 2)}


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_endpoint_stats_are_moving_averages_shared_by_replicas(store, replica):
    await store.record_endpoint_stats("e1", 1.0, 100.0, True, NOW)
    await replica.record_endpoint_stats("e1", 2.0, None, True, NOW + 1)
    stats = (await store.routing_snapshot()).stats["e1"]
    # The policy's one weight, in the script as in the memory store; a missing rate sample keeps
    # the average.
    assert stats == EndpointStats(ttft_s=pytest.approx(moving_average(1.0, 2.0, MEASUREMENT_WEIGHT)),
                                  output_tps=100.0, failures=0, samples=2, updated_at=NOW + 1)
    assert MEASUREMENT_WEIGHT == 0.3 and stats.ttft_s == pytest.approx(1.3)


async def test_failures_count_in_a_row_and_a_success_resets_them(store, replica):
    for i in range(3):
        await store.record_endpoint_stats("e1", None, None, False, NOW + i)
    assert (await replica.routing_snapshot()).stats["e1"].failures == 3
    assert (await replica.routing_snapshot()).stats["e1"].ttft_s is None
    await replica.record_endpoint_stats("e1", 0.5, 40.0, True, NOW + 4)
    stats = (await store.routing_snapshot()).stats["e1"]
    assert (stats.failures, stats.samples, stats.ttft_s) == (0, 4, 0.5)


async def test_upstream_rate_limits_are_kept_per_provider(store, replica):
    await store.record_upstream_ratelimit("anthropic", {"requests_remaining": 10,
                                                        "requests_limit": 50,
                                                        "requests_reset": NOW + 20}, NOW)
    await store.record_upstream_ratelimit("openai", {"tokens_remaining": 900.5}, NOW + 1)
    assert (await replica.routing_snapshot()).ratelimits == {
        "anthropic": {"requests_remaining": 10.0, "requests_limit": 50.0,
                      "requests_reset": NOW + 20, "updated_at": NOW},
        "openai": {"tokens_remaining": 900.5, "updated_at": NOW + 1}}


async def test_an_empty_store_has_an_empty_snapshot(store):
    snapshot = await store.routing_snapshot()
    assert (snapshot.cooldowns, snapshot.stats, snapshot.ratelimits) == ({}, {}, {})
