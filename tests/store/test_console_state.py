"""Console sessions, the audit log, alert claims and budget state: the same behaviour from the
in-memory store, a real Redis and a Redis Cluster, and shared between replicas."""
from __future__ import annotations

import asyncio
import time

import pytest

from gateway.store.base import Invalid, Team
from tests.store.conftest import ALL_BACKENDS, NOW

# Every test here also runs on a three-node Redis Cluster.
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)]


async def test_a_session_is_seen_by_another_replica_until_it_expires_or_ends(store, replica):
    await store.create_console_session("s1", {"kind": "admin", "csrf": "c"}, ttl_s=0.3)
    await store.create_console_session("s2", {"kind": "team", "team": "a"}, ttl_s=60)
    assert await replica.get_console_session("s1") == {"kind": "admin", "csrf": "c"}
    await replica.delete_console_session("s2")
    assert await store.get_console_session("s2") is None
    await asyncio.sleep(0.4)
    assert await replica.get_console_session("s1") is None
    assert await store.get_console_session("never") is None


async def test_audit_entries_come_newest_first_within_the_range_and_old_ones_go(store, replica):
    now = time.time()
    for i in range(5):
        await store.append_audit({"ts": now - 50 + i * 10, "action": f"a{i}"}, retention_s=3600)
    got = await replica.audit_entries(now - 45, now, limit=10)
    assert [e["action"] for e in got] == ["a4", "a3", "a2", "a1"]
    assert [e["action"] for e in await replica.audit_entries(0, now + 1, limit=2)] == ["a4", "a3"]
    # Entries are trimmed by the time they were appended: with a retention under that age, the
    # next append drops the earlier ones.
    await asyncio.sleep(0.05)
    await store.append_audit({"ts": now, "action": "last"}, retention_s=0.01)
    assert [e["action"] for e in await store.audit_entries(0, now + 1, limit=10)] == ["last"]


async def test_an_alert_is_claimed_once_across_replicas(store, replica):
    wins = await asyncio.gather(*(s.claim_alert("team-a", "daily:2025-01-15:0.8", 60)
                                  for s in [store, replica] * 10))
    assert sum(wins) == 1
    assert await replica.claim_alert("team-b", "daily:2025-01-15:0.8", 60)
    assert await store.claim_alert("team-a", "daily:2025-01-15:1.0", 60)


async def test_deliveries_are_kept_newest_first_up_to_the_limit(store, replica):
    for i in range(5):
        await store.record_alert_delivery({"n": i}, keep=3)
    assert [d["n"] for d in await replica.alert_deliveries(10)] == [4, 3, 2]


async def test_budget_state_shows_spend_and_reservations_of_team_and_keys(store, make_team, make_key):
    from gateway.store.base import AdmissionRequest
    await make_team("team-a", budget_daily_usd=10)
    await make_key("key-1")
    await make_key("key-2")
    assert (await store.admit(AdmissionRequest("team-a", "key-1", "r1", 10, 2.0, "m", NOW))).admitted
    assert (await store.admit(AdmissionRequest("team-a", "key-2", "r2", 10, 3.0, "m", NOW))).admitted
    await store.settle("team-a", "key-1", "r1", 1.25, 10, NOW)
    state = await store.budget_state("team-a", NOW)
    assert (state.day, state.month) == ("20250115", "202501")
    assert state.team_spent_day == state.team_spent_month == 1.25
    assert state.team_reserved == 3.0
    assert state.keys_spent_day == {"key-1": 1.25}
    assert state.keys_reserved.get("key-2") == 3.0 and not state.keys_reserved.get("key-1")
    tomorrow = await store.budget_state("team-a", NOW + 86400)
    assert tomorrow.team_spent_day == 0 and tomorrow.team_spent_month == 1.25


async def test_a_team_keeps_its_admin_flag_and_alert_settings(store):
    await store.create_team(Team(name="t", created_at=NOW, admin=True,
                                 alerts={"thresholds": [1.0, 0.5], "format": "slack"}))
    team = await store.get_team("t")
    assert team.admin is True and team.alerts == {"thresholds": [0.5, 1.0], "format": "slack"}
    changed = await store.update_team("t", {"admin": False, "alerts": None})
    assert changed.admin is False and changed.alerts is None
    for bad in ({"alerts": {"format": "xml"}}, {"alerts": {"thresholds": [0]}}, {"admin": "yes"},
                {"alerts": {"webhook_url": "ftp://x"}}, {"alerts": {"colour": 1}}):
        with pytest.raises(Invalid):
            await store.update_team("t", bad)


async def test_teams_marked_with_their_own_alerts_are_known_to_every_replica(store, replica):
    assert await replica.teams_with_alerts() == set()
    await store.mark_team_alerts("team-a", True)
    await store.mark_team_alerts("team-b", True)
    await replica.mark_team_alerts("team-a", False)
    assert await store.teams_with_alerts() == {"team-b"}
