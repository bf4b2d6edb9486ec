"""What a request cost, from the token counts and the endpoint's catalog prices (USD per million tokens)."""
from __future__ import annotations

from policies.catalog import Pricing
from providers.base import Usage


def cost_usd(usage: Usage, pricing: Pricing) -> float:
    """Cache writes and reads at their own prices; a price the catalog lacks falls back to input's."""
    base = pricing.input or 0.0
    write_5m = pricing.cache_write if pricing.cache_write is not None else base
    write_1h = pricing.cache_write_1h if pricing.cache_write_1h is not None else write_5m
    read = pricing.cache_read if pricing.cache_read is not None else base
    hour_tokens = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
    total = (usage.input_tokens * base
             + (usage.output_tokens * (pricing.output or 0.0))
             + (usage.cache_creation_input_tokens - hour_tokens) * write_5m
             + hour_tokens * write_1h
             + usage.cache_read_input_tokens * read)
    return round(total / 1_000_000, 10)


def worst_case_usd(input_tokens: int, max_tokens: int, pricing: Pricing, *, cache_writes: bool) -> float:
    """The most a request can cost: input at the cache-write price when it asks to cache, all of max_tokens."""
    base = pricing.input or 0.0
    if cache_writes:
        base = max(base, pricing.cache_write or 0.0, pricing.cache_write_1h or 0.0)
    return (input_tokens * base + max_tokens * (pricing.output or 0.0)) / 1_000_000
