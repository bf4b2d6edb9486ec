"""The model catalog: which models exist, which providers serve them, and at what price.

`load_catalog` reads the built-in data file (`policies/catalog.yaml`, package data), merges the
config file's `models:` and `providers:` over it, validates every entry and returns an immutable
`Catalog` with its lookup indexes built. It runs once at startup; every later lookup is a dict hit.

Merging:
- `models:` entries merge by model id (case-insensitive): a new id adds a model, an existing id
  replaces each field the entry gives. Its `endpoints` merge by provider name: fields of an
  existing endpoint are replaced one by one (`pricing` field by field), a new provider adds one.
- `providers:` entries merge by name: fields of a built-in provider are replaced (e.g. `base_url`,
  `api_key`), a new name adds a provider and then needs `protocol` and `base_url`.
- An endpoint inherits what it leaves out: `context_length`, `max_output` and
  `supported_parameters` from its model; `retains_prompts`, `zdr` and `options` from its provider
  (endpoint options are laid over provider options).

A model entry needs only `id` and endpoints with `provider` and `upstream_model`; what it leaves out
has these defaults (the README has the same table):
- `context_length`, `max_output`: None, unknown: no local check, `max_tokens` passes through.
- `supported_parameters`: what the endpoint's protocol carries (`PROTOCOL_PARAMETERS`), never
  nothing: a self-hosted OpenAI-compatible model gets tools, tool_choice, sampling and stop
  sequences, images.
- `pricing`: unpriced (`Pricing.unpriced`): costs 0, and its usage records say so.

`api_key` comes only from the config file; nothing here reads the environment. A provider's `auth`
and its fields (`AUTH_FIELDS`) are kept as given, for `gateway.credentials` to check and use.

`catalog_clouds.yaml` (the clouds' endpoints of the built-in models) is laid over `catalog.yaml`
the way the config file's `providers:` and `models:` are, before the config file.

Endpoint and provider `options` are hints for the wire translators, validated at load into
`Options` (each protocol accepts its own keys, see `OPTION_KEYS`; an unknown key or value stops
startup naming it):
- `anthropic`: `auth` (`x-api-key`, the default, or `bearer` when the key goes in
  `Authorization: Bearer`, as Bedrock's Anthropic-compatible API wants).
- `openai`: `max_tokens_field` (`max_tokens` or `max_completion_tokens`: the field that carries
  `max_tokens`), `reasoning` (how thinking travels: `reasoning_effort`, `enable_thinking`,
  `thinking`, or null for not at all).
- `gemini`: `thinking` (`budget`, the default: `thinkingConfig.thinkingBudget`, or `level`:
  `thinkingLevel`, which Gemini 3 prefers).
- `openai-responses`: none (reasoning follows `thinking` in `supported_parameters`).
- `azure`: those of `openai`.
- `vertex`: `protocol` (`gemini`: the endpoint is a Gemini model, served by the Gemini protocol on
  Vertex's URLs).
- `bedrock`: none.
- `mock`: `ttft_ms` and `tokens_per_second` (non-negative numbers: a simulated latency and rate),
  `fail_status` (an HTTP error status the provider answers every time, to show fallbacks offline).

Every problem found at load raises `CatalogError` naming the entry and the field.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from providers.gemini_request import THINKING_MODES
from providers.openai_chat_request import REASONING_MODES
from providers.protocol import NAMES as PROTOCOLS

_CHAT_PARAMETERS = frozenset({"tools", "tool_choice", "stop_sequences", "temperature", "top_p", "images",
                              "metadata"})
_ANTHROPIC_PARAMETERS = frozenset({"tools", "tool_choice", "thinking", "images", "documents", "cache_control",
                                   "stop_sequences", "temperature", "top_p", "top_k", "metadata", "service_tier"})
# What a request feature needs of the wire protocol alone: the parameters an endpoint supports when
# neither it nor its model lists any.
PROTOCOL_PARAMETERS: Mapping[str, frozenset[str]] = MappingProxyType({
    "anthropic": _ANTHROPIC_PARAMETERS,
    # The clouds' Claude APIs take Anthropic's request as it is.
    "bedrock": _ANTHROPIC_PARAMETERS,
    "vertex": _ANTHROPIC_PARAMETERS,
    "openai": _CHAT_PARAMETERS,
    "azure": _CHAT_PARAMETERS,
    "openai-responses": frozenset({"tools", "tool_choice", "thinking", "images", "documents", "temperature",
                                   "top_p", "metadata"}),
    "gemini": frozenset({"tools", "tool_choice", "thinking", "images", "documents", "stop_sequences",
                         "temperature", "top_p", "top_k"}),
    "mock": frozenset({"tools", "tool_choice", "thinking", "images", "documents", "stop_sequences",
                       "temperature", "top_p", "metadata"}),
})
DEFAULT_DISCOVER_INTERVAL = 300.0
LIFECYCLES = frozenset({"active", "deprecated", "retired"})

# A vendor's dated snapshot id: `claude-sonnet-4-5-20250929`, `gpt-5.4-2026-03-05`.
DATED_ID = re.compile(r"^(?P<base>.+?)-(?:\d{8}|\d{4}-\d{2}-\d{2})$")



def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


class CatalogError(ValueError):
    """The catalog data or a config override is invalid; the message names the entry and field."""


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens; None means unknown. `verified` is False where the price could not
    be confirmed on the provider's public list."""
    input: float | None
    output: float | None
    cache_write: float | None     # 5-minute cache write
    cache_write_1h: float | None
    cache_read: float | None
    verified: bool = True
    unpriced: bool = False        # no `pricing` at all: costs 0, and usage records say so
    web_search: float = 0.0       # USD per web search the upstream runs itself (Anthropic's server tool)


