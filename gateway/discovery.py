"""Model discovery: a provider with `discover: true` lists its models from the upstream's
`GET /v1/models` (vLLM, Ollama, LM Studio, llama.cpp server, TGI, LiteLLM), at startup and every
`discover_interval` seconds, through the same upstream client as requests (so its proxy and TLS
settings apply).

Each listed model becomes the router id `{provider}/{id}`, an unpriced model entry with the
upstream's context length where the answer carries one (vLLM's `max_model_len`, `context_length`,
`context_window`, llama.cpp's `meta.n_ctx_train`). A model the config file lists under the same id
wins over the discovered one. A failed listing keeps the last list and logs one line.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.upstream import Client, Target, UpstreamError
from policies.catalog import ProviderInfo

log = logging.getLogger("gateway.discovery")
_CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window", "max_context_length")
MAX_MODELS = 1000  # a listing longer than this is cut: the catalog is for models people route to


class DiscoveryFailed(Exception):
    """The listing could not be fetched or read; the message says why, without the key."""


def models_url(provider: ProviderInfo) -> str:
    base = provider.base_url.rstrip("/")
    # An OpenAI-compatible base URL ends in /v1 already; an Anthropic one does not.
    return base + ("/v1/models" if provider.protocol == "anthropic" else "/models")


def listed_models(provider: ProviderInfo, answer: bytes) -> list[dict[str, Any]]:
    """Catalog model entries for an OpenAI-style model list (`{"data": [{"id": ...}, ...]}`)."""
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise DiscoveryFailed("the model list is not JSON") from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DiscoveryFailed("the model list has no 'data' array")
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in items[:MAX_MODELS]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
            continue
        upstream_id = item["id"].strip()
        if upstream_id.lower() in seen:
            continue
        seen.add(upstream_id.lower())
        entry: dict[str, Any] = {"id": f"{provider.name}/{upstream_id}", "display_name": upstream_id,
                                 "endpoints": [{"provider": provider.name, "upstream_model": upstream_id}]}
        context = _context_length(item)
        if context is not None:
            entry["context_length"] = context
        created = item.get("created")
        if isinstance(created, int) and not isinstance(created, bool) and 0 < created < 2**33:
            entry["created_at"] = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        entries.append(entry)
    return entries


def _context_length(item: Mapping[str, Any]) -> int | None:
    meta = item.get("meta")
    candidates = [item.get(name) for name in _CONTEXT_FIELDS]
    if isinstance(meta, dict):
        candidates.append(meta.get("n_ctx_train"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _headers(provider: ProviderInfo) -> dict[str, str]:
    headers = {"accept": "application/json", **provider.headers}
    if provider.api_key:
        if provider.protocol == "anthropic" and provider.options.auth != "bearer":
            headers["x-api-key"] = provider.api_key
            headers["anthropic-version"] = "2023-06-01"
        else:
            headers["authorization"] = f"Bearer {provider.api_key}"
    return headers


async def fetch_models(client: Client, provider: ProviderInfo, timeout: float) -> list[dict[str, Any]]:
    try:
        async with asyncio.timeout(timeout):
            response = await client.request("GET", Target(models_url(provider)), _headers(provider),
                                            first_byte_timeout=timeout, idle_timeout=timeout)
            try:
                answer = await response.read()
            except BaseException:
                response.close()
                raise
            response.release()
    except TimeoutError:
        raise DiscoveryFailed(f"no answer within {timeout:g} s") from None
    except UpstreamError as exc:
        raise DiscoveryFailed(str(exc) or type(exc).__name__) from None
    if response.status != 200:
        raise DiscoveryFailed(f"GET /models answered {response.status}")
    return listed_models(provider, answer)


class Discovery:
    """The last list of every discovering provider, and the task that keeps them fresh.

    `changed` is called (with no await between reading and swapping) whenever a list differs from
    the last one, so the gateway rebuilds its catalog with `entries()`."""

    def __init__(self, client: Client, changed: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
        self.client = client
        self.changed = changed
        self.timeout = timeout
        self.lists: dict[str, list[dict[str, Any]]] = {}
        self._failing: dict[str, str] = {}

    def entries(self) -> list[dict[str, Any]]:
        return [entry for name in sorted(self.lists) for entry in self.lists[name]]

    async def refresh(self, providers: Mapping[str, ProviderInfo]) -> bool:
        """List every discovering provider once; True when some list changed."""
        wanted = {name: p for name, p in providers.items() if p.discover and p.protocol != "mock"}
        changed = False
        for name in [n for n in self.lists if n not in wanted]:
            del self.lists[name]  # no longer discovering (a reload turned it off)
            changed = True
        results = await asyncio.gather(*(fetch_models(self.client, p, self.timeout) for p in wanted.values()),
                                       return_exceptions=True)
        for (name, provider), result in zip(wanted.items(), results):
            if isinstance(result, DiscoveryFailed):
                log.warning("discovery: provider %s: %s; keeping its last list (%d models)", name, result,
                            len(self.lists.get(name, ())))
                self._failing[name] = str(result)
                continue
            if isinstance(result, BaseException):
                raise result
            if self._failing.pop(name, None) is not None:
                log.info("discovery: provider %s answers again", name)
            if self.lists.get(name) != result:
                before = {e["id"] for e in self.lists.get(name, ())}
                added = [e["id"] for e in result if e["id"] not in before]
                log.info("discovery: provider %s lists %d models%s", name, len(result),
                         f" (new: {', '.join(added)})" if added else "")
                self.lists[name] = result
                changed = True
        return changed

    async def run_forever(self, providers: Callable[[], Mapping[str, ProviderInfo]]) -> None:
        while True:
            current = providers()
            intervals = [p.discover_interval for p in current.values() if p.discover]
            await asyncio.sleep(min(intervals) if intervals else 60.0)
            try:
                if await self.refresh(providers()):
                    await self.changed()
            except Exception:  # never let one bad round end discovery
                log.exception("discovery: unexpected error")
