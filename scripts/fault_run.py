#!/usr/bin/env python3
"""Fault run: Redis killed for a while under load from admin-created keys, once per store policy.

For each of `store_outage: fail_open` and `fail_closed` it starts a Redis (append-only, so what it
held survives the kill, as in production), a PostgreSQL for the usage records (a gateway with Redis
keeps them in a shared PostgreSQL), a gateway process with an admin key serving the demo's
mock providers (no upstream is called), creates teams and keys through the admin API, then drives
bounded load (CLIENTS concurrent loopback clients for DURATION seconds, JSON and streams) while
Redis is killed from OUTAGE_AT for OUTAGE seconds. Afterwards it checks:

- every answer is a message, a complete stream, or Anthropic's error envelope (none other, no
  transport error, no hung client);
- the gateway's log holds at most one traceback per REPEAT_INTERVAL of the run;
- once Redis is back and the gateway's spill file is replayed, every request id a client saw has
  exactly one usage record in PostgreSQL (through Redis's usage buffer), and GET /admin/usage
  counts as many requests as there are records.

It prints a summary per policy and exits 1 if any check failed (2 if the run itself could not
start). Run it from the repository root: `python3 scripts/fault_run.py [--duration 30]`.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.logs import REPEAT_INTERVAL_S  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

ADMIN_KEY = "sk-fault-run-admin-0000"
TEAMS = ("fault-a", "fault-b")
KEYS_PER_TEAM = 2
MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6", "openai/gpt-5.4")


class DurableRedis(RedisServer):
    """A Redis that keeps its data across a kill, like a production one with append-only files."""

    def command_line(self) -> list[str]:
        line = super().command_line()
        at = line.index("--appendonly")
        line[at + 1] = "yes"
        return line + ["--appendfsync", "always"]


@dataclass
class Outcome:
    answers: Counter = field(default_factory=Counter)     # status -> count
    bad: list[str] = field(default_factory=list)          # answers outside the contract, one line each
    request_ids: list[str] = field(default_factory=list)  # every request id a client was given
    without_request_id: int = 0
    transport_errors: int = 0


def is_envelope(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return (data.get("type") == "error" and isinstance(error, dict) and isinstance(error.get("type"), str)
            and isinstance(error.get("message"), str))


def is_message(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("type") == "message" and isinstance(data.get("content"), list)


def stream_is_whole(body: bytes) -> bool:
    """A 200 stream ends with message_stop, or with an `error` event (a failure after the first byte)."""
    text = body.replace(b"\r\n", b"\n")
    return b"event: message_stop\n" in text or b"event: error\n" in text


async def one_request(client: httpx.AsyncClient, key: str, n: int, outcome: Outcome) -> None:
    stream = n % 3 == 0
    body = {"model": MODELS[n % len(MODELS)], "max_tokens": 32, "stream": stream,
            "messages": [{"role": "user", "content": f"fault run request {n}"}]}
    try:
        response = await client.post("/v1/messages", json=body, headers={"x-api-key": key})
    except httpx.HTTPError as exc:
        outcome.transport_errors += 1
        outcome.bad.append(f"request {n}: {type(exc).__name__}: {exc}")
        return
    outcome.answers[response.status_code] += 1
    request_id = response.headers.get("request-id")
    if request_id:
        outcome.request_ids.append(request_id)
    else:
        outcome.without_request_id += 1  # its usage record cannot be checked
    content_type = response.headers.get("content-type", "")
    if response.status_code == 200 and content_type.startswith("text/event-stream"):
        ok = stream_is_whole(response.content)
    elif response.status_code == 200:
        ok = content_type.startswith("application/json") and is_message(response.content)
    else:
        ok = content_type.startswith("application/json") and is_envelope(response.content)
    if not ok:
        outcome.bad.append(f"request {n}: {response.status_code} {content_type}: {response.content[:200]!r}")


async def drive(url: str, keys: list[str], clients: int, duration: float, redis: RedisServer,
                outage_at: float, outage: float, pause: float) -> Outcome:
    outcome = Outcome()
    started = time.monotonic()
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    # Every request must be answered within this: a Redis outage must never hang a client.
    timeout = httpx.Timeout(15.0)

    async def client_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
            while time.monotonic() - started < duration:
                n = next(counter)
                await one_request(client, keys[(index + n) % len(keys)], n, outcome)
                await asyncio.sleep(pause)  # bounded load on a shared machine

    async def fault() -> None:
        await asyncio.sleep(outage_at)
        redis.stop()
        print(f"  redis killed at {time.monotonic() - started:.1f} s", flush=True)
        await asyncio.sleep(outage)
        await asyncio.to_thread(redis.start)
        print(f"  redis back at {time.monotonic() - started:.1f} s", flush=True)

    await asyncio.gather(fault(), *(client_loop(i) for i in range(clients)))
    return outcome


def start_gateway(workdir: Path, redis_url: str, usage_db_url: str, policy: str, port: int,
                  log_path: Path) -> subprocess.Popen:
    config = {"redis_url": redis_url, "usage_db_url": usage_db_url, "admin_key": ADMIN_KEY, "store_outage": policy, "demo": True,
              "store_timeout": 0.25, "usage_spill_path": str(workdir / "usage-spill.jsonl"),
              # The mock providers answer quickly here: the run is about the store, not the upstream.
              "providers": {"mock": {"options": {"ttft_ms": 5, "tokens_per_second": 0}},
                            "mock-fast": {"protocol": "mock", "base_url": "mock://local",
                                          "options": {"ttft_ms": 2, "tokens_per_second": 0}}}}
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path),
                                 "--port", str(port)], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the gateway exited:\n" + log_path.read_text()[-3000:])
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the gateway did not come up:\n" + log_path.read_text()[-3000:])


def create_keys(url: str) -> list[str]:
    keys = []
    with httpx.Client(base_url=url, headers={"x-api-key": ADMIN_KEY}, timeout=10) as admin:
        for team in TEAMS:
            created = admin.post("/admin/teams", json={"name": team, "rpm": 100000, "budget_daily_usd": 1000})
            if created.status_code != 201:
                raise RuntimeError(f"creating team {team}: {created.status_code} {created.text}")
            for i in range(KEYS_PER_TEAM):
                key = admin.post(f"/admin/teams/{team}/keys", json={"name": f"load-{i}"})
                if key.status_code != 201:
                    raise RuntimeError(f"creating a key of {team}: {key.status_code} {key.text}")
                keys.append(key.json()["key"])
    return keys


def wait_until_replayed(workdir: Path, timeout: float) -> bool:
    """Whether the gateway's spill file (records written while Redis was away) is gone, i.e. replayed."""
    spill = workdir / "usage-spill.jsonl"
    replaying = workdir / "usage-spill.jsonl.replaying"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not spill.exists() and not replaying.exists():
            return True
        time.sleep(0.2)
    return False