UNPRICED = Pricing(input=None, output=None, cache_write=None, cache_write_1h=None, cache_read=None,
                   unpriced=True)


@dataclass(frozen=True)
class Options:
    """A provider's or endpoint's `options`, checked against its protocol's keys at load."""
    auth: str = "x-api-key"                      # anthropic
    web_search: str = "gateway"                  # anthropic: "native" when the upstream runs Anthropic's
                                                 # web search tool itself (Anthropic's own API)
    max_tokens_field: str = "max_tokens"         # openai
    reasoning: str | None = "reasoning_effort"   # openai
    thinking: str = "budget"                     # gemini
    ttft_ms: float = 0.0                         # mock
    tokens_per_second: float = 0.0               # mock
    fail_status: int | None = None               # mock: answer this error status every time
    protocol: str | None = None                  # vertex: an endpoint's own wire protocol (gemini)


def _one_of(*choices: str | None):
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join("null" if c is None else c for c in choices))
        return value
    return check


def _error_status(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError("must be an HTTP error status (400-599) or null")
    return value


def _non_negative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
            or value == float("inf"):
        raise ValueError("must be a non-negative number")
    return float(value)


_OPTION_CHECKS = {
    "auth": _one_of("x-api-key", "bearer"),
    "web_search": _one_of("native", "gateway"),
    "max_tokens_field": _one_of("max_tokens", "max_completion_tokens"),
    "reasoning": _one_of(*REASONING_MODES, None),
    "thinking": _one_of(*THINKING_MODES),
    "ttft_ms": _non_negative,
    "tokens_per_second": _non_negative,
    "fail_status": _error_status,
    "protocol": _one_of("gemini"),
}
OPTION_KEYS: Mapping[str, frozenset[str]] = MappingProxyType({
    "anthropic": frozenset({"auth", "web_search"}),
    "openai": frozenset({"max_tokens_field", "reasoning"}),
    "openai-responses": frozenset(),
    "gemini": frozenset({"thinking"}),
    "mock": frozenset({"ttft_ms", "tokens_per_second", "fail_status"}),
    "bedrock": frozenset(),
    "vertex": frozenset({"protocol"}),
    "azure": frozenset({"max_tokens_field", "reasoning"}),
})


def _options(label: str, raw: Mapping[str, Any], protocol: str, base: Options) -> Options:
    """`raw`'s `options` laid over `base`, each key and value checked for `protocol`."""
    given = _mapping(label, raw, "options")
    known = OPTION_KEYS.get(protocol, frozenset())
    values = {}
    for key, value in given.items():
        if key not in known:
            expected = ", ".join(sorted(known)) or "none"
            raise CatalogError(f"{label}: unknown option '{key}' for protocol '{protocol}' "
                               f"(known: {expected})")
        try:
            values[key] = _OPTION_CHECKS[key](value)
        except ValueError as exc:
            raise CatalogError(f"{label}: option '{key}' {exc}, got {value!r}") from None
    return replace(base, **values) if values else base


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    protocol: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    retains_prompts: bool = False
    zdr: bool = False
    headers: Mapping[str, str] = field(default_factory=_empty_mapping, repr=False, hash=False)
    options: Options = field(default_factory=Options, hash=False)
    # How to reach it: an explicit proxy URL (or "direct": none, whatever the environment says),
    # a private CA and a client certificate. None: the environment's proxy, the system's trust.
    proxy: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = field(default=None, repr=False)
    # Models listed by the upstream's GET /models become `{name}/{id}` router ids.
    discover: bool = False
    discover_interval: float = DEFAULT_DISCOVER_INTERVAL
    # `auth:` as given (None: the protocol places `api_key` as its wire wants) and the fields that
    # go with it (`gateway.credentials` reads and checks them; they may hold secrets).
    auth: str | None = None
    auth_settings: Mapping[str, str] = field(default_factory=_empty_mapping, repr=False, hash=False)


@dataclass(frozen=True)
class Endpoint:
    """One provider serving one model, with everything inherited already filled in."""
    provider: str
    upstream_model: str
    pricing: Pricing
    retains_prompts: bool
    zdr: bool
    quantization: str | None
    context_length: int | None     # None: unknown
    max_output: int | None         # None: unknown
    supported_parameters: frozenset[str]
    options: Options = field(default_factory=Options, hash=False)
    protocol: str | None = None    # its own wire protocol (`protocol:`), when not its provider's


@dataclass(frozen=True)
class Model:
    id: str                        # router id, `vendor/name`
    display_name: str
    created_at: str                # RFC 3339
    aliases: tuple[str, ...]
    context_length: int | None     # None: unknown
    max_output: int | None         # None: unknown, max_tokens passes through
    input_modalities: tuple[str, ...]
    supported_parameters: frozenset[str]
    tokenizer: str
    endpoints: tuple[Endpoint, ...]
    lifecycle: str = "active"

    @property
    def vendor(self) -> str:
        """The router id's prefix: the provider whose native ids this model answers to."""
        return self.id.split("/", 1)[0]

    def endpoint(self, provider: str) -> Endpoint | None:
        wanted = provider.lower()
        for endpoint in self.endpoints:
            if endpoint.provider.lower() == wanted:
                return endpoint
        return None


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, Model]          # router id -> Model, in catalog order
    providers: Mapping[str, ProviderInfo]
    # lower-cased router id or alias -> (model, whether that name is a dated native id)
    _names: Mapping[str, tuple[Model, bool]] = field(
        init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", MappingProxyType(_name_index(self.models.values())))

    def get(self, model_id: str) -> Model | None:
        """The model with this router id or alias, compared case-insensitively.

        Suffixes (`:floor`) and unlisted dated ids are `policies.resolve`'s business."""
        hit = self._names.get(model_id.lower())
        return hit[0] if hit else None

    def provider(self, name: str) -> ProviderInfo | None:
        """The provider with this name, compared case-insensitively."""
        found = self.providers.get(name)
        if found is not None:
            return found
        wanted = name.lower()
        return next((p for key, p in self.providers.items() if key.lower() == wanted), None)

    def lookup_name(self, name: str) -> tuple[Model, bool] | None:
        """(model, is_dated_native_id) for an already lower-cased router id or alias."""
        return self._names.get(name)

    def name_index(self) -> Mapping[str, tuple[Model, bool]]:
        """Every lower-cased router id and alias -> (model, is_dated_native_id)."""
        return self._names


def load_catalog(model_overrides: Sequence[Mapping] = (),
                 provider_overrides: Mapping[str, Mapping] = MappingProxyType({})) -> Catalog:
    """The built-in catalog with the config file's `models:` and `providers:` merged over it."""
    builtin = _builtin_data()
    providers_raw = _merge_providers(builtin["providers"], provider_overrides)
    models_raw = _merge_models(builtin["models"], model_overrides)
    providers = {name: _build_provider(name, raw) for name, raw in providers_raw.items()}
    by_lower = {name.lower(): info for name, info in providers.items()}
    models: dict[str, Model] = {}
    for raw in models_raw:
        model = _build_model(raw, by_lower)
        models[model.id] = model
    return Catalog(models=MappingProxyType(models), providers=MappingProxyType(providers))


# -- the built-in data --------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _builtin_data() -> Mapping[str, Any]:
    """catalog.yaml with catalog_clouds.yaml laid over it as a config file's `providers:` and
    `models:` are, so the clouds' endpoints join the same router ids."""
    # Parsed once per process; the merge below builds new dicts and never mutates this.
    data, clouds = _data_file("catalog.yaml"), _data_file("catalog_clouds.yaml")
    return {"providers": _merge_providers(data["providers"], clouds["providers"]),
            "models": _merge_models(data["models"], clouds["models"])}


def _data_file(name: str) -> Mapping[str, Any]:
    text = resources.files("policies").joinpath(name).read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(text, Loader=loader)
    if not isinstance(data, dict) or not isinstance(data.get("providers"), dict) \
            or not isinstance(data.get("models"), list):
        raise CatalogError(f"{name}: expected a `providers:` mapping and a `models:` list")
    return data


# -- merging (plain data, before validation) ----------------------------------------------------

def _merge_providers(builtin: Mapping[str, Any],
                     overrides: Mapping[str, Mapping]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {name: dict(raw) for name, raw in builtin.items()}
    if not isinstance(overrides, Mapping):
        raise CatalogError(f"providers: expected a mapping of name to settings, "
                           f"got {type(overrides).__name__}")
    for name, raw in overrides.items():
        if not isinstance(name, str) or not name:
            raise CatalogError(f"providers: provider names must be non-empty strings, got {name!r}")
        if not isinstance(raw, Mapping):
            raise CatalogError(f"provider '{name}': expected a mapping of settings, "
                               f"got {type(raw).__name__}")
        existing = _find_key(merged, name)
        if existing is None:
            merged[name] = dict(raw)
        else:
            merged[existing] = {**merged[existing], **raw}
    return merged


def _merge_models(builtin: Sequence[Mapping], overrides: Sequence[Mapping]) -> list[dict[str, Any]]:
    merged = [dict(raw) for raw in builtin]
    position: dict[str, int] = {}
    for i, entry in enumerate(merged):
        key = str(entry.get("id", "")).lower()
        if key in position:
            raise CatalogError(f"catalog.yaml: model '{entry.get('id')}' is listed twice")
        position[key] = i
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, Sequence):
        raise CatalogError(f"models: expected a list of models, got {type(overrides).__name__}")
    for index, raw in enumerate(overrides):
        if not isinstance(raw, Mapping):
            raise CatalogError(f"models[{index}]: expected a mapping, got {type(raw).__name__}")
        model_id = raw.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise CatalogError(f"models[{index}]: field 'id' is required and must be a string")
        at = position.get(model_id.lower())
        if at is None:
            position[model_id.lower()] = len(merged)
            merged.append(dict(raw))
            continue
        base = merged[at]
        updated = {**base, **{k: v for k, v in raw.items() if k not in ("id", "endpoints")}}
        if "endpoints" in raw:
            updated["endpoints"] = _merge_endpoints(model_id, base.get("endpoints", []),
                                                    raw["endpoints"])
        merged[at] = updated
    return merged


def _merge_endpoints(model_id: str, builtin: Sequence[Mapping], overrides: Any) -> list[Any]:
    label = f"model '{model_id}'"
    if not isinstance(overrides, list):
        raise CatalogError(f"{label}: field 'endpoints' must be a list, "
                           f"got {type(overrides).__name__}")
    merged: list[Any] = [dict(raw) for raw in builtin]
    for raw in overrides:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("provider"), str):
            merged.append(raw)  # validation names the problem
            continue
        wanted = raw["provider"].lower()
        at = next((i for i, entry in enumerate(merged) if isinstance(entry, Mapping)
                   and str(entry.get("provider", "")).lower() == wanted), None)
        if at is None:
            merged.append(dict(raw))
            continue
        base = merged[at]
        updated = {**base, **{k: v for k, v in raw.items() if k != "pricing"}}
        if "pricing" in raw:
            if isinstance(raw["pricing"], Mapping) and isinstance(base.get("pricing"), Mapping):
                updated["pricing"] = {**base["pricing"], **raw["pricing"]}
            else:
                updated["pricing"] = raw["pricing"]
        merged[at] = updated
    return merged


