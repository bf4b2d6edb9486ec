"""Limit arithmetic: windows, UTC budget periods, money units and the worst-case reservation.

Pure functions of numbers, shared by both store backends (the Redis scripts repeat the few formulas
they need and say so) and by the service when it prices a reservation. No clock is read here: every
function takes the time it reasons about.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

WINDOW_S = 60.0          # RPM and TPM are sliding windows of this length
LEASE_TTL_S = 30.0       # a concurrency slot lives this long unless renewed
LEASE_RENEW_S = 10.0     # how often an open stream renews its slot
CONCURRENCY_RETRY_S = 1.0  # a slot frees when some request ends: no better hint exists
NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # catalog prices are USD per million tokens


def usd_to_nanos(usd: float) -> int:
    """Money is counted in integer nano-dollars so that 100 x $0.01 is exactly $1.00.

    The same formula (floor(x * 1e9 + 0.5)) runs inside the Redis scripts: keep them equal.
    """
    return math.floor(usd * 1e9 + 0.5)


def nanos_to_usd(nanos: int) -> float:
    return round(nanos / NANOS_PER_USD, 9)


def stricter(a: float | None, b: float | None) -> int | float | None:
    """The tighter of two optional limits; None means unlimited."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def allowed_intersection(
    a: tuple[str, ...] | None, b: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """Models allowed by both lists; None means any model."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(m for m in a if m in set(b))


# -- UTC periods ------------------------------------------------------------------------------
def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


# Every admission and settlement names its day and month: computed once per UTC day, not per call.
@functools.lru_cache(maxsize=64)
def _day_facts(day: int) -> tuple[str, str, float]:
    """(day id, month id, start of the next month) of the UTC day number `day`."""
    d = _utc(day * 86400)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return d.strftime("%Y%m%d"), d.strftime("%Y%m"), datetime(year, month, 1, tzinfo=UTC).timestamp()


def day_id(now: float) -> str:
    """The UTC day a daily budget counts in, e.g. '20250131'."""
    return _day_facts(int(now // 86400))[0]


def month_id(now: float) -> str:
    """The UTC month a monthly budget counts in, e.g. '202501'."""
    return _day_facts(int(now // 86400))[1]


def next_day_start(now: float) -> float:
    return float(day_start(now) + 86400)


def next_month_start(now: float) -> float:
    return _day_facts(int(now // 86400))[2]


def hour_start(ts: float) -> int:
    return int(ts // 3600) * 3600


def day_start(ts: float) -> int:
    return int(ts // 86400) * 86400


# -- budget reservation ---------------------------------------------------------------------
def _price(prices: Any, name: str) -> float | None:
    value = prices.get(name) if isinstance(prices, Mapping) else getattr(prices, name, None)
    return None if value is None else float(value)


def reservation_usd(
    input_tokens: int, max_tokens: int, prices: Iterable[Any], *, cache_write: bool = False
) -> float:
    """The worst-case cost of a request over every endpoint its plan may reach.

    `prices` holds one price table per reachable endpoint: a mapping or an object with `input`,
    `output` and optionally `cache_write` / `cache_write_1h` (USD per million tokens). Input is
    charged at the dearest cache-write price when the request carries `cache_control` (when that
    price is known and higher), output at `max_tokens`. The result is rounded up to a whole nano-dollar so that a
    reservation never falls short of the cost it covers.
    """
    worst = 0.0
    for table in prices:
        input_price = _price(table, "input") or 0.0
        if cache_write:
            input_price = max(input_price, _price(table, "cache_write") or 0.0,
                              _price(table, "cache_write_1h") or 0.0)
        output_price = _price(table, "output") or 0.0
        cost = (input_tokens * input_price + max_tokens * output_price) / TOKENS_PER_PRICE_UNIT
        worst = max(worst, cost)
    return math.ceil(round(worst * NANOS_PER_USD, 3)) / NANOS_PER_USD
