"""Model-id resolution: what a client wrote in `model` (or `models`) -> catalog models.

Accepted forms, compared case-insensitively:
- a router id (`anthropic/claude-sonnet-4.5`),
- an alias, including vendor-native ids (`claude-sonnet-4-5`, `gpt-5.5`) and
  `~vendor/family-latest` aliases,
- a dated vendor id (`claude-sonnet-4-5-20250929`, `gpt-5.4-2026-03-05`): resolves to the model
  whose native alias it extends, and is kept as `native_id` so that the model's own vendor gets
  exactly the snapshot the client asked for,
- any of these with `:floor` (sort endpoints by price) or `:nitro` (sort by throughput).

A `model_map` (the config's `model_map:` or `aliases:`, or a team's) is consulted first: a name it
lists, or a dated form of one (`claude-haiku-4-5-20251001` for `claude-haiku-4-5`), resolves to the
router id it names, whatever the catalog says of the name; the client's suffix is kept.

The hot path is one `str.lower` and one dict lookup (two with a model map); the date regex and the
fuzzy suggestions run only when that lookup misses.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.catalog import DATED_ID, Catalog, Endpoint, Model

SORT_SUFFIXES = {":floor": "price", ":nitro": "throughput"}
MAX_SUGGESTIONS = 3


@dataclass(frozen=True)
class Resolved:
    model: Model
    sort: str | None           # "price" for ":floor", "throughput" for ":nitro", else None
    native_id: str | None      # a dated vendor id as the client sent it

    def upstream_model_for(self, endpoint: Endpoint) -> str:
        """The model name to send to `endpoint`: the client's dated id for the model's own
        vendor, otherwise the endpoint's catalog id."""
        if self.native_id is not None and endpoint.provider.lower() == self.model.vendor.lower():
            return self.native_id
        return endpoint.upstream_model


class UnknownModel(LookupError):
    """No catalog model answers to the requested name; str() is a user-facing message."""

    def __init__(self, requested: str, suggestions: tuple[str, ...] = ()) -> None:
        self.requested = requested
        self.suggestions = suggestions
        super().__init__(requested, suggestions)

    def __str__(self) -> str:
        message = f"model '{self.requested}' not found"
        if self.suggestions:
            listed = ", ".join(f"'{s}'" for s in self.suggestions)
            message += f"; did you mean {listed}?"
        return message


def mapped_name(model_map: Mapping[str, str], lowered: str) -> str | None:
    """The router id `model_map` (lower-cased keys) sends this lower-cased name to, if any."""
    target = model_map.get(lowered)
    if target is None and lowered[-1:].isdigit():
        match = DATED_ID.match(lowered)
        if match is not None:
            target = model_map.get(match["base"])
    return target


def resolve(catalog: Catalog, requested: str, model_map: Mapping[str, str] | None = None) -> Resolved:
    """The catalog model for one requested name; raises UnknownModel."""
    if not isinstance(requested, str) or not requested:
        raise UnknownModel(str(requested))
    key = requested.lower()
    name, sort = _split_suffix(requested, key)
    lowered = name.lower()
    if model_map:
        target = mapped_name(model_map, lowered)
        if target is not None:
            hit = catalog.lookup_name(target.lower())
            if hit is None:
                raise UnknownModel(f"{requested}' (mapped to '{target}", _suggest(catalog, target.lower()))
            return Resolved(hit[0], sort, None)
    hit = catalog.lookup_name(lowered)
    if hit is not None:
        model, dated = hit
        return Resolved(model, sort, name if dated else None)
    match = DATED_ID.match(name)
    if match is not None:
        base = catalog.lookup_name(match["base"].lower())
        if base is not None:
            model = base[0]
            native = "/" not in name  # a router id with a date is not something to forward
            return Resolved(model, sort, name if native else None)
    raise UnknownModel(requested, _suggest(catalog, lowered))


def resolve_all(catalog: Catalog, primary: str, fallbacks: Sequence[str],
                model_map: Mapping[str, str] | None = None) -> tuple[Resolved, ...]:
    """The primary model, then each entry of `models`, each resolved like `resolve`; a model
    already in the list is skipped (trying the same endpoints twice cannot help)."""
    resolved: list[Resolved] = []
    seen: set[str] = set()
    for requested in (primary, *fallbacks):
        one = resolve(catalog, requested, model_map)
        if one.model.id not in seen:
            seen.add(one.model.id)
            resolved.append(one)
    return tuple(resolved)


def _split_suffix(requested: str, key: str) -> tuple[str, str | None]:
    for suffix, sort in SORT_SUFFIXES.items():
        if key.endswith(suffix):
            return requested[: -len(suffix)], sort
    return requested, None


def _suggest(catalog: Catalog, lowered: str) -> tuple[str, ...]:
    names: dict[str, str] = {}
    for name, (model, _) in catalog.name_index().items():
        names[name] = model.id
        tail = name.rsplit("/", 1)[-1]  # "claude-opus-4.8" also matches without its vendor
        names.setdefault(tail, model.id)
    close = difflib.get_close_matches(lowered, names, n=len(names), cutoff=0.5)
    suggestions = list(dict.fromkeys(names[name] for name in close))
    return tuple(suggestions[:MAX_SUGGESTIONS])
