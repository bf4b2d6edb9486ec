"""This replica's routing state: cooldowns, measured latency and throughput, upstream rate limits.

Every replica reads the store's shared state at least once a second into an immutable
`RoutingView` that planning uses without I/O. What this replica learns itself is applied to its
own view at once; failures and cooldowns go to the store straight away (they are rare and others
must see them), while measurements and rate-limit headers, which come with every request, are
folded in memory and written once per refresh.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping

from gateway import logs
from gateway.store.base import RoutingSnapshot, Store, StoreUnavailable
from gateway.settings import Cooldowns
from policies.health import (COOLING, PROBE, PROBING, EndpointHealth, ProviderLimits, RoutingView, after_failure,
                             after_success, begin_probe, cooldown_state, end_probe, parse_ratelimit_headers)
from policies.plan import Attempt
from policies.retry import is_endpoint_failure

log = logging.getLogger("gateway.routing")
REFRESH_S = 1.0
LIMITS_READ_EVERY_S = 0.2
# Headers that say an upstream reports its rate limits; the rest of the parsing happens only then.
_RATELIMIT_MARKERS = ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-tokens-remaining",
                      "anthropic-ratelimit-input-tokens-remaining", "x-ratelimit-remaining-requests",
                      "x-ratelimit-remaining-tokens", "retry-after")


def view_of(snapshot: RoutingSnapshot) -> RoutingView:
    endpoints: dict[str, EndpointHealth] = {}
    for key, stats in snapshot.stats.items():
        endpoints[key] = EndpointHealth(failures=stats.failures, ttft_s=stats.ttft_s, output_tps=stats.output_tps,
                                        samples=stats.samples)
    for key, (until, reason, episodes) in snapshot.cooldowns.items():
        endpoints[key] = dataclasses.replace(endpoints.get(key, EndpointHealth()), cooldown_until=until,
                                             cooldown_reason=reason, episodes=episodes)
    providers = {name: ProviderLimits.from_headers(values) for name, values in snapshot.ratelimits.items()}
    return RoutingView(endpoints=endpoints, providers=providers)


class RoutingState:
    def __init__(self, store: Store, cooldowns: Cooldowns) -> None:
        self.store = store
        self.cooldowns = cooldowns
        self.view = RoutingView.EMPTY
        self._samples: dict[str, list[tuple[float | None, float | None]]] = {}
        self._limits: dict[str, dict[str, float]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._limits_read_at: dict[str, float] = {}
        self._refresh_failure = logs.RepeatedFailure(
            log, "routing: cannot share state through the store; routing on this replica's own view",
            expected=(StoreUnavailable,))

    # -- what the executor reports ----------------------------------------------------------------
    def claim_probe(self, key: str, now: float) -> bool:
        """Take the one trial request of a half-open endpoint (`health.begin_probe`): False when
        another request, here or on a replica that shared it, holds the trial."""
        health = self.view.health(key)
        state = cooldown_state(health, now)
        if state == COOLING:
            return False
        if state == PROBE:
            self._set_cooldown(key, begin_probe(health, now))
        return True

    def failed(self, attempt: Attempt, outcome: str, retry_after: float | None, now: float) -> None:
        key = attempt.endpoint_key
        before = self.view.health(key)
        if not is_endpoint_failure(outcome):
            released = end_probe(before, now)
            if released is not before:
                self._set_cooldown(key, released)
            return
        after = after_failure(before, now, reason=outcome, retry_after=retry_after,
                              threshold=self.cooldowns.failures, base=self.cooldowns.seconds,
                              cap=self.cooldowns.max_seconds)
        self._set_health(key, after)
        self._spawn(self.store.record_endpoint_stats(key, None, None, False, now))
        if (after.cooldown_until, after.cooldown_reason) != (before.cooldown_until, before.cooldown_reason):
            if after.episodes != before.episodes:
                log.warning("endpoint %s cools down for %.0f s after %s (episode %d)", key,
                            after.cooldown_until - now, outcome, after.episodes)
            self._set_cooldown(key, after)

    def succeeded(self, attempt: Attempt, ttft_s: float | None, output_tps: float | None) -> None:
        key = attempt.endpoint_key
        health = self.view.endpoints.get(key)
        if health is not None and (health.cooldown_until is not None or health.failures):
            self._set_health(key, after_success(health))
            if health.cooldown_until is not None:
                log.info("endpoint %s is healthy again", key)
                self._spawn(self.store.clear_cooldown(key))
        self._samples.setdefault(key, []).append((ttft_s, output_tps))

    def saw_headers(self, provider: str, headers: Mapping[str, str], now: float) -> None:
        """Upstream rate-limit headers: kept for routing (`near exhaustion` goes later).

        Read at most a few times a second per provider: they are shared once a second anyway,
        and a 429 (which matters at once) comes with its own retry-after."""
        if now - self._limits_read_at.get(provider, 0.0) < LIMITS_READ_EVERY_S:
            return
        self._limits_read_at[provider] = now
        for marker in _RATELIMIT_MARKERS:
            if marker in headers:
                break
        else:
            return
        parsed = parse_ratelimit_headers(headers, now)
        if parsed:
            self._limits[provider] = parsed

    # -- sharing with other replicas --------------------------------------------------------------
    async def refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # keep routing on what this replica knows
                self._refresh_failure.failed(exc)
            else:
                self._refresh_failure.recovered()
            await asyncio.sleep(REFRESH_S)

    async def refresh(self) -> None:
        now = time.time()
        samples, self._samples = self._samples, {}
        limits, self._limits = self._limits, {}
        for key, values in samples.items():
            ttfts = [t for t, _ in values if t is not None]
            rates = [r for _, r in values if r is not None]
            await self.store.record_endpoint_stats(key, sum(ttfts) / len(ttfts) if ttfts else None,
                                                   sum(rates) / len(rates) if rates else None, True, now)
        for provider, values in limits.items():
            await self.store.record_upstream_ratelimit(provider, values, now)
        self.view = view_of(await self.store.routing_snapshot())

    def _set_cooldown(self, key: str, health: EndpointHealth) -> None:
        """Apply a cooldown (or trial) here at once, and share it through the store."""
        self._set_health(key, health)
        self._spawn(self.store.set_cooldown(key, health.cooldown_until, health.cooldown_reason or PROBING,
                                            health.episodes))

    def _set_health(self, key: str, health: EndpointHealth) -> None:
        endpoints = dict(self.view.endpoints)
        endpoints[key] = health
        self.view = RoutingView(endpoints=endpoints, providers=self.view.providers)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(coro) -> None:
        try:
            await coro
        except StoreUnavailable:
            pass
