"""Provider preferences: the request's `provider` object, and the endpoints of one model it allows,
best first.

Follows OpenRouter's provider routing (`provider.order`, `only`, `ignore`, `sort`, `max_price`,
...); pure: the routing snapshot (`policies.health.RoutingView`), the time and a random draw in
[0, 1) are arguments.

`parse_preferences` validates the object (unknown fields are ignored: OpenRouter adds fields over
time) and raises `InvalidPreferences` naming the field. `request_parameters` lists which catalog
parameter names a Messages request uses, for `require_parameters`.

`rank_endpoints(model, prefs, ...)`:

Filters, in this order; the first that leaves no endpoint raises `NoEndpoint` naming itself and
the endpoints that were left before it:
1. `only`: provider names, compared case-insensitively (an empty list filters nothing);
2. `ignore`: provider names, case-insensitively;
3. `data_collection: "deny"`: endpoints whose provider retains no prompts;
4. `zdr: true`: zero-data-retention endpoints;
5. `quantizations`: endpoints whose quantization is listed; one with no recorded quantization
   passes only when "unknown" is listed;
6. `max_price`: `prompt` against the endpoint's input price, `completion` against its output
   price, both USD per million tokens; an endpoint with an unknown price fails a price it is
   checked against (it cannot be shown to be cheap enough);
7. `require_parameters: true`: endpoints whose supported parameters include every parameter the
   request uses;
8. `allow_fallbacks: false` with an `order`: only the providers named in `order`.

Ordering, as a stable sort on these keys, most significant first:
1. availability: healthy, then half-open ("probe": the cooldown ran out, not yet cleared), then
   endpoints of providers near their upstream rate limit (remaining / limit < 5 % with a reset
   still ahead), then cooling endpoints. Cooling endpoints are kept, at the very end, as a last
   resort: when everything else has failed, a recovered upstream still beats a certain error, and
   a model with a single endpoint is not turned away for the length of a cooldown. "The very end"
   spans the fallback models too: `try_order` puts the cooling endpoints of every model after
   every other endpoint of every model, and the executor tries a plan's attempts in that order;
2. `order`: the named providers first, in that order; the rest after them;
3. preferred thresholds (among the rest): endpoints measured below `preferred_min_throughput`
   or above `preferred_max_latency` go after those that meet them or are not measured yet; they
   are never excluded;
4. the strategy, among the rest:
   - `sort: "price"` (or `:floor`): input + output price per million tokens ascending (weights
     1:1, so a request's real mix may differ); unknown prices last;
   - `sort: "throughput"` (or `:nitro`): measured output tokens per second descending; unmeasured
     last;
   - `sort: "latency"`: measured time to first token ascending; unmeasured last;
   - no `sort`: price ascending, as the fallback order.
   Ties keep catalog order.

Load balancing (OpenRouter's default) applies only with neither `sort` nor `order`: among the
endpoints that share the best availability and threshold group, one is chosen first with
probability proportional to 1 / price² (input + output; a price below 0.001 USD/M counts as
0.001, so a free endpoint all but always wins), using `rand`; the rest follow by price. Endpoints
of unknown price join the draw only when no price is known (then uniformly). A suffix `:floor`
or `:nitro` is a sort, and so turns load balancing off, as `sort` does.

`allow_fallbacks: false` without `order` keeps only the first endpoint of the ranking (OpenRouter:
"only served by the top provider").
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from policies.catalog import Endpoint, Model
from policies.health import COOLING, PROBE, RoutingView, cooldown_state

T = TypeVar("T")
SORTS = ("price", "throughput", "latency")
PARTITIONS = ("model", "none")
DATA_COLLECTION = ("allow", "deny")
QUANTIZATIONS = ("int4", "int8", "fp4", "mxfp4", "nvfp4", "fp6", "fp8", "mxfp8", "fp16", "bf16",
                 "fp32", "unknown")
PERCENTILES = ("p50", "p75", "p90", "p99")
MIN_BALANCING_PRICE = 0.001   # USD per million tokens; keeps 1 / price² finite for free endpoints


@dataclass(frozen=True)
class Preferences:
    order: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    sort: str | None = None                      # "price" | "throughput" | "latency"
    sort_partition: str = "model"                # "none": sort across the models of `models`
    max_price_prompt: float | None = None        # USD per million input tokens
    max_price_completion: float | None = None    # USD per million output tokens
    require_parameters: bool = False
    data_collection: str = "allow"
    zdr: bool | None = None
    quantizations: tuple[str, ...] | None = None
    preferred_min_throughput: float | None = None   # output tokens per second
    preferred_max_latency: float | None = None      # seconds to the first token


DEFAULT_PREFERENCES = Preferences()


class InvalidPreferences(ValueError):
    """The `provider` object is malformed; the message names the field."""


class NoEndpoint(LookupError):
    """No endpoint of a model is left after the preferences; str() is a user-facing message."""

    def __init__(self, model_id: str, filter: str, detail: str = "",
                 before: Sequence[str] = ()) -> None:
        self.model_id = model_id
        self.filter = filter
        self.detail = detail
        self.before = tuple(before)
        super().__init__(model_id, filter)

    def __str__(self) -> str:
        if self.filter == "configured providers":
            return f"no configured provider serves model '{self.model_id}'"
        message = f"no endpoint of '{self.model_id}' satisfies {self.filter}"
        if self.detail:
            message += f" ({self.detail})"
        if self.before:
            message += f"; endpoints before that filter: {', '.join(self.before)}"
        return message


# -- parsing ------------------------------------------------------------------------------------

def parse_preferences(raw: Mapping[str, Any] | None) -> Preferences:
    """The request's `provider` object as Preferences; None or absent fields take the defaults."""
    if raw is None:
        return DEFAULT_PREFERENCES
    if not isinstance(raw, Mapping):
        raise InvalidPreferences(f"provider: must be an object, got {_kind(raw)}")
    sort, partition = _sort(raw.get("sort"))
    prompt, completion = _max_price(raw.get("max_price"))
    only = _names(raw, "only")
    quantizations = _quantizations(raw.get("quantizations"))
    return Preferences(
        order=_names(raw, "order") or (),
        allow_fallbacks=_flag(raw, "allow_fallbacks", True),
        only=only or None,
        ignore=_names(raw, "ignore") or (),
        sort=sort,
        sort_partition=partition,
        max_price_prompt=prompt,
        max_price_completion=completion,
        require_parameters=_flag(raw, "require_parameters", False),
        data_collection=_choice(raw, "data_collection", DATA_COLLECTION) or "allow",
        zdr=_optional_flag(raw, "zdr"),
        quantizations=quantizations or None,
        preferred_min_throughput=_threshold(raw, "preferred_min_throughput", strictest=max),
        preferred_max_latency=_threshold(raw, "preferred_max_latency", strictest=min),
    )


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _names(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidPreferences(f"provider.{key}: must be a list of provider names")
    return tuple(dict.fromkeys(value))


def _flag(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _optional_flag(raw, key)
    return default if value is None else value


def _optional_flag(raw: Mapping[str, Any], key: str) -> bool | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidPreferences(f"provider.{key}: must be true or false, got {_kind(value)}")
    return value


def _choice(raw: Mapping[str, Any], key: str, allowed: Sequence[str]) -> str | None:
    value = raw.get(key)
    if value is not None and value not in allowed:
        raise InvalidPreferences(f"provider.{key}: must be one of {', '.join(allowed)}")
    return value


def _sort(value: Any) -> tuple[str | None, str]:
    if value is None:
        return None, "model"
    if isinstance(value, Mapping):
        by = value.get("by")
        if by is not None and by not in SORTS:
            raise InvalidPreferences(f"provider.sort.by: must be one of {', '.join(SORTS)}")
        partition = value.get("partition")
        if partition is not None and partition not in PARTITIONS:
            raise InvalidPreferences(f"provider.sort.partition: must be one of "
                                     f"{', '.join(PARTITIONS)}")
        return by, partition or "model"
    if value not in SORTS:
        raise InvalidPreferences(f"provider.sort: must be one of {', '.join(SORTS)}")
    return value, "model"


def _max_price(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise InvalidPreferences(f"provider.max_price: must be an object such as "
                                 f'{{"prompt": 1, "completion": 2}}, got {_kind(value)}')
    prices = {}
    # `request`, `image` and `audio` are checked for shape only: no endpoint has such prices.
    for key in ("prompt", "completion", "request", "image", "audio"):
        prices[key] = _price(value.get(key), f"provider.max_price.{key}")
    return prices["prompt"], prices["completion"]


def _price(value: Any, label: str) -> float | None:
    if value is None:
        return None
    # OpenRouter's schema types these as strings; its examples send numbers. Both are accepted.
    number: float | None = None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # an integer too large for a float is no price either
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise InvalidPreferences(f"{label}: must be a non-negative number (USD per million tokens)")
    return number


def _quantizations(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidPreferences("provider.quantizations: must be a list of quantization levels")
    levels = tuple(dict.fromkeys(v.lower() for v in value))
    unknown = [v for v in levels if v not in QUANTIZATIONS]
    if unknown:
        raise InvalidPreferences(f"provider.quantizations: unknown level '{unknown[0]}' "
                                 f"(known: {', '.join(QUANTIZATIONS)})")
    return levels


def _threshold(raw: Mapping[str, Any], key: str,
               strictest: Callable[[Iterable[float]], float]) -> float | None:
    """A number, or percentile cutoffs {p50, p75, p90, p99}. Routing measures one moving average
    per endpoint, so every given cutoff is checked against that one figure: the strictest cutoff
    is the one that counts (for the median, each cutoff is a necessary condition)."""
    value = raw.get(key)
    if value is None:
        return None
    label = f"provider.{key}"
    if isinstance(value, Mapping):
        cutoffs = [_positive(value.get(p), f"{label}.{p}") for p in PERCENTILES]
        given = [c for c in cutoffs if c is not None]
        return strictest(given) if given else None
    return _positive(value, label)


def _positive(value: Any, label: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer too large for a float
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise InvalidPreferences(f"{label}: must be a non-negative number or an object of "
                                 f"percentile cutoffs ({', '.join(PERCENTILES)})")
    return number


# -- which parameters a request uses ------------------------------------------------------------

# Top-level Messages fields that are catalog parameter names (beyond model, messages, system,
# max_tokens and stream, which every endpoint takes).
_TOP_LEVEL_PARAMETERS = ("tools", "tool_choice", "thinking", "stop_sequences", "temperature",
                         "top_p", "top_k", "metadata", "service_tier", "output_config",
                         "container", "mcp_servers", "context_management", "cache_control")
_BLOCK_PARAMETERS = {"image": "images", "document": "documents"}


def request_parameters(body: Mapping[str, Any]) -> frozenset[str]:
    """Catalog parameter names the request uses: the top-level fields it sets (null and empty
    values do not count, nor `thinking: {"type": "disabled"}`), `images` / `documents` for any such
    content block (also inside tool results), and `cache_control` anywhere (top level, system,
    tools, message blocks). One pass over the blocks; nested tool results are walked one deep."""
    used = {name for name in _TOP_LEVEL_PARAMETERS if _is_set(body.get(name))}
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "disabled":
        used.discard("thinking")
    for key in ("system", "tools"):
        blocks = body.get(key)
        if isinstance(blocks, list):
            _scan_blocks(blocks, used)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, list):
                _scan_blocks(content, used)
    return frozenset(used)


def _scan_blocks(blocks: list[Any], used: set[str]) -> None:
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        _scan_block(block, used)
        inner = block.get("content")
        if block.get("type") == "tool_result" and isinstance(inner, list):
            for nested in inner:
                if isinstance(nested, Mapping):
                    _scan_block(nested, used)


def _scan_block(block: Mapping[str, Any], used: set[str]) -> None:
    kind = _BLOCK_PARAMETERS.get(str(block.get("type")))
    if kind is not None:
        used.add(kind)
    if block.get("cache_control") is not None:
        used.add("cache_control")


def _is_set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (list, dict, str)):
        return len(value) > 0
    return True


# -- filtering ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Filter:
    name: str
    detail: str
    keeps: Callable[[Endpoint], bool]


def eligible_endpoints(model: Model, prefs: Preferences,
                       used_parameters: frozenset[str] = frozenset()) -> list[Endpoint]:
    """The model's endpoints that pass every filter, in catalog order; raises NoEndpoint naming the
    first filter that leaves none."""
    endpoints = list(model.endpoints)
    if not endpoints:
        raise NoEndpoint(model.id, "configured providers")
    for step in _filters(prefs, used_parameters):
        kept = [e for e in endpoints if step.keeps(e)]
        if not kept:
            detail = step.detail
            if step.name == "provider.require_parameters":
                detail += "".join(f"; {e.provider} lacks "
                                  f"{', '.join(sorted(used_parameters - e.supported_parameters))}"
                                  for e in endpoints)
            raise NoEndpoint(model.id, step.name, detail, [e.provider for e in endpoints])
        endpoints = kept
    return endpoints


def _filters(prefs: Preferences, used: frozenset[str]) -> list[_Filter]:
    steps: list[_Filter] = []
    if prefs.only is not None:
        only = {name.lower() for name in prefs.only}
        steps.append(_Filter("provider.only", ", ".join(prefs.only),
                             lambda e: e.provider.lower() in only))
    if prefs.ignore:
        ignore = {name.lower() for name in prefs.ignore}
        steps.append(_Filter("provider.ignore", ", ".join(prefs.ignore),
                             lambda e: e.provider.lower() not in ignore))
    if prefs.data_collection == "deny":
        steps.append(_Filter("provider.data_collection",
                             "deny: only providers that retain no prompts",
                             lambda e: not e.retains_prompts))
    if prefs.zdr:
        steps.append(_Filter("provider.zdr", "true: only zero-data-retention endpoints",
                             lambda e: e.zdr))
    if prefs.quantizations is not None:
        levels = set(prefs.quantizations)
        steps.append(_Filter("provider.quantizations", ", ".join(prefs.quantizations),
                             lambda e: (e.quantization or "unknown").lower() in levels))
    if prefs.max_price_prompt is not None or prefs.max_price_completion is not None:
        steps.append(_Filter("provider.max_price", _price_detail(prefs),
                             lambda e: _within_price(e, prefs)))
    if prefs.require_parameters and used:
        steps.append(_Filter("provider.require_parameters",
                             f"request uses {', '.join(sorted(used))}",
                             lambda e: used <= e.supported_parameters))
    if not prefs.allow_fallbacks and prefs.order:
        ordered = {name.lower() for name in prefs.order}
        steps.append(_Filter("provider.allow_fallbacks",
                             "false: only the providers in provider.order: "
                             + ", ".join(prefs.order),
                             lambda e: e.provider.lower() in ordered))
    return steps


def _price_detail(prefs: Preferences) -> str:
    parts = []
    if prefs.max_price_prompt is not None:
        parts.append(f"prompt ≤ {prefs.max_price_prompt} USD/M")
    if prefs.max_price_completion is not None:
        parts.append(f"completion ≤ {prefs.max_price_completion} USD/M")
    return ", ".join(parts)


def _within_price(endpoint: Endpoint, prefs: Preferences) -> bool:
    checks = ((prefs.max_price_prompt, endpoint.pricing.input),
              (prefs.max_price_completion, endpoint.pricing.output))
    return all(price is not None and price <= ceiling
               for ceiling, price in checks if ceiling is not None)


# -- ordering -----------------------------------------------------------------------------------

def endpoint_key(endpoint: Endpoint) -> str:
    """How routing state names an endpoint (as `Attempt.endpoint_key`)."""
    return f"{endpoint.provider}/{endpoint.upstream_model}"


def availability(endpoint: Endpoint, view: RoutingView, now: float) -> int:
    """0 healthy, 1 half-open, 2 provider near its rate limit, 3 cooling (lower is better)."""
    state = cooldown_state(view.health(endpoint_key(endpoint)), now)
    if state == COOLING:
        return 3
    limits = view.limits(endpoint.provider)
    if limits is not None and limits.near_exhaustion(now):
        return 2
    return 1 if state == PROBE else 0


def try_order(attempts: Sequence[T], state: Callable[[T], str]) -> list[T]:
    """A plan's attempts in the order they are tried: plan order, except that those whose `state`
    is COOLING go after all the others (of every model), as the last resort."""
    ready = [a for a in attempts if state(a) != COOLING]
    if len(ready) == len(attempts):
        return list(attempts)
    return ready + [a for a in attempts if state(a) == COOLING]


RankKey = tuple[int, int, int, tuple[bool, float]]


def rank_key(endpoint: Endpoint, prefs: Preferences, *, view: RoutingView, now: float,
             sort: str | None) -> RankKey:
    """The sort key of the ordering described in the module docstring."""
    return (availability(endpoint, view, now),
            _order_position(endpoint, prefs.order),
            _misses_thresholds(endpoint, prefs, view),
            _strategy_key(endpoint, view, sort))


def rank_endpoints(model: Model, prefs: Preferences, *, used_parameters: frozenset[str],
                   view: RoutingView, now: float, rand: float,
                   sort_override: str | None = None) -> list[Endpoint]:
    """The model's endpoints allowed by `prefs`, best first (see the module docstring); raises
    NoEndpoint. `sort_override` is the sort of a `:floor` / `:nitro` suffix and wins over
    `prefs.sort`; `rand` in [0, 1) drives the load-balancing draw."""
    sort = sort_override or prefs.sort
    endpoints = eligible_endpoints(model, prefs, used_parameters)
    keys = {id(e): rank_key(e, prefs, view=view, now=now, sort=sort) for e in endpoints}
    ranked = sorted(endpoints, key=lambda e: keys[id(e)])
    if sort is None and not prefs.order and len(ranked) > 1:
        groups = [(k[0], k[1], k[2]) for k in (keys[id(e)] for e in ranked)]
        ranked = _balance(ranked, groups, rand)
    if not prefs.allow_fallbacks and not prefs.order:
        ranked = ranked[:1]
    return ranked


def _order_position(endpoint: Endpoint, order: tuple[str, ...]) -> int:
    name = endpoint.provider.lower()
    for position, wanted in enumerate(order):
        if wanted.lower() == name:
            return position
    return len(order)


def _misses_thresholds(endpoint: Endpoint, prefs: Preferences, view: RoutingView) -> int:
    """1 when a measurement shows the endpoint misses a preferred threshold; unmeasured is 0."""
    if prefs.preferred_min_throughput is None and prefs.preferred_max_latency is None:
        return 0
    health = view.health(endpoint_key(endpoint))
    if prefs.preferred_min_throughput is not None and health.output_tps is not None \
            and health.output_tps < prefs.preferred_min_throughput:
        return 1
    if prefs.preferred_max_latency is not None and health.ttft_s is not None \
            and health.ttft_s > prefs.preferred_max_latency:
        return 1
    return 0


def total_price(endpoint: Endpoint) -> float | None:
    """Input + output price per million tokens (weights 1:1), None when either is unknown."""
    pricing = endpoint.pricing
    if pricing.input is None or pricing.output is None:
        return None
    return pricing.input + pricing.output


def _strategy_key(endpoint: Endpoint, view: RoutingView, sort: str | None) -> tuple[bool, float]:
    # (unknown, value): unknown figures sort after every known one.
    if sort == "throughput":
        tps = view.health(endpoint_key(endpoint)).output_tps
        return (tps is None, -(tps or 0.0))
    if sort == "latency":
        ttft = view.health(endpoint_key(endpoint)).ttft_s
        return (ttft is None, ttft or 0.0)
    price = total_price(endpoint)
    return (price is None, price or 0.0)


def _balance(ranked: list[Endpoint], groups: list[tuple[int, int, int]],
             rand: float) -> list[Endpoint]:
    """Move one endpoint of the best group to the front, drawn with weight 1 / price²."""
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    best = [e for e, group in zip(ranked, groups) if group == groups[0]]
    priced = [e for e in best if total_price(e) is not None]
    pool = priced or best
    weights = [1.0 / max(total_price(e) or 0.0, MIN_BALANCING_PRICE) ** 2 if priced else 1.0
               for e in pool]
    target = rand * sum(weights)
    chosen = pool[-1]
    cumulative = 0.0
    for endpoint, weight in zip(pool, weights):
        cumulative += weight
        if target < cumulative:
            chosen = endpoint
            break
    return [chosen] + [e for e in ranked if e is not chosen]
