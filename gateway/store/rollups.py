"""Usage records and their rollups, as data: what both backends store and how a query folds it.

A record is stored once, as JSON, and adds to two rollups of its team: the UTC hour and the UTC
day of its `ts`. A rollup maps `<metric>|<dims>` to an integer sum, where dims is the JSON array
[model, provider, user] and cost is in nano-dollars. A query reads whole buckets: the hours that
overlap the range, with whole days read from the daily rollups when the hour is not asked for.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.store.base import Invalid, validate_team_name
from policies.limits import day_start, hour_start, nanos_to_usd, usd_to_nanos

# (output name, record field, rollup code); cost is summed in nano-dollars
METRICS: tuple[tuple[str, str, str], ...] = (
    ("requests", "", "n"),
    ("input_tokens", "input_tokens", "i"),
    ("output_tokens", "output_tokens", "o"),
    ("cache_creation_input_tokens", "cache_creation_input_tokens", "cw"),
    ("cache_read_input_tokens", "cache_read_input_tokens", "cr"),
    ("cost_usd", "cost_usd", "c"),
)
CODE_INDEX = {code: i for i, (_, _, code) in enumerate(METRICS)}
GROUP_FIELDS = ("team", "model", "provider", "user", "day", "hour")


@dataclass(slots=True)
class UsageEntry:
    """One record, checked and reduced to what the store writes (not changed once made: a plain
    slotted class, as a frozen one costs a microsecond per record to build)."""
    request_id: str
    team: str
    ts: float
    session_id: str | None
    record_json: bytes
    dims: str
    field_names: tuple[str, ...]  # `<code>|<dims>` for every metric, in METRICS order
    amounts: tuple[int, ...]   # one per METRICS entry

    @property
    def record(self) -> dict[str, Any]:
        """The record as it will read back (a JSON round trip); only the memory store needs it."""
        return orjson.loads(self.record_json)

    @property
    def hour(self) -> int:
        return hour_start(self.ts)

    @property
    def day(self) -> int:
        return day_start(self.ts)

    def rollup_fields(self) -> list[tuple[str, int]]:
        """(field, amount) pairs to add; zero amounts are left out."""
        return [(name, amount) for name, amount in zip(self.field_names, self.amounts) if amount]

    def rollup_args(self) -> list[str | int]:
        """The same pairs flattened, field then amount, as a script's arguments take them."""
        args: list[str | int] = []
        for name, amount in zip(self.field_names, self.amounts):
            if amount:
                args.append(name)
                args.append(amount)
        return args


@functools.lru_cache(maxsize=10_000, typed=True)
def _cached_dims(model: Any, provider: Any, user: Any) -> tuple[str, tuple[str, ...]]:
    dims = orjson.dumps([model, provider, user]).decode()
    return dims, tuple(f"{code}|{dims}" for _, _, code in METRICS)


def _dims(model: Any, provider: Any, user: Any) -> tuple[str, tuple[str, ...]]:
    """The dims of a record and its rollup field names: a few recur in every batch, so built once each."""
    try:
        return _cached_dims(model, provider, user)
    except TypeError:  # an unhashable value: rare enough to encode each time
        return _cached_dims.__wrapped__(model, provider, user)


def _tokens(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name) or 0
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise Invalid(f"usage {name} must be a non-negative number")
    return int(value)


# Team names already checked: a batch's records name a few teams, and the check is a regex.
_VALID_TEAMS: set[str] = set()
_VALID_TEAMS_MAX = 10_000


def _team(name: Any) -> str:
    if type(name) is str and name in _VALID_TEAMS:
        return name
    team = validate_team_name(name)
    if type(team) is str and len(_VALID_TEAMS) < _VALID_TEAMS_MAX:
        _VALID_TEAMS.add(team)
    return team