def usage_record_counts(database: PostgresServer) -> Counter:
    """Records per request id of the run's teams in the database (a doubled record counts twice)."""
    teams = ", ".join(f"'{team}'" for team in TEAMS)
    rows = database.sql(f"SELECT request_id, count(*) FROM usage_records WHERE team IN ({teams}) GROUP BY request_id")
    counts: Counter = Counter()
    for line in rows.splitlines():
        request_id, n = line.rsplit("|", 1)
        counts[request_id] = int(n)
    return counts


def wait_until_recorded(database: PostgresServer, request_ids: list[str], timeout: float) -> Counter:
    """The database's records once every request id is there (the buffer drains in batches), or
    what is there when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        counts = usage_record_counts(database)
        if all(counts.get(rid) for rid in request_ids) or time.monotonic() >= deadline:
            return counts
        time.sleep(0.5)


def admin_usage_requests(url: str) -> int:
    """Requests the admin API's usage query counts for the run's teams (from the rollups)."""
    answer = httpx.get(url + "/admin/usage", params={"group_by": "team"}, headers={"x-api-key": ADMIN_KEY},
                       timeout=10)
    answer.raise_for_status()
    return sum(row["requests"] for row in answer.json()["data"] if row["team"] in TEAMS)


def tracebacks(log_text: str) -> int:
    return log_text.count("Traceback (most recent call last)")


def first_traceback(log_text: str) -> list[str]:
    """The log line that introduced the first traceback, and the exception it ended with."""
    lines = log_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)"))
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "Traceback", "During handling", "The above"))
                                or not lines[end].strip()):
        end += 1
    before = next((line for line in reversed(lines[:start]) if line.strip()), "")
    return [before, "...", lines[end] if end < len(lines) else lines[-1]]


def run_policy(policy: str, args: argparse.Namespace) -> bool:
    print(f"== store_outage: {policy}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"fault-run-{policy}-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / "gateway.log"
        (workdir / "redis").mkdir()
        with DurableRedis(workdir=str(workdir / "redis")) as redis, PostgresServer() as database:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            process = start_gateway(workdir, redis.url, database.url, policy, port, log_path)
            try:
                wait_healthy(url, process, log_path)
                keys = create_keys(url)
                started = time.monotonic()
                outcome = asyncio.run(drive(url, keys, args.clients, args.duration, redis, args.outage_at,
                                            args.outage, args.pause))
                elapsed = time.monotonic() - started
                replayed = wait_until_replayed(workdir, args.settle)
                time.sleep(1.0)  # the recorder's last batch after the replay
                counts = wait_until_recorded(database, outcome.request_ids, args.settle)
                time.sleep(1.0)  # a record doubled by a late replay or a second drain would show now
                counts = usage_record_counts(database)
                rolled_up = admin_usage_requests(url)
            finally:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            log_text = log_path.read_text(errors="replace")
            if args.keep_logs:
                kept = Path(args.keep_logs) / f"gateway-{policy}.log"
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_text(log_text)
    seen = Counter(outcome.request_ids)
    missing = [rid for rid in seen if counts.get(rid, 0) == 0]
    repeated = [rid for rid in seen if counts.get(rid, 0) > 1]
    allowed = math.ceil(elapsed / REPEAT_INTERVAL_S)
    found = tracebacks(log_text)
    checks = {
        "answers outside the envelope, or transport errors (must be 0)": (len(outcome.bad), not outcome.bad),
        "answers without a request-id (must be 0)": (outcome.without_request_id, not outcome.without_request_id),
        f"tracebacks in the log (at most {allowed}, one per {REPEAT_INTERVAL_S:g} s)": (found, found <= allowed),
        "spill file replayed after Redis returned": (replayed, replayed),
        "requests without a usage record (must be 0)": (len(missing), not missing),
        "requests with more than one usage record (must be 0)": (len(repeated), not repeated),
        "requests counted by GET /admin/usage = records in PostgreSQL": (
            f"{rolled_up} = {sum(counts.values())}", rolled_up == sum(counts.values())),
    }
    total = sum(outcome.answers.values())
    print(f"  {total} answers in {elapsed:.1f} s: " + ", ".join(f"{s}: {n}" for s, n in sorted(outcome.answers.items()))
          + (f", transport errors: {outcome.transport_errors}" if outcome.transport_errors else ""))
    passed = True
    for label, (value, ok) in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {label}: {value}")
        passed = passed and ok
    for line in outcome.bad[:5]:
        print(f"       e.g. {line}")
    if missing:
        print(f"       e.g. no record for {missing[:3]}")
    if found:
        print("       first traceback:\n" + "\n".join("         " + line for line in first_traceback(log_text)))
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per policy (default 30)")
    parser.add_argument("--outage-at", type=float, default=10.0, help="seconds into the load Redis is killed")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds Redis stays down (default 10)")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds each client waits between requests")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait for the spill file replay")
    parser.add_argument("--policy", choices=("fail_open", "fail_closed"), action="append",
                        help="run only this policy (repeatable; default both)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy each run's gateway log into DIR")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.clients > 64 or args.duration <= 0 or args.duration > 120:
        parser.error("keep the load bounded: 1 to 64 clients, at most 120 s")
    results = {}
    for policy in args.policy or ("fail_open", "fail_closed"):
        try:
            results[policy] = run_policy(policy, args)
        except RuntimeError as exc:
            print(f"  could not run: {exc}", file=sys.stderr)
            return 2
    print("fault run: " + ", ".join(f"{p} {'passed' if ok else 'FAILED'}" for p, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
