"""The results cache: a search's results kept for `search.cache_ttl` seconds, keyed by the
backend, the query and the filters.

Two implementations behind one small interface: `MemoryCache` (one process) and `StoreCache`
(the gateway's store: Redis shared by every replica, or the memory store). A cache that fails is
only a miss: a search never fails because of its cache.
"""
from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod

import orjson

from gateway.search.base import SearchResult
from gateway.store.base import Store, StoreError

log = logging.getLogger("gateway.search")
MAX_ENTRIES = 10_000


def cache_name(key: str) -> str:
    """A fixed-length store name: queries can be long, and hold anything."""
    return "search:" + hashlib.sha256(key.encode()).hexdigest()


def encode_results(results: list[SearchResult]) -> bytes:
    return orjson.dumps([r.as_dict() for r in results])


def decode_results(raw: bytes) -> list[SearchResult] | None:
    try:
        return [SearchResult.from_dict(item) for item in orjson.loads(raw)]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class SearchCache(ABC):
    @abstractmethod
    async def get(self, key: str) -> list[SearchResult] | None: ...

    @abstractmethod
    async def set(self, key: str, results: list[SearchResult], ttl_s: float) -> None: ...


class MemoryCache(SearchCache):
    def __init__(self, max_entries: int = MAX_ENTRIES, clock=time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, list[SearchResult]]] = {}

    async def get(self, key: str) -> list[SearchResult] | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._entries[key]
            return None
        return list(found[1])

    async def set(self, key: str, results: list[SearchResult], ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        now = self._clock()
        if len(self._entries) >= self.max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries.pop(key, None)
        self._entries[key] = (now + ttl_s, list(results))


class StoreCache(SearchCache):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> list[SearchResult] | None:
        try:
            raw = await self.store.cache_get(cache_name(key))
        except StoreError as exc:
            log.debug("search cache read failed: %s", exc)
            return None
        return None if raw is None else decode_results(raw)

    async def set(self, key: str, results: list[SearchResult], ttl_s: float) -> None:
        try:
            await self.store.cache_set(cache_name(key), encode_results(results), ttl_s)
        except StoreError as exc:
            log.debug("search cache write failed: %s", exc)
