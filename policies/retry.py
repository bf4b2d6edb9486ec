"""Retry arithmetic: which failures may be retried, how long to wait, and how many retries to allow.

Pure: no clock, no randomness of its own, no I/O. Time (`now`, epoch seconds) and randomness
(`rand`, a float in [0, 1)) are arguments, so every decision is reproducible in a test.

Outcomes are the short strings the executor records per attempt (`x-gateway-attempts`):
an upstream HTTP status as digits (`"429"`, `"503"`), or one of `connect_error`, `timeout`,
`error`, `read_error`, `empty_stream`, `stream_error` (the connection failed before the first
event), `bad_response` (an unreadable answer), `unsupported` (no protocol module), `credentials`
(none to authenticate with: a failed refresh), `context_length`, `moderation`. What each allows:

| outcome                                          | same endpoint | next endpoint | next model |
|--------------------------------------------------|---------------|---------------|------------|
| connection errors, timeouts, 408, 429, 500, 502, | yes (1)       | yes           | yes        |
| 503, 504, 529                                    |               |               |            |
| 401, 403 (our key), `bad_response`, `unsupported`| no            | yes           | yes        |
| `credentials`, `pool_exhausted`                  |               |               |            |
| `context_length`, `moderation`                   | no            | no            | yes        |
| any other 4xx (the request itself is wrong)      | no            | no            | no         |

(1) unless the upstream's `retry-after` is longer than the wait allowed (`MAX_RETRY_AFTER_S`).

Context length and moderation are properties of the model, not of the endpoint, so the other
endpoints of the same model would answer the same; a fallback model may not.
"""
from __future__ import annotations

import math
from collections import deque

# Failures that say nothing about the request, only about the upstream at that moment.
TRANSIENT_OUTCOMES = frozenset({
    "connect_error", "timeout", "error", "read_error", "empty_stream", "stream_error",
    "408", "429", "500", "502", "503", "504", "529",
})
# The endpoint cannot serve (wrong key, unreadable answer, every connection to it busy for the
# whole pool wait), but another endpoint may.
ENDPOINT_OUTCOMES = frozenset({"401", "403", "bad_response", "unsupported", "pool_exhausted", "credentials"})
# The model cannot serve this request; another model may.
MODEL_OUTCOMES = frozenset({"context_length", "moderation"})

# A `retry-after` longer than this is not waited out within a request: the next endpoint is tried.
MAX_RETRY_AFTER_S = 5.0

# The defaults of the `retries` and `cooldowns` settings (gateway.settings takes them from here).
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 4.0
RETRY_BUDGET_RATIO = 0.2   # retries allowed as a share of recent requests
COOLDOWN_THRESHOLD = 3     # consecutive failures before an endpoint cools down
COOLDOWN_BASE_S = 30.0     # the first cooldown episode; each further one doubles it
COOLDOWN_CAP_S = 300.0

# What the executor does after a failed attempt.
RETRY = "retry"                  # the same endpoint again, after backoff_delay
NEXT_ENDPOINT = "next_endpoint"  # the next attempt in the plan
NEXT_MODEL = "next_model"        # skip the rest of this model's endpoints
STOP = "stop"                    # the failure is the final answer


def is_retryable_outcome(outcome: str) -> bool:
    """A transient upstream failure: the same request may succeed when sent again."""
    return outcome in TRANSIENT_OUTCOMES


def should_retry_same_endpoint(outcome: str, retry_after: float | None = None, *,
                               max_wait: float = MAX_RETRY_AFTER_S) -> bool:
    """Retry on the same endpoint: transient, and the upstream did not ask for a long pause."""
    if not is_retryable_outcome(outcome):
        return False
    return retry_after is None or retry_after <= max_wait


def allows_next_endpoint(outcome: str) -> bool:
    """Another endpoint of the same model may serve where this one failed."""
    return outcome in TRANSIENT_OUTCOMES or outcome in ENDPOINT_OUTCOMES


