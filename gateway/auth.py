"""Who is calling: static keys from the config, store-managed keys, and the admin key.

Secrets are never kept: keys are looked up by their SHA-256, and the admin key is compared in
constant time. A request may carry its key in `x-api-key`, in `Authorization: Bearer`, or in both
(Claude Code sends both) as long as both name the same key; two different keys are refused.

Store keys are found in two steps. Where a secret hash leads (team and key id) never changes, so it
is kept in process for good: a Redis Cluster node that holds the lookup record can die without
touching keys seen before, because every later read is of the key's and its team's records, which
live in the team's own slot. Whether the key is still valid is read from those records:
- `verify=True` (the other routes): on each request, one read in the team's slot, so a
  revocation, expiry or team deletion holds on every replica as soon as it is written (for the
  config file's keys too, which otherwise need no store);
- `verify=False` (`POST /v1/messages` and token counting, whose admission script checks the key
  again in its one round trip): from the cache for `key_cache_ttl`.
When the store is unreachable, a key the store vouched for within `key_cache_ttl` plus
`key_cache_grace` keeps working under `fail_open`; any other key gets 529, never 401, because it
may well be valid. Under `fail_closed` every request that needs the store gets 529 (from admission
where there is one, so that it is recorded under the key's team).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import AuthenticationFailed, Overloaded
from gateway.exchange import Principal
from gateway.store.base import StoreUnavailable

MAX_CACHED = 100_000
ADMIN = Principal(key_id="admin", team="admin", is_admin=True)
_REFUSALS = {
    "unknown": "invalid API key",
    "revoked": "this API key has been revoked",
    "expired": "this API key has expired",
}


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_for(hash_hex: str) -> str:
    return "key_" + hash_hex[:16]


def presented_key(keys: Iterable[str]) -> str:
    """The one key a request presents, from `x-api-key` and/or `Authorization: Bearer`."""
    given = {k for k in keys if k}
    if not given:
        raise AuthenticationFailed("missing API key: send it as x-api-key or Authorization: Bearer")
    if len(given) > 1:
        raise AuthenticationFailed("x-api-key and Authorization: Bearer name different keys; "
                                   "send one key, or the same key in both")
    return given.pop()


@dataclass(slots=True)
class _Seen:
    """What the store last said about a key."""
    principal: Principal | None  # None: not a valid key
    refusal: str                 # why not: "unknown" or "revoked" ("" when valid)
    expires_at: float | None     # epoch seconds; checked on every use
    checked: float               # time.monotonic() of the store's answer


class Authenticator:
    def __init__(self, *, static_keys: dict[str, Principal], admin_key: str | None, store=None,
                 cache_ttl: float = 5.0, grace: float = 600.0, fail_open: bool = True,
                 max_cached: int = MAX_CACHED) -> None:
        self._static = static_keys  # secret hash → principal
        self._admin = admin_key.encode() if admin_key else None
        self._store = store
        self._ttl = cache_ttl
        self._grace = grace
        self._fail_open = fail_open
        self._max = max_cached
        self._seen: dict[str, _Seen] = {}     # keys that exist
        self._unknown: dict[str, _Seen] = {}  # apart, so that a spray of made-up keys evicts none of them
        self._where: dict[str, tuple[str, str]] = {}  # secret hash → (team, key id), for good
        self._asking: dict[str, asyncio.Future[_Seen]] = {}  # cache refills under way

    def is_admin(self, keys: Iterable[str]) -> bool:
        """Whether the request presents the admin key (401 when it presents two different keys)."""
        key = presented_key(keys)
        return self._admin is not None and hmac.compare_digest(key.encode(), self._admin)

    def invalidate(self, hash_hex: str | None = None) -> None:
        """Forget what the store said (this replica's `POST /v1/messages` then asks again)."""
        if hash_hex is None:
            self._seen.clear()
            self._unknown.clear()
        else:
            self._seen.pop(hash_hex, None)
            self._unknown.pop(hash_hex, None)

    async def authenticate(self, keys: list[str], *, verify: bool = True) -> Principal:
        key = presented_key(keys)
        digest = secret_hash(key)
        principal = self._static.get(digest)
        if principal is not None:
            if verify and self._store is not None:
                await self._check_static(principal)
            return principal
        if self._admin is not None and hmac.compare_digest(key.encode(), self._admin):
            return ADMIN
        if self._store is None:
            raise AuthenticationFailed(_REFUSALS["unknown"])
        now = time.monotonic()
        seen = self._seen.get(digest) or self._unknown.get(digest)
        if seen is None or verify or now >= seen.checked + self._ttl:
            try:
                # A verified answer must be read after the request arrived; a cache refill may be
                # shared, so that a burst from a key not seen yet costs the store one read.
                seen = await (self._ask_and_remember(digest, now) if verify else self._refill(digest, now))
            except StoreUnavailable:
                return self._during_outage(seen, now, verify)
        return _verdict(seen)

    async def _ask_and_remember(self, digest: str, now: float) -> _Seen:
        seen = await self._ask_store(digest, now)
        # Remembered before the answer is handed out: a request arriving between a shared refill's
        # end and its waiters' turn finds the cache filled, not a refill to start again.
        if seen.refusal == "unknown":
            _remember(self._unknown, digest, seen, self._max)
        else:
            self._unknown.pop(digest, None)
            _remember(self._seen, digest, seen, self._max)
        return seen

    def _refill(self, digest: str, now: float) -> asyncio.Future[_Seen]:
        asking = self._asking.get(digest)
        if asking is None:
            asking = self._asking[digest] = asyncio.ensure_future(self._ask_and_remember(digest, now))
            asking.add_done_callback(lambda done: self._asked(digest, done))
        return asyncio.shield(asking)  # one waiter's cancellation does not cancel the others' read

    def _asked(self, digest: str, done: asyncio.Future[_Seen]) -> None:
        if self._asking.get(digest) is done:
            del self._asking[digest]
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter was cancelled

    async def _check_static(self, principal: Principal) -> None:
        """A key of the config file works without the store, unless the store says it was revoked
        or expired through the admin API (as admission would)."""
        try:
            record, _ = await self._store.key_and_team(principal.team, principal.key_id)
        except StoreUnavailable:
            return
        if record is None:
            return
        if record.revoked:
            raise AuthenticationFailed(_REFUSALS["revoked"])
        if record.expires_at is not None and record.expires_at <= time.time():
            raise AuthenticationFailed(_REFUSALS["expired"])

    async def _ask_store(self, digest: str, now: float) -> _Seen:
        where = self._where.get(digest)
        if where is None:
            where = await self._store.locate_key(digest)
            if where is None:
                return _Seen(None, "unknown", None, now)
            _remember(self._where, digest, where, self._max)
        team_name, key_id = where
        record, team = await self._store.key_and_team(team_name, key_id)
        # A key whose team was deleted is refused by admission too.
        if record is None or team is None or record.revoked:
            return _Seen(None, "revoked", None, now)
        # The allow-list for listings and planning; admission checks it again in the store.
        limits = record.limits.narrowed_by(team.limits)
        principal = Principal(key_id=record.id, team=record.team, allowed_models=limits.allowed_models,
                              budgeted=limits.budget_daily_usd is not None or limits.budget_monthly_usd is not None)
        return _Seen(principal, "", record.expires_at, now)

    def _during_outage(self, seen: _Seen | None, now: float, verify: bool) -> Principal:
        recent = seen is not None and now < seen.checked + self._ttl + self._grace \
            and (seen.principal is not None or seen.refusal == "revoked")  # revoked stays revoked
        # Under fail_closed a key with admission still passes here: admission answers the 529,
        # and the request is recorded under the key's team.
        if recent and (self._fail_open or not verify):
            return _verdict(seen)
        raise Overloaded("the gateway's store is unavailable, so this API key cannot be checked; "
                         "try again shortly")


def _verdict(seen: _Seen) -> Principal:
    if seen.principal is None:
        raise AuthenticationFailed(_REFUSALS[seen.refusal])
    if seen.expires_at is not None and seen.expires_at <= time.time():
        raise AuthenticationFailed(_REFUSALS["expired"])
    return seen.principal


def _remember(cache: dict, digest: str, value, limit: int) -> None:
    """Insert, dropping the oldest entry once the cache is full."""
    cache.pop(digest, None)
    if len(cache) >= limit:
        del cache[next(iter(cache))]
    cache[digest] = value
