"""The Plan: the ordered attempts (model, endpoint) one request may make, fixed before any I/O."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.catalog import Catalog, Endpoint, Model, ProviderInfo
from policies.resolve import Resolved


@dataclass(frozen=True, slots=True)
class Attempt:
    model: Model
    endpoint: Endpoint
    provider: ProviderInfo
    upstream_model: str

    @property
    def endpoint_key(self) -> str:
        """How routing state names this endpoint: provider and upstream model."""
        return f"{self.provider.name}/{self.endpoint.upstream_model}"


@dataclass(frozen=True, slots=True)
class Plan:
    attempts: tuple[Attempt, ...]
    models: tuple[Model, ...]

    @property
    def primary(self) -> Model:
        return self.models[0]


def simple_plan(catalog: Catalog, resolved: Sequence[Resolved]) -> Plan:
    """Every endpoint of every model, in catalog order: the plan when no preference applies."""
    attempts = []
    for item in resolved:
        for endpoint in item.model.endpoints:
            provider = catalog.providers[endpoint.provider]
            attempts.append(Attempt(item.model, endpoint, provider, item.upstream_model_for(endpoint)))
    return Plan(tuple(attempts), tuple(r.model for r in resolved))
