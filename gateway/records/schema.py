"""The versioned schema of the record store: one list of migrations per dialect, applied in order.

`usage_schema` holds one row per applied version. A migration is a list of statements run in one
transaction with its version row, so a database is always at a whole version. Never edit a
released migration: add the next one (and its SQLite twin).

Version 1 made `usage_records` (PostgreSQL: partitioned by range of `ts`, one partition per UTC
day, made on demand by the writer). Version 2 added `key_id` (filled from the records already
stored) so usage can be grouped by key, and the session index. Version 3 added `usage_hourly`, the
sums per UTC hour, team, model, provider, user and key, written in the same transaction as the
records (and filled from the records already stored), so that a month of usage is read from a
month of hourly sums.
"""
from __future__ import annotations

VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS usage_schema (version integer PRIMARY KEY, "
                 "applied_at double precision NOT NULL)")

_PG_V1 = [
    """CREATE TABLE usage_records (
        request_id text NOT NULL,
        ts double precision NOT NULL,
        team text NOT NULL,
        user_id text,
        session_id text,
        model_requested text,
        model text,
        provider text,
        status integer NOT NULL,
        streamed boolean NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        cache_creation_input_tokens bigint NOT NULL,
        cache_read_input_tokens bigint NOT NULL,
        cost_nanos bigint NOT NULL,
        latency_ms double precision,
        record json NOT NULL,
        PRIMARY KEY (ts, request_id)
    ) PARTITION BY RANGE (ts)""",
    "CREATE INDEX usage_records_team_ts ON usage_records (team, ts)",
]
_PG_V2 = [
    "ALTER TABLE usage_records ADD COLUMN key_id text",
    "UPDATE usage_records SET key_id = record->>'key_id'",
    "CREATE INDEX usage_records_session ON usage_records (session_id, ts) WHERE session_id IS NOT NULL",
]

_SQLITE_V1 = [
    """CREATE TABLE usage_records (
        request_id TEXT NOT NULL,
        ts REAL NOT NULL,
        team TEXT NOT NULL,
        user_id TEXT,
        session_id TEXT,
        model_requested TEXT,
        model TEXT,
        provider TEXT,
        status INTEGER NOT NULL,
        streamed INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_creation_input_tokens INTEGER NOT NULL,
        cache_read_input_tokens INTEGER NOT NULL,
        cost_nanos INTEGER NOT NULL,
        latency_ms REAL,
        record TEXT NOT NULL,
        PRIMARY KEY (ts, request_id)
    )""",
    "CREATE INDEX usage_records_team_ts ON usage_records (team, ts)",
]
_SQLITE_V2 = [
    "ALTER TABLE usage_records ADD COLUMN key_id TEXT",
    "UPDATE usage_records SET key_id = json_extract(record, '$.key_id')",
    "CREATE INDEX usage_records_session ON usage_records (session_id, ts) WHERE session_id IS NOT NULL",
]

_HOURLY = """CREATE TABLE usage_hourly (
        hour bigint NOT NULL,
        team text NOT NULL,
        model text NOT NULL,
        provider text NOT NULL,
        user_id text NOT NULL,
        key_id text NOT NULL,
        requests bigint NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        cache_creation_input_tokens bigint NOT NULL,
        cache_read_input_tokens bigint NOT NULL,
        cost_nanos bigint NOT NULL,
        PRIMARY KEY (hour, team, model, provider, user_id, key_id)
    )"""
_HOURLY_FILL = """INSERT INTO usage_hourly SELECT {hour}, team, coalesce(model, ''), coalesce(provider, ''),
        coalesce(user_id, ''), coalesce(key_id, ''), count(*), sum(input_tokens), sum(output_tokens),
        sum(cache_creation_input_tokens), sum(cache_read_input_tokens), sum(cost_nanos)
    FROM usage_records GROUP BY 1, 2, 3, 4, 5, 6"""
_PG_V3 = [_HOURLY, _HOURLY_FILL.format(hour="(floor(ts / 3600) * 3600)::bigint"),
          "CREATE INDEX usage_hourly_team ON usage_hourly (team, hour)"]
_SQLITE_V3 = [_HOURLY.replace("bigint", "INTEGER").replace("text", "TEXT"),
              _HOURLY_FILL.format(hour="CAST(ts / 3600 AS INTEGER) * 3600"),
              "CREATE INDEX usage_hourly_team ON usage_hourly (team, hour)"]

MIGRATIONS: dict[str, list[tuple[int, list[str]]]] = {
    "postgresql": [(1, _PG_V1), (2, _PG_V2), (3, _PG_V3)],
    "sqlite": [(1, _SQLITE_V1), (2, _SQLITE_V2), (3, _SQLITE_V3)],
}
LATEST = 3


def pending(dialect: str, current: int, target: int | None = None) -> list[tuple[int, list[str]]]:
    target = LATEST if target is None else target
    return [(v, statements) for v, statements in MIGRATIONS[dialect] if current < v <= target]