def _find_key(mapping: Mapping[str, Any], name: str) -> str | None:
    if name in mapping:
        return name
    wanted = name.lower()
    return next((key for key in mapping if key.lower() == wanted), None)


# -- building and validating --------------------------------------------------------------------

# The fields of every `auth:` kind (gateway.credentials says which belong to which).
AUTH_FIELDS = frozenset({"region", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_profile",
                         "credentials_file", "project", "tenant_id", "client_id", "client_secret", "api_version",
                         "authority_host", "scope"})
_PROVIDER_FIELDS = frozenset({"protocol", "base_url", "api_key", "retains_prompts", "zdr",
                              "headers", "options", "proxy", "ca_file", "tls_cert", "tls_key",
                              "discover", "discover_interval", "auth"}) | AUTH_FIELDS
_MODEL_FIELDS = frozenset({"id", "display_name", "created_at", "aliases", "context_length",
                           "max_output", "input_modalities", "supported_parameters", "tokenizer",
                           "endpoints", "lifecycle"})
_ENDPOINT_FIELDS = frozenset({"provider", "upstream_model", "pricing", "retains_prompts", "zdr",
                              "quantization", "context_length", "max_output",
                              "supported_parameters", "options", "protocol"})
_PRICE_FIELDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
_UNKNOWN_DATE = "1970-01-01T00:00:00Z"  # Anthropic's convention for an unknown release date


