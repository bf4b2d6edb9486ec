"""The embedded in-memory store: the Redis backend's twin for one process.

Same structures and the same arithmetic as the Redis scripts (`admit.lua`, `settle_batch.lua`, ...),
written in Python; the shared test suite holds the two to identical behaviour. Each method runs
without awaiting in between, so on one event loop every operation is atomic, as a script is.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.store.base import (
    BATCH_MARKS_KEPT,
    Admission,
    AdmissionRequest,
    BudgetState,
    Conflict,
    EndpointStats,
    KeyRecord,
    Limits,
    NotFound,
    RoutingSnapshot,
    Store,
    StoreOptions,
    Team,
    apply_key_changes,
    apply_team_changes,
    budget_state_from,
    key_from_json,
    key_to_json,
    team_from_json,
    team_to_json,
    Written,
    batch_marks_cutoff,
    validate_admission,
    validate_batch_id,
    validate_key,
    validate_team,
    validate_team_name,
)
from gateway.store.rollups import (
    UsageEntry,
    UsageFold,
    bucket_plan,
    group_by_team,
    usage_entry,
)
from policies.health import moving_average
from policies.limits import (
    ABANDONED_KEEP_S,
    CONCURRENCY_RETRY_S,
    WINDOW_S,
    day_id,
    month_id,
    next_day_start,
    next_month_start,
    nanos_to_usd,
    usd_to_nanos,
)


MEMORY_MAX_CACHE_ENTRIES = 10_000  # cache_set's bound in process memory


class _Batches:
    """A team's marks of batches (the `batches` sorted set in Redis, see mark_batch in
    _prelude.lua): '<batch id>:s' -> 0 for settlements, '<batch id>:u' -> records taken."""

    def __init__(self) -> None:
        self.marks: dict[str, int] = {}

    def mark(self, member: str, value: int, cutoff: str) -> None:
        self.marks[member] = value
        excess = len(self.marks) - BATCH_MARKS_KEPT
        if excess > 0:
            for old in sorted(m for m in self.marks if m < cutoff)[:min(excess, 100)]:
                del self.marks[old]

    def forget(self, batch: str) -> None:
        for kind in (":s", ":u"):
            self.marks.pop(batch + kind, None)


class _Window:
    """Admitted requests and their tokens per second: those of second b count while
    b > now - WINDOW_S (a ZSET of seconds plus a hash in Redis)."""

    def __init__(self) -> None:
        self.seconds: dict[int, list[int]] = {}   # second -> [requests, tokens]
        self.count = 0
        self.total = 0

    def purge(self, now: float) -> None:
        cutoff = now - WINDOW_S
        for second in [b for b in self.seconds if b <= cutoff]:
            requests, tokens = self.seconds.pop(second)
            self.count -= requests
            self.total -= tokens

    def add(self, second: int, tokens: int) -> None:
        slot = self.seconds.setdefault(second, [0, 0])
        slot[0] += 1
        slot[1] += tokens
        self.count += 1
        self.total += tokens

    def true_up(self, second: int, delta: int) -> None:
        slot = self.seconds.get(second)
        if slot is not None:
            slot[1] += delta
            self.total += delta

    def _wait_for(self, which: int, need: int, now: float) -> float:
        freed = 0
        for second in sorted(self.seconds):
            freed += self.seconds[second][which]
            if freed >= need:
                return second + WINDOW_S - now
        return WINDOW_S

    def rpm_wait(self, rpm: int, now: float) -> float | None:
        return None if rpm == 0 else self._wait_for(0, self.count + 1 - rpm, now)

    def tpm_wait(self, tpm: int, tokens: int, now: float) -> float | None:
        return None if tokens > tpm else self._wait_for(1, self.total + tokens - tpm, now)

    def reset(self, now: float) -> float:
        return max(self.seconds) + WINDOW_S if self.seconds else now


@dataclass
class _Held:
    """A reservation: its cost, the second its window entries are in, its reserved tokens, and
    whether the team's and the key's windows counted it."""
    cost: int
    key_id: str
    second: int
    tokens: int
    team_windowed: bool
    key_windowed: bool


@dataclass
class _TeamState:
    """Everything Redis keeps under one team's hash tag, apart from the records."""
    window: _Window = field(default_factory=_Window)
    key_windows: dict[str, _Window] = field(default_factory=dict)
    leases: dict[str, float] = field(default_factory=dict)         # request id -> expiry
    key_concurrency: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, _Held] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)         # team | k:<id> -> nanos
    spend: dict[tuple[str, str], int] = field(default_factory=dict)  # (period, field) -> nanos
    # request id -> (nanos, key id, time): leases that expired unsettled, charged as reserved
    abandoned: dict[str, tuple[int, str, float]] = field(default_factory=dict)
    batches: _Batches = field(default_factory=_Batches)
    rollups: dict[tuple[str, int], tuple[float, dict[str, int]]] = field(default_factory=dict)

    def release(self, rid: str) -> _Held | None:
        held = self.reservations.pop(rid, None)
        self.leases.pop(rid, None)
        if held is not None:
            kfield = f"k:{held.key_id}"
            self.reserved["team"] = self.reserved.get("team", 0) - held.cost
            self.reserved[kfield] = self.reserved.get(kfield, 0) - held.cost
            self.key_concurrency[held.key_id] = self.key_concurrency.get(held.key_id, 0) - 1
        return held


