#!/usr/bin/env python3
"""Soak the usage pipeline: one gateway worker at the highest rate it sustains, Redis as the buffer,
PostgreSQL as the record store, optionally with PostgreSQL stopped for a while under load.

Everything runs on loopback and is bounded in time: its own Redis and PostgreSQL (the test
suite's throwaway servers), a canned upstream in a process of its own, one `gateway serve`
process, and a closed-loop client with a fixed number of connections. At the end it waits for the
database to catch up and checks that every answered request is recorded exactly once, then
prints what the README's sizing note quotes:

    python3 scripts/usage_soak.py --duration 600                        # the 10-minute soak
    python3 scripts/usage_soak.py --duration 120 --outage-at 30 --outage-for 60

Needs the test extras (aiohttp) and PostgreSQL's binaries (scripts/test.sh installs both).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KEY = "sk-soak-team-0001"
BODY = json.dumps({"model": "anthropic/claude-sonnet-4.5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
ANSWER = json.dumps({"id": "msg_soak", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                     "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn",
                     "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 16}}).encode()


def serve_upstream(port: int) -> None:
    """A canned Anthropic upstream (the same answer to every request), in its own process."""
    from aiohttp import web

    async def messages(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")
    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def load(url: str, until: float, connections: int, max_requests: int, answered: list[str],
               failed: list[int]) -> None:
    import aiohttp
    headers = {"x-api-key": KEY, "content-type": "application/json", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def worker() -> None:
            while time.monotonic() < until and len(answered) + len(failed) < max_requests:
                try:
                    async with session.post(url + "/v1/messages", data=BODY, headers=headers) as response:
                        await response.read()
                        answered.append(response.headers["request-id"])
                        if response.status != 200:
                            failed.append(response.status)
                except aiohttp.ClientError:
                    failed.append(0)
        await asyncio.gather(*(worker() for _ in range(connections)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (at most 900)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--outage-at", type=float, help="stop PostgreSQL this many seconds into the load")
    parser.add_argument("--outage-for", type=float, default=60, help="seconds PostgreSQL stays stopped")
    parser.add_argument("--dedupe-window", type=float, help="usage_dedupe_window for the gateway (default: its own)")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    args.duration = min(args.duration, 900)

    import httpx
    import redis

    from gateway.records import create_record_store
    from tests.fakes.base import free_port
    from tests.postgres_server import PostgresServer
    from tests.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="usage-soak-"))
    upstream_port, gateway_port = free_port(), free_port()
    with RedisServer() as redis_server, PostgresServer() as postgres:
        upstream = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(upstream_port)])
        config = work / "gateway.yaml"
        extra = {"usage_dedupe_window": args.dedupe_window} if args.dedupe_window else {}
        config.write_text(json.dumps({**extra,
            "redis_url": redis_server.url, "usage_db_url": postgres.url, "admin_key": "sk-soak-admin-0000",
            "providers": {"anthropic": {"base_url": f"http://127.0.0.1:{upstream_port}", "api_key": "sk-up"}},
            "keys": [{"key": KEY, "team": "soak"}], "usage_spill_path": str(work / "spill.jsonl"),
            "data_dir": str(work / "data")}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env["PYTHONPATH"] = str(REPO)
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
                                    "--port", str(gateway_port)], env=env, stdout=open(work / "gateway.log", "wb"),
                                   stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{gateway_port}"
        r = redis.Redis(port=redis_server.port, decode_responses=True)
        try:
            wait_http(url + "/healthz")
            wait_http(f"http://127.0.0.1:{upstream_port}/")
            answered: list[str] = []
            failed: list[int] = []
            samples: list[dict] = []
            start = time.monotonic()
            until = start + args.duration

            async def run() -> None:
                task = asyncio.create_task(load(url, until, args.connections, args.max_requests, answered, failed))
                outage_started = outage_ended = None
                while not task.done():
                    await asyncio.sleep(1)
                    t = time.monotonic() - start
                    if args.outage_at is not None and outage_started is None and t >= args.outage_at:
                        postgres.stop()
                        outage_started = t
                    if outage_started is not None and outage_ended is None and t >= outage_started + args.outage_for:
                        postgres.start()
                        outage_ended = t
                    ready = httpx.get(url + "/readyz", timeout=5).json()
                    samples.append({"t": round(t, 1), "answered": len(answered),
                                    "redis_used_memory": int(r.info("memory")["used_memory"]),
                                    "stream_bytes": r.memory_usage("gw:{soak}:usage", samples=0) or 0,
                                    "stream_length": r.xlen("gw:{soak}:usage"),
                                    "dedupe_bytes": r.memory_usage("gw:{soak}:batches", samples=0) or 0,
                                    "dedupe_marks": r.zcard("gw:{soak}:batches"),
                                    "buffered": ready["usage"]["buffered"], "status": ready["status"],
                                    "db_reachable": ready["usage"]["reachable"]})
                await task
                if outage_started is not None and outage_ended is None:
                    postgres.start()
            asyncio.run(run())
            load_seconds = time.monotonic() - start

            async def database(sql: str) -> list[tuple]:
                db = create_record_store(postgres.url)
                try:
                    await db.open(migrate=False)
                    return await db.fetch(sql, [])
                finally:
                    await db.close()
            caught_up = time.monotonic()
            while asyncio.run(database("SELECT count(*) FROM usage_records"))[0][0] < len(answered):
                if time.monotonic() - caught_up > 120:
                    break
                time.sleep(0.5)
            catch_up_seconds = time.monotonic() - caught_up
            stored = [row[0] for row in asyncio.run(database("SELECT request_id FROM usage_records"))]
            [(table_bytes,)] = asyncio.run(database(
                "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint FROM pg_inherits i "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'usage_records'"))
            steady = [s for s in samples if s["t"] >= 60] or samples[len(samples) // 2:]
            memory_slope = None
            if len(steady) >= 2 and steady[-1]["answered"] > steady[0]["answered"]:
                memory_slope = (steady[-1]["redis_used_memory"] - steady[0]["redis_used_memory"]) / \
                               (steady[-1]["answered"] - steady[0]["answered"])
            buffer_peak = max((s["buffered"] for s in samples), default=0)
            degraded_seconds = sum(1 for s in samples if s["status"] == "degraded")
            report = {
                "load_seconds": round(load_seconds, 1), "answered": len(answered), "non_200": len(failed),
                "requests_per_second": round(len(answered) / load_seconds, 1),
                "stored": len(stored), "stored_distinct": len(set(stored)),
                "every_answered_stored_once": sorted(stored) == sorted(answered),
                "db_rows_per_second_over_the_run": round(len(stored) / (load_seconds + catch_up_seconds), 1),
                "catch_up_seconds_after_load": round(catch_up_seconds, 1),
                "postgres_bytes_per_record": round(table_bytes / max(len(stored), 1), 1),
                "redis_bytes_per_request_growth_after_first_minute": round(memory_slope, 1) if memory_slope else None,
                "redis_used_memory_first_last": [samples[0]["redis_used_memory"], samples[-1]["redis_used_memory"]]
                if samples else None,
                "buffer_peak_records": buffer_peak, "seconds_readyz_degraded": degraded_seconds,
            }
            peak = max(samples, key=lambda s: s["stream_length"], default=None)
            if peak and peak["stream_length"]:
                report["redis_buffer_bytes_per_record_at_peak"] = round(peak["stream_bytes"] / peak["stream_length"], 1)
                report["redis_buffer_peak_records"] = peak["stream_length"]
            if samples:
                # Replays are known by batch id: only the marks of batches in flight are kept.
                report["redis_dedupe_bytes_peak"] = max(s["dedupe_bytes"] for s in samples)
                report["redis_dedupe_bytes_per_request"] = round(samples[-1]["dedupe_bytes"] / max(len(answered), 1), 3)
            print(json.dumps(report, indent=2))
            (work / "samples.json").write_text(json.dumps(samples))
            print(f"samples and the gateway's log: {work}", file=sys.stderr)
            return 0 if report["every_answered_stored_once"] else 1
        finally:
            gateway.terminate()
            gateway.wait(30)
            upstream.terminate()
            upstream.wait(10)
            r.close()


if __name__ == "__main__":
    sys.exit(main())