def _build_provider(name: str, raw: Mapping[str, Any]) -> ProviderInfo:
    label = f"provider '{name}'"
    _reject_unknown(label, raw, _PROVIDER_FIELDS)
    protocol = _string(label, raw, "protocol", required=True)
    if protocol not in PROTOCOLS:
        raise CatalogError(f"{label}: unknown protocol '{protocol}' "
                           f"(expected one of {', '.join(sorted(PROTOCOLS))})")
    headers = _mapping(label, raw, "headers")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise CatalogError(f"{label}: field 'headers' must map strings to strings")
    tls_cert, tls_key = _string(label, raw, "tls_cert"), _string(label, raw, "tls_key")
    if tls_key is not None and tls_cert is None:
        raise CatalogError(f"{label}: field 'tls_key' needs 'tls_cert' (the client certificate)")
    interval = raw.get("discover_interval", DEFAULT_DISCOVER_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 1 <= interval < float("inf"):
        raise CatalogError(f"{label}: field 'discover_interval' must be a number of seconds >= 1, "
                           f"got {interval!r}")
    return ProviderInfo(
        name=name,
        protocol=protocol,
        base_url=_string(label, raw, "base_url", required=True),
        api_key=_string(label, raw, "api_key"),
        retains_prompts=_boolean(label, raw, "retains_prompts", default=False),
        zdr=_boolean(label, raw, "zdr", default=False),
        headers=MappingProxyType(dict(headers)),
        options=_options(label, raw, protocol, Options()),
        proxy=_proxy(label, raw),
        ca_file=_string(label, raw, "ca_file"),
        tls_cert=tls_cert,
        tls_key=tls_key,
        discover=_boolean(label, raw, "discover", default=False),
        discover_interval=float(interval),
        auth=_string(label, raw, "auth"),
        auth_settings=MappingProxyType({key: _auth_field(label, raw, key) for key in AUTH_FIELDS
                                        if raw.get(key) not in (None, "")}),
    )


def _auth_field(label: str, raw: Mapping[str, Any], key: str) -> str:
    # YAML reads an unquoted `api_version: 2024-10-21` as a date: it means the string.
    value = raw[key]
    return value.isoformat() if isinstance(value, date) else _string(label, raw, key)


def _proxy(label: str, raw: Mapping[str, Any]) -> str | None:
    """An `http://[user:password@]host:port` URL, or "direct"; a message never shows the password."""
    value = _string(label, raw, "proxy")
    if value is None or value == "direct":
        return value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise CatalogError(f"{label}: field 'proxy' is not a URL") from None
    if parts.scheme != "http" or not parts.hostname:
        shown = f"{parts.scheme}://{parts.hostname or ''}{f':{port}' if port else ''}"
        raise CatalogError(f"{label}: field 'proxy' must be an http:// URL (or 'direct'), got '{shown}'")
    return value


def _build_model(raw: Mapping[str, Any], providers: Mapping[str, ProviderInfo]) -> Model:
    model_id = raw.get("id")
    if not isinstance(model_id, str) or not model_id:
        raise CatalogError(f"model {model_id!r}: field 'id' is required and must be a string")
    label = f"model '{model_id}'"
    _reject_unknown(label, raw, _MODEL_FIELDS)
    if "/" not in model_id:
        raise CatalogError(f"{label}: field 'id' must look like 'vendor/name'")
    lifecycle = _string(label, raw, "lifecycle") or "active"
    if lifecycle not in LIFECYCLES:
        raise CatalogError(f"{label}: field 'lifecycle' must be one of "
                           f"{', '.join(sorted(LIFECYCLES))}, got '{lifecycle}'")
    context_length = _positive_int(label, raw, "context_length")
    max_output = _positive_int(label, raw, "max_output")
    parameters = frozenset(_strings(label, raw, "supported_parameters")) \
        if "supported_parameters" in raw else None
    endpoints_raw = raw.get("endpoints")
    if endpoints_raw is None:
        raise CatalogError(f"{label}: field 'endpoints' is required")
    if not isinstance(endpoints_raw, list):
        raise CatalogError(f"{label}: field 'endpoints' must be a list, "
                           f"got {type(endpoints_raw).__name__}")
    endpoints: list[Endpoint] = []
    for entry in endpoints_raw:
        endpoint = _build_endpoint(label, entry, providers, context_length, max_output, parameters)
        if any(e.provider == endpoint.provider for e in endpoints):
            raise CatalogError(f"{label}: provider '{endpoint.provider}' is listed twice "
                               f"in field 'endpoints'")
        endpoints.append(endpoint)
    aliases = tuple(dict.fromkeys(_strings(label, raw, "aliases")))
    return Model(
        id=model_id,
        display_name=_string(label, raw, "display_name") or model_id,
        created_at=_timestamp(label, raw, "created_at"),
        aliases=aliases,
        context_length=context_length,
        max_output=max_output,
        input_modalities=tuple(_strings(label, raw, "input_modalities") or ["text"]),
        supported_parameters=parameters if parameters is not None
        else frozenset().union(*(e.supported_parameters for e in endpoints)),
        tokenizer=_string(label, raw, "tokenizer") or "generic",
        endpoints=tuple(endpoints),
        lifecycle=lifecycle,
    )


def _build_endpoint(model_label: str, raw: Any, providers: Mapping[str, ProviderInfo],
                    context_length: int | None, max_output: int | None,
                    parameters: frozenset[str] | None) -> Endpoint:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{model_label}: each entry of field 'endpoints' must be a mapping, "
                           f"got {type(raw).__name__}")
    provider_name = _string(f"{model_label} endpoint", raw, "provider", required=True)
    label = f"{model_label} endpoint '{provider_name}'"
    _reject_unknown(label, raw, _ENDPOINT_FIELDS)
    provider = providers.get(provider_name.lower())
    if provider is None:
        raise CatalogError(f"{label}: field 'provider' names an unknown provider "
                           f"'{provider_name}'")
    protocol = _string(label, raw, "protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise CatalogError(f"{label}: unknown protocol '{protocol}' "
                           f"(expected one of {', '.join(sorted(PROTOCOLS))})")
    wire = protocol or provider.protocol
    if "supported_parameters" in raw:
        parameters = frozenset(_strings(label, raw, "supported_parameters"))
    elif parameters is None:
        parameters = PROTOCOL_PARAMETERS.get(wire, frozenset())
    # The provider's options are for its own protocol: an endpoint speaking another starts afresh.
    options = _options(label, raw, wire, provider.options if wire == provider.protocol else Options())
    return Endpoint(
        provider=provider.name,
        upstream_model=_string(label, raw, "upstream_model", required=True),
        pricing=_build_pricing(label, raw.get("pricing")),
        retains_prompts=_boolean(label, raw, "retains_prompts", default=provider.retains_prompts),
        zdr=_boolean(label, raw, "zdr", default=provider.zdr),
        quantization=_string(label, raw, "quantization"),
        context_length=_positive_int(label, raw, "context_length") or context_length,
        max_output=_positive_int(label, raw, "max_output") or max_output,
        supported_parameters=parameters,
        options=options,
        protocol=protocol if protocol != provider.protocol else None,
    )


