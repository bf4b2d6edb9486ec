"""Exactly-once settlements and usage records per batch, against a real Redis: a batch whose reply
was lost (Redis frozen after the batch reached it) is replayed from the spill file, by the same
process or by another, longer after the dedupe window than the window itself, and counts once;
and Redis keeps no memory per request once the records are drained."""
from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from gateway.store.base import AdmissionRequest, KeyRecord, Limits, Team, create_store
from gateway.store.keys import TeamKeys
from gateway.usage import Ticket, UsageRecorder, build_record
from policies.limits import day_id
from tests.fakes.base import wait_for
from tests.gateway.test_hostile_input import exchange
from tests.redis_server import RedisServer

TEAMS = ("team-a", "team-b")
COST = 0.01


@pytest.fixture
def own_server():
    """A server of the test's own, so freezing it disturbs nothing else."""
    with RedisServer() as server:
        yield server


async def _teams(store, budget: float = 100.0) -> None:
    for team in TEAMS:
        await store.create_team(Team(name=team, limits=Limits(budget_daily_usd=budget), created_at=time.time()))
        await store.create_key(KeyRecord(id=f"key-{team}", team=team, prefix=f"sk-{team}",
                                         secret_hash=hashlib.sha256(team.encode()).hexdigest(), created_at=time.time()))


async def _finish(store, recorder: UsageRecorder, count: int, prefix: str = "req") -> list[str]:
    """`count` admitted requests of two teams end (each $0.01), waiting in the recorder for one flush."""
    ids = []
    for i in range(count):
        team = TEAMS[i % 2]
        rid = f"{prefix}_{i:05d}"
        verdict = await store.admit(AdmissionRequest(team=team, key_id=f"key-{team}", request_id=rid, tokens=100,
                                                     cost_usd=0.5, model="m", now=time.time()))
        assert verdict.admitted
        recorder.finish(exchange(rid, team, f"key-{team}", cost=COST), Ticket(team, f"key-{team}", rid))
        ids.append(rid)
    return ids


def _counted(server: RedisServer) -> dict[str, tuple[int, int, int, int]]:
    """Per team: records in the buffer, requests in the daily rollup, nanos spent today, nanos reserved."""
    out = {}
    with server.client() as r:
        for team in TEAMS:
            tk = TeamKeys(team)
            rollups = [k for k in r.scan_iter(f"{tk.base}:roll:d:*")]
            requests = sum(int(v) for k in rollups for f, v in r.hgetall(k).items() if f.startswith("n|"))
            out[team] = (r.xlen(tk.usage), requests, int(r.hget(tk.spend_day(day_id(time.time())), "team") or 0),
                         int(r.hget(tk.reserved, "team") or 0))
    return out


