"""Usage records kept for their whole retention: PostgreSQL or an embedded SQLite file.

`record_store_url` says which database a configuration names (SQLite in the data directory by
default), `record_store_problem` why a configuration may not start (replicas need one shared
PostgreSQL), `create_record_store` makes the backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.records.base import RecordStore

if TYPE_CHECKING:
    from gateway.settings import Settings

POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")
SQLITE_SCHEME = "sqlite:///"
DEFAULT_SQLITE_FILE = "usage.db"


def record_store_url(usage_db_url: str | None, data_dir: str) -> str:
    if usage_db_url:
        return usage_db_url
    return SQLITE_SCHEME + str(Path(data_dir).absolute() / DEFAULT_SQLITE_FILE)


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.startswith(POSTGRES_SCHEMES)  # type: ignore[union-attr]


def url_problem(url: str) -> str | None:
    if is_postgres(url):
        return None
    if url.startswith(SQLITE_SCHEME) and len(url) > len(SQLITE_SCHEME):
        return None
    return (f"usage_db_url: expected postgresql://user:password@host:port/database or "
            f"sqlite:///path/to/usage.db, not {url.split('://', 1)[0]}://...")


def record_store_problem(settings: Settings) -> str | None:
    """Why these settings cannot start, or None. Replicas (a shared Redis, or several workers)
    must share one record store, and only PostgreSQL can be shared."""
    if settings.usage_db_url and (problem := url_problem(settings.usage_db_url)):
        return problem
    if (settings.redis_url or settings.workers > 1) and not is_postgres(settings.usage_db_url):
        why = "redis_url is set" if settings.redis_url else "--workers is above 1"
        return (f"usage_db_url must name a PostgreSQL database (postgresql://...) when {why}: replicas share "
                f"one record store (GATEWAY_USAGE_DB_URL)")
    return None


def create_record_store(url: str, *, timeout: float = 10.0) -> RecordStore:
    if is_postgres(url):
        from gateway.records.postgres import PostgresRecordStore
        return PostgresRecordStore(url, timeout=timeout)
    problem = url_problem(url)
    if problem:
        raise ValueError(problem)
    from gateway.records.sqlite import SqliteRecordStore
    return SqliteRecordStore(url[len(SQLITE_SCHEME) - 1:] if url.startswith("sqlite:////") else url[len(SQLITE_SCHEME):])
