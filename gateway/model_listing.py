"""How the catalog is shown: `GET /v1/models` bodies and the `gateway models` table.

Pure functions of catalog objects; the HTTP handler and the CLI do the I/O.
`model_info` is Anthropic's ModelInfo (`type`, `id`, `display_name`, `created_at`, `lifecycle`,
`max_input_tokens`, `max_tokens`) plus the router's extras; `list_page` is Anthropic's list
format with its cursor pagination, newest model first as Anthropic lists them.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from policies.catalog import Catalog, Endpoint, Model, Pricing

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_info(model: Model) -> dict[str, Any]:
    """Anthropic's ModelInfo for `model`, plus aliases, limits, parameters and providers."""
    return {
        "type": "model",
        "id": model.id,
        "display_name": model.display_name,
        "created_at": model.created_at,
        "lifecycle": model.lifecycle,
        "max_input_tokens": model.context_length,
        "max_tokens": model.max_output,
        "aliases": list(model.aliases),
        "context_length": model.context_length,
        "max_output": model.max_output,
        "input_modalities": list(model.input_modalities),
        "supported_parameters": sorted(model.supported_parameters),
        "providers": [_provider_info(endpoint) for endpoint in model.endpoints],
    }


def list_page(models: Sequence[Model], limit: int = DEFAULT_LIMIT, before_id: str | None = None,
              after_id: str | None = None) -> dict[str, Any]:
    """One page of Anthropic's model list: `data`, `has_more`, `first_id`, `last_id`.

    Models are listed newest first (ties keep the given order). `after_id` returns the page
    right after that model, `before_id` the page right before it. Raises ValueError for a limit
    outside 1..1000, an unknown cursor, or both cursors at once."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    if before_id is not None and after_id is not None:
        raise ValueError("give before_id or after_id, not both")
    ordered = sorted(models, key=_released, reverse=True)
    if after_id is not None:
        start = _position(ordered, after_id, "after_id") + 1
        page = ordered[start:start + limit]
        has_more = start + limit < len(ordered)
    elif before_id is not None:
        end = _position(ordered, before_id, "before_id")
        start = max(0, end - limit)
        page = ordered[start:end]
        has_more = start > 0
    else:
        page = ordered[:limit]
        has_more = limit < len(ordered)
    data = [model_info(model) for model in page]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def format_table(catalog: Catalog) -> str:
    """A fixed-width table of every model and endpoint, prices in USD per million tokens."""
    header = ("MODEL", "ALIASES", "PROVIDER", "IN", "OUT", "CACHE-W", "CACHE-R", "CONTEXT")
    rows: list[tuple[str, ...]] = []
    unverified = False
    for model in catalog.models.values():
        for index, endpoint in enumerate(model.endpoints or (None,)):
            first = index == 0
            prices = _price_cells(endpoint.pricing) if endpoint else ("-",) * 4
            unverified = unverified or (endpoint is not None and not endpoint.pricing.verified)
            rows.append((
                model.id if first else "",
                ", ".join(model.aliases) if first else "",
                endpoint.provider if endpoint else "(none)",
                *prices,
                _tokens(endpoint.context_length if endpoint else model.context_length),
            ))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    numeric = {3, 4, 5, 6, 7}

    def line(cells: tuple[str, ...]) -> str:
        padded = (cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                  for i, cell in enumerate(cells))
        return "  ".join(padded).rstrip()

    lines = [line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)]
    lines.append("")
    lines.append("Prices in USD per million tokens.")
    if unverified:
        lines.append("* price not confirmed on the provider's public list")
    return "\n".join(lines) + "\n"


def openai_model(model: Model) -> dict[str, Any]:
    """A model as OpenAI's Model object: `owned_by` is the vendor part of the id (the first
    endpoint's provider for an id without one), `created` the release date in epoch seconds."""
    vendor = model.id.split("/", 1)[0] if "/" in model.id else (model.endpoints[0].provider if model.endpoints
                                                                 else "gateway")
    released = _released(model)
    created = int((released if released.tzinfo else released.replace(tzinfo=UTC)).timestamp())
    return {"id": model.id, "object": "model", "created": created, "owned_by": vendor}


def openai_list(models: Sequence[Model]) -> dict[str, Any]:
    """OpenAI's model list: every model in one page (OpenAI's list has no pagination)."""
    return {"object": "list", "data": [openai_model(m) for m in models]}


def _provider_info(endpoint: Endpoint) -> dict[str, Any]:
    pricing = endpoint.pricing
    return {
        "name": endpoint.provider,
        "upstream_model": endpoint.upstream_model,
        "context_length": endpoint.context_length,
        "max_output": endpoint.max_output,
        "quantization": endpoint.quantization,
        "retains_prompts": endpoint.retains_prompts,
        "zdr": endpoint.zdr,
        "pricing": {
            "input": pricing.input,
            "output": pricing.output,
            "cache_write": pricing.cache_write,
            "cache_write_1h": pricing.cache_write_1h,
            "cache_read": pricing.cache_read,
            "verified": pricing.verified,
        } if not pricing.unpriced else "unpriced",
    }


def _released(model: Model) -> datetime:
    return datetime.fromisoformat(model.created_at)


def _position(models: Sequence[Model], model_id: str, name: str) -> int:
    for index, model in enumerate(models):
        if model.id == model_id:
            return index
    raise ValueError(f"{name} '{model_id}' is not a listed model id")


def _price_cells(pricing: Pricing) -> tuple[str, ...]:
    if pricing.unpriced:
        return ("unpriced", "", "", "")
    mark = "" if pricing.verified else "*"
    return tuple(_price(value) + (mark if value is not None else "")
                 for value in (pricing.input, pricing.output, pricing.cache_write,
                               pricing.cache_read))


def _price(value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}"
    return text if float(text) == value else f"{value:.3f}".rstrip("0")


def _tokens(count: int | None) -> str:
    if count is None:
        return "-"
    if count >= 1_000_000:
        return f"{count / 1_000_000:.3g}M"
    if count >= 1_000:
        return f"{count / 1_000:.3g}K"
    return str(count)
