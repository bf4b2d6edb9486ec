"""What routing knows about endpoints and providers, as plain data handed in by the caller.

The store keeps routing state (cooldowns, measured latency and throughput, the upstreams' own
rate-limit headers) and the service reads it into a `RoutingView` snapshot; the ranking in
`policies.preference` only reads that snapshot. This module owns the data shapes and their pure
transitions:

- `cooldown_state`: an endpoint is `healthy`, `cooling` (skipped while others remain) or `probe`
  (its cooldown has run out but no success has cleared it yet: half-open, one trial request).
- `after_failure` / `after_success` / `begin_probe` / `end_probe`: the circuit breaker's
  transitions. `COOLDOWN_THRESHOLD` consecutive failures open it for `cooldown_seconds`; an upstream
  `retry-after` opens it at once for that long. Cooldowns escalate by episode, not by failure: a
  failure while the endpoint already sits out (requests that were in flight when it opened, a last
  resort tried anyway) leaves the cooldown as it is. Starting a trial re-arms the cooldown for
  `PROBE_WINDOW_S` (reason `PROBING`), so that other requests keep away while the one trial runs
  (replicas see it within a snapshot refresh); its success closes the breaker, its failure opens
  the next episode, twice as long (capped); a trial that fails for the request's own fault hands
  the endpoint back to half-open.
- `moving_average`: the moving averages of time to first token and output tokens per second, with
  the one weight `MEASUREMENT_WEIGHT`; the store folds every replica's samples with it (the Redis
  script mirrors the formula).
- `parse_ratelimit_headers` / `ProviderLimits`: an upstream's rate-limit headers, and whether the
  provider is close to its limit.

Endpoints are keyed `"provider/upstream_model"` (the catalog's upstream model, as
`Attempt.endpoint_key` spells it); providers by their configured name.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, ClassVar

from policies.retry import COOLDOWN_BASE_S, COOLDOWN_CAP_S, COOLDOWN_THRESHOLD, cooldown_seconds

HEALTHY = "healthy"
COOLING = "cooling"
PROBE = "probe"

PROBING = "probe"            # cooldown_reason while one trial request holds a half-open endpoint
PROBE_WINDOW_S = 30.0        # how long one trial request holds a half-open endpoint
MEASUREMENT_WEIGHT = 0.3     # share of the newest sample in the moving averages
NEAR_EXHAUSTION = 0.05       # remaining / limit below this: the provider is nearly out


@dataclass(frozen=True)
class EndpointHealth:
    cooldown_until: float | None = None   # epoch seconds; None: not cooling and not half-open
    cooldown_reason: str | None = None    # the outcome that opened the cooldown, e.g. "529"
    failures: int = 0                     # consecutive failures since the last success
    episodes: int = 0                     # cooldowns opened since the last success (the escalation step)
    ttft_s: float | None = None           # moving average, seconds to the first token
    output_tps: float | None = None       # moving average, output tokens per second
    samples: int = 0                      # how many measurements the averages hold


HEALTHY_ENDPOINT = EndpointHealth()


@dataclass(frozen=True)
class ProviderLimits:
    """An upstream's last reported rate-limit state; None where it sent nothing."""
    requests_remaining: float | None = None
    requests_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_limit: float | None = None
    reset_at: float | None = None         # epoch seconds when the tightest limit refills

    @classmethod
    def from_headers(cls, parsed: Mapping[str, float]) -> ProviderLimits:
        """From `parse_ratelimit_headers`' result."""
        return cls(requests_remaining=parsed.get("requests_remaining"),
                   requests_limit=parsed.get("requests_limit"),
                   tokens_remaining=parsed.get("tokens_remaining"),
                   tokens_limit=parsed.get("tokens_limit"),
                   reset_at=parsed.get("reset_at"))

    def near_exhaustion(self, now: float, *, threshold: float = NEAR_EXHAUSTION) -> bool:
        """Requests or tokens below `threshold` of the limit, until a reset still in the future.

        Without a future reset time the figures may be stale, so they are not trusted."""
        if self.reset_at is None or self.reset_at <= now:
            return False
        return (_fraction(self.requests_remaining, self.requests_limit) < threshold
                or _fraction(self.tokens_remaining, self.tokens_limit) < threshold)