@dataclass
class _Scope:
    """The team, or the key within it: its limits and the counters they apply to."""
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    budget_daily: int | None      # nano-USD
    budget_monthly: int | None
    field: str                    # "team" or "k:<key id>", as in the Redis hashes
    window: _Window | None        # only when the scope has an RPM or TPM limit

    @classmethod
    def of(cls, limits: Limits, fieldname: str, window: _Window) -> _Scope:
        windowed = limits.rpm is not None or limits.tpm is not None
        return cls(rpm=limits.rpm, tpm=limits.tpm, max_concurrent=limits.max_concurrent,
                   budget_daily=_nanos(limits.budget_daily_usd),
                   budget_monthly=_nanos(limits.budget_monthly_usd), field=fieldname,
                   window=window if windowed else None)


class _Failures:
    """Failed checks and their waits; a wait of None (waiting cannot help) wins."""
    ORDER = ("rpm", "tpm", "concurrency", "budget_monthly", "budget_daily")

    def __init__(self) -> None:
        self.waits: dict[str, float | None] = {}
        self.budget_left: dict[str, int] = {}  # nano-USD a refusing budget has left, least of team and key

    def budget_short(self, reason: str, left: int) -> None:
        self.budget_left[reason] = min(left, self.budget_left.get(reason, left))

    def add(self, reason: str, wait: float | None) -> None:
        if reason not in self.waits:
            self.waits[reason] = wait
        else:
            known = self.waits[reason]
            self.waits[reason] = None if known is None or wait is None else max(known, wait)

    def reason(self) -> str | None:
        return next((r for r in self.ORDER if r in self.waits), None)


def _nanos(usd: float | None) -> int | None:
    return None if usd is None else usd_to_nanos(usd)


