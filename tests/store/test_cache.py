"""The store's short-lived cache: values kept for their TTL, shared between replicas."""
from __future__ import annotations

import asyncio

import pytest

from tests.store.conftest import ALL_BACKENDS

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_cached_value_is_read_back_by_another_replica(store, replica):
    await store.cache_set("search:abc", b'[{"url": "https://a.example.com/"}]', 30)
    assert await replica.cache_get("search:abc") == b'[{"url": "https://a.example.com/"}]'
    assert await replica.cache_get("search:other") is None


async def test_a_cached_value_is_gone_after_its_ttl(store):
    await store.cache_set("k", b"v", 0.05)
    assert await store.cache_get("k") == b"v"
    await asyncio.sleep(0.08)
    assert await store.cache_get("k") is None


async def test_a_ttl_of_zero_stores_nothing(store):
    await store.cache_set("k", b"v", 0)
    assert await store.cache_get("k") is None


async def test_setting_again_replaces_the_value(store):
    await store.cache_set("k", b"one", 30)
    await store.cache_set("k", b"two", 30)
    assert await store.cache_get("k") == b"two"
