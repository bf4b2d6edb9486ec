"""Logging: one setup for every process, the access line of each request, and repeated failures
reported once per interval.

`GATEWAY_LOG_LEVEL` (debug, info, warning, error; default info) and `GATEWAY_LOG_FORMAT` (`text`,
the default, or `json`: one JSON object per line) apply to the gateway's own lines and to uvicorn's,
in the parent process and in every worker. Access lines come from the logger `gateway.access` at
INFO: method, path, status, duration, team, key id, model, provider, attempts and request id;
never a secret, a prompt, a user or a session id. They are rendered off the response path: the
usage recorder hands over a whole batch of finished requests as one log record, and the formatter
renders it as one line per request, so a busy gateway pays one handler call per batch.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import orjson

from gateway.inbound import INBOUND_PATHS

ACCESS = logging.getLogger("gateway.access")
REPEAT_INTERVAL_S = 10.0
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")
# The gateway writes its own access lines. uvicorn formats the arguments of its own (the client's
# address, the quoted path) for every answer whenever its access logger or any parent has a
# handler, whatever the level: with none, it does not.
_UVICORN_ACCESS = "uvicorn.access"
# Libraries whose retries warn with a traceback each time (asyncpg's pool, reconnecting while
# PostgreSQL is down): the gateway reports the outage itself, once per interval, so theirs keep
# one line each.
_RETRYING_LOGGERS = ("asyncpg.pool",)


class _WithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = None
        return True


_WITHOUT_TRACEBACK = _WithoutTraceback()


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


def timestamp(wall: float) -> str:
    """UTC, millisecond precision, ISO 8601 (the text of each second is computed once, and the
    milliseconds' is looked up: formatting them was half the cost of an access line's time)."""
    second = int(wall)
    return _second(second) + _MILLISECONDS[int((wall - second) * 1000)]


def _attempts(record: Mapping[str, Any]) -> str:
    attempts = record.get("attempts")
    if not attempts:
        return ""
    if len(attempts) == 1:  # most requests: no list to build and join
        a = attempts[0]
        return f"{a['provider']}/{a['model']}={a['outcome']}"
    return ",".join([f"{a['provider']}/{a['model']}={a['outcome']}" for a in attempts])


def _path(record: Mapping[str, Any]) -> str:
    """The path of a request: named in its entry, else the path of the protocol it came in by."""
    return record.get("path") or INBOUND_PATHS.get(record.get("inbound"), "/v1/messages")


def access_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON access line of a request, from its usage record (or a record-like entry)."""
    get = record.get
    method, path, status = get("method", "POST"), _path(record), record["status"]
    return {"ts": timestamp(_ended(record)), "level": "info", "logger": "gateway.access",
            "message": f"{method} {path} {status}", "method": method, "path": path, "status": status,
            "duration_ms": record["latency_ms"], "team": get("team"), "key_id": get("key_id"), "model": get("model"),
            "provider": get("provider"), "attempts": _attempts(record), "request_id": get("request_id")}


def _ended(record: Mapping[str, Any]) -> float:
    return record["ts"] + record["latency_ms"] / 1000


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message>`; an access batch becomes one such line per request."""

    def format(self, record: logging.LogRecord) -> str:
        batch = getattr(record, "access", None)
        if batch is not None:
            return "\n".join([self._access_line(r) for r in batch])
        line = f"{timestamp(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return line

    @staticmethod
    def _access_line(r: Mapping[str, Any]) -> str:
        get = r.get
        latency_ms = r["latency_ms"]
        return (f"{timestamp(r['ts'] + latency_ms / 1000)} INFO gateway.access: {get('method', 'POST')} {_path(r)} "
                f"{r['status']} {latency_ms}ms team={get('team') or '-'} key={get('key_id') or '-'} "
                f"model={get('model') or '-'} provider={get('provider') or '-'} "
                f"attempts={_attempts(r) or '-'} request_id={get('request_id') or '-'}")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message (and exception), access fields."""

    def format(self, record: logging.LogRecord) -> str:
        batch = getattr(record, "access", None)
        if batch is not None:
            return "\n".join([self._access_line(r) for r in batch])
        entry: dict[str, Any] = {"ts": timestamp(record.created), "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return orjson.dumps(entry, default=str).decode()

    @staticmethod
    def _access_line(r: Mapping[str, Any]) -> str:
        return orjson.dumps(access_entry(r)).decode()


class _GatewayHandler(logging.StreamHandler):
    """The one handler `setup` installs (and replaces when called again)."""


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure this process's logging; uvicorn's loggers are folded into the same handler and format."""
    handler = _GatewayHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        # uvicorn installs its own handlers; its lines then come out in the gateway's format.
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    access = logging.getLogger(_UVICORN_ACCESS)
    access.handlers.clear()
    access.propagate = False
    for name in _RETRYING_LOGGERS:
        logging.getLogger(name).addFilter(_WITHOUT_TRACEBACK)  # the same filter once, however often set up


def log_access(records: list[Mapping[str, Any]]) -> None:
    """One access line per finished request; one log record for the whole batch, made and handled
    here: `ACCESS.info` would first walk the stack for the caller's file and line, which no
    format prints (1.6 µs of the 4.4 a batch's record cost)."""
    if records and ACCESS.isEnabledFor(logging.INFO):
        ACCESS.handle(ACCESS.makeRecord(ACCESS.name, logging.INFO, __file__, 0, "%d requests", (len(records),), None,
                                        extra={"access": records}))


class RepeatedFailure:
    """A failure that may repeat on every request (the store is down): logged when it starts and then
    at most once per interval, saying how often it happened meanwhile, and once when it ends.

    A traceback is attached only for an unexpected exception, and at most once per interval."""

    def __init__(self, logger: logging.Logger, what: str, *, interval: float = REPEAT_INTERVAL_S,
                 expected: tuple[type[BaseException], ...] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self.expected = expected
        self.clock = clock
        self.failing = False
        self._reported_at: float | None = None
        self._since_report = 0
        self._total = 0

    def failed(self, exc: BaseException | None = None) -> None:
        now = self.clock()
        self.failing = True
        self._total += 1
        if self._reported_at is not None and now - self._reported_at < self.interval:
            self._since_report += 1
            return
        more = f" ({self._since_report} more since the last report)" if self._since_report else ""
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        unexpected = exc is not None and not isinstance(exc, self.expected)
        self.logger.warning("%s%s%s", self.what, reason, more, exc_info=exc if unexpected else None)
        self._reported_at = now
        self._since_report = 0

    def recovered(self) -> None:
        if self.failing:
            self.logger.info("%s: recovered after %d failures", self.what, self._total)
        self.failing = False
        self._reported_at = None
        self._since_report = 0
        self._total = 0


def redact_url(url: str) -> str:
    """A URL with its password replaced by `***` (Redis URLs carry one in their user info)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    # Without a colon the user info may be a bare password (`redis://secret@host`): hide it all.
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}://{shown}@{host}{slash}{path}"


class AccessLogged:
    """ASGI wrapper giving the routes other than `POST /v1/messages` their access line (that path
    logs through its usage record instead)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry: dict[str, Any] = {"method": scope["method"], "path": scope["path"], "status": 500,
                                 "ts": time.time(), "request_id": None}
        started = time.perf_counter()

        async def send_logged(message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                for name, value in message.get("headers") or ():
                    if name == b"request-id":
                        entry["request_id"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            entry["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            log_access([entry])
