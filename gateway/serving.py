"""What this gateway serves: the catalog narrowed to providers it can reach, or the offline demo.

A provider is usable when it has an API key, is named in the config file's `providers:` (a local
server may need no key); an empty `api_key` counts as none, and when every configured provider has
an empty one startup stops instead of serving the mock. With `--demo`, or when no real provider is
usable, two mock providers serve every catalog model, so routing choices show in the answers:
`mock` at the model's catalog prices, slower, and `mock-fast` at twice those prices, quicker to its
first token and faster per token. The config file's `providers:` entries of either name override
these timings (`ttft_ms`, `tokens_per_second`, `fail_status` under `options`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from policies.catalog import Catalog, Endpoint, Model, Options, Pricing, ProviderInfo

# name → (price factor over the catalog's, provider options)
DEMO_PROVIDERS: dict[str, tuple[float, dict[str, float]]] = {
    "mock": (1.0, {"ttft_ms": 150, "tokens_per_second": 150}),
    "mock-fast": (2.0, {"ttft_ms": 15, "tokens_per_second": 600}),
}


DEFAULT_OPTIONS = Options()


class NothingToServe(ValueError):
    """Providers are configured, but every one has an empty `api_key` (its variable is unset)."""


def _empty_key(entry: object) -> bool:
    return isinstance(entry, Mapping) and entry.get("api_key") == ""


def without_empty_keys(configured: Mapping[str, object]) -> dict[str, object]:
    """The config's providers for the catalog, an empty `api_key` left out (the catalog wants a
    non-empty one or none); `serving_catalog` still sees it and does not use that provider."""
    return {name: ({k: v for k, v in entry.items() if k != "api_key"} if _empty_key(entry) else entry)
            for name, entry in configured.items()}


def usable_providers(catalog: Catalog, configured: Mapping[str, object]) -> set[str]:
    """Providers with a key, or named in the config (a local server may need none); an explicitly
    empty `api_key` (`${ANTHROPIC_API_KEY:-}` with the variable unset) is no key."""
    return {name for name, p in catalog.providers.items()
            if p.protocol != "mock" and (p.api_key or (name in configured and not _empty_key(configured[name])))}


def _scaled(pricing: Pricing, factor: float) -> Pricing:
    def times(value: float | None) -> float | None:
        return None if value is None else round(value * factor, 6)
    return dataclasses.replace(pricing, input=times(pricing.input), output=times(pricing.output),
                               cache_write=times(pricing.cache_write), cache_write_1h=times(pricing.cache_write_1h),
                               cache_read=times(pricing.cache_read))


def demo_providers(catalog: Catalog) -> dict[str, ProviderInfo]:
    """The demo's mock providers, with the configured options laid over the demo's timings."""
    base = catalog.providers["mock"]
    providers = {}
    for name, (_factor, options) in DEMO_PROVIDERS.items():
        configured = catalog.providers.get(name, dataclasses.replace(base, name=name, options=Options()))
        # A timing the config file set (one that differs from the default) wins over the demo's.
        laid = {key: value for key, value in options.items()
                if getattr(configured.options, key) == getattr(DEFAULT_OPTIONS, key)}
        providers[name] = dataclasses.replace(configured, options=dataclasses.replace(configured.options, **laid))
    return providers


def _demo_endpoints(template: Endpoint, model: Model) -> tuple[Endpoint, ...]:
    return tuple(dataclasses.replace(template, provider=name, upstream_model=model.id, retains_prompts=False,
                                     zdr=True, pricing=_scaled(template.pricing, factor), options=DEFAULT_OPTIONS,
                                     protocol=None)
                 for name, (factor, _options) in DEMO_PROVIDERS.items())


def serving_catalog(catalog: Catalog, configured: Mapping[str, object], demo: bool) -> tuple[Catalog, bool]:
    """The catalog with only usable endpoints, and whether the demo (mock) mode is on."""
    usable = usable_providers(catalog, configured)
    empty = sorted(name for name, entry in configured.items() if _empty_key(entry))
    if not usable and empty and not demo:
        # Configured providers all lack their key: a forgotten variable, not a wish for the mock.
        raise NothingToServe(f"no provider has a key: providers.{empty[0]}.api_key is empty "
                             f"(set its variable, or GATEWAY_DEMO=1 for the offline demo)")
    demo = demo or not usable
    models: dict[str, Model] = {}
    for model_id, model in catalog.models.items():
        if demo:
            template = model.endpoints[0] if model.endpoints else None
            if template is None:
                continue
            endpoints = _demo_endpoints(template, model)
        else:
            endpoints = tuple(e for e in model.endpoints if e.provider in usable)
        models[model_id] = dataclasses.replace(model, endpoints=endpoints)
    providers = {**catalog.providers, **demo_providers(catalog)} if demo else catalog.providers
    return dataclasses.replace(catalog, models=models, providers=providers), demo


def served_models(catalog: Catalog) -> list[Model]:
    return [m for m in catalog.models.values() if m.endpoints]