def _fraction(remaining: float | None, limit: float | None) -> float:
    if remaining is None or limit is None or limit <= 0:
        return 1.0
    return remaining / limit


def _frozen_empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RoutingView:
    """A snapshot of routing state; missing entries mean "nothing known" (healthy, unmeasured)."""
    endpoints: Mapping[str, EndpointHealth] = field(default_factory=_frozen_empty)
    providers: Mapping[str, ProviderLimits] = field(default_factory=_frozen_empty)

    EMPTY: ClassVar[RoutingView]

    def health(self, endpoint_key: str) -> EndpointHealth:
        return self.endpoints.get(endpoint_key, HEALTHY_ENDPOINT)

    def limits(self, provider: str) -> ProviderLimits | None:
        return self.providers.get(provider)


RoutingView.EMPTY = RoutingView()


# -- the circuit breaker ------------------------------------------------------------------------

def cooldown_state(health: EndpointHealth, now: float) -> str:
    """HEALTHY, COOLING (sit out until cooldown_until) or PROBE (cooldown over, not yet cleared)."""
    if health.cooldown_until is None:
        return HEALTHY
    if now < health.cooldown_until:
        return COOLING
    return PROBE


def after_failure(health: EndpointHealth, now: float, *, reason: str,
                  retry_after: float | None = None, threshold: int = COOLDOWN_THRESHOLD,
                  base: float = COOLDOWN_BASE_S, cap: float = COOLDOWN_CAP_S) -> EndpointHealth:
    """The endpoint's state after a failure that counts against it (`retry.is_endpoint_failure`).

    Healthy: the `threshold`-th consecutive failure opens episode 1. Sitting out already: the
    failure joins the open episode (a longer `retry-after` only extends it). Half-open, or its
    trial failing: the next episode opens, twice as long as the last."""
    failures = health.failures + 1
    state = cooldown_state(health, now)
    if state == COOLING and health.cooldown_reason != PROBING:
        if retry_after is not None and now + retry_after > health.cooldown_until:
            return dataclasses.replace(health, failures=failures, cooldown_until=now + retry_after)
        return dataclasses.replace(health, failures=failures)
    if retry_after is not None:
        return dataclasses.replace(health, failures=failures, cooldown_until=now + max(0.0, retry_after),
                                   cooldown_reason=reason, episodes=max(health.episodes, 1))
    if state == HEALTHY and failures < threshold:
        return dataclasses.replace(health, failures=failures)
    episodes = health.episodes + 1
    return dataclasses.replace(health, failures=failures, episodes=episodes, cooldown_reason=reason,
                               cooldown_until=now + cooldown_seconds(episodes, base=base, cap=cap))


def after_success(health: EndpointHealth) -> EndpointHealth:
    """A success closes the breaker and resets the failure count; measurements are kept."""
    if health.failures == 0 and health.cooldown_until is None and health.episodes == 0:
        return health
    return dataclasses.replace(health, failures=0, episodes=0, cooldown_until=None, cooldown_reason=None)


def begin_probe(health: EndpointHealth, now: float, *,
                window_s: float = PROBE_WINDOW_S) -> EndpointHealth:
    """Mark a half-open endpoint as taken by one trial request: others see it cooling until the
    trial reports (or `window_s` passes, when another trial may go)."""
    return dataclasses.replace(health, cooldown_until=now + window_s, cooldown_reason=PROBING)


def end_probe(health: EndpointHealth, now: float) -> EndpointHealth:
    """A trial that proved nothing about the endpoint (the request's own fault): half-open again,
    so that the next request may try."""
    if health.cooldown_reason != PROBING:
        return health
    return dataclasses.replace(health, cooldown_until=now)


def moving_average(current: float | None, sample: float | None,
                   weight: float = MEASUREMENT_WEIGHT) -> float | None:
    """An exponentially weighted moving average; the store's script (endpoint_stats.lua) folds
    other replicas' samples with the same formula."""
    if sample is None:
        return current
    if current is None:
        return sample
    return current * (1 - weight) + sample * weight


