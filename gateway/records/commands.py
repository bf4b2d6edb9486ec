"""`gateway db upgrade` and `gateway usage export`: commands that open the record store itself
(the database named by `usage_db_url`, or the SQLite file in `data_dir`), not the admin API.

An export streams: records are read a page at a time in (ts, request_id) order and written as
they come, so memory stays flat whatever the range holds.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from gateway.records import create_record_store, record_store_url, url_problem
from gateway.records.schema import LATEST
from gateway.store.base import StoreError

EXIT_FAILED, EXIT_USAGE = 1, 2
DEFAULT_EXPORT_DAYS = 30
CSV_COLUMNS = ("request_id", "time", "team", "key_id", "user", "session_id", "model_requested", "model", "provider",
               "status", "error_type", "streamed", "input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_read_input_tokens", "cost_usd", "latency_ms", "ttft_ms", "output_tps", "estimated", "limited_by",
               "attempts", "trace")


def _database_url(args: argparse.Namespace) -> str:
    import os

    from gateway.settings import load_settings
    if getattr(args, "config", None):
        os.environ["GATEWAY_CONFIG"] = args.config
    if getattr(args, "db", None):
        return args.db
    settings = load_settings()
    return record_store_url(settings.usage_db_url, settings.data_dir)


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return code


def db_upgrade(args: argparse.Namespace) -> int:
    from gateway.settings import ConfigError
    try:
        url = _database_url(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if problem := url_problem(url):
        return _fail(problem, EXIT_USAGE)

    async def run() -> tuple[int, int]:
        store = create_record_store(url)
        try:
            await store.open(migrate=False)
            return await store.upgrade(args.to)
        finally:
            await store.close()
    try:
        before, after = asyncio.run(run())
    except StoreError as exc:
        return _fail(str(exc))
    print(f"record store schema: version {before} -> {after}" if after != before
          else f"record store schema: already at version {after}")
    return 0


def csv_fields(record: Mapping[str, Any]) -> list[Any]:
    values = []
    for column in CSV_COLUMNS:
        if column == "time":
            value: Any = datetime.fromtimestamp(record["ts"], tz=UTC).isoformat(timespec="milliseconds")
        elif column in ("attempts", "trace"):
            value = orjson.dumps(record.get(column) or ([] if column == "attempts" else {})).decode()
        else:
            value = record.get(column)
        values.append("" if value is None else value)
    return values


async def export_records(url: str, start: float, end: float, team: str | None, fmt: str, out: IO[bytes]) -> int:
    store = create_record_store(url)
    count = 0
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    try:
        await store.open(migrate=False)
        if fmt == "csv":
            writer.writerow(CSV_COLUMNS)
        async for record in store.export(start, end, team=team):
            if fmt == "csv":
                writer.writerow(csv_fields(record))
                out.write(text.getvalue().encode())
                text.seek(0)
                text.truncate()
            else:
                out.write(orjson.dumps(record) + b"\n")
            count += 1
        if fmt == "csv" and text.getvalue():
            out.write(text.getvalue().encode())
        out.flush()
    finally:
        await store.close()
    return count


def usage_export(args: argparse.Namespace) -> int:
    from gateway import errors
    from gateway.admin import parse_time
    from gateway.settings import ConfigError
    now = time.time()
    try:
        start = parse_time("--from", args.start) if args.start else now - DEFAULT_EXPORT_DAYS * 86400
        end = parse_time("--to", args.end, end_of_day=True) if args.end else now
    except errors.GatewayError as exc:
        return _fail(exc.message, EXIT_USAGE)
    if start >= end:
        return _fail("--from must be earlier than --to", EXIT_USAGE)
    try:
        url = _database_url(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if problem := url_problem(url):
        return _fail(problem, EXIT_USAGE)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        count = asyncio.run(export_records(url, start, end, args.team, args.format, out))
    except StoreError as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        return 0
    finally:
        if args.output:
            out.close()
    print(f"exported {count} records", file=sys.stderr)
    return 0


def add_db_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("db", help="the usage record store's schema")
    db = p.add_subparsers(dest="db_command", required=True)
    p = db.add_parser("upgrade", help=f"apply the record store's migrations (latest: version {LATEST})",
                      description="Bring the record store's schema (usage_db_url, else the SQLite file in data_dir) "
                                  "up to date. The gateway does this at startup unless usage_db_migrate is false.")
    p.add_argument("--config", help="YAML config file (default: $GATEWAY_CONFIG)")
    p.add_argument("--db", help="the database URL (default: usage_db_url from the settings)")
    p.add_argument("--to", type=int, help=argparse.SUPPRESS)  # a version below the latest, for tests of migrations
    p.set_defaults(func=db_upgrade)


def add_export_command(usage_commands: argparse._SubParsersAction) -> None:
    p = usage_commands.add_parser("export", help="stream usage records as CSV or JSON lines",
                                  description="Stream every usage record in a range from the record store, "
                                              "oldest first, without holding them in memory.")
    p.add_argument("--from", dest="start", help="start: epoch seconds, RFC 3339 or YYYY-MM-DD (UTC; default 30 days ago)")
    p.add_argument("--to", dest="end", help="end: the same forms; a date includes that whole day (default now)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    p.add_argument("--team", help="only this team")
    p.add_argument("--output", "-o", help="write to this file instead of standard output")
    p.add_argument("--config", help="YAML config file (default: $GATEWAY_CONFIG)")
    p.add_argument("--db", help="the database URL (default: usage_db_url from the settings)")
    p.set_defaults(func=usage_export)
