"""What this gateway serves: the catalog narrowed to providers it can reach, or the offline demo.

A provider is usable when it has an API key, is named in the config file's `providers:` (a local
server may need no key), or speaks the `mock` protocol. With `--demo`, or when no real provider is
usable, the `mock` provider serves every catalog model at that model's catalog prices.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from policies.catalog import Catalog, Model


def usable_providers(catalog: Catalog, configured: Mapping[str, object]) -> set[str]:
    return {name for name, p in catalog.providers.items()
            if p.protocol != "mock" and (p.api_key or name in configured)}


def serving_catalog(catalog: Catalog, configured: Mapping[str, object], demo: bool) -> tuple[Catalog, bool]:
    """The catalog with only usable endpoints, and whether the demo (mock) mode is on."""
    usable = usable_providers(catalog, configured)
    demo = demo or not usable
    models: dict[str, Model] = {}
    for model_id, model in catalog.models.items():
        if demo:
            template = model.endpoints[0] if model.endpoints else None
            if template is None:
                continue
            endpoints = (dataclasses.replace(template, provider="mock", upstream_model=model.id,
                                             retains_prompts=False, zdr=True),)
        else:
            # An endpoint that only speaks OpenAI's Responses API has no protocol module yet.
            endpoints = tuple(e for e in model.endpoints
                              if e.provider in usable and e.options.api != "responses")
        models[model_id] = dataclasses.replace(model, endpoints=endpoints)
    return dataclasses.replace(catalog, models=models), demo


def served_models(catalog: Catalog) -> list[Model]:
    return [m for m in catalog.models.values() if m.endpoints]
