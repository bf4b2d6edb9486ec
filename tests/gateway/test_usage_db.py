"""Usage records in their database, through real gateways: Redis as the buffer and PostgreSQL as the
system of record (a restart under load, two replicas, a dead replica's records, a full buffer),
the embedded SQLite default, the request log, the export and migration commands, and the
refusal to start replicas without a shared record store."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from gateway.records import create_record_store
from gateway.spill import SpillFiles
from gateway.store.base import StoreError
from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY, base_settings
from tests.fakes.base import wait_for
from tests.gateway.test_admin import MARCH_1, append_usage, usage_record
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

HI = {"model": "anthropic/claude-sonnet-4.5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
ADMIN = {"x-api-key": ADMIN_KEY}


def in_database(url: str, sql: str) -> list[tuple]:
    async def run():
        db = create_record_store(url)
        try:
            await db.open(migrate=False)
            return await db.fetch(sql, [])
        finally:
            await db.close()
    return asyncio.run(run())


def stored_ids(url: str) -> list[str]:
    """The request ids in the database (none before the gateway has made its schema)."""
    try:
        return [r[0] for r in in_database(url, "SELECT request_id FROM usage_records")]
    except StoreError as exc:
        assert "does not exist" in str(exc)
        return []


def send(gateway: GatewayThread, key: str = TEAM_KEY) -> str | None:
    """One request; the request id of its answer (every answer leaves a record), None when the
    gateway could not be reached."""
    try:
        response = httpx.post(gateway.url + "/v1/messages", json=HI, headers={"x-api-key": key}, timeout=10)
    except httpx.HTTPError:
        return None
    return response.headers["request-id"]


@pytest.fixture
def shared(redis_server, postgres_server, upstream, tmp_path):  # noqa: F811
    """Redis and PostgreSQL, empty, and the settings of a gateway that uses both."""
    redis_server.flush()
    postgres_server.reset()

    def settings(name: str = "a", **extra):
        return base_settings(upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                             usage_spill_path=str(tmp_path / f"spill-{name}.jsonl"), usage_flush_interval=0.05,
                             **extra)
    return settings


def test_every_record_arrives_once_when_the_database_restarts_under_load(shared, postgres_server):  # noqa: F811
    with GatewayThread(**shared()) as gw:
        answered: list[str] = []
        stop = threading.Event()

        def load():
            while not stop.is_set() and len(answered) < 600:
                rid = send(gw)
                if rid:
                    answered.append(rid)
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(load)
            time.sleep(0.7)
            postgres_server.stop()
            degraded: dict = {}

            def says_degraded() -> bool:
                degraded.update(httpx.get(gw.url + "/readyz").json())
                return degraded["status"] == "degraded" and degraded["usage"]["buffered"] > 0
            assert wait_for(says_degraded, timeout=5, interval=0.05), degraded
            assert degraded["usage"]["reachable"] is False and degraded["usage"]["db"] == "postgresql"
            before = len(answered)
            time.sleep(1.0)
            answered_while_down = len(answered) - before
            postgres_server.start()
            time.sleep(0.5)
            stop.set()
        assert answered_while_down > 5  # the request path never waits for the database
        wait_for(lambda: len(stored_ids(postgres_server.url)) >= len(answered), timeout=20, interval=0.2)
        ids = stored_ids(postgres_server.url)
        assert sorted(ids) == sorted(answered)  # every answered request, once
        assert wait_for(lambda: httpx.get(gw.url + "/readyz").json()["status"] == "ready", timeout=5)
        with redis.Redis(port=int(shared()["redis_url"].rsplit(":", 1)[1].split("/")[0])) as r:
            assert r.xlen("gw:{team-a}:usage") == 0  # the buffer is empty once committed


def test_two_gateways_drain_one_buffer_and_each_record_is_stored_once(shared, postgres_server):  # noqa: F811
    with GatewayThread(**shared("a")) as a, GatewayThread(**shared("b")) as b:
        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(lambda i: send((a, b)[i % 2], (TEAM_KEY, OTHER_TEAM_KEY)[i % 3 == 0]),
                                     range(120)))
        assert None not in answered
        assert wait_for(lambda: len(stored_ids(postgres_server.url)) >= 120, timeout=10, interval=0.1)
        assert sorted(stored_ids(postgres_server.url)) == sorted(answered)
        [(teams,)] = in_database(postgres_server.url, "SELECT count(DISTINCT team) FROM usage_records")
        assert teams == 2


def test_records_a_dead_replica_held_are_claimed_and_stored(shared, postgres_server, redis_server):  # noqa: F811
    rec = usage_record("team-a", "anthropic/claude-sonnet-4.5", ts=time.time() - 5)
    with GatewayThread(**shared(usage_claim_idle=0.5)):
        with redis_server.client() as r:
            # A replica read this record from the buffer and died before committing it.
            pipe = r.pipeline(transaction=True)
            pipe.xgroup_create("gw:{team-z}:usage", "records", "0", mkstream=True)
            pipe.xadd("gw:{team-z}:usage", {"r": orjson.dumps({**rec, "team": "team-z"}).decode()})
            pipe.xreadgroup("records", "dead-replica", {"gw:{team-z}:usage": ">"})
            pipe.sadd("gw:{_global}:usage_teams", "team-z")
            pipe.execute()
        assert wait_for(lambda: stored_ids(postgres_server.url) == [rec["request_id"]], timeout=10, interval=0.1)
        with redis_server.client() as r:
            assert r.xlen("gw:{team-z}:usage") == 0


def test_a_full_buffer_is_said_and_its_records_wait_in_the_spill_file(shared, postgres_server, tmp_path):  # noqa: F811
    postgres_server.stop()
    try:
        with GatewayThread(**shared(usage_buffer_max_records=2)) as gw:
            answered = [send(gw) for _ in range(5)]
            ready = {}

            def full() -> bool:  # the buffer's length is measured every second
                ready.update(httpx.get(gw.url + "/readyz").json())
                return "bound_hit_seconds_ago" in ready["usage"] and ready["usage"]["buffered"] == 2
            assert wait_for(full, timeout=5, interval=0.05), ready
            assert ready["status"] == "degraded"
            hits = [s.value for f in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text)
                    for s in f.samples if s.name == "gateway_usage_bound_hits_total" and s.labels == {"bound": "buffer"}]
            assert hits and hits[0] >= 3
            assert SpillFiles(tmp_path / "spill-a.jsonl").pending()
            postgres_server.start()
            assert wait_for(lambda: len(stored_ids(postgres_server.url)) >= 5, timeout=20, interval=0.2)
            assert sorted(stored_ids(postgres_server.url)) == sorted(answered)
    finally:
        postgres_server.start()


def test_redis_remembers_no_request_once_its_batch_is_written(shared, redis_server, postgres_server):  # noqa: F811
    with GatewayThread(**shared()) as gw:
        answered = [send(gw) for _ in range(20)]
        assert wait_for(lambda: sorted(stored_ids(postgres_server.url)) == sorted(answered), timeout=10, interval=0.1)
        with redis_server.client() as r:
            # The marks of the last batch go once the recorder is idle for a second; no set of
            # request ids is kept for replays (a replayed batch is known by its id).
            assert wait_for(lambda: not r.exists("gw:{team-a}:batches"), timeout=5)
            assert not [k for k in r.scan_iter("gw:{team-a}:*") if k.endswith((":useen", ":settled"))]
            assert r.xlen("gw:{team-a}:usage") == 0


def test_usage_reads_from_postgres_when_redis_holds_no_records(shared, postgres_server):  # noqa: F811
    with GatewayThread(**shared()) as gw:
        for _ in range(3):
            send(gw)
        assert wait_for(lambda: len(stored_ids(postgres_server.url)) == 3, timeout=10, interval=0.1)
        rows = httpx.get(gw.url + "/admin/usage", params={"group_by": "team,key"}, headers=ADMIN).json()["data"]
        assert [(r["team"], r["requests"]) for r in rows] == [("team-a", 3)] and rows[0]["key"].startswith("key_")
        page = httpx.get(gw.url + "/admin/requests", params={"team": "team-a"}, headers=ADMIN).json()
        assert len(page["data"]) == 3 and page["next_cursor"] is None


def test_an_unreachable_database_makes_usage_queries_a_503(shared, postgres_server):  # noqa: F811
    with GatewayThread(**shared()) as gw:
        postgres_server.stop()
        try:
            response = httpx.get(gw.url + "/admin/usage", headers=ADMIN, timeout=30)
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "api_error"
        finally:
            postgres_server.start()


# -- the embedded default ----------------------------------------------------------------------------
def test_without_a_database_records_go_to_sqlite_in_the_data_directory(upstream, tmp_path):
    data = tmp_path / "data"
    with GatewayThread(**base_settings(upstream.url, data_dir=str(data),
                                       usage_spill_path=str(tmp_path / "spill.jsonl"))) as gw:
        rid = send(gw)
        page: dict = {}

        def listed() -> bool:
            page.update(httpx.get(gw.url + "/admin/requests", headers=ADMIN).json())
            return bool(page["data"])
        assert wait_for(listed, timeout=5, interval=0.05)
        assert [r["request_id"] for r in page["data"]] == [rid]
        assert httpx.get(gw.url + "/readyz").json()["usage"] == {"db": "sqlite", "reachable": True, "buffered": 0,
                                                                  "ok": True}
    with sqlite3.connect(data / "usage.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT request_id FROM usage_records").fetchall() == [(rid,)]


def test_too_many_records_pending_in_a_process_go_to_the_spill_file_and_are_said(upstream, tmp_path):
    # One record and one settlement per request: a bound of 1 sends every request to the spill file.
    with GatewayThread(**base_settings(upstream.url, data_dir=str(tmp_path), usage_max_pending=1,
                                       usage_spill_path=str(tmp_path / "spill.jsonl"))) as gw:
        answered = [send(gw) for _ in range(3)]
        ready = httpx.get(gw.url + "/readyz").json()
        assert ready["status"] == "degraded" and "bound_hit_seconds_ago" in ready["usage"]
        hits = [s.value for f in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text)
                for s in f.samples if s.name == "gateway_usage_bound_hits_total" and s.labels == {"bound": "memory"}]
        assert hits and hits[0] >= 3
        url = gw.gateway.records.url
        assert wait_for(lambda: sorted(stored_ids(url)) == sorted(answered), timeout=10, interval=0.1)


@pytest.fixture(scope="module")
def log_gateway(anthropic_upstream, tmp_path_factory):
    """A SQLite gateway holding 30 known records of team-a and team-b; no test sends it messages."""
    folder = tmp_path_factory.mktemp("requests")
    with GatewayThread(**base_settings(anthropic_upstream.url, data_dir=str(folder),
                                       usage_spill_path=str(folder / "spill.jsonl"))) as gw:
        records = [usage_record(("team-a", "team-b")[i % 3 == 2], ("m1", "m2")[i % 2], ts=MARCH_1 + i * 60)
                   for i in range(30)]
        for i, r in enumerate(records):
            r.update(request_id=f"req-{i:02}", status=(200, 429, 502)[i % 3])
        append_usage(gw, records)
        yield gw, records


def test_the_request_log_pages_with_a_cursor_and_filters(log_gateway):
    gw, records = log_gateway
    seen, cursor = [], None
    while True:
        params = {"team": "team-a", "from": "2025-03-01", "to": "2025-03-01", "limit": 4}
        if cursor:
            params["cursor"] = cursor
        answer = httpx.get(gw.url + "/admin/requests", params=params, headers=ADMIN).json()
        seen += [r["request_id"] for r in answer["data"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["request_id"] for r in reversed(records) if r["team"] == "team-a"]
    answer = httpx.get(gw.url + "/admin/requests", params={"model": "m2", "status": "4xx"}, headers=ADMIN).json()
    assert [r["request_id"] for r in answer["data"]] == [r["request_id"] for r in reversed(records)
                                                         if r["model"] == "m2" and r["status"] == 429]


@pytest.mark.parametrize("params, field", [({"status": "teapot"}, "status"), ({"cursor": "zzz"}, "cursor"),
                                           ({"limit": "0"}, "limit"), ({"from": "soon"}, "from"),
                                           ({"team": "{x}"}, "team"), ({"colour": "red"}, "colour")])
def test_bad_request_log_parameters_are_a_400_naming_them(log_gateway, params, field):
    gw, _ = log_gateway
    response = httpx.get(gw.url + "/admin/requests", params=params, headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["type"] == "error" and field in response.json()["error"]["message"]


def test_the_request_log_needs_the_admin_key(log_gateway):
    gw, _ = log_gateway
    assert httpx.get(gw.url + "/admin/requests", headers={"x-api-key": TEAM_KEY}).status_code == 403


def test_usage_groups_by_key(log_gateway):
    gw, records = log_gateway
    rows = httpx.get(gw.url + "/admin/usage", params={"from": "2025-03-01", "to": "2025-03-01", "group_by": "key"},
                     headers=ADMIN).json()["data"]
    assert [(r["key"], r["requests"]) for r in rows] == [(records[0]["key_id"], 30)]


# -- commands ------------------------------------------------------------------------------------------
def run_gateway(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})


def test_usage_export_streams_csv_and_json_lines(log_gateway, tmp_path):
    gw, records = log_gateway
    db = gw.gateway.records.url
    done = run_gateway(["usage", "export", "--db", db, "--from", str(MARCH_1 + 60), "--to", str(MARCH_1 + 600),
                        "--format", "csv"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("request_id,time,team,key_id,user,")
    assert [line.split(",")[0] for line in lines[1:]] == [f"req-{i:02}" for i in range(1, 10)]
    assert lines[1].split(",")[1] == "2025-03-01T00:01:00.000+00:00"
    assert "exported 9 records" in done.stderr
    out = tmp_path / "all.jsonl"
    done = run_gateway(["usage", "export", "--db", db, "--from", "2025-03-01", "--to", "2025-03-01", "--team",
                        "team-b", "--format", "jsonl", "--output", str(out)])
    assert done.returncode == 0, done.stderr
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported == [orjson.loads(orjson.dumps(r)) for r in records if r["team"] == "team-b"]


def test_usage_export_with_a_bad_range_exits_2(tmp_path):
    done = run_gateway(["usage", "export", "--db", f"sqlite:///{tmp_path}/x.db", "--from", "tomorrow"])
    assert done.returncode == 2 and "--from" in done.stderr


def test_db_upgrade_migrates_an_empty_database_and_says_so(postgres_server, tmp_path):  # noqa: F811
    url = postgres_server.database("upgrade_cli")
    done = run_gateway(["db", "upgrade", "--db", url, "--to", "1"])
    assert (done.returncode, done.stdout.strip()) == (0, "record store schema: version 0 -> 1"), done.stderr
    done = run_gateway(["db", "upgrade"], GATEWAY_USAGE_DB_URL=url)
    assert (done.returncode, done.stdout.strip()) == (0, "record store schema: version 1 -> 3"), done.stderr
    done = run_gateway(["db", "upgrade", "--db", url])
    assert done.stdout.strip() == "record store schema: already at version 3"
    sqlite_url = f"sqlite:///{tmp_path}/u.db"
    assert run_gateway(["db", "upgrade", "--db", sqlite_url]).stdout.strip() == "record store schema: version 0 -> 3"
    done = run_gateway(["db", "upgrade", "--db", "mysql://x"])
    assert done.returncode == 2 and "usage_db_url" in done.stderr


@pytest.mark.parametrize("args, env", [
    (["serve", "--port", "0"], {"GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0"}),
    (["serve", "--port", "0"], {"GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0", "GATEWAY_USAGE_DB_URL": "sqlite:///u.db"}),
    (["serve", "--port", "0", "--workers", "2"], {"GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0",
                                                  "GATEWAY_USAGE_DB_URL": "sqlite:///u.db"}),
])
def test_replicas_without_a_shared_postgres_refuse_to_start_naming_the_setting(args, env, tmp_path):
    done = run_gateway(args, GATEWAY_DATA_DIR=str(tmp_path), **env)
    assert done.returncode == 2
    assert "usage_db_url must name a PostgreSQL database" in done.stderr


def test_a_database_url_of_another_kind_refuses_to_start(tmp_path):
    done = run_gateway(["serve", "--port", "0"], GATEWAY_USAGE_DB_URL="mysql://db/usage", GATEWAY_DATA_DIR=str(tmp_path))
    assert done.returncode == 2 and "usage_db_url: expected postgresql://" in done.stderr


def test_the_data_directory_default_is_named_in_the_settings(tmp_path):
    from gateway.records import record_store_url
    assert record_store_url(None, str(tmp_path)) == f"sqlite:///{Path(tmp_path) / 'usage.db'}"


def test_a_spill_path_that_is_not_a_file_is_never_moved_or_deleted(upstream, tmp_path):
    # /dev/null as the spill path throws records away on purpose; a replay once renamed the device
    # node away and deleted it. A FIFO stands in for it here.
    fifo = tmp_path / "spill.fifo"
    os.mkfifo(fifo)
    records: list[bytes] = []
    with GatewayThread(**base_settings(upstream.url, data_dir=str(tmp_path), usage_max_pending=1,
                                       usage_spill_path=str(fifo))) as gw:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that writes to it never block
        try:
            rid = send(gw)
            time.sleep(1.5)  # a replay pass runs every second while records are said to wait
            assert fifo.is_fifo() and not (tmp_path / "spill.fifo.replaying").exists()
            records.append(os.read(reader, 65536))
            assert rid.encode() in records[0]  # what met the bound went to the pipe, as asked
            assert httpx.get(gw.url + "/healthz").status_code == 200
        finally:
            os.close(reader)
