"""Model discovery: a provider with `discover: true` lists its models from the upstream, at startup
and every `discover_interval` seconds, through the same upstream client as requests (so its proxy
and TLS settings apply): `GET /models` of an OpenAI-compatible server (vLLM, Ollama, LM Studio,
llama.cpp server, TGI, LiteLLM), Anthropic's `GET /v1/models` and Gemini's `models.list`, the
last two page by page (`after_id`, `pageToken`).

Each listed model becomes the router id `{provider}/{id}`, an unpriced model entry with the
upstream's context length where the answer carries one (vLLM's `max_model_len`, `context_length`,
`context_window`, llama.cpp's `meta.n_ctx_train`, Gemini's `inputTokenLimit`, and its
`outputTokenLimit` as the output limit). Gemini models that cannot generate content (embedding
models) are left out. A model the config file lists under the same id wins over the discovered
one. A failed listing keeps the last list and logs one line.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from gateway.upstream import Client, Target, UpstreamError
from policies.catalog import ProviderInfo

log = logging.getLogger("gateway.discovery")
_CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window", "max_context_length")
MAX_MODELS = 1000  # a listing longer than this is cut: the catalog is for models people route to
MAX_PAGES = 20


class DiscoveryFailed(Exception):
    """The listing could not be fetched or read; the message says why, without the key."""


def models_url(provider: ProviderInfo, page: str | None = None) -> str:
    """The listing's URL; `page`: where the previous page said the next one starts."""
    base = provider.base_url.rstrip("/")
    if provider.protocol == "anthropic":  # an Anthropic base URL has no version in it
        return base + "/v1/models?limit=1000" + (f"&after_id={quote(page, safe='')}" if page else "")
    if provider.protocol == "gemini":  # a Gemini base URL ends in its version (…/v1beta)
        return base + "/models?pageSize=1000" + (f"&pageToken={quote(page, safe='')}" if page else "")
    return base + "/models"  # an OpenAI-compatible base URL ends in /v1 already


def listed_models(provider: ProviderInfo, answer: bytes) -> list[dict[str, Any]]:
    """Catalog model entries for one page of the provider's model list."""
    return _provider_entries(provider, _read_page(provider, answer)[0])


def _read_page(provider: ProviderInfo, answer: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """(entries, where the next page starts or None)."""
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise DiscoveryFailed("the model list is not JSON") from None
    if not isinstance(data, dict):
        raise DiscoveryFailed("the model list is not an object")
    if provider.protocol == "gemini":
        items = data.get("models", [])
        if not isinstance(items, list):
            raise DiscoveryFailed("the model list has no 'models' array")
        token = data.get("nextPageToken")
        entries = [e for e in map(_gemini_entry, items) if e is not None]
        return entries, token if isinstance(token, str) and token else None
    items = data.get("data")
    if not isinstance(items, list):
        raise DiscoveryFailed("the model list has no 'data' array")
    entries = [e for e in map(_listed_entry, items) if e is not None]
    last = data.get("last_id")
    more = provider.protocol == "anthropic" and data.get("has_more") is True and isinstance(last, str) and last
    return entries, last if more else None


def _entry(upstream_id: str, display_name: Any = None, **fields: Any) -> dict[str, Any]:
    """A catalog entry under the upstream's id (`_provider_entries` adds the provider), with the
    `fields` the listing gave."""
    if not (isinstance(display_name, str) and display_name.strip()):
        display_name = upstream_id
    entry: dict[str, Any] = {"id": upstream_id, "display_name": display_name,
                             "endpoints": [{"upstream_model": upstream_id}]}
    entry.update({name: value for name, value in fields.items() if value is not None})
    return entry


def _listed_entry(item: Any) -> dict[str, Any] | None:
    """An OpenAI-style or Anthropic list item: `id`, and `created` (epoch) or `created_at` (RFC 3339)."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
        return None
    created = item.get("created")
    created_at = None
    if isinstance(created, int) and not isinstance(created, bool) and 0 < created < 2**33:
        created_at = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif isinstance(item.get("created_at"), str):
        created_at = _rfc3339(item["created_at"])
    return _entry(item["id"].strip(), item.get("display_name"), context_length=_context_length(item),
                  created_at=created_at)


def _gemini_entry(item: Any) -> dict[str, Any] | None:
    """A Gemini Model: `name` is `models/{id}`; only models that generate content are routable."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    upstream_id = item["name"].removeprefix("models/").strip()
    methods = item.get("supportedGenerationMethods")
    if not upstream_id or isinstance(methods, list) and "generateContent" not in methods:
        return None
    return _entry(upstream_id, item.get("displayName"), context_length=_positive(item.get("inputTokenLimit")),
                  max_output=_positive(item.get("outputTokenLimit")))


def _rfc3339(text: str) -> str | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _provider_entries(provider: ProviderInfo, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries under the provider's name, each upstream id once, at most MAX_MODELS."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        upstream_id = entry["id"]
        if upstream_id.lower() in seen:
            continue
        seen.add(upstream_id.lower())
        entry["id"] = f"{provider.name}/{upstream_id}"
        entry["endpoints"][0]["provider"] = provider.name
        out.append(entry)
        if len(out) == MAX_MODELS:
            break
    return out


def _context_length(item: Mapping[str, Any]) -> int | None:
    meta = item.get("meta")
    candidates = [item.get(name) for name in _CONTEXT_FIELDS]
    if isinstance(meta, dict):
        candidates.append(meta.get("n_ctx_train"))
    for value in candidates:
        if _positive(value) is not None:
            return value
    return None


def _headers(provider: ProviderInfo) -> dict[str, str]:
    headers = {"accept": "application/json", **provider.headers}
    if provider.api_key:
        if provider.protocol == "gemini":
            headers["x-goog-api-key"] = provider.api_key
        elif provider.protocol == "anthropic" and provider.options.auth != "bearer":
            headers["x-api-key"] = provider.api_key
            headers["anthropic-version"] = "2023-06-01"
        else:
            headers["authorization"] = f"Bearer {provider.api_key}"
    return headers


async def fetch_models(client: Client, provider: ProviderInfo, timeout: float) -> list[dict[str, Any]]:
    """Every page of the provider's list (at most MAX_MODELS models, MAX_PAGES pages), within
    `timeout` for the whole listing."""
    entries: list[dict[str, Any]] = []
    page: str | None = None
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_PAGES):
                found, page = _read_page(provider, await _get(client, models_url(provider, page), provider, timeout))
                entries += found
                if page is None or len(entries) >= MAX_MODELS:
                    break
    except TimeoutError:
        raise DiscoveryFailed(f"no answer within {timeout:g} s") from None
    return _provider_entries(provider, entries)


async def _get(client: Client, url: str, provider: ProviderInfo, timeout: float) -> bytes:
    try:
        response = await client.request("GET", Target(url), _headers(provider), first_byte_timeout=timeout,
                                        idle_timeout=timeout)
        try:
            answer = await response.read()
        except BaseException:
            response.close()
            raise
        response.release()
    except UpstreamError as exc:
        raise DiscoveryFailed(str(exc) or type(exc).__name__) from None
    if response.status != 200:
        raise DiscoveryFailed(f"GET /models answered {response.status}")
    return answer


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