# -- upstream rate-limit headers ----------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_ANTHROPIC_DIMENSIONS = ("requests", "tokens", "input-tokens", "output-tokens")


def parse_ratelimit_headers(headers: Mapping[str, str], now: float) -> dict[str, float]:
    """An upstream's rate-limit headers as a flat dict with only the keys it sent:
    `requests_limit`, `requests_remaining`, `tokens_limit`, `tokens_remaining`, `reset_at`
    (epoch seconds).

    Understood: Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
    {limit,remaining,reset}` (reset in RFC 3339), OpenAI's `x-ratelimit-{limit,remaining}-
    {requests,tokens}` and `x-ratelimit-reset-{requests,tokens}` (durations such as `1s`, `6m0s`,
    `20ms`), and `retry-after-ms` / `retry-after` (seconds or an HTTP date).

    Tokens: Anthropic's `tokens` headers already report the most restrictive token limit; without
    them the tighter of input and output tokens stands in. `reset_at` is the reset of the tightest
    limit (lowest remaining / limit), pushed out to `retry-after` when that is later. Values that do
    not parse are ignored: upstream headers never make a request fail.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    dims: dict[str, dict[str, float]] = {}
    for dim in _ANTHROPIC_DIMENSIONS:
        prefix = f"anthropic-ratelimit-{dim}-"
        found = _dimension(_number(lowered.get(prefix + "limit")),
                           _number(lowered.get(prefix + "remaining")),
                           _timestamp(lowered.get(prefix + "reset")))
        if found:
            dims[dim] = found
    for dim in ("requests", "tokens"):
        if dim in dims:
            continue
        reset_in = _duration(lowered.get(f"x-ratelimit-reset-{dim}"))
        found = _dimension(_number(lowered.get(f"x-ratelimit-limit-{dim}")),
                           _number(lowered.get(f"x-ratelimit-remaining-{dim}")),
                           None if reset_in is None else now + reset_in)
        if found:
            dims[dim] = found
    if "tokens" not in dims:
        split = [dims[d] for d in ("input-tokens", "output-tokens") if d in dims]
        if split:
            dims["tokens"] = min(split, key=_dimension_fraction)
    result: dict[str, float] = {}
    for dim in ("requests", "tokens"):
        for part in ("limit", "remaining"):
            if part in dims.get(dim, {}):
                result[f"{dim}_{part}"] = dims[dim][part]
    reset_at = _tightest_reset([dims[d] for d in ("requests", "tokens") if d in dims])
    retry_after = _retry_after(lowered, now)
    if retry_after is not None:
        reset_at = max(reset_at if reset_at is not None else now, now + retry_after)
    if reset_at is not None:
        result["reset_at"] = reset_at
    return result


def _dimension(limit: float | None, remaining: float | None,
               reset_at: float | None) -> dict[str, float]:
    found = {"limit": limit, "remaining": remaining, "reset_at": reset_at}
    return {key: value for key, value in found.items() if value is not None}


def _dimension_fraction(dim: Mapping[str, float]) -> float:
    return _fraction(dim.get("remaining"), dim.get("limit"))


def _tightest_reset(dims: list[dict[str, float]]) -> float | None:
    with_reset = [d for d in dims if "reset_at" in d]
    if not with_reset:
        return None
    measured = [d for d in with_reset if "remaining" in d and d.get("limit", 0) > 0]
    if measured:
        return min(measured, key=_dimension_fraction)["reset_at"]
    return max(d["reset_at"] for d in with_reset)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _duration(value: str | None) -> float | None:
    """A Go-style duration (`6m0s`, `1.5s`, `20ms`) or bare seconds, in seconds."""
    if not value:
        return None
    text = value.strip()
    plain = _number(text)
    if plain is not None:
        return plain
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _retry_after(lowered: Mapping[str, str], now: float) -> float | None:
    millis = _number(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = lowered.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    moment = _http_date(value)
    if moment is None:
        return None
    # Measured against the upstream's own `date` when it sent one, so clock skew does not count.
    reference = _http_date(lowered.get("date")) or now
    return max(0.0, moment - reference)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
