"""Sample traffic for `gateway serve --demo`: two teams with budgets and keys, and two weeks of
usage records, so that the console has something to show. Loaded only when the demo runs on the
in-memory store, which takes the teams, keys, rollups and today's spend; the records go to the
record store, where the usage and request queries read them. Labelled: the teams' metadata and
every record say `"sample": true`, and the console shows a banner.
"""
from __future__ import annotations

import random
import time

from gateway.records.base import RecordStore, RequestFilter, record_row
from gateway.records.ingest import write_rows
from gateway.store.base import KeyRecord, Limits, Store, Team
from policies.catalog import Catalog
from policies.pricing import cost_usd
from providers.base import Usage

SAMPLE_TEAMS = {
    "sample-research": Limits(budget_daily_usd=1.0, budget_monthly_usd=15.0, rpm=600),
    "sample-support": Limits(budget_daily_usd=0.5, budget_monthly_usd=6.0, rpm=120),
}
SAMPLE_USERS = ("ana", "bo", "chen", "dita")
DAYS = 14


def _endpoints(catalog: Catalog) -> list[tuple[str, str, object]]:
    """(model id, provider, pricing) of a few served models, cheapest first."""
    found = []
    for model in catalog.models.values():
        for endpoint in model.endpoints:
            found.append((model.id, endpoint.provider, endpoint.pricing))
    preferred = [e for e in found if e[0].startswith(("anthropic/", "openai/"))] or found
    return sorted(preferred, key=lambda e: ((e[2].input or 0) + (e[2].output or 0), e[0]))[:6]


async def load_sample_data(store: Store, records_db: RecordStore, catalog: Catalog, now: float | None = None,
                           seed: int = 7) -> int:
    """Create the sample teams, keys and records; returns how many records were added."""
    now = time.time() if now is None else now
    rng = random.Random(seed)
    endpoints = _endpoints(catalog)
    if not endpoints:
        return 0
    records, settlements = [], []
    for team_name, limits in SAMPLE_TEAMS.items():
        if await store.get_team(team_name) is None:
            await store.create_team(Team(name=team_name, limits=limits, created_at=now - DAYS * 86400,
                                         metadata={"sample": True}))
        keys = []
        for name in ("ci", "notebooks"):
            key_id = f"key_sample_{team_name.split('-')[1]}_{name}"
            if await store.get_key(key_id) is None:
                # The secret of a sample key is never made: its hash is of a random value nobody holds.
                await store.create_key(KeyRecord(
                    id=key_id, team=team_name, prefix=f"sk-gw-{name[:6]}", name=name,
                    secret_hash=f"{rng.getrandbits(256):064x}", created_at=now - DAYS * 86400,
                    metadata={"sample": True}))
            keys.append(key_id)
        per_day = 18 if team_name == "sample-research" else 9
        for day in range(DAYS, -1, -1):
            for i in range(per_day + rng.randint(-3, 3)):
                ts = now - day * 86400 - rng.uniform(60, 86000 if day else min(86000, now % 86400 or 60))
                model, provider, pricing = rng.choice(endpoints)
                cached = rng.random() < 0.5
                usage = Usage(input_tokens=rng.randint(200, 6000), output_tokens=rng.randint(50, 1500),
                              cache_creation_input_tokens=rng.randint(0, 2000) if cached else 0,
                              cache_read_input_tokens=rng.randint(1000, 20000) if cached else 0)
                cost = cost_usd(usage, pricing)
                key_id = rng.choice(keys)
                ok = rng.random() > 0.04
                request_id = f"req_sample_{team_name[7:]}_{int(ts)}_{i}"  # one id per record, every start
                records.append({
                    "request_id": request_id, "ts": ts, "team": team_name, "key_id": key_id,
                    "user": rng.choice(SAMPLE_USERS), "session_id": f"sample-session-{team_name[7:]}-{day}-{i // 4}",
                    "trace": {"trace_name": "sample", "step": i % 4}, "model_requested": model, "model": model,
                    "provider": provider,
                    "attempts": [{"provider": provider, "model": model, "outcome": "ok" if ok else "529"}],
                    "status": 200 if ok else 529, "error_type": None if ok else "overloaded_error",
                    "streamed": rng.random() < 0.6, "input_tokens": usage.input_tokens if ok else 0,
                    "output_tokens": usage.output_tokens if ok else 0,
                    "cache_creation_input_tokens": usage.cache_creation_input_tokens if ok else 0,
                    "cache_read_input_tokens": usage.cache_read_input_tokens if ok else 0,
                    "cost_usd": cost if ok else 0.0, "latency_ms": round(rng.uniform(300, 9000), 1),
                    "ttft_ms": round(rng.uniform(120, 900), 1), "output_tps": round(rng.uniform(40, 160), 1),
                    "estimated": False, "limited_by": None, "sample": True})
                if ok and day == 0:
                    settlements.append((team_name, key_id, request_id, cost, 0, ts))
    records.sort(key=lambda r: r["ts"])
    for settlement in settlements:
        await store.settle(*settlement)
    await store.append_usage(records)
    # The record store outlives the demo: a demo started again on it adds only what is newer than
    # the sample records already there, never a second copy of the same weeks.
    newest = {}
    for team_name in SAMPLE_TEAMS:
        rows, _ = await records_db.requests(RequestFilter(team=team_name), limit=1)
        newest[team_name] = rows[0]["ts"] if rows else 0.0
    fresh = [r for r in records if r["ts"] > newest[r["team"]]]
    return await write_rows(records_db, [record_row(r) for r in fresh])