def allows_model_fallback(outcome: str) -> bool:
    """The next model in `models` may serve where this model failed."""
    return allows_next_endpoint(outcome) or outcome in MODEL_OUTCOMES


def is_endpoint_failure(outcome: str) -> bool:
    """The failure counts against the endpoint's health (cooldown); the request's own fault
    does not."""
    return allows_next_endpoint(outcome)


def next_step(outcome: str, retry_after: float | None = None, *,
              max_wait: float = MAX_RETRY_AFTER_S) -> str:
    """RETRY, NEXT_ENDPOINT, NEXT_MODEL or STOP for one failed attempt (before any retry budget,
    attempt count or deadline, which the executor weighs)."""
    if should_retry_same_endpoint(outcome, retry_after, max_wait=max_wait):
        return RETRY
    if allows_next_endpoint(outcome):
        return NEXT_ENDPOINT
    if allows_model_fallback(outcome):
        return NEXT_MODEL
    return STOP


def backoff_delay(retry_number: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S,
                  rand: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry `retry_number` (1 for the first retry): "full jitter", a uniform
    draw in [0, min(cap, base * 2**(retry_number - 1))), so that clients failing together do not
    retry together. A `retry-after` from the upstream is a floor."""
    if retry_number < 1:
        raise ValueError(f"retry_number must be at least 1, got {retry_number}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    ceiling = min(cap, base * 2.0 ** min(retry_number - 1, 64))
    delay = rand * ceiling
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def cooldown_seconds(episode: int, *, base: float = COOLDOWN_BASE_S, cap: float = COOLDOWN_CAP_S) -> float:
    """How long an endpoint sits out in its `episode`-th cooldown since its last success (1 for the
    first): base, 2 x base, 4 x base ... up to `cap`. Concurrent failures within one episode do not
    count (`policies.health.after_failure`); an upstream's `retry-after` is used as it is instead."""
    if episode < 1:
        raise ValueError(f"episode must be at least 1, got {episode}")
    return min(cap, base * 2.0 ** min(episode - 1, 64))


class RetryBudget:
    """Caps retries at a share of recent traffic, so that an upstream outage does not turn every
    request into several (a retry storm).

    Within any `window_s`: retries <= min_per_second * window_s + ratio * requests. The minimum
    lets a quiet gateway still retry; the ratio bounds the extra load a busy one adds. Retries do
    not count as requests, so they cannot fund further retries.

    Counts live in one-second buckets (at most `window_s` of them). Pure apart from its own
    counters: the time is always passed in. Not thread-safe; one per event loop.
    """

    def __init__(self, *, ratio: float = RETRY_BUDGET_RATIO, min_per_second: float = 3.0,
                 window_s: float = 10.0) -> None:
        if ratio < 0 or min_per_second < 0 or window_s <= 0:
            raise ValueError("ratio and min_per_second must be >= 0 and window_s > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window_s = window_s
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries], oldest first

    def record_request(self, now: float) -> None:
        self._bucket(now)[1] += 1

    def record_retry(self, now: float) -> None:
        self._bucket(now)[2] += 1

    def can_retry(self, now: float) -> bool:
        self._expire(now)
        requests = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        allowance = self.min_per_second * self.window_s + self.ratio * requests
        return retries + 1 <= allowance

    def try_retry(self, now: float) -> bool:
        """can_retry and, if so, record_retry: the usual way to spend the budget."""
        if not self.can_retry(now):
            return False
        self.record_retry(now)
        return True

    def _expire(self, now: float) -> None:
        oldest = math.floor(now - self.window_s)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()

    def _bucket(self, now: float) -> list[int]:
        self._expire(now)
        second = math.floor(now)
        # A clock that steps back lands in the newest bucket rather than reordering them.
        if self._buckets and self._buckets[-1][0] >= second:
            return self._buckets[-1]
        bucket = [second, 0, 0]
        self._buckets.append(bucket)
        return bucket