def _build_pricing(label: str, raw: Any) -> Pricing:
    if raw is None:
        return UNPRICED
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{label}: field 'pricing' must be a mapping, got {type(raw).__name__}")
    _reject_unknown(f"{label} pricing", raw, frozenset(_PRICE_FIELDS) | {"verified", "web_search"})
    prices: dict[str, float | None] = {}
    for name in (*_PRICE_FIELDS, "web_search"):
        if name in ("input", "output") and name not in raw:
            raise CatalogError(f"{label}: field 'pricing.{name}' is required "
                               f"(null when unknown)")
        value = raw.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CatalogError(f"{label}: field 'pricing.{name}' must be a number, "
                                   f"got {type(value).__name__}")
            if value < 0:
                raise CatalogError(f"{label}: field 'pricing.{name}' must not be negative, "
                                   f"got {value}")
            value = float(value)
        prices[name] = value
    prices["web_search"] = prices["web_search"] or 0.0
    return Pricing(**prices, verified=_boolean(f"{label} pricing", raw, "verified", default=True))


# -- field helpers ------------------------------------------------------------------------------

def _reject_unknown(label: str, raw: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        raise CatalogError(f"{label}: unknown field '{unknown[0]}' "
                           f"(allowed: {', '.join(sorted(allowed))})")


def _string(label: str, raw: Mapping[str, Any], key: str, required: bool = False) -> Any:
    value = raw.get(key)
    if value is None:
        if required:
            raise CatalogError(f"{label}: field '{key}' is required")
        return None
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{label}: field '{key}' must be a non-empty string, "
                           f"got {type(value).__name__}")
    return value


