"""The Redis backend: every replica shares its state through one Redis or Redis Cluster.

Admission, settlement, lease renewal and usage each run as one Lua script (EVALSHA) in the team's
Cluster slot (see keys.py). Connection and read timeouts are short, and every Redis error or
timeout surfaces as StoreUnavailable within `operation_timeout`: the service decides whether to
fail open or closed, this module never hangs.

Cluster: pass a `redis+cluster://host:port` URL (or `rediss+cluster://`), or `cluster=True` with
a `redis://` URL naming any node.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from gateway.store import keys
from gateway.store.base import (
    BATCH_MARKS_KEPT,
    Admission,
    AdmissionRequest,
    BudgetState,
    Conflict,
    EndpointStats,
    KeyRecord,
    NotFound,
    RoutingSnapshot,
    Store,
    StoreError,
    StoreOptions,
    StoreUnavailable,
    Team,
    Written,
    apply_key_changes,
    apply_team_changes,
    budget_state_from,
    key_from_json,
    key_to_json,
    team_from_json,
    team_to_json,
    batch_marks_cutoff,
    validate_admission,
    validate_batch_id,
    validate_key,
    validate_team,
    validate_team_name,
)
from gateway.store.resp import PipelinedRedis, RespError, encode_arguments, join_command
from gateway.store.rollups import (
    UsageEntry,
    UsageFold,
    bucket_plan,
    group_by_team,
    usage_entry,
)
from policies.health import MEASUREMENT_WEIGHT
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

T = TypeVar("T")

SCRIPTS = ("admit", "settle_batch", "renew", "usage", "endpoint_stats", "cas")
USAGE_GROUP = "records"  # the consumer group of the usage buffers
CAS_ATTEMPTS = 20
PAGE = 500
AUDIT_CLOCK_SLACK_S = 300.0  # an audit entry's ts may run ahead of its stream id by this much


def _script_text(name: str) -> str:
    folder = resources.files("gateway.store")
    body = folder.joinpath(f"{name}.lua").read_text()
    if name == "cas":
        return body
    return folder.joinpath("_prelude.lua").read_text() + "\n" + body


def _key_positions(script_keys: list[str]) -> Callable[[str], int]:
    """A function giving a key's position in `script_keys` (Lua counts from 1), appending keys
    seen for the first time: a batch script names each key once however many entries use it."""
    index = {name: i + 1 for i, name in enumerate(script_keys)}

    def position(name: str) -> int:
        if name not in index:
            script_keys.append(name)
            index[name] = len(script_keys)
        return index[name]
    return position


def _num(x: float) -> str:
    return repr(float(x))


def _opt_float(s: str) -> float | None:
    return None if s == "" else float(s)


def _opt_int(s: str) -> int | None:
    return None if s == "" else int(float(s))


# Error replies of a Redis that is starting, failing over or busy: the store is unavailable for now,
# not refusing the command.
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")


def _transient(error: BaseException) -> bool:
    return str(error).startswith(_TRANSIENT_REPLIES)


# The most requests one admission script call judges: each costs a few microseconds of Redis
# time, and a script holds Redis for all of them.
ADMIT_BATCH_MAX = 64


@dataclass(frozen=True, slots=True)
class _AdmitConstants:
    """What an admission sends that only changes with the team, the key and the day."""
    script_keys: tuple[str, ...]
    shared_args: tuple[Any, ...]  # the script's shared arguments before `now`
    head: bytes                   # EVALSHA, the script, the number of keys, the keys and `shared_args`, in RESP


@dataclass(frozen=True, slots=True)
class _AdmitCall:
    """One call of the admission script: its keys and arguments, and the command in RESP."""
    script_keys: tuple[str, ...]
    args: tuple[Any, ...]
    encoded: bytes


_Waiters = list[tuple[AdmissionRequest, "asyncio.Future[Admission]"]]


@dataclass(slots=True)
class _AdmitLane:
    """One key's admissions: at most one batch in flight, the requests arriving meanwhile waiting
    for its reply, to go together as the next batch."""
    waiting: _Waiters = field(default_factory=list)
    in_flight: bool = False


class RedisStore(Store):
    def __init__(self, url: str, *, options: StoreOptions | None = None,
                 cluster: bool | None = None, socket_timeout: float = 0.5,
                 connect_timeout: float = 0.3, operation_timeout: float = 1.0,
                 max_connections: int = 64) -> None:
        self.options = options or StoreOptions()
        for scheme in ("redis+cluster://", "rediss+cluster://"):
            if url.startswith(scheme):
                url = url.replace("+cluster", "", 1)
                cluster = True if cluster is None else cluster
        self.cluster = bool(cluster)
        self.operation_timeout = operation_timeout
        common: dict[str, Any] = {
            "socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
            "decode_responses": True, "max_connections": max_connections,
            # A retry after a timeout could run a script twice; the service retries instead.
            "retry": Retry(NoBackoff(), 0)}
        # Any: redis-py's annotations cannot tell that decode_responses makes every reply a str.
        self._redis: Any = (
            RedisCluster.from_url(url, **common) if self.cluster
            else Redis.from_url(url, **common))
        self._scripts = {name: self._redis.register_script(_script_text(name))
                         for name in SCRIPTS}
        # One connection per round trip in flight: the cluster client refuses, rather than
        # waits, when a node's pool is exhausted.
        self._gate = asyncio.Semaphore(max_connections)
        self._discovered = not self.cluster
        # The request path's own connection, where the URL allows it (see resp.py).
        self._fast = (PipelinedRedis(url, connect_timeout=connect_timeout, operation_timeout=operation_timeout)
                      if not self.cluster and url.startswith("redis://") else None)
        # The record store drainer's own pipelined connection: a read of hundreds of records never
        # queues ahead of a request's reply, and its commands cost no redis-py packing or parsing.
        self._drain = (PipelinedRedis(url, connect_timeout=connect_timeout, operation_timeout=operation_timeout)
                       if self._fast is not None else None)
        self._discovery = asyncio.Lock()
        self._admit_cache: dict[tuple[str, str, int], _AdmitConstants] = {}
        self._admit_lanes: dict[tuple[str, str], _AdmitLane] = {}  # (team, key id) -> its admissions
        self._admit_tasks: set[asyncio.Task[None]] = set()  # batches waiting for a connection or redis-py

    # -- plumbing -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.operation_timeout):
                await self._discover()
                yield
        except StoreError:
            raise
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}") from exc

    async def _discover(self) -> None:
        """Learn the cluster's slots once, before any traffic: redis-py discovering them lazily
        under a burst of concurrent commands closes connections that are still in use."""
        if self._discovered:
            return
        async with self._discovery:
            if not self._discovered:
                await self._redis.initialize()
                self._discovered = True

    async def _io(self, call: Awaitable[T]) -> T:
        async with self._gate:
            return await call

    async def _script(self, name: str, script_keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._io(self._scripts[name](keys=list(script_keys), args=list(args)))

    async def _hot_script(self, name: str, script_keys: Sequence[str], args: Sequence[Any],
                          encoded: bytes) -> Any:
        """A script on the request path: through the pipelined connection where there is one.
        `encoded`: the same EVALSHA command in RESP, as the caller built it."""
        if self._fast is None:
            async with self._guard():
                return await self._script(name, script_keys, args)
        for attempt in range(2):
            try:
                # Bounded by the connection's own watchdog (operation_timeout): no timer per call.
                return await self._fast.execute_encoded(encoded)
            except (RespError, OSError, TimeoutError) as exc:
                error = _fast_error(name, exc)
                if error is None and not attempt:
                    await self.ping()  # a restarted Redis forgot the scripts
                    continue
                raise error or StoreError(f"redis script {name} failed: {exc}") from exc

    async def _pipeline(self, commands: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Read-only commands in one round trip per node (several pipelines when long)."""
        results: list[Any] = []
        for i in range(0, len(commands), PAGE):
            pipe = self._redis.pipeline(transaction=False)
            for name, args in commands[i:i + PAGE]:
                getattr(pipe, name)(*args)
            results.extend(await self._io(pipe.execute()))
        return results

    async def ping(self) -> None:
        """Check the connection and load the scripts, so that the first admission after
        startup is already a single EVALSHA."""
        async with self._guard():
            await self._io(self._redis.ping())
            for script in self._scripts.values():
                await self._io(self._redis.script_load(script.script))

    async def close(self) -> None:
        for connection in (self._fast, self._drain):
            if connection is not None:
                connection.close()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    # -- teams ---------------------------------------------------------------------------------
    async def create_team(self, team: Team) -> Team:
        team = validate_team(team)
        tk = keys.TeamKeys(team.name)
        async with self._guard():
            if not await self._io(self._redis.set(tk.record, orjson.dumps(team_to_json(team)),
                                                  nx=True)):
                raise Conflict(f"team {team.name!r} already exists")
            await self._io(self._redis.sadd(keys.TEAMS, team.name))
        return team

    async def get_team(self, name: str) -> Team | None:
        async with self._guard():
            raw = await self._io(self._redis.get(keys.TeamKeys(name).record))
        return None if raw is None else team_from_json(orjson.loads(raw))

    async def list_teams(self) -> list[Team]:
        async with self._guard():
            names = sorted(await self._io(self._redis.smembers(keys.TEAMS)))
            raws = await self._pipeline([("get", (keys.TeamKeys(n).record,)) for n in names])
        return [team_from_json(orjson.loads(raw)) for raw in raws if raw is not None]

    async def _compare_and_set(self, record_key: str, change: Any, missing: str) -> Any:
        """Read a record, change it in Python, write it back unless someone else wrote first."""
        for _ in range(CAS_ATTEMPTS):
            raw = await self._io(self._redis.get(record_key))
            if raw is None:
                raise NotFound(missing)
            record, new_json = change(orjson.loads(raw))
            if await self._script("cas", [record_key], [raw, new_json]):
                return record
        raise StoreUnavailable(f"{record_key} kept changing under concurrent writers")

    async def update_team(self, name: str, changes: Mapping[str, Any]) -> Team:
        def change(data: dict[str, Any]) -> tuple[Team, bytes]:
            team = apply_team_changes(team_from_json(data), changes)
            return team, orjson.dumps(team_to_json(team))

        async with self._guard():
            return await self._compare_and_set(keys.TeamKeys(name).record, change,
                                               f"no team {name!r}")

    async def delete_team(self, name: str) -> None:
        tk = keys.TeamKeys(name)
        async with self._guard():
            if not await self._io(self._redis.exists(tk.record)):
                raise NotFound(f"no team {name!r}")
            for key_id in await self._io(self._redis.smembers(tk.key_ids)):
                with contextlib.suppress(NotFound):
                    await self._compare_and_set(tk.key_record(key_id), _revoked, key_id)
            # Admission also refuses once the team record is gone, whatever a key says.
            await self._io(self._redis.delete(tk.record))
            await self._io(self._redis.srem(keys.TEAMS, name))

    # -- keys ----------------------------------------------------------------------------------
    async def create_key(self, key: KeyRecord) -> None:
        key = validate_key(key)
        tk = keys.TeamKeys(key.team)
        async with self._guard():
            if not await self._io(self._redis.exists(tk.record)):
                raise NotFound(f"no team {key.team!r}")
            if not await self._io(self._redis.set(keys.key_by_id(key.id), key.team, nx=True)):
                raise Conflict(f"key id {key.id!r} already exists")
            lookup = orjson.dumps({"team": key.team, "id": key.id})
            if not await self._io(self._redis.set(keys.key_by_hash(key.secret_hash), lookup,
                                                  nx=True)):
                await self._io(self._redis.delete(keys.key_by_id(key.id)))
                raise Conflict("a key with this secret already exists")
            await self._io(self._redis.set(tk.key_record(key.id), orjson.dumps(key_to_json(key))))
            await self._io(self._redis.sadd(tk.key_ids, key.id))

    async def _read_key(self, team: str, key_id: str) -> KeyRecord | None:
        raw = await self._io(self._redis.get(keys.TeamKeys(team).key_record(key_id)))
        return None if raw is None else key_from_json(orjson.loads(raw))

    async def find_key(self, secret_hash: str) -> KeyRecord | None:
        async with self._guard():
            raw = await self._io(self._redis.get(keys.key_by_hash(secret_hash)))
            if raw is None:
                return None
            lookup = orjson.loads(raw)
            return await self._read_key(lookup["team"], lookup["id"])

    async def locate_key(self, secret_hash: str) -> tuple[str, str] | None:
        async with self._guard():
            raw = await self._io(self._redis.get(keys.key_by_hash(secret_hash)))
        if raw is None:
            return None
        lookup = orjson.loads(raw)
        return lookup["team"], lookup["id"]

    async def key_and_team(self, team: str, key_id: str) -> tuple[KeyRecord | None, Team | None]:
        tk = keys.TeamKeys(team)
        async with self._guard():
            team_raw, key_raw = await self._io(self._redis.mget(tk.record, tk.key_record(key_id)))
        return (None if key_raw is None else key_from_json(orjson.loads(key_raw)),
                None if team_raw is None else team_from_json(orjson.loads(team_raw)))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        async with self._guard():
            team = await self._io(self._redis.get(keys.key_by_id(key_id)))
            return None if team is None else await self._read_key(team, key_id)

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        async with self._guard():
            teams = (sorted(await self._io(self._redis.smembers(keys.TEAMS)))
                     if team is None else [team])
            id_sets = await self._pipeline([("smembers", (keys.TeamKeys(t).key_ids,))
                                            for t in teams])
            names = [keys.TeamKeys(t).key_record(i) for t, ids in zip(teams, id_sets)
                     for i in ids]
            raws = await self._pipeline([("get", (n,)) for n in names])
        records = [key_from_json(orjson.loads(raw)) for raw in raws if raw is not None]
        return sorted(records, key=lambda k: (k.created_at, k.id))

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord:
        def change(data: dict[str, Any]) -> tuple[KeyRecord, bytes]:
            key = apply_key_changes(key_from_json(data), changes)
            return key, orjson.dumps(key_to_json(key))

        async with self._guard():
            team = await self._io(self._redis.get(keys.key_by_id(key_id)))
            if team is None:
                raise NotFound(f"no key {key_id!r}")
            return await self._compare_and_set(keys.TeamKeys(team).key_record(key_id), change,
                                               f"no key {key_id!r}")

    async def revoke_key(self, key_id: str) -> None:
        await self.update_key(key_id, {"revoked": True})

    # -- admission -----------------------------------------------------------------------------
    def _lease_key_ttl(self) -> int:
        return math.ceil(self.options.lease_ttl_s * 2)

    def _admit_constants(self, team: str, key_id: str, now: float) -> _AdmitConstants:
        """The admission script's keys and its arguments that only change with the day: the same
        for every batch of a key on a given day, so built (and encoded) once."""
        cache_key = (team, key_id, int(now // 86400))
        found = self._admit_cache.get(cache_key)
        if found is None:
            if len(self._admit_cache) > 10_000:
                self._admit_cache.clear()
            tk = keys.TeamKeys(team)
            script_keys = (
                tk.record, tk.key_record(key_id), tk.window, tk.window_tokens,
                tk.key_window(key_id), tk.key_window_tokens(key_id), tk.leases,
                tk.key_concurrency, tk.reservations, tk.reserved, tk.spend_day(day_id(now)),
                tk.spend_month(month_id(now)), tk.abandoned)
            shared_args = (key_id, _num(next_day_start(now)), _num(next_month_start(now)),
                           _num(self.options.lease_ttl_s), _num(WINDOW_S), self._lease_key_ttl(),
                           _num(CONCURRENCY_RETRY_S), ABANDONED_KEEP_S)
            head = encode_arguments(("EVALSHA", self._scripts["admit"].sha, len(script_keys), *script_keys,
                                     *shared_args))
            found = self._admit_cache[cache_key] = _AdmitConstants(script_keys, shared_args, head)
        return found

    async def admit(self, req: AdmissionRequest) -> Admission:
        """Admissions of one key go in batches (admit.lua): while one batch is in flight, the
        requests arriving wait, and go together as the next batch when its reply arrives. A
        request arriving at an idle key is sent at once, alone."""
        validate_admission(req)  # a script cannot roll back: nothing reaches it that could fail it
        lane_id = (req.team, req.key_id)
        lane = self._admit_lanes.get(lane_id)
        if lane is None:
            lane = self._admit_lanes[lane_id] = _AdmitLane()
        waiter: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        lane.waiting.append((req, waiter))
        if not lane.in_flight:
            self._send_admissions(lane_id, lane)
        # A caller cancelled before its batch leaves cancels `waiter`, and the batch leaves it out.
        return await waiter

    def _send_admissions(self, lane_id: tuple[str, str], lane: _AdmitLane) -> None:
        """Send the lane's next batch, the waiters still waiting in the order they came; forget
        the lane when nobody waits. On an open pipelined connection the batch is written at once
        and its reply taken in a callback; otherwise a task opens the connection, or goes through
        redis-py, and takes it."""
        while True:
            batch: _Waiters = []
            while lane.waiting and len(batch) < ADMIT_BATCH_MAX:
                room = ADMIT_BATCH_MAX - len(batch)
                taken, lane.waiting = lane.waiting[:room], lane.waiting[room:]
                batch += [(req, waiter) for req, waiter in taken if not waiter.done()]
            if not batch:
                lane.in_flight = False
                del self._admit_lanes[lane_id]
                return
            try:
                call = self._admit_call([req for req, _ in batch])
                break
            except Exception as exc:  # nothing was sent: this batch fails, the next one goes
                _fail_waiters(batch, exc)
        lane.in_flight = True
        answered = functools.partial(self._admissions_answered, lane_id, lane, batch, call)
        if self._fast is None or not self._fast.send_encoded_now(call.encoded, answered):
            self._admit_in_task(lane_id, lane, batch, call)

    def _admit_in_task(self, lane_id: tuple[str, str], lane: _AdmitLane, batch: _Waiters, call: _AdmitCall) -> None:
        task = asyncio.create_task(self._admit_through_task(lane_id, lane, batch, call))
        self._admit_tasks.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._admit_tasks.discard)

    def _admissions_answered(self, lane_id: tuple[str, str], lane: _AdmitLane, batch: _Waiters,
                             call: _AdmitCall, reply: Any, error: Exception | None) -> None:
        """The reply to a batch written on the pipelined connection, as soon as it is read."""
        if error is None:
            self._hand_out(lane_id, lane, batch, reply)
            return
        store_error = _fast_error("admit", error)
        if store_error is None:  # NOSCRIPT: the task's call loads the scripts and sends the batch again
            self._admit_in_task(lane_id, lane, batch, call)
            return
        store_error.__cause__ = error
        self._batch_failed(lane_id, lane, batch, store_error)

    async def _admit_through_task(self, lane_id: tuple[str, str], lane: _AdmitLane, batch: _Waiters,
                                  call: _AdmitCall) -> None:
        try:
            replies = await self._hot_script("admit", call.script_keys, call.args, call.encoded)
        except asyncio.CancelledError:  # the loop is going away: so are the lane's callers
            for _, waiter in batch + lane.waiting:
                waiter.cancel()
            lane.waiting, lane.in_flight = [], False
            self._admit_lanes.pop(lane_id, None)
            raise
        except Exception as exc:
            self._batch_failed(lane_id, lane, batch, exc)
        else:
            self._hand_out(lane_id, lane, batch, replies)

    def _hand_out(self, lane_id: tuple[str, str], lane: _AdmitLane, batch: _Waiters, replies: Any) -> None:
        """Each waiter its verdict, then the next batch."""
        try:
            if not isinstance(replies, list) or len(replies) != len(batch):
                raise StoreError(f"redis script admit answered {replies!r} to {len(batch)} requests")
            for (_, waiter), reply in zip(batch, replies):
                if waiter.done():  # its caller was cancelled while the batch was in flight
                    continue
                if isinstance(reply, str):  # the script refused this request's own arguments
                    waiter.set_exception(StoreError(f"redis script admit failed: {reply}"))
                else:
                    waiter.set_result(_admission(reply))
        except Exception as exc:
            _fail_waiters(batch, exc)
        finally:
            self._send_admissions(lane_id, lane)

    def _batch_failed(self, lane_id: tuple[str, str], lane: _AdmitLane, batch: _Waiters,
                      error: Exception) -> None:
        """A batch's error reaches each of its waiters; when the store is unavailable, the requests
        waiting behind the batch would meet the same store: they fail with it, as they would have
        on the connection the batch found broken."""
        if isinstance(error, StoreUnavailable):
            batch, lane.waiting = batch + lane.waiting, []
        _fail_waiters(batch, error)
        self._send_admissions(lane_id, lane)

    def _admit_call(self, batch: Sequence[AdmissionRequest]) -> _AdmitCall:
        """One call of the admission script for requests of one key, judged at the newest `now`
        among them: a request waiting behind a batch in flight is judged when it is sent, not
        when it came (its Ticket.admitted_at, the `now` it asked with, is then a little earlier
        than its lease's start, which renews it a little early)."""
        first = batch[0]
        now = max(req.now for req in batch)
        constants = self._admit_constants(first.team, first.key_id, now)
        own: list[Any] = [_num(now)]
        for req in batch:
            own += (req.request_id, int(req.tokens), usd_to_nanos(req.cost_usd), "\n".join(req.all_models),
                    1 if req.rate_only else 0)
        args = (*constants.shared_args, *own)
        # The command as EVALSHA sends it, the part that stays the same for the day encoded once.
        encoded = join_command(3 + len(constants.script_keys) + len(args),
                               (constants.head, encode_arguments(own)))
        return _AdmitCall(constants.script_keys, args, encoded)

    async def abandoned(self, team: str) -> dict[str, tuple[float, str]]:
        async with self._guard():
            raw = await self._io(self._redis.hgetall(keys.TeamKeys(team).abandoned))
        found = {}
        for rid, value in raw.items():
            nanos, rest = (value.decode() if isinstance(value, bytes) else value).split(":", 1)
            key_id = rest.rsplit(":", 1)[0]
            found[rid.decode() if isinstance(rid, bytes) else rid] = (nanos_to_usd(int(nanos)), key_id)
        return found

    async def renew(self, team: str, request_id: str, now: float) -> bool:
        tk = keys.TeamKeys(team)
        async with self._guard():
            done = await self._script(
                "renew", [tk.leases, tk.key_concurrency, tk.reservations, tk.reserved],
                [request_id, _num(now), _num(self.options.lease_ttl_s), self._lease_key_ttl()])
        return int(done) == 1

    def _settle_batch_call(self, team: str, settlements: Sequence[Sequence[Any]],
                           batch: str, cutoff: str) -> tuple[list[str], list[Any]]:
        tk = keys.TeamKeys(team)
        script_keys = [tk.window_tokens, tk.leases, tk.key_concurrency, tk.reservations, tk.reserved,
                       tk.abandoned, tk.batches]
        position = _key_positions(script_keys)

        entries = []
        per_key_day: dict[tuple[str, int], tuple[float, float, int, int, int]] = {}
        for _team, key_id, request_id, cost_usd, tokens, now in settlements:
            facts = per_key_day.get((key_id, int(now // 86400)))
            if facts is None:
                facts = per_key_day[(key_id, int(now // 86400))] = (
                    next_day_start(now), next_month_start(now), position(tk.key_window_tokens(key_id)),
                    position(tk.spend_day(day_id(now))), position(tk.spend_month(month_id(now))))
            next_day, next_month, window_pos, day_pos, month_pos = facts
            # Spend keys outlive their period by a day, measured on the caller's clock.
            entries.append([key_id, request_id, usd_to_nanos(cost_usd), int(tokens),
                            math.ceil(next_day - now + 86400), math.ceil(next_month - now + 86400),
                            window_pos, day_pos, month_pos])
        args = [self._lease_key_ttl(), batch, cutoff, BATCH_MARKS_KEPT, orjson.dumps(entries).decode()]
        return script_keys, args

    async def write_batch(self, settlements: Sequence[Sequence[Any]], records: Sequence[Mapping[str, Any]],
                          batch: str | None = None, done: Sequence[tuple[str, str]] = ()) -> Written:
        """One pipelined round trip for a whole batch: one script call per team for the
        settlements and one per team for the records, and the marks of `done` batches removed;
        on a cluster, one pipeline per node, sent to the nodes together."""
        batch_id = validate_batch_id(batch)
        cutoff = batch_marks_cutoff(self.options, time.time())
        by_team: dict[str, list[Sequence[Any]]] = {}
        for settlement in settlements:
            by_team.setdefault(settlement[0], []).append(settlement)
        calls = [("settle_batch", *self._settle_batch_call(team, group, batch_id, cutoff))
                 for team, group in by_team.items()]
        teams = group_by_team(usage_entry(r) for r in records)
        calls += [("usage", *self._usage_call(team, group, batch_id, cutoff)) for team, group in teams.items()]
        commands: list[list[Any]] = [["EVALSHA", self._scripts[name].sha, len(script_keys), *script_keys, *args]
                                     for name, script_keys, args in calls]
        if teams:
            commands.append(["SADD", keys.USAGE_TEAMS, *teams])
        # A batch's marks, '<id>:s' and '<id>:u:<n>', are the members from '<id>:' to '<id>;'.
        commands += [["ZREMRANGEBYLEX", keys.TeamKeys(validate_team_name(team)).batches, f"[{old}:", f"({old};"]
                     for team, old in dict.fromkeys((t, validate_batch_id(b)) for t, b in done)]
        if not commands:
            return Written()
        replies = await self._batch(commands)
        usage_replies = replies[len(by_team):len(by_team) + len(teams)]
        return Written(settled=sum(int(r) for r in replies[:len(by_team)]),
                       added=sum(int(r[0]) for r in usage_replies), left=_not_taken(teams, usage_replies))

    async def _batch(self, commands: list[list[Any]]) -> list[Any]:
        """Idempotent script calls in one pipeline (per node on a cluster), loading the scripts
        and going again when a restarted Redis has forgotten them."""
        for attempt in range(2):
            try:
                if self._fast is not None:
                    replies = await self._fast.pipeline(commands)  # bounded by its watchdog
                else:
                    async with asyncio.timeout(self.operation_timeout):
                        await self._discover()
                        pipe = self._redis.pipeline(transaction=False) if not self.cluster else self._redis.pipeline()
                        for command in commands:
                            pipe.execute_command(*command)
                        replies = await self._io(pipe.execute(raise_on_error=False))
            except (OSError, TimeoutError, RedisError, RedisClusterException) as exc:
                raise StoreUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}") from exc
            errors = [r for r in replies if isinstance(r, Exception)]
            if not errors:
                return replies
            if any(isinstance(e, (OSError, ConnectionError)) or _transient(e) for e in errors):
                raise StoreUnavailable(f"redis unavailable: {errors[0]}")
            # A Redis that restarted has forgotten the scripts: load them and go again
            # (settlements and records are idempotent).
            if attempt or not all(isinstance(e, NoScriptError) or "NOSCRIPT" in str(e) for e in errors):
                raise StoreError(f"redis batch failed: {errors[0]}")
            await self.ping()
        raise AssertionError("unreachable")

    # -- usage ---------------------------------------------------------------------------------
    def _usage_call(self, team: str, batch: list[UsageEntry], batch_id: str,
                    cutoff: str) -> tuple[list[str], list[Any]]:
        tk = keys.TeamKeys(team)
        script_keys = [tk.usage, tk.batches]
        position = _key_positions(script_keys)

        o = self.options
        args: list[Any] = [USAGE_GROUP, o.usage_buffer_max_records, math.ceil(o.rollup_hour_ttl_s),
                           math.ceil(o.rollup_day_ttl_s), batch_id, cutoff, BATCH_MARKS_KEPT]
        buckets: dict[int, tuple[int, int]] = {}
        for entry in batch:
            hour = int(entry.ts // 3600)
            positions = buckets.get(hour)
            if positions is None:
                positions = buckets[hour] = (position(tk.rollup_hour(entry.hour)), position(tk.rollup_day(entry.day)))
            fields = entry.rollup_args()
            args += (entry.record_json, positions[0], positions[1], len(fields) // 2, *fields)
        return script_keys, args

    async def _usage_teams(self, team: str | None) -> list[str]:
        if team is not None:
            return [team]
        return sorted(await self._io(self._redis.smembers(keys.USAGE_TEAMS)))

    async def query_usage(self, start: float, end: float, group_by: Sequence[str],
                          team: str | None = None) -> list[dict[str, Any]]:
        fold = UsageFold(group_by)
        hours, days = bucket_plan(start, end, hourly="hour" in fold.group_by)
        async with self._guard():
            teams = await self._usage_teams(team)
            wanted = [(t, b, keys.TeamKeys(t).rollup_hour(b)) for t in teams for b in hours]
            wanted += [(t, b, keys.TeamKeys(t).rollup_day(b)) for t in teams for b in days]
            rollups = await self._pipeline([("hgetall", (name,)) for _, _, name in wanted])
        for (t, bucket, _), rollup in zip(wanted, rollups):
            fold.add(t, bucket, rollup)
        return fold.rows()

    # -- the usage buffer, read by the record store's drainers ------------------------------------
    async def buffer_teams(self) -> list[str]:
        async with self._guard():
            return await self._usage_teams(None)

    async def buffer_read(self, teams: Sequence[str], consumer: str, count: int, *,
                          claim_idle_ms: int | None = None, own_pending: bool = False) -> list[tuple[str, str, bytes]]:
        """Up to `count` records per team's buffer for this consumer: new ones; with `own_pending`
        the ones this consumer was already given and never acknowledged (a read whose reply was
        lost); or with `claim_idle_ms` the ones another consumer was given that long ago and never
        acknowledged (a replica that died holding them). Returns (team, entry id, record json)."""
        streams = [keys.TeamKeys(team).usage for team in teams]
        if self._drain is not None:
            replies = await self._buffer_read_raw(streams, consumer, count, claim_idle_ms, own_pending)
        else:
            replies = await self._buffer_read_redis_py(streams, consumer, count, claim_idle_ms, own_pending)
        found: list[tuple[str, str, bytes]] = []
        for team, reply in zip(teams, replies):
            if isinstance(reply, Exception):
                if "NOGROUP" in str(reply):
                    continue
                raise StoreUnavailable(f"redis unavailable: {reply}") if _transient(reply) else \
                    StoreError(f"reading the usage buffer failed: {reply}")
            for entry_id, fields in _stream_entries(reply, claim_idle_ms is not None):
                record = _record_field(fields)
                if record is not None:
                    found.append((team, entry_id, record))
        return found

    async def _buffer_read_raw(self, streams: list[str], consumer: str, count: int, claim_idle_ms: int | None,
                               own_pending: bool) -> list[Any]:
        if claim_idle_ms is None:
            commands = [["XREADGROUP", "GROUP", USAGE_GROUP, consumer, "COUNT", count, "STREAMS", stream,
                         "0" if own_pending else ">"] for stream in streams]
        else:
            commands = [["XAUTOCLAIM", stream, USAGE_GROUP, consumer, claim_idle_ms, "0-0", "COUNT", count]
                        for stream in streams]
        replies = await self._drain_pipeline(commands)
        missing = [s for s, r in zip(streams, replies) if isinstance(r, RespError) and "NOGROUP" in str(r)]
        if missing:  # a buffer from before consumer groups, or one whose group was lost: read it from its start
            await self._drain_pipeline([["XGROUP", "CREATE", s, USAGE_GROUP, "0", "MKSTREAM"] for s in missing])
        return replies

    async def _buffer_read_redis_py(self, streams: list[str], consumer: str, count: int,
                                    claim_idle_ms: int | None, own_pending: bool) -> list[Any]:
        commands: list[tuple[str, tuple[Any, ...]]] = []
        for stream in streams:
            if claim_idle_ms is None:
                commands.append(("xreadgroup", (USAGE_GROUP, consumer, {stream: "0" if own_pending else ">"}, count)))
            else:
                commands.append(("xautoclaim", (stream, USAGE_GROUP, consumer, claim_idle_ms, "0-0", count)))
        async with self._guard():
            replies = await self._raw_pipeline(commands)
            missing = [s for s, r in zip(streams, replies) if isinstance(r, Exception) and "NOGROUP" in str(r)]
            if missing:
                await self._raw_pipeline([("xgroup_create", (s, USAGE_GROUP, "0", True)) for s in missing])
        return replies

    async def buffer_ack(self, done: Sequence[tuple[str, str]]) -> None:
        """Acknowledge and delete entries whose records the database has committed."""
        by_team: dict[str, list[str]] = {}
        for team, entry_id in done:
            by_team.setdefault(team, []).append(entry_id)
        if self._drain is not None:
            commands: list[list[Any]] = []
            for team, ids in by_team.items():
                stream = keys.TeamKeys(team).usage
                commands += [["XACK", stream, USAGE_GROUP, *ids], ["XDEL", stream, *ids]]
            replies = await self._drain_pipeline(commands)
        else:
            calls: list[tuple[str, tuple[Any, ...]]] = []
            for team, ids in by_team.items():
                stream = keys.TeamKeys(team).usage
                calls += [("xack", (stream, USAGE_GROUP, *ids)), ("xdel", (stream, *ids))]
            async with self._guard():
                replies = await self._raw_pipeline(calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"redis unavailable: {reply}")

    async def _drain_pipeline(self, commands: list[list[Any]]) -> list[Any]:
        """Commands in one round trip on the drainer's connection; error replies are returned,
        a connection that fails or does not answer within `operation_timeout` is StoreUnavailable."""
        assert self._drain is not None
        try:
            replies = await self._drain.pipeline(commands)  # bounded by its watchdog
        except (OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}") from exc
        for reply in replies:
            if isinstance(reply, (OSError, TimeoutError)):
                raise StoreUnavailable(f"redis unavailable: {type(reply).__name__}: {reply}")
        return replies

    async def buffer_forget_consumers(self, teams: Sequence[str], idle_ms: int) -> int:
        """Remove consumers (replicas that are gone) idle this long and holding nothing: each
        process reads under a name of its own, so every restart would leave one behind. A live
        consumer removed this way comes back with its next read; one holding entries stays."""
        async with self._guard():
            replies = await self._raw_pipeline([("xinfo_consumers", (keys.TeamKeys(t).usage, USAGE_GROUP))
                                                for t in teams])
            gone = [(keys.TeamKeys(t).usage, c["name"]) for t, reply in zip(teams, replies)
                    if not isinstance(reply, Exception) for c in reply
                    if int(c.get("pending", 0)) == 0 and int(c.get("idle", 0)) >= idle_ms]
            if gone:
                await self._raw_pipeline([("xgroup_delconsumer", (stream, USAGE_GROUP, name)) for stream, name in gone])
        return len(gone)

    async def buffer_length(self, teams: Sequence[str]) -> int:
        """Records in the buffers not yet committed to the database (read or not)."""
        async with self._guard():
            replies = await self._raw_pipeline([("xlen", (keys.TeamKeys(t).usage,)) for t in teams])
        return sum(r for r in replies if isinstance(r, int))

    async def _raw_pipeline(self, commands: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False) if not self.cluster else self._redis.pipeline()
        for name, args in commands:
            getattr(pipe, name)(*args)
        return await self._io(pipe.execute(raise_on_error=False))

    # -- routing state -------------------------------------------------------------------------
    async def set_cooldown(self, endpoint: str, until: float, reason: str, episodes: int = 1) -> None:
        async with self._guard():
            await self._io(self._redis.hset(keys.COOLDOWNS, endpoint,
                                            orjson.dumps([float(until), reason, int(episodes)])))

    async def clear_cooldown(self, endpoint: str) -> None:
        async with self._guard():
            await self._io(self._redis.hdel(keys.COOLDOWNS, endpoint))

    async def record_endpoint_stats(self, endpoint: str, ttft_s: float | None,
                                    output_tps: float | None, ok: bool, now: float) -> None:
        args = [endpoint, "" if ttft_s is None else _num(ttft_s),
                "" if output_tps is None else _num(output_tps), 1 if ok else 0, _num(now),
                _num(MEASUREMENT_WEIGHT)]
        async with self._guard():
            await self._script("endpoint_stats", [keys.ENDPOINT_STATS], args)

    async def record_upstream_ratelimit(self, provider: str, values: Mapping[str, float],
                                        now: float) -> None:
        data = {**{k: float(v) for k, v in values.items()}, "updated_at": float(now)}
        async with self._guard():
            await self._io(self._redis.hset(keys.RATELIMITS, provider, orjson.dumps(data)))

    async def routing_snapshot(self) -> RoutingSnapshot:
        async with self._guard():
            cooldowns, stats, ratelimits = await self._pipeline([
                ("hgetall", (keys.COOLDOWNS,)), ("hgetall", (keys.ENDPOINT_STATS,)),
                ("hgetall", (keys.RATELIMITS,))])
        return RoutingSnapshot(
            cooldowns={e: _cooldown(raw) for e, raw in cooldowns.items()},
            stats={e: _endpoint_stats(raw) for e, raw in stats.items()},
            ratelimits={p: orjson.loads(raw) for p, raw in ratelimits.items()})

    # -- short-lived cache -----------------------------------------------------------------------
    async def cache_get(self, name: str) -> bytes | None:
        async with self._guard():
            value = await self._io(self._redis.get(keys.cache(name)))
        return None if value is None else value.encode()

    async def cache_set(self, name: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        async with self._guard():
            await self._io(self._redis.set(keys.cache(name), value, px=max(1, int(ttl_s * 1000))))

    # -- budget state, console sessions, audit log, alerts ---------------------------------------
    async def budget_state(self, team: str, now: float) -> BudgetState:
        tk = keys.TeamKeys(team)
        day, month = day_id(now), month_id(now)
        async with self._guard():
            spent_day, spent_month, reserved = await self._pipeline([
                ("hgetall", (tk.spend_day(day),)), ("hgetall", (tk.spend_month(month),)),
                ("hgetall", (tk.reserved,))])
        return budget_state_from(day, month, spent_day, spent_month, reserved)

    async def create_console_session(self, session_id: str, data: Mapping[str, Any],
                                     ttl_s: float) -> None:
        async with self._guard():
            await self._io(self._redis.set(keys.console_session(session_id), orjson.dumps(dict(data)),
                                           px=max(1, int(ttl_s * 1000))))

    async def get_console_session(self, session_id: str) -> dict[str, Any] | None:
        async with self._guard():
            raw = await self._io(self._redis.get(keys.console_session(session_id)))
        return None if raw is None else orjson.loads(raw)

    async def delete_console_session(self, session_id: str) -> None:
        async with self._guard():
            await self._io(self._redis.delete(keys.console_session(session_id)))

    async def append_audit(self, entry: Mapping[str, Any], retention_s: float) -> None:
        oldest_ms = max(0, int((time.time() - retention_s) * 1000))
        async with self._guard():
            # The stream id is the append's millisecond: trimming by MINID drops what is too old.
            await self._io(self._redis.xadd(keys.AUDIT, {"e": orjson.dumps(dict(entry))},
                                            minid=oldest_ms, approximate=False))

    async def audit_entries(self, start: float, end: float, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        found: list[dict[str, Any]] = []
        highest = "+"
        lowest = str(max(0, int((start - AUDIT_CLOCK_SLACK_S) * 1000)))
        async with self._guard():
            while len(found) < limit:
                page = await self._io(self._redis.xrevrange(keys.AUDIT, max=highest, min=lowest, count=PAGE))
                for _, fields in page:
                    entry = orjson.loads(fields["e"])
                    if start <= entry["ts"] < end:
                        found.append(entry)
                if len(page) < PAGE:
                    break
                highest = f"({page[-1][0]}"
        return found[:limit]

    async def claim_alert(self, team: str, claim: str, ttl_s: float) -> bool:
        async with self._guard():
            return bool(await self._io(self._redis.set(keys.TeamKeys(team).alert_claim(claim), "1", nx=True,
                                                       ex=max(1, math.ceil(ttl_s)))))

    async def mark_team_alerts(self, team: str, on: bool) -> None:
        async with self._guard():
            if on:
                await self._io(self._redis.sadd(keys.ALERT_TEAMS, team))
            else:
                await self._io(self._redis.srem(keys.ALERT_TEAMS, team))

    async def teams_with_alerts(self) -> set[str]:
        async with self._guard():
            return set(await self._io(self._redis.smembers(keys.ALERT_TEAMS)))

    async def record_alert_delivery(self, entry: Mapping[str, Any], keep: int) -> None:
        async with self._guard():
            pipe = self._redis.pipeline(transaction=False)
            pipe.lpush(keys.ALERT_DELIVERIES, orjson.dumps(dict(entry)))
            pipe.ltrim(keys.ALERT_DELIVERIES, 0, max(0, keep - 1))
            await self._io(pipe.execute())

    async def alert_deliveries(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        async with self._guard():
            raws = await self._io(self._redis.lrange(keys.ALERT_DELIVERIES, 0, limit - 1))
        return [orjson.loads(raw) for raw in raws]


def _admission(out: Sequence[Any]) -> Admission:
    """A verdict of admit.lua."""
    return Admission(
        admitted=int(out[0]) == 1, reason=out[1] or None, retry_after=_opt_float(out[2]),
        requests_limit=_opt_int(out[3]), requests_remaining=_opt_int(out[4]),
        requests_reset=_opt_float(out[5]), tokens_limit=_opt_int(out[6]),
        tokens_remaining=_opt_int(out[7]), tokens_reset=_opt_float(out[8]),
        budget_left_usd=_budget_left(out[9]), budgeted=int(out[10]) == 1)


def _fail_waiters(waiters: Sequence[tuple[Any, asyncio.Future[Any]]], error: Exception) -> None:
    """The error of a batch, to each of its waiters still waiting: a copy each (of the same class,
    caused by the same error), since one exception raised in many tasks would gather all their
    tracebacks."""
    for _, waiter in waiters:
        if not waiter.done():
            waiter.set_exception(_copy_error(error))


def _copy_error(error: Exception) -> Exception:
    try:
        copy = type(error)(*error.args)
    except Exception:  # a class that cannot be remade from its arguments: the error itself
        return error
    copy.__cause__ = error.__cause__
    return copy


def _fast_error(name: str, exc: BaseException) -> StoreError | None:
    """What a failed call of a script on the pipelined connection is to its callers; None for
    NOSCRIPT: a restarted Redis forgot the scripts, which loading them again cures."""
    if isinstance(exc, RespError):
        if _transient(exc):
            return StoreUnavailable(f"redis unavailable: {exc}")
        if str(exc).startswith("NOSCRIPT"):
            return None
        return StoreError(f"redis script {name} failed: {exc}")
    return StoreUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}")


def _budget_left(raw: Any) -> float | None:
    """A refusing budget's remainder: nano-USD from the script, never below zero."""
    left = _opt_float(raw)
    return None if left is None else nanos_to_usd(max(0, int(left)))


def _revoked(data: dict[str, Any]) -> tuple[KeyRecord, bytes]:
    key = key_from_json({**data, "revoked": True})
    return key, orjson.dumps(key_to_json(key))


def _cooldown(raw: str) -> tuple[float, str, int]:
    until, reason, *episodes = orjson.loads(raw)  # written without the episode before it was kept
    return float(until), reason, int(episodes[0]) if episodes else 1


def _endpoint_stats(raw: str) -> EndpointStats:
    data = orjson.loads(raw)

    def number(name: str) -> float | None:
        return None if data.get(name) is None else float(data[name])

    return EndpointStats(ttft_s=number("ttft_s"), output_tps=number("output_tps"),
                         failures=int(number("failures") or 0),
                         samples=int(number("samples") or 0), updated_at=number("updated_at"))


def _not_taken(teams: Mapping[str, list[UsageEntry]], replies: Sequence[Any]) -> list[Mapping[str, Any]]:
    """The records each team's usage script did not take (its buffer was full), in order."""
    left: list[Mapping[str, Any]] = []
    for batch, reply in zip(teams.values(), replies):
        taken = int(reply[1])
        left += [entry.record for entry in batch[taken:]]
    return left


def _stream_entries(reply: Any, claimed: bool) -> list[tuple[str, Any]]:
    """Entries of an XREADGROUP reply ([[stream, entries]]) or of an XAUTOCLAIM one
    ([next id, entries, deleted ids]); an entry's fields are a mapping (redis-py) or the flat
    list Redis sent, None for an entry deleted meanwhile."""
    if not reply:
        return []
    if claimed:
        return list(reply[1])
    return [e for _, entries in reply for e in entries]


def _record_field(fields: Any) -> str | None:
    """The record of a buffer entry: its field `r` (the only one the usage script writes)."""
    if not fields:
        return None
    if type(fields) is list:
        if len(fields) == 2 and fields[0] == "r":
            return fields[1]
        fields = dict(zip(fields[::2], fields[1::2]))
    return fields.get("r")
