"""The Plan: the ordered attempts (model, endpoint) one request may make, fixed before any I/O.

`build_plan` ranks each resolved model's endpoints with `policies.preference.rank_endpoints`
(the primary model first, then each entry of `models`; a `:floor` / `:nitro` suffix is that
model's sort) and lays the attempts out model after model. A model whose endpoints the preferences
all filter out, or that no configured provider serves, is skipped and recorded in `Plan.skipped`:
the fallbacks still serve. Only when every model is emptied does planning fail, with the primary
model's `NoEndpoint`.

With `sort: {"by": ..., "partition": "none"}` the attempts of all models are ordered together by
that sort (OpenRouter: the fastest or cheapest endpoint of any listed model goes first) instead of
model by model; availability and `order` still come first, and ties keep model order.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from policies.catalog import Catalog, Endpoint, Model, ProviderInfo
from policies.health import HEALTHY, RoutingView, cooldown_state
from policies.preference import (
    DEFAULT_PREFERENCES,
    NoEndpoint,
    Preferences,
    endpoint_key,
    rank_endpoints,
    rank_key,
)
from policies.resolve import Resolved


@dataclass(frozen=True, slots=True)
class Attempt:
    model: Model
    endpoint: Endpoint
    provider: ProviderInfo
    upstream_model: str
    # The endpoint's cooldown state when the plan was made: "healthy", "probe" (the executor
    # should mark the trial with health.begin_probe) or "cooling" (a last resort).
    health: str = HEALTHY

    @property
    def protocol(self) -> str:
        """The wire protocol this attempt speaks: its endpoint's own, else its provider's."""
        return self.endpoint.protocol or self.provider.protocol

    @property
    def endpoint_key(self) -> str:
        """How routing state names this endpoint: provider and upstream model."""
        return f"{self.provider.name}/{self.endpoint.upstream_model}"


@dataclass(frozen=True, slots=True)
class Plan:
    attempts: tuple[Attempt, ...]
    models: tuple[Model, ...]
    # Models left without endpoints by the preferences or the configuration, in `models` order.
    skipped: tuple[NoEndpoint, ...] = ()

    @property
    def primary(self) -> Model:
        return self.models[0]


def build_plan(catalog: Catalog, resolved: Sequence[Resolved],
               prefs: Preferences = DEFAULT_PREFERENCES, *,
               used_parameters: frozenset[str] = frozenset(),
               view: RoutingView = RoutingView.EMPTY, now: float, rand: float) -> Plan:
    """The attempts for the primary model and its fallbacks under `prefs`; raises the primary's
    NoEndpoint when no model has an endpoint left. `rand` in [0, 1) drives load balancing (the
    same draw serves every model: each model's choice is independent of the others anyway)."""
    if not resolved:
        raise ValueError("build_plan needs at least one resolved model")
    attempts: list[Attempt] = []
    skipped: list[NoEndpoint] = []
    for item in resolved:
        try:
            ranked = rank_endpoints(_configured(catalog, item.model), prefs,
                                    used_parameters=used_parameters, view=view, now=now,
                                    rand=rand, sort_override=item.sort)
        except NoEndpoint as exc:
            skipped.append(exc)
            continue
        for endpoint in ranked:
            provider = catalog.provider(endpoint.provider)
            assert provider is not None  # _configured kept only endpoints of known providers
            state = cooldown_state(view.health(endpoint_key(endpoint)), now)
            attempts.append(Attempt(item.model, endpoint, provider,
                                    item.upstream_model_for(endpoint), state))
    if not attempts:
        raise skipped[0]
    if prefs.sort is not None and prefs.sort_partition == "none":
        attempts.sort(key=lambda a: rank_key(a.endpoint, prefs, view=view, now=now,
                                             sort=prefs.sort))
    return Plan(tuple(attempts), tuple(r.model for r in resolved), tuple(skipped))


def _configured(catalog: Catalog, model: Model) -> Model:
    """The model with only the endpoints whose provider this catalog knows."""
    known = tuple(e for e in model.endpoints if catalog.provider(e.provider) is not None)
    if len(known) == len(model.endpoints):
        return model
    return dataclasses.replace(model, endpoints=known)