def _boolean(label: str, raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise CatalogError(f"{label}: field '{key}' must be true or false, "
                           f"got {type(value).__name__}")
    return value


def _positive_int(label: str, raw: Mapping[str, Any], key: str, required: bool = False) -> Any:
    value = raw.get(key)
    if value is None:
        if required:
            raise CatalogError(f"{label}: field '{key}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CatalogError(f"{label}: field '{key}' must be a positive integer, got {value!r}")
    return value


def _strings(label: str, raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{label}: field '{key}' must be a list of non-empty strings")
    return value


def _mapping(label: str, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CatalogError(f"{label}: field '{key}' must be a mapping, got {type(value).__name__}")
    return value


def _timestamp(label: str, raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        return _UNKNOWN_DATE
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp as a datetime
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise CatalogError(f"{label}: field '{key}' must be an RFC 3339 timestamp, "
                               f"got '{value}'") from None
    else:
        raise CatalogError(f"{label}: field '{key}' must be an RFC 3339 timestamp, "
                           f"got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name_index(models: Iterable[Model]) -> dict[str, tuple[Model, bool]]:
    """Router ids and aliases, lower-cased; refuses a name that two models would share."""
    index: dict[str, tuple[Model, bool]] = {}
    for model in models:
        key = model.id.lower()
        if key in index:
            raise CatalogError(f"model '{model.id}': field 'id' collides with model "
                               f"'{index[key][0].id}' (ids compare case-insensitively)")
        index[key] = (model, False)
    for model in models:
        for alias in model.aliases:
            key = alias.lower()
            owner = index.get(key)
            if owner is not None and owner[0] is not model:
                what = "id" if owner[0].id.lower() == key else "alias"
                raise CatalogError(f"model '{model.id}': alias '{alias}' in field 'aliases' "
                                   f"collides with the {what} of model '{owner[0].id}'")
            if owner is None:
                index[key] = (model, "/" not in alias and DATED_ID.match(alias) is not None)
    return index
