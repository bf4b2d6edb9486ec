"""What the config file decides about serving, built whole before it is used: at startup, on a
reload (`SIGHUP`, `POST /admin/reload`) and when discovery finds a change.

`build_serving` validates everything (catalog, providers' proxy and TLS files, model maps) and
returns one immutable `Serving`; the gateway swaps it in with plain assignments and no await in
between, so a request sees either the old one or the new one, never a mix, and a request already
planned finishes on the objects its plan holds. A config that fails to build raises, and the old
`Serving` stays.

Reloadable: `providers`, `models`, `keys`, `teams`, `model_map` / `aliases`, `budgets`. Everything
else (ports, store, timeouts, limits of the server) is read at startup only; a reload that changes
it says so in its answer and the log.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import key_id_for, secret_hash
from gateway.credentials import Credentials
from gateway.credentials.config import for_providers
from gateway.egress import EgressPlan, egress_plan
from gateway.exchange import Principal
from gateway.serving import serving_catalog, without_empty_keys
from gateway.settings import ConfigError, Settings, load_settings
from policies.catalog import Catalog, CatalogError, load_catalog

log = logging.getLogger("gateway.reload")

RELOADABLE = frozenset({"providers", "models", "keys", "teams", "model_map", "aliases", "budgets"})


@dataclass(frozen=True)
class Serving:
    settings: Settings
    catalog: Catalog                       # the serving catalog: only usable endpoints
    demo: bool
    static_keys: Mapping[str, Principal]   # secret hash -> principal; the demo key not included
    model_map: Mapping[str, str]           # lower-cased name -> router id
    team_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # team -> its whole map
    egress: EgressPlan = field(default_factory=EgressPlan)
    unpriced_deny: bool = False
    # provider name → what the executor authenticates its requests with (`auth:`), not started yet
    # when built: the gateway starts them before it serves this config
    credentials: Mapping[str, Credentials] = field(default_factory=dict)

    def map_for(self, team: str) -> Mapping[str, str]:
        return self.team_maps.get(team, self.model_map)

    def unpriced_models(self) -> list[str]:
        return [m.id for m in self.catalog.models.values() if any(e.pricing.unpriced for e in m.endpoints)]


def build_serving(settings: Settings, discovered: Sequence[Mapping[str, Any]] = (),
                  catalog: Catalog | None = None, environ: Mapping[str, str] | None = None,
                  credentials: Mapping[str, Credentials] | None = None) -> Serving:
    """Everything checked; raises CatalogError (catalog, egress, model maps), ConfigError (a
    provider's `auth:` fields) or NothingToServe. `credentials` are the serving ones, kept for
    the providers whose settings did not change."""
    environ = os.environ if environ is None else environ
    # Discovered models first: a model the config file lists by the same id wins over them.
    base = catalog or load_catalog([*discovered, *settings.models], without_empty_keys(settings.providers))
    served, demo = serving_catalog(base, settings.providers, settings.demo)
    used = {e.provider for m in served.models.values() for e in m.endpoints}
    provider_credentials, providers = for_providers({n: p for n, p in served.providers.items() if n in used},
                                                    credentials)
    served = dataclasses.replace(served, providers={**served.providers, **providers})
    egress = egress_plan(served.providers.values(), environ)
    discovering = {name.lower() for name, p in served.providers.items() if p.discover}
    model_map = _model_map("model_map", {**settings.aliases, **settings.model_map}, served, discovering)
    clash = next((k for k in settings.aliases if settings.model_map.get(k, settings.aliases[k]) != settings.aliases[k]),
                 None)
    if clash is not None:
        raise CatalogError(f"model_map and aliases (its synonym) map '{clash}' to two different models")
    team_models = {t.name: tuple(t.allowed_models) for t in settings.teams if t.allowed_models is not None}
    budgeted = {t.name for t in settings.teams
                if t.budget_daily_usd is not None or t.budget_monthly_usd is not None}
    team_maps = {t.name: {**model_map, **_model_map(f"teams[{t.name}].model_map", t.model_map, served, discovering)}
                 for t in settings.teams if t.model_map}
    static_keys: dict[str, Principal] = {}
    for entry in settings.keys:
        digest = secret_hash(entry.key.get_secret_value())
        static_keys[digest] = Principal(key_id=key_id_for(digest), team=entry.team, from_config=True,
                                        allowed_models=team_models.get(entry.team),
                                        budgeted=entry.team in budgeted)
    return Serving(settings=settings, catalog=served, demo=demo, static_keys=static_keys, model_map=model_map,
                   team_maps=team_maps, egress=egress, unpriced_deny=settings.budgets.unpriced == "deny",
                   credentials=provider_credentials)


def _model_map(label: str, raw: Mapping[str, str], catalog: Catalog, discovering: set[str]) -> dict[str, str]:
    """Lower-cased names -> router ids, each target a served model (or one a discovering provider
    may still list: `{provider}/...`)."""
    mapped: dict[str, str] = {}
    for name, target in raw.items():
        if not isinstance(target, str) or not target or not name:
            raise CatalogError(f"{label}: '{name}' must map to a router id")
        model = catalog.get(target)
        if model is None and target.split("/", 1)[0].lower() not in discovering:
            raise CatalogError(f"{label}: '{name}' maps to '{target}', which is not a model this gateway serves")
        if model is not None and not model.endpoints:
            raise CatalogError(f"{label}: '{name}' maps to '{target}', which no configured provider serves")
        mapped[name.lower()] = model.id if model is not None else target
    return mapped


def reread_settings(current: Settings) -> tuple[Settings, list[str]]:
    """The config file read again: the current settings with every reloadable field replaced, and
    the names of changed fields that only a restart applies. Raises ConfigError."""
    fresh = load_settings()
    ignored = sorted(name for name in type(current).model_fields
                     if name not in RELOADABLE and getattr(fresh, name) != getattr(current, name))
    updated = current.model_copy(update={name: getattr(fresh, name) for name in RELOADABLE})
    return updated, ignored


def describe_change(old: Serving, new: Serving) -> dict[str, Any]:
    old_models, new_models = set(_served(old.catalog)), set(_served(new.catalog))
    return {"models": len(new_models), "added": sorted(new_models - old_models),
            "removed": sorted(old_models - new_models),
            "keys": len(new.static_keys)}


def _served(catalog: Catalog) -> list[str]:
    return [m.id for m in catalog.models.values() if m.endpoints]


def refused(exc: Exception) -> str:
    """The reason a new config was refused, as the log and the admin answer give it."""
    if isinstance(exc, CatalogError):
        return f"invalid catalog: {exc}"
    return str(exc)


RELOAD_ERRORS = (ConfigError, CatalogError, ValueError)

