"""The record store: where per-request usage records live for as long as they are kept.

Two backends share one schema and one set of queries: PostgreSQL (the system of record when
replicas share state, a table partitioned by UTC day) and SQLite (the embedded single-node
default, one file in WAL mode). This module holds what both share: the row a record becomes, the
SQL of every query (written once, with the few dialect differences as hooks), cursors, and the
shape of the answers. Backends only run statements.

Rows are written idempotently: the key is (ts, request_id), and a record's `ts` is the time its
request started, fixed in the record itself, so a replay of the same record always collides with
its first copy and `ON CONFLICT DO NOTHING` keeps one.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.store.base import Invalid, StoreError, StoreUnavailable
from gateway.store.rollups import encode_record
from policies.limits import nanos_to_usd, usd_to_nanos


class RecordStoreUnavailable(StoreUnavailable):
    """The database is unreachable or refusing connections; the records wait and are retried."""


class RecordRejected(StoreError):
    """The database refused the rows themselves (not the connection)."""


# The columns of `usage_records`, in the order rows are built and inserted.
COLUMNS = ("request_id", "ts", "team", "key_id", "user_id", "session_id", "model_requested", "model",
           "provider", "status", "streamed", "input_tokens", "output_tokens", "cache_creation_input_tokens",
           "cache_read_input_tokens", "cost_nanos", "latency_ms", "record")
# What /admin/usage may group by, and the column or expression each reads.
GROUP_FIELDS = ("team", "model", "provider", "user", "key", "day", "hour")
_GROUP_COLUMNS = {"team": "team", "model": "model", "provider": "provider", "user": "user_id", "key": "key_id"}  # in both tables
SUMS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
MAX_PAGE = 1000
EXPORT_PAGE = 1000
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")  # an escaped NUL, not an escaped backslash before "u0000"


MAX_COUNT = 2**63 - 1  # the largest bigint


def _text(value: Any) -> str | None:
    """A text column: a string without its NUL characters (which PostgreSQL cannot store in
    text); anything else reads as unknown."""
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "") if "\x00" in value else value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0
    return min(int(value), MAX_COUNT)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def json_text(record_json: bytes | str) -> str:
    """A record's JSON as the text stored with it: its escaped NULs removed (PostgreSQL's json
    types refuse them)."""
    text = record_json.decode() if isinstance(record_json, bytes) else record_json
    return _NUL_ESCAPE.sub(r"\1", text) if "\\u0000" in text else text


def record_row(record: Mapping[str, Any], record_json: bytes | str | None = None) -> tuple[Any, ...]:
    """The row of `usage_records` for one usage record, in COLUMNS order.

    The record has passed the usage store's checks (request id, team, ts, cost); the rest is taken
    as leniently as a bill must be: a field of the wrong type reads as unknown, never as a failed
    batch. `record_json` is the record's JSON when the caller already has it.
    """
    text = json_text(encode_record(record) if record_json is None else record_json)
    cost = _number(record.get("cost_usd")) or 0.0
    status = record.get("status")
    return (
        _text(record["request_id"]), float(record["ts"]), _text(record["team"]), _text(record.get("key_id")),
        _text(record.get("user")), _text(record.get("session_id")), _text(record.get("model_requested")),
        _text(record.get("model")), _text(record.get("provider")),
        status if type(status) is int and -2**31 <= status < 2**31 else 0, record.get("streamed") is True,
        _count(record.get("input_tokens")), _count(record.get("output_tokens")),
        _count(record.get("cache_creation_input_tokens")), _count(record.get("cache_read_input_tokens")),
        usd_to_nanos(max(cost, 0.0)), _number(record.get("latency_ms")), text,
    )


# -- query parameters -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestFilter:
    """The request log's filters; `status` is a code (429) or a class (400 for 4xx when `status_class`)."""
    team: str | None = None
    start: float | None = None
    end: float | None = None
    model: str | None = None
    status: int | None = None
    status_class: bool = False


def encode_cursor(ts: float, request_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts, request_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        ts, request_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not isinstance(request_id, str):
            raise ValueError
        return float(ts), request_id
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise Invalid("cursor: not a cursor this gateway returned") from None


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    unknown = [g for g in group_by if g not in GROUP_FIELDS]
    if unknown:
        raise Invalid(f"cannot group usage by {', '.join(unknown)}; choose from {', '.join(GROUP_FIELDS)}")
    return tuple(dict.fromkeys(group_by))


HOURLY_KEY = ("hour", "team", "model", "provider", "user_id", "key_id")
HOURLY_SUMS = ("requests", *SUMS, "cost_nanos")
_C = {c: i for i, c in enumerate(COLUMNS)}


def hourly_rows(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The additions to `usage_hourly` that these (new) rows make, in key order (so that writers
    updating the same sums lock them in the same order). Unknown dimensions are stored as ''
    (a key column cannot be NULL and still match) and read back as None."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        key = (int(row[_C["ts"]] // 3600) * 3600, row[_C["team"]], *("" if row[_C[c]] is None else row[_C[c]]
                                                                     for c in ("model", "provider", "user_id", "key_id")))
        into = sums.setdefault(key, [0] * 6)
        into[0] += 1
        for i, column in enumerate((*SUMS, "cost_nanos"), 1):
            into[i] += row[_C[column]]
    return [(*key, *sums[key]) for key in sorted(sums)]


