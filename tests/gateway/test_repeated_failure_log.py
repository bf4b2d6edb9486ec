"""A failure that repeats with every request is logged once per interval, as an operator reads it."""
from __future__ import annotations

import io
import logging

from gateway import logs
from gateway.store.base import StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter(stream: io.StringIO, clock: Clock) -> logs.RepeatedFailure:
    logger = logging.getLogger("test.repeated")
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.handlers[0].setFormatter(logs.TextFormatter())
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logs.RepeatedFailure(logger, "store down", interval=10, expected=(StoreUnavailable,), clock=clock)


def test_a_failure_repeated_within_the_interval_is_one_line_then_a_line_with_the_count():
    stream, clock = io.StringIO(), Clock()
    failure = reporter(stream, clock)
    for _ in range(50):
        failure.failed(StoreUnavailable("connection refused"))
        clock.now += 0.1
    clock.now += 6  # 11 s after the first report
    failure.failed(StoreUnavailable("connection refused"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("WARNING test.repeated: store down: StoreUnavailable: connection refused")
    assert lines[1].endswith("store down: StoreUnavailable: connection refused (49 more since the last report)")


def test_recovery_is_one_line_and_a_new_outage_is_reported_at_once():
    stream, clock = io.StringIO(), Clock()
    failure = reporter(stream, clock)
    failure.failed(StoreUnavailable("down"))
    failure.failed(StoreUnavailable("down"))
    failure.recovered()
    failure.recovered()
    failure.failed(StoreUnavailable("down again"))
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "store down: StoreUnavailable: down", "store down: recovered after 2 failures",
        "store down: StoreUnavailable: down again"]


def test_an_unexpected_error_carries_its_traceback_once_per_interval():
    stream, clock = io.StringIO(), Clock()
    failure = reporter(stream, clock)
    for _ in range(20):
        try:
            raise ValueError("a bug")
        except ValueError as exc:
            failure.failed(exc)
    assert stream.getvalue().count("Traceback (most recent call last)") == 1
    assert "ValueError: a bug" in stream.getvalue()


def test_a_librarys_retry_warnings_keep_one_line_without_their_traceback():
    stream = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        logs.setup("info", "text", stream=stream)
        try:
            raise ConnectionRefusedError("[Errno 111] Connect call failed ('127.0.0.1', 5432)")
        except ConnectionRefusedError:
            # As asyncpg's pool warns while PostgreSQL is down, once per reconnection attempt.
            logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor; retrying",
                                                      exc_info=True)
    finally:
        root.handlers[:], root.level = before
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "Traceback" not in stream.getvalue()
    assert lines[0].endswith("WARNING asyncpg.pool: Failed to restore the pool connection floor; retrying")
