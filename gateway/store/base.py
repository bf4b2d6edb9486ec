"""The store interface: records, errors, the abstract `Store`, and `create_store`.

Two backends implement it with identical behaviour: `RedisStore` (shared by every replica) and
`MemoryStore` (one process). Record validation and the JSON shape of teams and keys live here so
that both backends accept and refuse exactly the same things.
"""
from __future__ import annotations

import math
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from policies.limits import LEASE_TTL_S, allowed_intersection, nanos_to_usd, stricter


# -- errors -----------------------------------------------------------------------------------
class StoreError(Exception):
    """Anything the store refuses or cannot do."""


class StoreUnavailable(StoreError):
    """Redis is unreachable or too slow; raised quickly, never after a hang."""


class Conflict(StoreError):
    """The record already exists (team name, key id or key secret)."""


class NotFound(StoreError):
    """No such team or key."""


class Invalid(StoreError, ValueError):
    """A record or a change that breaks a rule (bad name, negative limit, unknown field)."""


class BufferFull(StoreError):
    """The usage buffer is at its bound (the record store has fallen behind): `records` were
    not taken, and wait elsewhere until it has room."""

    def __init__(self, message: str, records: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.records = list(records)


# -- records ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """Limits of a team, or of a key within its team. None means unlimited."""
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_daily_usd: float | None = None
    budget_monthly_usd: float | None = None
    allowed_models: tuple[str, ...] | None = None

    def narrowed_by(self, other: Limits) -> Limits:
        """The stricter of the two for each field; allowed models are intersected."""
        return Limits(
            rpm=stricter(self.rpm, other.rpm),  # type: ignore[arg-type]
            tpm=stricter(self.tpm, other.tpm),  # type: ignore[arg-type]
            max_concurrent=stricter(self.max_concurrent, other.max_concurrent),  # type: ignore[arg-type]
            budget_daily_usd=stricter(self.budget_daily_usd, other.budget_daily_usd),
            budget_monthly_usd=stricter(self.budget_monthly_usd, other.budget_monthly_usd),
            allowed_models=allowed_intersection(self.allowed_models, other.allowed_models),
        )


LIMIT_FIELDS = tuple(f.name for f in fields(Limits))


@dataclass
class Team:
    name: str
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    # The team's own keys may manage the team's keys (create, rotate, revoke) through the admin
    # API and the console; without it they only read their team.
    admin: bool = False
    # Budget alerts for this team, over the top-level `alerts` setting (see gateway/alerts.py).
    alerts: dict[str, Any] | None = None


@dataclass
class KeyRecord:
    """An API key. Its limits narrow its team's: both sets of counters must allow a request."""
    id: str
    team: str
    prefix: str
    secret_hash: str  # sha256 hex of the secret; the secret itself is never stored
    name: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked: bool = False
    limits: Limits = field(default_factory=Limits)
    metadata: dict[str, Any] = field(default_factory=dict)


# Admission's value objects are plain slotted dataclasses, not frozen ones: one of each is made
# for every request, and a frozen dataclass's __init__ sets each field through object.__setattr__
# (about three times the cost). Nothing changes them once made.
@dataclass(slots=True)
class AdmissionRequest:
    team: str
    key_id: str
    request_id: str
    tokens: int        # estimated tokens charged to TPM now: input estimate + max_tokens
    cost_usd: float    # worst-case budget reservation
    model: str
    now: float
    fallback_models: tuple[str, ...] = ()  # the plan may reach these too: each must be allowed
    # Counted against RPM only (token counting): key validity and allowed models are checked,
    # TPM, concurrency and budgets are not, and nothing is leased or reserved, so nothing is settled.
    rate_only: bool = False

    @property
    def all_models(self) -> tuple[str, ...]:
        return (self.model, *self.fallback_models)


# Bounds on what one admission may charge: far above any real request, and far below where Redis'
# 64-bit counters could overflow or the scripts' doubles lose units (2**53), so that no write of
# the admission script can fail once its checks have passed.
MAX_ADMISSION_TOKENS = 2**40
MAX_ADMISSION_USD = 1e6


def validate_admission(req: AdmissionRequest) -> None:
    """Raise Invalid unless every number of the request is one the counters can take; both
    backends call it before they change anything."""
    tokens, cost, now = req.tokens, req.cost_usd, req.now
    if type(tokens) is not int or not 0 <= tokens <= MAX_ADMISSION_TOKENS:
        raise Invalid(f"admission tokens must be an integer from 0 to {MAX_ADMISSION_TOKENS}: {tokens!r}")
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost <= MAX_ADMISSION_USD:
        raise Invalid(f"admission cost must be from 0 to {MAX_ADMISSION_USD:g} USD: {cost!r}")
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not 0 < now < 2**34:
        raise Invalid(f"admission time must be an epoch timestamp: {now!r}")
    team, key_id, request_id = req.team, req.key_id, req.request_id
    if not (isinstance(team, str) and team and isinstance(key_id, str) and key_id
            and isinstance(request_id, str) and request_id):
        for name, value in (("team", team), ("key id", key_id), ("request id", request_id)):
            if not isinstance(value, str) or not value:
                raise Invalid(f"admission {name} must be a non-empty string")
    for model in req.all_models:
        if not isinstance(model, str) or not model or "\n" in model:
            raise Invalid("admission models must be non-empty strings without newlines")


@dataclass(slots=True)
class Admission:
    """The verdict, plus what Anthropic's anthropic-ratelimit-requests-*/-tokens-* headers need.

    `reason` is one of: revoked, expired, model_not_allowed, rpm, tpm, concurrency, budget_daily,
    budget_monthly. `retry_after` is seconds; None when waiting cannot help (a request larger than
    the whole TPM limit, an RPM of 0). A missing team or key reads as `revoked`. When both budgets
    are spent the monthly one is reported, because it is the one that decides the wait. The
    header triples describe the stricter of team and key; `*_reset` is the epoch second at which
    the window is fully replenished.
    """
    admitted: bool
    reason: str | None = None
    retry_after: float | None = None
    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None
    # A budget refusal: what that budget has left (USD, after spend and reservations in flight).
    budget_left_usd: float | None = None
    # A budget (the team's or the key's) applies: the request's answer may not cost past its reservation.
    budgeted: bool = False


@dataclass(frozen=True)
class EndpointStats:
    ttft_s: float | None = None       # moving average of the time to first token
    output_tps: float | None = None   # moving average of output tokens per second
    failures: int = 0                 # consecutive failures; a success resets it
    samples: int = 0
    updated_at: float | None = None


@dataclass(frozen=True)
class RoutingSnapshot:
    """Routing state shared by replicas. Cooldowns, (until, reason, episode), may include ones
    already over: compare `until` with the clock."""
    cooldowns: dict[str, tuple[float, str, int]] = field(default_factory=dict)
    stats: dict[str, EndpointStats] = field(default_factory=dict)
    ratelimits: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """What write_batch did: requests settled, records taken now, and records a full buffer left."""
    settled: int = 0
    added: int = 0
    left: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StoreOptions:
    """Behaviour shared by both backends."""
    lease_ttl_s: float = LEASE_TTL_S
    # Marks of batches no writer acknowledged (see keys.TeamKeys.batches) older than this may go,
    # and only while a team holds more than BATCH_MARKS_KEPT of them.
    usage_dedupe_s: float = 30 * 86400.0
    usage_buffer_max_records: int = 200_000  # per team: records waiting for the record store (Redis)
    rollup_hour_ttl_s: float = 35 * 86400    # hourly rollups kept this long after the last write
    rollup_day_ttl_s: float = 400 * 86400


# -- batch ids -----------------------------------------------------------------------------------
# A batch id is its creation time (ms, 13 digits) and 64 random bits: the marks of a team's batches
# sort by age (see keys.TeamKeys.batches).
BATCH_MARKS_KEPT = 1000  # per team; beyond it, marks older than usage_dedupe_s go
_BATCH_ID = re.compile(r"[0-9]{13}-[0-9a-f]{16}")


def new_batch_id(now: float | None = None) -> str:
    return f"{int((time.time() if now is None else now) * 1000):013d}-{secrets.token_hex(8)}"


def validate_batch_id(batch: str | None) -> str:
    """'' for no batch (applied unmarked), else the id itself."""
    if batch is None:
        return ""
    if not isinstance(batch, str) or not _BATCH_ID.fullmatch(batch):
        raise Invalid(f"batch id must match {_BATCH_ID.pattern}: {batch!r}")
    return batch


def batch_marks_cutoff(options: StoreOptions, now: float) -> str:
    """The batch id prefix before which a team's surplus marks may go."""
    return f"{int(max(0.0, now - options.usage_dedupe_s) * 1000):013d}"


# -- validation and JSON shape ----------------------------------------------------------------
_TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def validate_team_name(name: object) -> str:
    # The name becomes a Redis hash tag, so braces and the like must never reach it.
    if not isinstance(name, str) or not _TEAM_NAME.fullmatch(name):
        raise Invalid(f"team name must match {_TEAM_NAME.pattern}: {name!r}")
    return name


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{name} must be a non-negative integer or null, not {value!r}")
    return value


def _usd(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise Invalid(f"{name} must be a non-negative number or null, not {value!r}")
    return float(value)


def _models(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) \
            or not all(isinstance(m, str) and m for m in value):
        raise Invalid(f"allowed_models must be a list of model ids or null, not {value!r}")
    return tuple(value)


def limits_from(data: Mapping[str, Any]) -> Limits:
    unknown = set(data) - set(LIMIT_FIELDS)
    if unknown:
        raise Invalid(f"unknown limit field(s): {', '.join(sorted(unknown))}")
    return Limits(
        rpm=_count("rpm", data.get("rpm")),
        tpm=_count("tpm", data.get("tpm")),
        max_concurrent=_count("max_concurrent", data.get("max_concurrent")),
        budget_daily_usd=_usd("budget_daily_usd", data.get("budget_daily_usd")),
        budget_monthly_usd=_usd("budget_monthly_usd", data.get("budget_monthly_usd")),
        allowed_models=_models(data.get("allowed_models")),
    )


def limits_to_json(limits: Limits) -> dict[str, Any]:
    data = {name: getattr(limits, name) for name in LIMIT_FIELDS}
    if isinstance(limits.allowed_models, (tuple, list)):
        data["allowed_models"] = list(limits.allowed_models)
    return data


def _timestamp(name: str, value: object, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(f"{name} must be an epoch timestamp, not {value!r}")
    return float(value)


def _metadata(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise Invalid("metadata must be an object")
    return dict(value)


def validate_team(team: Team) -> Team:
    if not isinstance(team.admin, bool):
        raise Invalid(f"admin must be a boolean, not {team.admin!r}")
    return Team(
        name=validate_team_name(team.name),
        limits=limits_from(limits_to_json(team.limits)),
        created_at=_timestamp("created_at", team.created_at, optional=False),  # type: ignore[arg-type]
        metadata=_metadata(team.metadata),
        admin=team.admin,
        alerts=validate_alerts(team.alerts),
    )


ALERT_FIELDS = ("webhook_url", "secret", "thresholds", "format")


def validate_alerts(value: object) -> dict[str, Any] | None:
    """A team's alert settings: any of webhook_url, secret, thresholds (fractions of a budget, each
    above 0 and at most 10) and format (json or slack); null for the top-level settings."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise Invalid("alerts must be an object or null")
    unknown = set(value) - set(ALERT_FIELDS)
    if unknown:
        raise Invalid(f"unknown alerts field(s): {', '.join(sorted(unknown))} "
                      f"(expected some of: {', '.join(ALERT_FIELDS)})")
    out: dict[str, Any] = {}
    url = value.get("webhook_url")
    if url is not None:
        if not isinstance(url, str) or not re.fullmatch(r"https?://\S+", url) or len(url) > 2048:
            raise Invalid(f"alerts.webhook_url must be an http(s) URL, not {url!r}")
        out["webhook_url"] = url
    secret = value.get("secret")
    if secret is not None:
        if not isinstance(secret, str) or not 1 <= len(secret) <= 512:
            raise Invalid("alerts.secret must be a string of 1 to 512 characters")
        out["secret"] = secret
    thresholds = value.get("thresholds")
    if thresholds is not None:
        if isinstance(thresholds, str) or not isinstance(thresholds, Sequence) or not thresholds \
                or len(thresholds) > 16 or not all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 10 for t in thresholds):
            raise Invalid(f"alerts.thresholds must be a list of 1 to 16 numbers above 0 and at most 10, "
                          f"not {thresholds!r}")
        out["thresholds"] = sorted({float(t) for t in thresholds})
    fmt = value.get("format")
    if fmt is not None:
        if fmt not in ("json", "slack"):
            raise Invalid(f"alerts.format must be json or slack, not {fmt!r}")
        out["format"] = fmt
    return out


def validate_key(key: KeyRecord) -> KeyRecord:
    if not isinstance(key.id, str) or not _KEY_ID.fullmatch(key.id):
        raise Invalid(f"key id must match {_KEY_ID.pattern}: {key.id!r}")
    if not isinstance(key.secret_hash, str) or not _SHA256_HEX.fullmatch(key.secret_hash):
        raise Invalid("secret_hash must be the lowercase sha256 hex digest of the secret")
    if not isinstance(key.prefix, str):
        raise Invalid("prefix must be a string")
    if key.name is not None and not isinstance(key.name, str):
        raise Invalid("name must be a string or null")
    if not isinstance(key.revoked, bool):
        raise Invalid("revoked must be a boolean")
    return KeyRecord(
        id=key.id, team=validate_team_name(key.team), prefix=key.prefix,
        secret_hash=key.secret_hash, name=key.name,
        created_at=_timestamp("created_at", key.created_at, optional=False),  # type: ignore[arg-type]
        expires_at=_timestamp("expires_at", key.expires_at, optional=True),
        revoked=key.revoked, limits=limits_from(limits_to_json(key.limits)),
        metadata=_metadata(key.metadata),
    )


def team_to_json(team: Team) -> dict[str, Any]:
    return {"name": team.name, "limits": limits_to_json(team.limits),
            "created_at": team.created_at, "metadata": team.metadata,
            "admin": team.admin, "alerts": team.alerts}


def team_from_json(data: Mapping[str, Any]) -> Team:
    return Team(name=data["name"], limits=limits_from(data["limits"]),
                created_at=data["created_at"], metadata=dict(data.get("metadata") or {}),
                admin=bool(data.get("admin", False)), alerts=data.get("alerts"))


def key_to_json(key: KeyRecord) -> dict[str, Any]:
    return {"id": key.id, "team": key.team, "prefix": key.prefix, "secret_hash": key.secret_hash,
            "name": key.name, "created_at": key.created_at, "expires_at": key.expires_at,
            "revoked": key.revoked, "limits": limits_to_json(key.limits),
            "metadata": key.metadata}


def key_from_json(data: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        id=data["id"], team=data["team"], prefix=data["prefix"], secret_hash=data["secret_hash"],
        name=data.get("name"), created_at=data["created_at"], expires_at=data.get("expires_at"),
        revoked=bool(data.get("revoked")), limits=limits_from(data["limits"]),
        metadata=dict(data.get("metadata") or {}))


def _changed_limits(current: Limits, changes: Mapping[str, Any]) -> Limits:
    """Limit changes come flat (`{"rpm": 10}`, as the admin API sends them) or nested under
    `limits`; a null clears a limit."""
    merged = limits_to_json(current)
    nested = changes.get("limits")
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise Invalid("limits must be an object")
        merged.update(nested)
    merged.update({k: v for k, v in changes.items() if k in LIMIT_FIELDS})
    return limits_from(merged)


def apply_team_changes(team: Team, changes: Mapping[str, Any]) -> Team:
    allowed = {"limits", "metadata", "admin", "alerts", *LIMIT_FIELDS}
    unknown = set(changes) - allowed
    if unknown:
        raise Invalid(f"cannot change team field(s): {', '.join(sorted(unknown))}")
    return validate_team(Team(
        name=team.name, limits=_changed_limits(team.limits, changes), created_at=team.created_at,
        metadata=_metadata(changes.get("metadata", team.metadata)),
        admin=changes.get("admin", team.admin), alerts=changes.get("alerts", team.alerts)))


def apply_key_changes(key: KeyRecord, changes: Mapping[str, Any]) -> KeyRecord:
    allowed = {"name", "expires_at", "revoked", "limits", "metadata", *LIMIT_FIELDS}
    unknown = set(changes) - allowed
    if unknown:
        raise Invalid(f"cannot change key field(s): {', '.join(sorted(unknown))}")
    revoked = changes.get("revoked", key.revoked)
    if key.revoked and revoked is not True:
        raise Invalid("a revoked key stays revoked")
    return validate_key(KeyRecord(
        id=key.id, team=key.team, prefix=key.prefix, secret_hash=key.secret_hash,
        name=changes.get("name", key.name), created_at=key.created_at,
        expires_at=changes.get("expires_at", key.expires_at), revoked=revoked,
        limits=_changed_limits(key.limits, changes),
        metadata=_metadata(changes.get("metadata", key.metadata))))


# -- the interface ----------------------------------------------------------------------------
class Store(ABC):
    """State shared by replicas. Every method may raise StoreUnavailable (Redis backend)."""

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    # teams and keys ------------------------------------------------------------------------
    @abstractmethod
    async def create_team(self, team: Team) -> Team:
        """Invalid on a bad record, Conflict when the name is taken."""

    @abstractmethod
    async def get_team(self, name: str) -> Team | None: ...

    @abstractmethod
    async def list_teams(self) -> list[Team]:
        """Sorted by name."""

    @abstractmethod
    async def update_team(self, name: str, changes: Mapping[str, Any]) -> Team:
        """`changes`: limit fields (flat or under `limits`, null clears) and `metadata`."""

    @abstractmethod
    async def delete_team(self, name: str) -> None:
        """Removes the team and revokes its keys (they stay listed under the team, revoked)."""

    @abstractmethod
    async def create_key(self, key: KeyRecord) -> None:
        """NotFound without the team, Conflict on a taken id or secret hash."""

    @abstractmethod
    async def find_key(self, secret_hash: str) -> KeyRecord | None: ...

    @abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def locate_key(self, secret_hash: str) -> tuple[str, str] | None:
        """(team, key id) of the key with this secret hash, or None. A hash names the same key for
        good (revoking keeps the record), so a caller may keep the answer as long as it likes."""
        key = await self.find_key(secret_hash)
        return None if key is None else (key.team, key.id)

    async def key_and_team(self, team: str, key_id: str) -> tuple[KeyRecord | None, Team | None]:
        """The key's record and its team's, as they are now (in one round trip where the backend
        can: both live in the team's slot)."""
        key = await self.get_key(key_id)
        if key is not None and key.team != team:
            key = None
        return key, await self.get_team(team)

    @abstractmethod
    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        """Sorted by creation time, then id."""

    @abstractmethod
    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord:
        """`changes`: name, expires_at, revoked (only to true), limit fields, metadata."""

    @abstractmethod
    async def revoke_key(self, key_id: str) -> None: ...

    # admission -----------------------------------------------------------------------------
    @abstractmethod
    async def admit(self, req: AdmissionRequest) -> Admission:
        """Check and reserve everything at once: key valid, model allowed, RPM, TPM, a
        concurrency lease and the daily and monthly budget reservation. All or nothing."""

    @abstractmethod
    async def abandoned(self, team: str) -> dict[str, tuple[float, str]]:
        """Requests whose lease expired unsettled: request id -> (USD charged, the reserved
        amount; key id). Their late settlements are duplicates."""

    @abstractmethod
    async def renew(self, team: str, request_id: str, now: float) -> bool:
        """Extend a live lease by the lease TTL; False when it has already expired."""

    async def settle(self, team: str, key_id: str, request_id: str, cost_usd: float,
                     tokens: int, now: float, batch: str | None = None) -> bool:
        """Free the lease, replace the reservation by `cost_usd` (charged to the UTC day and
        month of `now`, even when the lease has expired) and true up TPM with `tokens`. False
        when it changed nothing: the lease was charged as abandoned, or `batch` was settled
        before. Cost 0 releases. Repeats are kept out by batch id only (see write_batch)."""
        written = await self.write_batch([(team, key_id, request_id, cost_usd, tokens, now)], [], batch)
        return written.settled > 0

    # usage ---------------------------------------------------------------------------------
    @abstractmethod
    async def write_batch(self, settlements: Sequence[Sequence[Any]], records: Sequence[Mapping[str, Any]],
                          batch: str | None = None, done: Sequence[tuple[str, str]] = ()) -> Written:
        """Settle many requests (each (team, key id, request id, cost USD, tokens, now)) and take
        their usage records (hourly and daily rollups per team, model, provider and user and, with
        Redis, the record into the team's buffer for the record store), atomically per team and
        half, in one round trip. Once per `batch` (new_batch_id()): the same batch again, a replay
        of one whose reply was lost, settles nothing more and takes only the records it had not
        taken. `done`: (team, batch id) of earlier batches whose reply the caller has and that it
        will never send again: their marks go. Records a full usage buffer did not take (Redis
        only) are handed back, for the caller to offer again later as a new batch."""

    async def settle_and_append(self, settlements: Sequence[Sequence[Any]], records: Sequence[Mapping[str, Any]],
                                batch: str | None = None, done: Sequence[tuple[str, str]] = ()
                                ) -> list[Mapping[str, Any]]:
        """write_batch, returning the records a full buffer did not take."""
        return (await self.write_batch(settlements, records, batch, done)).left

    async def append_usage(self, records: Sequence[Mapping[str, Any]], batch: str | None = None) -> int:
        """The records half of write_batch: how many records were taken now; BufferFull with the
        records a full buffer did not take."""
        written = await self.write_batch([], records, batch)
        if written.left:
            raise BufferFull(f"usage buffer full: {len(written.left)} records not taken", written.left)
        return written.added

    @abstractmethod
    async def query_usage(self, start: float, end: float, group_by: Sequence[str],
                          team: str | None = None) -> list[dict[str, Any]]:
        """Rollup sums grouped by any of team, model, provider, user, day, hour.

        Usage is counted by the hour: a query covers every UTC hour that overlaps
        [start, end). `day` reads 'YYYY-MM-DD', `hour` 'YYYY-MM-DDTHH:00:00Z'."""

    # routing state -------------------------------------------------------------------------
    @abstractmethod
    async def set_cooldown(self, endpoint: str, until: float, reason: str, episodes: int = 1) -> None:
        """Replace the endpoint's cooldown: until when, why, and its escalation step
        (`policies.health.EndpointHealth.episodes`)."""

    @abstractmethod
    async def clear_cooldown(self, endpoint: str) -> None: ...

    @abstractmethod
    async def record_endpoint_stats(self, endpoint: str, ttft_s: float | None,
                                    output_tps: float | None, ok: bool, now: float) -> None:
        """Fold one observation into the endpoint's moving averages
        (`policies.health.moving_average`, weight `MEASUREMENT_WEIGHT`) and consecutive failures."""

    @abstractmethod
    async def record_upstream_ratelimit(self, provider: str, values: Mapping[str, float],
                                        now: float) -> None:
        """Replace the provider's last seen rate-limit values (an `updated_at` is added)."""

    @abstractmethod
    async def routing_snapshot(self) -> RoutingSnapshot: ...

    # short-lived cache ------------------------------------------------------------------------
    @abstractmethod
    async def cache_get(self, name: str) -> bytes | None:
        """A value `cache_set` stored under `name` and not yet expired, else None."""
    # budget state ----------------------------------------------------------------------------
    @abstractmethod
    async def budget_state(self, team: str, now: float) -> BudgetState:
        """What the team and each of its keys have spent in the UTC day and month of `now`, and
        what open requests hold reserved."""

    # console sessions ------------------------------------------------------------------------
    @abstractmethod
    async def create_console_session(self, session_id: str, data: Mapping[str, Any],
                                     ttl_s: float) -> None:
        """Keep a signed-in console session for `ttl_s` seconds (every replica sees it)."""

    @abstractmethod
    async def get_console_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's data, or None once it has expired or was ended."""

    @abstractmethod
    async def delete_console_session(self, session_id: str) -> None: ...

    # audit log -------------------------------------------------------------------------------
    @abstractmethod
    async def append_audit(self, entry: Mapping[str, Any], retention_s: float) -> None:
        """Append one entry (with its `ts`); entries older than `retention_s` are dropped."""

    @abstractmethod
    async def audit_entries(self, start: float, end: float, limit: int) -> list[dict[str, Any]]:
        """Entries with start <= ts < end, newest first, at most `limit`."""

    # alerts ----------------------------------------------------------------------------------
    @abstractmethod
    async def claim_alert(self, team: str, claim: str, ttl_s: float) -> bool:
        """True for exactly one caller per (team, claim) within `ttl_s`, across replicas: the
        one that sends that alert."""

    @abstractmethod
    async def mark_team_alerts(self, team: str, on: bool) -> None:
        """Note whether the team has alert settings of its own (see `teams_with_alerts`)."""

    @abstractmethod
    async def teams_with_alerts(self) -> set[str]:
        """The teams marked as having alert settings of their own: without a gateway-wide webhook,
        only these are checked, so that a gateway without alerts reads nothing for them."""

    @abstractmethod
    async def record_alert_delivery(self, entry: Mapping[str, Any], keep: int) -> None:
        """Remember a webhook delivery's outcome; the newest `keep` are kept."""

    @abstractmethod
    async def alert_deliveries(self, limit: int) -> list[dict[str, Any]]:
        """The newest delivery outcomes first."""


@dataclass(frozen=True)
class BudgetState:
    """Spend and reservations in USD: `team` for the team, `keys` per key id."""
    day: str
    month: str
    team_spent_day: float = 0.0
    team_spent_month: float = 0.0
    team_reserved: float = 0.0
    keys_spent_day: dict[str, float] = field(default_factory=dict)
    keys_spent_month: dict[str, float] = field(default_factory=dict)
    keys_reserved: dict[str, float] = field(default_factory=dict)


def budget_state_from(day: str, month: str, spent_day: Mapping[str, Any], spent_month: Mapping[str, Any],
                      reserved: Mapping[str, Any]) -> BudgetState:
    """From the hashes both backends keep (`team` | `k:<key id>` -> nano-USD)."""
    def usd(raw: Any) -> float:
        return nanos_to_usd(max(0, int(float(raw))))

    def per_key(values: Mapping[str, Any]) -> dict[str, float]:
        return {name[2:]: usd(v) for name, v in values.items() if name.startswith("k:")}

    return BudgetState(day=day, month=month, team_spent_day=usd(spent_day.get("team", 0)),
                       team_spent_month=usd(spent_month.get("team", 0)),
                       team_reserved=usd(reserved.get("team", 0)),
                       keys_spent_day=per_key(spent_day), keys_spent_month=per_key(spent_month),
                       keys_reserved=per_key(reserved))


    @abstractmethod
    async def cache_set(self, name: str, value: bytes, ttl_s: float) -> None:
        """Keep `value` (UTF-8 text, e.g. JSON) under `name` for `ttl_s` seconds, shared by every
        replica with Redis; a `ttl_s` of 0 or less stores nothing."""




def create_store(redis_url: str | None, **options: Any) -> Store:
    """None -> MemoryStore. A `redis+cluster://host:port` URL (or `cluster=True`) -> Redis
    Cluster; any other redis:// or rediss:// URL -> a plain Redis.

    Options: the fields of StoreOptions for both backends, and for Redis `socket_timeout`,
    `connect_timeout`, `operation_timeout`, `max_connections` and `cluster`.
    """
    shared = {f.name for f in fields(StoreOptions)}
    store_options = StoreOptions(**{k: v for k, v in options.items() if k in shared})
    rest = {k: v for k, v in options.items() if k not in shared}
    if redis_url is None:
        if rest:
            raise TypeError(f"options not understood by the memory store: {sorted(rest)}")
        from gateway.store.memory import MemoryStore
        return MemoryStore(store_options)
    from gateway.store.redis import RedisStore
    return RedisStore(redis_url, options=store_options, **rest)