def encode_record(record: Mapping[str, Any]) -> bytes:
    """A usage record's JSON, as the Redis buffer and the record store keep it: the one place a
    record is encoded."""
    try:
        return orjson.dumps(record) if type(record) is dict else orjson.dumps(dict(record))
    except TypeError:
        try:
            return orjson.dumps(dict(record), option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise Invalid(f"usage record is not JSON: {exc}") from None


def usage_entry(record: Mapping[str, Any]) -> UsageEntry:
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise Invalid("usage record needs a request_id")
    team = _team(record.get("team"))
    ts = record.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise Invalid("usage record needs ts, an epoch timestamp")
    cost = record.get("cost_usd") or 0.0
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost >= 0:
        raise Invalid("usage cost_usd must be a non-negative number")
    record_json = encode_record(record)
    session_id = record.get("session_id")
    dims, field_names = _dims(record.get("model"), record.get("provider"), record.get("user"))
    # Positional, in field order (keywords cost a dict per record); amounts in METRICS order.
    return UsageEntry(request_id, team, float(ts), session_id if isinstance(session_id, str) else None,
                      record_json, dims, field_names,
                      (1, _tokens(record, "input_tokens"), _tokens(record, "output_tokens"),
                       _tokens(record, "cache_creation_input_tokens"), _tokens(record, "cache_read_input_tokens"),
                       usd_to_nanos(cost)))


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    unknown = [g for g in group_by if g not in GROUP_FIELDS]
    if unknown:
        raise Invalid(f"cannot group usage by {', '.join(unknown)}; "
                      f"choose from {', '.join(GROUP_FIELDS)}")
    return tuple(dict.fromkeys(group_by))


def bucket_plan(start: float, end: float, hourly: bool) -> tuple[list[int], list[int]]:
    """(hour starts, day starts) whose rollups together cover the hours overlapping
    [start, end) exactly once."""
    if end <= start:
        return [], []
    first = hour_start(start)
    stop = hour_start(end) if end == hour_start(end) else hour_start(end) + 3600
    hours = list(range(first, stop, 3600))
    if hourly:
        return hours, []
    first_day = day_start(first) if day_start(first) == first else day_start(first) + 86400
    days = list(range(first_day, stop - 86400 + 1, 86400))
    covered = {h for d in days for h in range(d, d + 86400, 3600)}
    return [h for h in hours if h not in covered], days


def _day_label(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


def _hour_label(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:00:00Z")


class UsageFold:
    """Sums rollup hashes into rows grouped by the requested fields."""

    def __init__(self, group_by: Sequence[str]) -> None:
        self.group_by = check_group_by(group_by)
        self._sums: dict[tuple[Any, ...], list[int]] = {}

    def add(self, team: str, bucket_start: int, rollup: Mapping[str, int | str]) -> None:
        for field, amount in rollup.items():
            code, _, dims = field.partition("|")
            model, provider, user = orjson.loads(dims)
            values = {"team": team, "model": model, "provider": provider, "user": user,
                      "day": _day_label(day_start(bucket_start)),
                      "hour": _hour_label(bucket_start)}
            group = tuple(values[g] for g in self.group_by)
            sums = self._sums.setdefault(group, [0] * len(METRICS))
            sums[CODE_INDEX[code]] += int(amount)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for group in sorted(self._sums, key=lambda g: tuple("" if v is None else str(v)
                                                            for v in g)):
            sums = self._sums[group]
            row: dict[str, Any] = dict(zip(self.group_by, group))
            for (name, _, _), amount in zip(METRICS, sums):
                row[name] = nanos_to_usd(amount) if name == "cost_usd" else amount
            out.append(row)
        return out


def group_by_team(entries: Iterable[UsageEntry]) -> dict[str, list[UsageEntry]]:
    """Entries per team, later duplicates of a request id within the batch dropped."""
    teams: dict[str, list[UsageEntry]] = {}
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if (entry.team, entry.request_id) in seen:
            continue
        seen.add((entry.team, entry.request_id))
        teams.setdefault(entry.team, []).append(entry)
    return teams