def hourly_upsert(values: str) -> str:
    """The statement adding rows of sums to `usage_hourly`; `values` is the dialect's source of rows."""
    updates = ", ".join(f"{c} = usage_hourly.{c} + excluded.{c}" for c in HOURLY_SUMS)
    return (f"INSERT INTO usage_hourly ({', '.join(HOURLY_KEY + HOURLY_SUMS)}) {values} "
            f"ON CONFLICT ({', '.join(HOURLY_KEY)}) DO UPDATE SET {updates}")


def new_rows(rows: Sequence[tuple[Any, ...]], inserted: set[tuple[float, str]]) -> list[tuple[Any, ...]]:
    """The rows whose (ts, request_id) the insert reported as new, each once (a batch may repeat one)."""
    fresh = []
    for row in rows:
        key = (row[_C["ts"]], row[_C["request_id"]])
        if key in inserted:
            inserted.discard(key)
            fresh.append(row)
    return fresh


def retention_cutoff(now: float, retention_days: int) -> int:
    """Records are kept by whole UTC days: those of the day `retention_days` ago, and after it."""
    return (int(now // 86400) - retention_days) * 86400


def day_label(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


def hour_label(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:00:00Z")


# -- the store ------------------------------------------------------------------------------------
class RecordStore(ABC):
    """One backend. Every method may raise RecordStoreUnavailable; `insert` also RecordRejected."""

    kind: str            # "postgresql" or "sqlite"
    placeholder: str     # "$" (numbered: $1, $2...) or "?"
    reads_json = False   # insert_json: the database builds the rows from the records' JSON itself

    # -- what a backend provides ---------------------------------------------------------------
    @abstractmethod
    async def open(self, *, migrate: bool) -> None:
        """Connect and (with `migrate`) bring the schema to the latest version. A database that
        is down does not fail this: the store connects again on its next use."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def upgrade(self, target: int | None = None) -> tuple[int, int]:
        """Apply the migrations up to `target` (default: all). Returns (version before, after)."""

    @abstractmethod
    async def schema_version(self) -> int: ...

    @abstractmethod
    async def insert_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert rows (COLUMNS order) in one transaction, skipping those already stored; returns
        how many were new."""

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def drop_expired(self, before: float) -> int:
        """Remove the records older than `before` (PostgreSQL: whole day partitions that end by
        then, never row by row). Returns how many partitions (or rows, SQLite) went."""

    @abstractmethod
    async def maintain(self, now: float, retention_days: int) -> int:
        """Retention (see drop_expired), and PostgreSQL's partitions for today and tomorrow."""

    @abstractmethod
    def bucket(self, seconds: int, column: str = "ts") -> str:
        """SQL for the start of the `seconds`-long bucket (3600, 86400) of `column`, an integer."""

    def sum_of(self, column: str) -> str:
        return f"sum({column})"

    async def insert_json(self, texts: Sequence[str]) -> int:
        """Records given as their JSON texts (see json_text); only where `reads_json`."""
        raise NotImplementedError

    # -- shared by both ------------------------------------------------------------------------
    async def insert(self, records: Sequence[Mapping[str, Any]]) -> int:
        return await self.insert_rows([record_row(r) for r in records])

    def _args(self) -> _Args:
        return _Args(self.placeholder)

    async def summary(self, start: float, end: float, group_by: Sequence[str],
                      team: str | None = None) -> list[dict[str, Any]]:
        """Sums of the records with start <= ts < end, grouped by any of GROUP_FIELDS, ordered
        by the group values; cost in USD (summed in nano-dollars).

        Whole hours are read from `usage_hourly` (kept with the rows, in the same transaction),
        so a month costs a month of hourly sums, not a month of records; only the partial hours
        at either end of the range are summed from the records themselves."""
        group_by = check_group_by(group_by)
        inner_start = -(-start // 3600) * 3600   # the first whole hour in the range
        inner_end = (end // 3600) * 3600
        parts: list[tuple[str, float, float]] = []
        if inner_start < inner_end:
            parts.append(("usage_hourly", inner_start, inner_end))
            parts += [("usage_records", a, b) for a, b in ((start, inner_start), (inner_end, end)) if a < b]
        else:
            parts.append(("usage_records", start, end))
        sums: dict[tuple[Any, ...], list[int]] = {}
        for table, a, b in parts:
            for row in await self.fetch(*self._summary_sql(table, a, b, group_by, team)):
                key = tuple(None if v == "" else v for v in row[:len(group_by)])
                into = sums.setdefault(key, [0] * 6)
                for i, value in enumerate(row[len(group_by):]):
                    into[i] += int(value or 0)
        out = []
        for key, (requests, *amounts) in sums.items():
            if not requests:
                continue  # no records at all: no row, as with grouping
            answer: dict[str, Any] = {}
            for name, value in zip(group_by, key):
                answer[name] = day_label(int(value)) if name == "day" else hour_label(int(value)) \
                    if name == "hour" else value
            answer["requests"] = requests
            for name, value in zip(SUMS, amounts[:4]):
                answer[name] = value
            answer["cost_usd"] = nanos_to_usd(amounts[4])
            out.append(answer)
        out.sort(key=lambda r: tuple("" if r[g] is None else str(r[g]) for g in group_by))
        return out

    def _summary_sql(self, table: str, start: float, end: float, group_by: Sequence[str],
                     team: str | None) -> tuple[str, list[Any]]:
        hourly = table == "usage_hourly"
        args = self._args()
        time_column = "hour" if hourly else "ts"
        exprs = []
        for g in group_by:
            if g in ("day", "hour"):
                seconds = 86400 if g == "day" else 3600
                exprs.append(self.bucket(seconds, "hour") if hourly else self.bucket(seconds))
            else:
                exprs.append(_GROUP_COLUMNS[g])
        where = f"{time_column} >= {args.add(start)} AND {time_column} < {args.add(end)}"
        if team is not None:
            where += f" AND team = {args.add(team)}"
        count = self.sum_of("requests") if hourly else "count(*)"
        select = ", ".join([*exprs, count, *(self.sum_of(c) for c in (*SUMS, "cost_nanos"))])
        sql = f"SELECT {select} FROM {table} WHERE {where}"
        if exprs:
            sql += " GROUP BY " + ", ".join(exprs)
        return sql, args.values

    async def requests(self, where: RequestFilter, *, cursor: str | None = None,
                       limit: int = 100) -> tuple[list[dict[str, Any]], str | None]:
        """The request log, newest first, a page at a time: (records, cursor of the next page)."""
        args = self._args()
        clauses = []
        if where.team is not None:
            clauses.append(f"team = {args.add(where.team)}")
        if where.start is not None:
            clauses.append(f"ts >= {args.add(where.start)}")
        if where.end is not None:
            clauses.append(f"ts < {args.add(where.end)}")
        if where.model is not None:
            clauses.append(f"model = {args.add(where.model)}")
        if where.status is not None:
            if where.status_class:
                clauses.append(f"status >= {args.add(where.status)} AND status < {args.add(where.status + 100)}")
            else:
                clauses.append(f"status = {args.add(where.status)}")
        if cursor is not None:
            ts, request_id = decode_cursor(cursor)
            clauses.append(f"(ts, request_id) < ({args.add(ts)}, {args.add(request_id)})")
        sql = "SELECT ts, request_id, record FROM usage_records"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY ts DESC, request_id DESC LIMIT {args.add(limit + 1)}"
        rows = await self.fetch(sql, args.values)
        page = rows[:limit]
        following = encode_cursor(page[-1][0], page[-1][1]) if len(rows) > limit else None
        return [orjson.loads(r[2]) for r in page], following

    async def session(self, session_id: str, *, team: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """A session's records, newest first."""
        args = self._args()
        sql = f"SELECT record FROM usage_records WHERE session_id = {args.add(session_id)}"
        if team is not None:
            sql += f" AND team = {args.add(team)}"
        sql += f" ORDER BY ts DESC, request_id DESC LIMIT {args.add(limit)}"
        return [orjson.loads(r[0]) for r in await self.fetch(sql, args.values)]

    async def export(self, start: float, end: float, *, team: str | None = None,
                     page: int = EXPORT_PAGE) -> AsyncIterator[dict[str, Any]]:
        """Every record with start <= ts < end, oldest first, read a page at a time by key (so
        memory stays flat whatever the range holds)."""
        after: tuple[float, str] | None = None
        while True:
            args = self._args()
            sql = f"SELECT ts, request_id, record FROM usage_records WHERE ts >= {args.add(start)} " \
                  f"AND ts < {args.add(end)}"
            if team is not None:
                sql += f" AND team = {args.add(team)}"
            if after is not None:
                sql += f" AND (ts, request_id) > ({args.add(after[0])}, {args.add(after[1])})"
            sql += f" ORDER BY ts, request_id LIMIT {args.add(page)}"
            rows = await self.fetch(sql, args.values)
            for row in rows:
                yield orjson.loads(row[2])
            if len(rows) < page:
                return
            after = (rows[-1][0], rows[-1][1])

    async def count(self) -> int:
        [(n,)] = await self.fetch("SELECT count(*) FROM usage_records", [])
        return int(n)


class _Args:
    """Collects a statement's arguments and names their placeholders."""

    def __init__(self, style: str) -> None:
        self.style = style
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}" if self.style == "$" else "?"
