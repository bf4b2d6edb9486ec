"""The pure limit arithmetic both backends share: money, periods, reservations."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies.limits import (
    day_id,
    month_id,
    nanos_to_usd,
    next_day_start,
    next_month_start,
    reservation_usd,
    usd_to_nanos,
)


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_a_hundred_cents_add_up_to_exactly_one_dollar():
    assert sum(usd_to_nanos(0.01) for _ in range(100)) == usd_to_nanos(1.0)
    assert nanos_to_usd(usd_to_nanos(0.1) * 3) == 0.3


def test_periods_are_utc_days_and_months():
    now = _epoch(2024, 12, 31, 23, 59, 59)
    assert (day_id(now), month_id(now)) == ("20241231", "202412")
    assert next_day_start(now) == _epoch(2025, 1, 1)
    assert next_month_start(now) == _epoch(2025, 1, 1)
    assert next_month_start(_epoch(2024, 2, 10)) == _epoch(2024, 3, 1)


def test_reservation_is_the_dearest_endpoint_with_max_tokens_of_output():
    prices = [{"input": 3.0, "output": 15.0}, {"input": 5.0, "output": 25.0}]
    # 1000 input at $5/M + 2000 output at $25/M
    assert reservation_usd(1000, 2000, prices) == pytest.approx(0.055)


def test_reservation_charges_input_at_the_cache_write_price_when_caching():
    class Price:
        input, output, cache_write = 5.0, 25.0, 6.25

    assert reservation_usd(1_000_000, 0, [Price()], cache_write=True) == 6.25
    assert reservation_usd(1_000_000, 0, [Price()]) == 5.0


def test_reservation_rounds_up_and_is_zero_without_prices():
    assert reservation_usd(1, 0, [{"input": 0.1, "output": 0.4}]) == 1e-7
    assert reservation_usd(1, 1, [{"input": 0.0001, "output": 0.0}]) == 1e-9
    assert reservation_usd(100, 100, []) == 0.0


def test_reservation_charges_input_at_the_dearer_one_hour_cache_write_price():
    prices = [{"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_write_1h": 10.0}]
    assert reservation_usd(1_000_000, 0, prices, cache_write=True) == 10.0