class MemoryStore(Store):
    def __init__(self, options: StoreOptions | None = None) -> None:
        self.options = options or StoreOptions()
        self._teams: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, dict[str, Any]] = {}
        self._key_by_hash: dict[str, str] = {}
        self._state: dict[str, _TeamState] = {}
        self._usage_teams: set[str] = set()
        self._cooldowns: dict[str, tuple[float, str]] = {}
        self._stats: dict[str, EndpointStats] = {}
        self._ratelimits: dict[str, dict[str, float]] = {}
        self._cache: dict[str, tuple[float, bytes]] = {}  # name -> (monotonic expiry, value)
        self._sessions: dict[str, tuple[float, dict[str, Any]]] = {}   # id -> (expiry, data)
        self._audit: deque[tuple[float, dict[str, Any]]] = deque()       # (append time, entry)
        self._alert_claims: dict[tuple[str, str], float] = {}           # (team, claim) -> expiry
        self._deliveries: deque[dict[str, Any]] = deque()
        self._alert_teams: set[str] = set()

    def _team_state(self, team: str) -> _TeamState:
        return self._state.setdefault(team, _TeamState())

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- teams and keys ------------------------------------------------------------------------
    async def create_team(self, team: Team) -> Team:
        team = validate_team(team)
        if team.name in self._teams:
            raise Conflict(f"team {team.name!r} already exists")
        self._teams[team.name] = team_to_json(team)
        return team_from_json(self._teams[team.name])

    async def get_team(self, name: str) -> Team | None:
        data = self._teams.get(name)
        return None if data is None else team_from_json(data)

    async def list_teams(self) -> list[Team]:
        return [team_from_json(self._teams[name]) for name in sorted(self._teams)]

    async def update_team(self, name: str, changes: Mapping[str, Any]) -> Team:
        data = self._teams.get(name)
        if data is None:
            raise NotFound(f"no team {name!r}")
        team = apply_team_changes(team_from_json(data), changes)
        self._teams[name] = team_to_json(team)
        return team_from_json(self._teams[name])

    async def delete_team(self, name: str) -> None:
        if self._teams.pop(name, None) is None:
            raise NotFound(f"no team {name!r}")
        for data in self._keys.values():
            if data["team"] == name:
                data["revoked"] = True

    async def create_key(self, key: KeyRecord) -> None:
        key = validate_key(key)
        if key.team not in self._teams:
            raise NotFound(f"no team {key.team!r}")
        if key.id in self._keys:
            raise Conflict(f"key id {key.id!r} already exists")
        if key.secret_hash in self._key_by_hash:
            raise Conflict("a key with this secret already exists")
        self._keys[key.id] = key_to_json(key)
        self._key_by_hash[key.secret_hash] = key.id

    async def find_key(self, secret_hash: str) -> KeyRecord | None:
        key_id = self._key_by_hash.get(secret_hash)
        return None if key_id is None else await self.get_key(key_id)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        data = self._keys.get(key_id)
        return None if data is None else key_from_json(data)

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        if team is None:
            wanted = set(self._teams)
        else:
            wanted = {team}
        records = [key_from_json(d) for d in self._keys.values() if d["team"] in wanted]
        return sorted(records, key=lambda k: (k.created_at, k.id))

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord:
        data = self._keys.get(key_id)
        if data is None:
            raise NotFound(f"no key {key_id!r}")
        key = apply_key_changes(key_from_json(data), changes)
        self._keys[key_id] = key_to_json(key)
        return key_from_json(self._keys[key_id])

    async def revoke_key(self, key_id: str) -> None:
        await self.update_key(key_id, {"revoked": True})

    # -- admission (admit.lua) ------------------------------------------------------------------
    def _key_refusal(self, req: AdmissionRequest) -> tuple[str | None, Team, KeyRecord]:
        team_data, key_data = self._teams.get(req.team), self._keys.get(req.key_id)
        if team_data is None or key_data is None or key_data["team"] != req.team:
            return "revoked", Team(req.team), KeyRecord(req.key_id, req.team, "", "")
        team, key = team_from_json(team_data), key_from_json(key_data)
        if key.revoked:
            return "revoked", team, key
        if key.expires_at is not None and key.expires_at <= req.now:
            return "expired", team, key
        for allowed in (team.limits.allowed_models, key.limits.allowed_models):
            if allowed is not None and any(m not in allowed for m in req.all_models):
                return "model_not_allowed", team, key
        return None, team, key

    def _check(self, state: _TeamState, scopes: list[_Scope], req: AdmissionRequest,
               cost: int) -> _Failures:
        now, tokens, failures = req.now, req.tokens, _Failures()
        for s in scopes:
            w = s.window
            if s.rpm is not None and w is not None and w.count + 1 > s.rpm:
                failures.add("rpm", w.rpm_wait(s.rpm, now))
            if s.tpm is not None and w is not None and w.total + tokens > s.tpm and not req.rate_only:
                failures.add("tpm", w.tpm_wait(s.tpm, tokens, now))
        if req.rate_only:
            return failures
        team, key = scopes
        if team.max_concurrent is not None and len(state.leases) + 1 > team.max_concurrent:
            failures.add("concurrency", CONCURRENCY_RETRY_S)
        if key.max_concurrent is not None and \
                state.key_concurrency.get(req.key_id, 0) + 1 > key.max_concurrent:
            failures.add("concurrency", CONCURRENCY_RETRY_S)
        for s in scopes:
            reserved = state.reserved.get(s.field, 0)
            for budget, period, reason, wait in (
                    (s.budget_monthly, "m:" + month_id(now), "budget_monthly",
                     next_month_start(now) - now),
                    (s.budget_daily, "d:" + day_id(now), "budget_daily",
                     next_day_start(now) - now)):
                spent = state.spend.get((period, s.field), 0)
                if budget is not None and spent + reserved + cost > budget:
                    failures.add(reason, wait)
                    failures.budget_short(reason, budget - spent - reserved)
        return failures

    def _reserve(self, state: _TeamState, scopes: list[_Scope], req: AdmissionRequest,
                 cost: int) -> None:
        second = int(req.now // 1)
        for s in scopes:
            if s.window is not None:
                s.window.add(second, req.tokens)
        if req.rate_only:
            return
        state.leases[req.request_id] = req.now + self.options.lease_ttl_s
        state.key_concurrency[req.key_id] = state.key_concurrency.get(req.key_id, 0) + 1
        team, key = scopes
        state.reservations[req.request_id] = _Held(cost, req.key_id, second, req.tokens,
                                                   team_windowed=team.window is not None,
                                                   key_windowed=key.window is not None)
        for fieldname in ("team", f"k:{req.key_id}"):
            state.reserved[fieldname] = state.reserved.get(fieldname, 0) + cost

    async def admit(self, req: AdmissionRequest) -> Admission:
        """One request at a time: admit.lua judges a batch of one key's requests, and a batch is
        exactly its requests admitted here one after another at the batch's `now`."""
        validate_admission(req)  # before any change, as admit.lua checks its arguments first
        # Expired leases and window seconds are forgotten first here; admit.lua counts them out
        # while judging its batch and deletes them after: the same verdicts, and no step here can fail.
        refusal, team, key = self._key_refusal(req)
        if refusal is not None:
            return Admission(False, refusal)
        state, cost = self._team_state(req.team), usd_to_nanos(req.cost_usd)
        # An expired lease's reservation is abandoned: charged as spend at its reserved amount (see admit.lua).
        for rid in [r for r, expiry in state.leases.items() if expiry <= req.now]:
            held = state.release(rid)
            if held is not None:  # a settlement ends the lease and the reservation together
                for old in [r for r, (_, _, at) in state.abandoned.items() if at < req.now - ABANDONED_KEEP_S]:
                    del state.abandoned[old]
                state.abandoned[rid] = (held.cost, held.key_id, req.now)
                for fieldname in ("team", f"k:{held.key_id}"):
                    for period in ("d:" + day_id(req.now), "m:" + month_id(req.now)):
                        state.spend[(period, fieldname)] = state.spend.get((period, fieldname), 0) + held.cost
        scopes = [_Scope.of(team.limits, "team", state.window),
                  _Scope.of(key.limits, f"k:{key.id}",
                            state.key_windows.setdefault(key.id, _Window()))]
        for scope in scopes:
            if scope.window is not None:
                scope.window.purge(req.now)

        # A request id that already holds a lease was admitted before: count it once.
        duplicate = req.request_id in state.reservations
        failures = _Failures() if duplicate else self._check(state, scopes, req, cost)
        reason = failures.reason()
        if reason is None and not duplicate:
            self._reserve(state, scopes, req, cost)

        requests, tokens = _header(scopes, "rpm", req.now), _header(scopes, "tpm", req.now)
        return Admission(
            admitted=reason is None, reason=reason,
            retry_after=None if reason is None else failures.waits[reason],
            requests_limit=requests[0], requests_remaining=requests[1],
            requests_reset=requests[2], tokens_limit=tokens[0], tokens_remaining=tokens[1],
            tokens_reset=tokens[2],
            budget_left_usd=nanos_to_usd(max(0, failures.budget_left[reason]))
            if reason in failures.budget_left else None,
            budgeted=not req.rate_only and any(s.budget_daily is not None or s.budget_monthly is not None
                                               for s in scopes))

    async def abandoned(self, team: str) -> dict[str, tuple[float, str]]:
        state = self._team_state(team)
        return {rid: (nanos_to_usd(nanos), key_id) for rid, (nanos, key_id, _) in state.abandoned.items()}

    async def renew(self, team: str, request_id: str, now: float) -> bool:
        state = self._team_state(team)
        expiry = state.leases.get(request_id)
        if expiry is None or expiry <= now:
            return False
        state.leases[request_id] = max(expiry, now + self.options.lease_ttl_s)
        return True

    def _settle(self, state: _TeamState, key_id: str, request_id: str, cost_usd: float,
                tokens: int, now: float) -> bool:
        if request_id in state.abandoned:
            return False
        held = state.release(request_id)
        cost = usd_to_nanos(cost_usd)
        if cost > 0:
            for fieldname in ("team", f"k:{key_id}"):
                for period in ("d:" + day_id(now), "m:" + month_id(now)):
                    state.spend[(period, fieldname)] = state.spend.get((period, fieldname), 0) + cost
        # The window keeps the reserved tokens until the actual count is known.
        if held is not None:
            if held.team_windowed:
                state.window.true_up(held.second, tokens - held.tokens)
            if held.key_windowed and key_id in state.key_windows:
                state.key_windows[key_id].true_up(held.second, tokens - held.tokens)
        return True

    # -- usage ---------------------------------------------------------------------------------
    async def write_batch(self, settlements: Sequence[Sequence[Any]], records: Sequence[Mapping[str, Any]],
                          batch: str | None = None, done: Sequence[tuple[str, str]] = ()) -> Written:
        # Everything is checked before the first change, as the Redis backend does before its pipeline.
        batch_id = validate_batch_id(batch)
        teams = group_by_team(usage_entry(r) for r in records)
        forgotten = [(validate_team_name(team), validate_batch_id(old)) for team, old in done]
        cutoff = batch_marks_cutoff(self.options, time.time())
        by_team: dict[str, list[Sequence[Any]]] = {}
        for settlement in settlements:
            by_team.setdefault(settlement[0], []).append(settlement)
        settled = added = 0
        for team, group in by_team.items():  # settle_batch.lua
            state = self._team_state(team)
            if batch_id and batch_id + ":s" in state.batches.marks:
                continue
            for _team, key_id, request_id, cost_usd, tokens, now in group:
                settled += self._settle(state, key_id, request_id, cost_usd, tokens, now)
            if batch_id:
                state.batches.mark(batch_id + ":s", 0, cutoff)
        for team, entries in teams.items():  # usage.lua (no buffer here: every record fits)
            self._usage_teams.add(team)
            state = self._team_state(team)
            taken = state.batches.marks.get(batch_id + ":u", 0) if batch_id else 0
            for entry in entries[taken:]:
                self._add_rollups(state, entry)
                added += 1
            if batch_id and len(entries) > taken:
                state.batches.mark(batch_id + ":u", len(entries), cutoff)
        for team, old in forgotten:
            self._team_state(team).batches.forget(old)
        return Written(settled=settled, added=added)

    def _add_rollups(self, state: _TeamState, entry: UsageEntry) -> None:
        wall = time.time()
        for kind, start, ttl in (("h", entry.hour, self.options.rollup_hour_ttl_s),
                                 ("d", entry.day, self.options.rollup_day_ttl_s)):
            sums = _live(state.rollups.get((kind, start)), wall) or {}
            for name, amount in entry.rollup_fields():
                sums[name] = sums.get(name, 0) + amount
            state.rollups[(kind, start)] = (wall + ttl, sums)

    async def query_usage(self, start: float, end: float, group_by: Sequence[str],
                          team: str | None = None) -> list[dict[str, Any]]:
        fold = UsageFold(group_by)
        hours, days = bucket_plan(start, end, hourly="hour" in fold.group_by)
        teams = sorted(self._usage_teams) if team is None else [team]
        wall = time.time()
        for name in teams:
            rollups = self._team_state(name).rollups
            for kind, starts in (("h", hours), ("d", days)):
                for bucket in starts:
                    sums = _live(rollups.get((kind, bucket)), wall)
                    if sums is not None:
                        fold.add(name, bucket, sums)
        return fold.rows()

    # -- routing state -------------------------------------------------------------------------
    async def set_cooldown(self, endpoint: str, until: float, reason: str, episodes: int = 1) -> None:
        self._cooldowns[endpoint] = (float(until), reason, int(episodes))

    async def clear_cooldown(self, endpoint: str) -> None:
        self._cooldowns.pop(endpoint, None)

    async def record_endpoint_stats(self, endpoint: str, ttft_s: float | None,
                                    output_tps: float | None, ok: bool, now: float) -> None:
        old = self._stats.get(endpoint, EndpointStats())
        self._stats[endpoint] = EndpointStats(
            ttft_s=moving_average(old.ttft_s, ttft_s),
            output_tps=moving_average(old.output_tps, output_tps),
            failures=0 if ok else old.failures + 1, samples=old.samples + 1,
            updated_at=float(now))

    async def record_upstream_ratelimit(self, provider: str, values: Mapping[str, float],
                                        now: float) -> None:
        self._ratelimits[provider] = {**{k: float(v) for k, v in values.items()},
                                      "updated_at": float(now)}

    async def routing_snapshot(self) -> RoutingSnapshot:
        return RoutingSnapshot(cooldowns=dict(self._cooldowns), stats=dict(self._stats),
                               ratelimits={p: dict(v) for p, v in self._ratelimits.items()})

    # -- short-lived cache -----------------------------------------------------------------------
    async def cache_get(self, name: str) -> bytes | None:
        found = self._cache.get(name)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            del self._cache[name]
            return None
        return found[1]

    async def cache_set(self, name: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        now = time.monotonic()
        if len(self._cache) >= MEMORY_MAX_CACHE_ENTRIES:
            # Expired entries go first; if none had, the oldest ones (dicts keep insertion order).
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= MEMORY_MAX_CACHE_ENTRIES:
                del self._cache[next(iter(self._cache))]
        self._cache.pop(name, None)
        self._cache[name] = (now + ttl_s, bytes(value))


    # -- budget state, console sessions, audit log, alerts ---------------------------------------
    async def budget_state(self, team: str, now: float) -> BudgetState:
        state = self._team_state(team)
        day, month = day_id(now), month_id(now)
        spent_day = {f: v for (period, f), v in state.spend.items() if period == "d:" + day}
        spent_month = {f: v for (period, f), v in state.spend.items() if period == "m:" + month}
        return budget_state_from(day, month, spent_day, spent_month, state.reserved)

    async def create_console_session(self, session_id: str, data: Mapping[str, Any],
                                     ttl_s: float) -> None:
        wall = time.time()
        for sid in [s for s, (expiry, _) in self._sessions.items() if expiry <= wall]:
            del self._sessions[sid]
        self._sessions[session_id] = (wall + ttl_s, _copy(dict(data)))

    async def get_console_session(self, session_id: str) -> dict[str, Any] | None:
        found = self._sessions.get(session_id)
        if found is None or found[0] <= time.time():
            return None
        return _copy(found[1])

    async def delete_console_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def append_audit(self, entry: Mapping[str, Any], retention_s: float) -> None:
        wall = time.time()
        self._audit.append((wall, _copy(dict(entry))))
        # Trimmed by the time of the append, as the Redis stream is by its ids.
        while self._audit and self._audit[0][0] < wall - retention_s:
            self._audit.popleft()

    async def audit_entries(self, start: float, end: float, limit: int) -> list[dict[str, Any]]:
        found = [e for _, e in reversed(self._audit) if start <= e["ts"] < end]
        return [_copy(e) for e in found[:max(0, limit)]]

    async def claim_alert(self, team: str, claim: str, ttl_s: float) -> bool:
        wall = time.time()
        expiry = self._alert_claims.get((team, claim))
        if expiry is not None and expiry > wall:
            return False
        self._alert_claims[(team, claim)] = wall + ttl_s
        return True

    async def mark_team_alerts(self, team: str, on: bool) -> None:
        if on:
            self._alert_teams.add(team)
        else:
            self._alert_teams.discard(team)

    async def teams_with_alerts(self) -> set[str]:
        return set(self._alert_teams)

    async def record_alert_delivery(self, entry: Mapping[str, Any], keep: int) -> None:
        self._deliveries.appendleft(_copy(dict(entry)))
        while len(self._deliveries) > keep:
            self._deliveries.pop()

    async def alert_deliveries(self, limit: int) -> list[dict[str, Any]]:
        return [_copy(e) for e in list(self._deliveries)[:max(0, limit)]]


def _header(scopes: list[_Scope], which: str, now: float) -> tuple[Any, Any, Any]:
    """(limit, remaining, reset) of the scope with the fewest remaining."""
    best: tuple[Any, Any, Any] = (None, None, None)
    for s in scopes:
        limit = s.rpm if which == "rpm" else s.tpm
        if limit is None or s.window is None:
            continue
        used = s.window.count if which == "rpm" else s.window.total
        remaining = max(0, limit - used)
        if best[0] is None or remaining < best[1]:
            best = (limit, remaining, s.window.reset(now))
    return best


def _live(found: tuple[float, dict[str, int]] | None, wall: float) -> dict[str, int] | None:
    """A rollup's sums unless it has expired (as its Redis key would have)."""
    return found[1] if found is not None and found[0] > wall else None


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(record))