async def _lose_the_reply(server: RedisServer, store, recorder: UsageRecorder, count: int) -> str:
    """Flush while Redis is frozen: the batch reaches Redis's socket, the recorder times out and spills
    it; Redis then wakes and runs it. The window passes before anything is replayed. Returns the
    batch's id."""
    await store.ping()
    server.pause()
    try:
        await recorder.flush()
        lines = [orjson.loads(line) for line in recorder.spill.own.read_bytes().splitlines()]
        assert len(lines) == 2 * count and all("batch" in line for line in lines)
        [batch_id] = {line["batch"] for line in lines}
        await asyncio.sleep(1.0)  # ten times the dedupe window
    finally:
        server.resume()
    # The frozen batch ran once Redis woke: counted already, before any replay.
    ran = {team: (count // 2, count // 2, count // 2 * 10_000_000, 0) for team in TEAMS}
    assert wait_for(lambda: _counted(server) == ran, timeout=5), _counted(server)
    return batch_id


def _marks(server: RedisServer) -> dict[str, list[str]]:
    with server.client() as r:
        return {team: sorted(r.zrange(TeamKeys(team).batches, 0, -1)) for team in TEAMS}


def test_a_batch_whose_reply_was_lost_counts_once_when_replayed_after_the_dedupe_window(own_server, tmp_path):
    async def run() -> None:
        store = create_store(own_server.url, operation_timeout=0.3, socket_timeout=0.3, connect_timeout=0.3,
                             usage_dedupe_s=0.1)
        recorder = UsageRecorder(store, tmp_path / "spill.jsonl")
        try:
            await _teams(store)
            await _finish(store, recorder, 40)
            lost = await _lose_the_reply(own_server, store, recorder, 40)
            for _ in range(20):
                await recorder.flush()  # replays the spill file
                if not recorder.spill.pending():
                    break
                await asyncio.sleep(0.1)
            assert not recorder.spill.pending()
            assert _counted(own_server) == {team: (20, 20, 20 * 10_000_000, 0) for team in TEAMS}
            # New requests after the replay are counted as usual, and their batch's marks go once
            # the recorder is idle; the replayed batch's stay a while (a copy may still be on its way).
            await _finish(store, recorder, 4, prefix="after")
            await recorder.flush()
            assert _counted(own_server) == {team: (22, 22, 22 * 10_000_000, 0) for team in TEAMS}
            await recorder.flush()
            assert _marks(own_server) == {team: [f"{lost}:s", f"{lost}:u:20"] for team in TEAMS}
            recorder._later = [(0.0, team, batch_id) for _, team, batch_id in recorder._later]  # ten minutes on
            await recorder.flush()
            assert _marks(own_server) == {team: [] for team in TEAMS}
        finally:
            await store.close()
    asyncio.run(run())


REPLAYER = textwrap.dedent("""
    import asyncio, sys
    from gateway.store.base import create_store
    from gateway.usage import UsageRecorder

    async def main():
        store = create_store(sys.argv[1])
        recorder = UsageRecorder(store, sys.argv[2])
        recorder.start()  # finds the spill file another process left and replays it
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not recorder.spill.pending():
                break
        await recorder.stop()
        await store.close()
        print("pending" if recorder.spill.pending() else "replayed")
    asyncio.run(main())
""")


def test_a_batch_whose_reply_was_lost_counts_once_when_another_process_replays_it(own_server, tmp_path):
    spill = tmp_path / "spill.jsonl"

    async def run() -> None:
        store = create_store(own_server.url, operation_timeout=0.3, socket_timeout=0.3, connect_timeout=0.3,
                             usage_dedupe_s=0.1)
        recorder = UsageRecorder(store, spill)
        try:
            await _teams(store)
            await _finish(store, recorder, 40)
            return await _lose_the_reply(own_server, store, recorder, 40)
        finally:
            await store.close()
    lost = asyncio.run(run())

    root = Path(__file__).resolve().parents[2]
    replayed = subprocess.run([sys.executable, "-c", REPLAYER, own_server.url, str(spill)], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(root)}, check=True)
    assert replayed.stdout.strip() == "replayed", replayed.stderr
    assert not list(tmp_path.glob("spill*"))
    assert _counted(own_server) == {team: (20, 20, 20 * 10_000_000, 0) for team in TEAMS}
    # The replayer found the batch's marks and left them (it stopped before they were due to go).
    assert _marks(own_server) == {team: [f"{lost}:s", f"{lost}:u:20"] for team in TEAMS}


def _team_bytes(server: RedisServer, team: str) -> int:
    with server.client() as r:
        return sum(r.memory_usage(k, samples=0) or 0 for k in r.scan_iter(f"{TeamKeys(team).base}:*"))


def test_redis_keeps_a_few_bytes_per_request_at_most_with_the_default_settings(own_server, tmp_path, capsys):
    """20,000 requests admitted, settled, recorded and drained: the team's keys hold no more after
    them than after the first 10,000 (the rollups, spend and window keys, an empty buffer)."""
    async def run() -> tuple[int, int]:
        store = create_store(own_server.url)
        recorder = UsageRecorder(store, tmp_path / "spill.jsonl")

        async def drain() -> None:
            while entries := await store.buffer_read(list(TEAMS), "drainer", 1000):
                await store.buffer_ack([(team, entry_id) for team, entry_id, _ in entries])

        try:
            await _teams(store, budget=10_000.0)
            sizes = []
            for half in range(2):
                for n in range(20):
                    await _finish(store, recorder, 500, prefix=f"h{half}b{n}")
                    await recorder.flush()
                await recorder.flush()  # idle: the marks of the last batch go
                await drain()
                sizes.append(sum(_team_bytes(own_server, team) for team in TEAMS))
            assert not recorder.spill.pending()
            return sizes[0], sizes[1]
        finally:
            await store.close()
    first, second = asyncio.run(run())
    with capsys.disabled():
        print(f"\nRedis bytes of both teams' keys: {first} after 10,000 requests, {second} after 20,000 "
              f"({second / 20_000:.2f} bytes per request; {(second - first) / 10_000:.3f} per further request)")
    assert second / 20_000 < 5
    assert second - first < 10_000 * 0.5  # flat: nothing kept per request


def test_a_spill_file_of_an_earlier_version_without_batch_ids_is_replayed(own_server, tmp_path):
    async def run() -> None:
        store = create_store(own_server.url)
        try:
            await _teams(store)
            lines = []
            for i in range(10):
                team, rid = TEAMS[i % 2], f"old_{i}"
                assert (await store.admit(AdmissionRequest(team=team, key_id=f"key-{team}", request_id=rid, tokens=100,
                                                           cost_usd=0.5, model="m", now=time.time()))).admitted
                record = build_record(exchange(rid, team, f"key-{team}", cost=COST), time.perf_counter())
                lines += [orjson.dumps({"record": record}),
                          orjson.dumps({"settle": [team, f"key-{team}", rid, COST, 10, time.time()]})]
            (tmp_path / "spill.999999.jsonl").write_bytes(b"\n".join(lines) + b"\n")  # a process that is gone
            recorder = UsageRecorder(store, tmp_path / "spill.jsonl")
            recorder.start()
            assert await asyncio.to_thread(wait_for, lambda: not recorder.spill.pending(), 10)
            await recorder.stop()
            assert _counted(own_server) == {team: (5, 5, 5 * 10_000_000, 0) for team in TEAMS}
        finally:
            await store.close()
    asyncio.run(run())
