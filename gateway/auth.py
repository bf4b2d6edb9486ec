"""Who is calling: static keys from the config, store-managed keys, and the admin key.

Secrets are never kept: keys are looked up by their SHA-256, and the admin key is compared in
constant time. Both `x-api-key` and `Authorization: Bearer` may arrive; whichever matches wins.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

from gateway.errors import AuthenticationFailed
from gateway.exchange import Principal


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_for(hash_hex: str) -> str:
    return "key_" + hash_hex[:16]


class Authenticator:
    def __init__(self, *, static_keys: dict[str, Principal], admin_key: str | None, store=None,
                 cache_ttl: float = 5.0) -> None:
        self._static = static_keys  # secret hash → principal
        self._admin = admin_key.encode() if admin_key else None
        self._store = store
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def is_admin(self, keys: Iterable[str]) -> bool:
        if self._admin is None:
            return False
        return any(hmac.compare_digest(k.encode(), self._admin) for k in keys)

    def invalidate(self, hash_hex: str | None = None) -> None:
        if hash_hex is None:
            self._cache.clear()
        else:
            self._cache.pop(hash_hex, None)

    async def authenticate(self, keys: list[str]) -> Principal:
        if not keys:
            raise AuthenticationFailed("missing API key: send it as x-api-key or Authorization: Bearer")
        for key in keys:
            if not key:
                continue
            digest = secret_hash(key)
            principal = self._static.get(digest)
            if principal is None and self._store is not None:
                principal = await self._lookup(digest)
            if principal is not None:
                return principal
        if self.is_admin(keys):
            return Principal(key_id="admin", team="admin", is_admin=True)
        raise AuthenticationFailed("invalid API key")

    async def _lookup(self, digest: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self._store.find_key(digest)
        principal = None
        if record is not None and not record.revoked and (record.expires_at is None or record.expires_at > time.time()):
            # The allow-list for listings and planning; admission checks it again in the store.
            team = await self._store.get_team(record.team)
            limits = record.limits.narrowed_by(team.limits) if team is not None else record.limits
            principal = Principal(key_id=record.id, team=record.team, allowed_models=limits.allowed_models)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, principal)
        return principal
