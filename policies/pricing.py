"""What a request cost, from the token counts and the endpoint's catalog prices (USD per million tokens),
and the web searches the upstream ran itself (USD each)."""
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
    return round(total / 1_000_000 + usage.web_search_requests * pricing.web_search, 10)
