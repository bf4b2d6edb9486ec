"""The access line of a batch's records, exactly: attempts in order, missing fields as '-'."""
import logging

import orjson

from gateway.logs import JsonFormatter, TextFormatter


def _batch_record(records: list[dict]) -> logging.LogRecord:
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 0, "%d requests", (len(records),), None)
    record.access = records
    return record


RECORDS = [
    {"ts": 1796161255.25, "latency_ms": 9.083, "status": 200, "team": "bench", "key_id": "key_1",
     "model": "m/a", "provider": "p", "request_id": "req_1", "inbound": "messages",
     "attempts": [{"provider": "p", "model": "m/a", "outcome": "ok"}]},
    {"ts": 1796161255.9995, "latency_ms": 1200.5, "status": 200, "team": "bench", "key_id": "key_1",
     "model": "m/b", "provider": "q", "request_id": "req_2", "inbound": "messages",
     "attempts": [{"provider": "p", "model": "m/a", "outcome": "error_529"},
                  {"provider": "p", "model": "m/a", "outcome": "timeout"},
                  {"provider": "q", "model": "m/b", "outcome": "ok"}]},
    {"ts": 1796161256.0, "latency_ms": 0.5, "status": 401, "team": None, "key_id": None, "model": None,
     "provider": None, "request_id": "req_3", "attempts": []},
]


def test_text_lines():
    assert TextFormatter().format(_batch_record(RECORDS)).split("\n") == [
        "2026-12-01T21:40:55.259Z INFO gateway.access: POST /v1/messages 200 9.083ms team=bench key=key_1 "
        "model=m/a provider=p attempts=p/m/a=ok request_id=req_1",
        "2026-12-01T21:40:57.200Z INFO gateway.access: POST /v1/messages 200 1200.5ms team=bench key=key_1 "
        "model=m/b provider=q attempts=p/m/a=error_529,p/m/a=timeout,q/m/b=ok request_id=req_2",
        "2026-12-01T21:40:56.000Z INFO gateway.access: POST /v1/messages 401 0.5ms team=- key=- "
        "model=- provider=- attempts=- request_id=req_3",
    ]


def test_json_lines():
    lines = [orjson.loads(line) for line in JsonFormatter().format(_batch_record(RECORDS)).split("\n")]
    assert [line["attempts"] for line in lines] == ["p/m/a=ok", "p/m/a=error_529,p/m/a=timeout,q/m/b=ok", ""]
    assert [line["ts"] for line in lines] == ["2026-12-01T21:40:55.259Z", "2026-12-01T21:40:57.200Z",
                                              "2026-12-01T21:40:56.000Z"]
