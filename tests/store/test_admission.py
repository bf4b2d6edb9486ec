"""Admission, leases and settlement: limits that hold under concurrency and across replicas."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway.store.base import AdmissionRequest, new_batch_id
from tests.store.conftest import ALL_BACKENDS, NOW

pytestmark = pytest.mark.anyio


def request(rid: str, *, now: float = NOW, tokens: int = 10, cost: float = 0.0,
            model: str = "m1", key: str = "key-1", team: str = "team-a") -> AdmissionRequest:
    return AdmissionRequest(team=team, key_id=key, request_id=rid, tokens=tokens,
                            cost_usd=cost, model=model, now=now)


async def admitted_count(store, requests) -> int:
    results = await asyncio.gather(*(store.admit(r) for r in requests))
    return sum(a.admitted for a in results)


# -- key validity -------------------------------------------------------------------------------
async def test_a_valid_key_is_admitted_and_told_no_limits(store, make_team, make_key):
    await make_team()
    await make_key()
    verdict = await store.admit(request("r1"))
    assert verdict.admitted and verdict.reason is None and verdict.retry_after is None
    assert verdict.requests_limit is None and verdict.tokens_limit is None


async def test_revoked_key_is_refused_even_when_cached_elsewhere(store, replica, make_team,
                                                                 make_key):
    await make_team()
    await make_key()
    await replica.revoke_key("key-1")
    verdict = await store.admit(request("r1"))
    assert (verdict.admitted, verdict.reason) == (False, "revoked")


async def test_keys_of_a_deleted_team_and_unknown_keys_are_refused(store, make_team, make_key):
    await make_team()
    await make_key()
    assert (await store.admit(request("r1", key="key-9"))).reason == "revoked"
    await store.delete_team("team-a")
    assert (await store.admit(request("r2"))).reason == "revoked"


async def test_a_key_is_refused_from_its_expiry_on(store, make_team, make_key):
    await make_team()
    await make_key(expires_at=NOW + 10)
    assert (await store.admit(request("r1", now=NOW + 9.9))).admitted
    verdict = await store.admit(request("r2", now=NOW + 10))
    assert (verdict.admitted, verdict.reason) == (False, "expired")


async def test_only_models_allowed_by_both_team_and_key_pass(store, make_team, make_key):
    await make_team(allowed_models=["m1", "m2"])
    await make_key(allowed_models=["m2", "m3"])
    assert (await store.admit(request("r1", model="m2"))).admitted
    for model in ("m1", "m3", "m4"):
        verdict = await store.admit(request(f"r-{model}", model=model))
        assert (verdict.admitted, verdict.reason) == (False, "model_not_allowed")


# -- requests per minute ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_300_concurrent_requests_against_rpm_100_admit_exactly_100(store, make_team,
                                                                         make_key):
    await make_team(rpm=100)
    await make_key()
    assert await admitted_count(store, [request(f"r{i}") for i in range(300)]) == 100


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_two_replicas_share_one_rpm_limit_exactly(store, replica, make_team, make_key):
    await make_team(rpm=100)
    await make_key()
    requests = [(store if i % 2 else replica).admit(request(f"r{i}")) for i in range(300)]
    results = await asyncio.gather(*requests)
    assert sum(a.admitted for a in results) == 100


async def test_rpm_window_slides_and_retry_after_says_when_a_slot_frees(store, make_team,
                                                                       make_key):
    await make_team(rpm=2)
    await make_key()
    first = await store.admit(request("r1", now=NOW))
    assert (first.requests_limit, first.requests_remaining, first.requests_reset) == \
        (2, 1, NOW + 60)
    assert (await store.admit(request("r2", now=NOW + 10))).requests_remaining == 0
    refused = await store.admit(request("r3", now=NOW + 20))
    assert (refused.admitted, refused.reason, refused.retry_after) == (False, "rpm", 40.0)
    assert (refused.requests_remaining, refused.requests_reset) == (0, NOW + 70)
    # exactly one window after the first request its slot is free again
    assert (await store.admit(request("r4", now=NOW + 60))).admitted
    assert not (await store.admit(request("r5", now=NOW + 60))).admitted


async def test_requests_leave_the_window_with_the_second_they_came_in(store, make_team, make_key):
    await make_team(rpm=2)
    await make_key()
    assert (await store.admit(request("r1", now=NOW + 0.2))).admitted
    assert (await store.admit(request("r2", now=NOW + 0.9))).admitted
    refused = await store.admit(request("r3", now=NOW + 59.5))
    assert (refused.reason, refused.retry_after, refused.requests_reset) == ("rpm", 0.5, NOW + 60)
    verdict = await store.admit(request("r3", now=NOW + 60))
    assert (verdict.admitted, verdict.requests_remaining) == (True, 1)


async def test_a_burst_leaves_the_window_whole_after_a_quiet_minute(store, make_team, make_key):
    await make_team(rpm=100_000, tpm=10_000_000)
    await make_key(rpm=50_000)
    burst = [request(f"r{i}", now=NOW + i / 1000, tokens=7) for i in range(3000)]
    assert await admitted_count(store, burst) == 3000
    during = await store.admit(request("during", now=NOW + 3.5))  # the key is the tighter scope
    assert (during.requests_remaining, during.tokens_remaining) == (50_000 - 3001, 10_000_000 - 21_010)
    assert during.requests_reset == NOW + 63
    after = await store.admit(request("after", now=NOW + 63.5, tokens=5))
    assert (after.requests_remaining, after.tokens_remaining) == (50_000 - 1, 10_000_000 - 5)


async def test_rpm_zero_refuses_with_no_point_in_waiting(store, make_team, make_key):
    await make_team(rpm=0)
    await make_key()
    verdict = await store.admit(request("r1"))
    assert (verdict.admitted, verdict.reason, verdict.retry_after) == (False, "rpm", None)


async def test_teams_have_separate_counters(store, make_team, make_key):
    await make_team("team-a", rpm=1)
    await make_team("team-b", rpm=1)
    await make_key("key-a", "team-a")
    await make_key("key-b", "team-b")
    assert (await store.admit(request("r1", key="key-a", team="team-a"))).admitted
    assert (await store.admit(request("r1", key="key-b", team="team-b"))).admitted
    assert not (await store.admit(request("r2", key="key-a", team="team-a"))).admitted


async def test_a_key_presented_with_another_team_is_refused(store, make_team, make_key):
    await make_team("team-a")
    await make_team("team-b")
    await make_key("key-a", "team-a")
    assert (await store.admit(request("r1", key="key-a", team="team-b"))).reason == "revoked"


async def test_changed_limits_apply_to_the_next_admission(store, replica, make_team, make_key):
    await make_team(rpm=1)
    await make_key()
    assert (await store.admit(request("r1"))).admitted
    assert not (await store.admit(request("r2"))).admitted
    await replica.update_team("team-a", {"rpm": 2})
    verdict = await store.admit(request("r2"))
    assert (verdict.admitted, verdict.requests_limit, verdict.requests_remaining) == (True, 2, 0)


# -- tokens per minute ------------------------------------------------------------------------
async def test_tpm_counts_estimates_and_settle_trues_them_up(store, make_team, make_key):
    await make_team(tpm=1000)
    await make_key()
    first = await store.admit(request("r1", tokens=600))
    assert (first.tokens_limit, first.tokens_remaining) == (1000, 400)
    refused = await store.admit(request("r2", tokens=500, now=NOW + 5))
    assert (refused.admitted, refused.reason, refused.retry_after) == (False, "tpm", 55.0)
    assert refused.tokens_remaining == 400
    # the first request used only 300 tokens in the end
    assert await store.settle("team-a", "key-1", "r1", 0.0, 300, NOW + 6)
    second = await store.admit(request("r3", tokens=500, now=NOW + 7))
    assert (second.admitted, second.tokens_remaining) == (True, 200)


async def test_a_request_larger_than_the_tpm_limit_is_refused_for_good(store, make_team,
                                                                      make_key):
    await make_team(tpm=1000)
    await make_key()
    verdict = await store.admit(request("r1", tokens=1001))
    assert (verdict.admitted, verdict.reason, verdict.retry_after) == (False, "tpm", None)


async def test_tpm_retry_after_waits_for_enough_tokens_to_leave(store, make_team, make_key):
    await make_team(tpm=1000)
    await make_key()
    for i, (tokens, at) in enumerate([(300, 0), (300, 10), (300, 20)]):
        assert (await store.admit(request(f"r{i}", tokens=tokens, now=NOW + at))).admitted
    # 900 used; 700 more needs the first two requests (600 tokens) out of the window
    verdict = await store.admit(request("big", tokens=700, now=NOW + 30))
    assert (verdict.reason, verdict.retry_after) == ("tpm", 40.0)
    assert (await store.admit(request("big", tokens=700, now=NOW + 70))).admitted


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_concurrent_tpm_admissions_never_exceed_the_limit(store, make_team, make_key):
    await make_team(tpm=10_000)
    await make_key()
    assert await admitted_count(store, [request(f"r{i}", tokens=300) for i in range(100)]) == 33


# -- key limits inside team limits ------------------------------------------------------------
async def test_a_key_limit_narrows_only_that_key(store, make_team, make_key):
    await make_team(rpm=100)
    await make_key("key-1", rpm=2)
    await make_key("key-2")
    for i in range(2):
        assert (await store.admit(request(f"a{i}", key="key-1"))).admitted
    refused = await store.admit(request("a2", key="key-1"))
    assert (refused.reason, refused.requests_limit, refused.requests_remaining) == ("rpm", 2, 0)
    other = await store.admit(request("b0", key="key-2"))
    assert (other.admitted, other.requests_limit, other.requests_remaining) == (True, 100, 97)


async def test_headers_report_the_team_when_it_is_the_tighter_one(store, make_team, make_key):
    await make_team(rpm=3)
    await make_key("key-1", rpm=10)
    await make_key("key-2")
    await store.admit(request("b0", key="key-2"))
    await store.admit(request("b1", key="key-2"))
    verdict = await store.admit(request("a0", key="key-1"))
    assert (verdict.requests_limit, verdict.requests_remaining) == (3, 0)


# -- concurrency leases -------------------------------------------------------------------------
async def test_concurrency_slots_free_on_settle(store, make_team, make_key):
    await make_team(max_concurrent=2)
    await make_key()
    assert (await store.admit(request("r1"))).admitted
    assert (await store.admit(request("r2"))).admitted
    refused = await store.admit(request("r3"))
    assert (refused.reason, refused.retry_after) == ("concurrency", 1.0)
    await store.settle("team-a", "key-1", "r1", 0.0, 10, NOW + 1)
    assert (await store.admit(request("r3", now=NOW + 1))).admitted


async def test_key_concurrency_is_counted_per_key(store, make_team, make_key):
    await make_team(max_concurrent=10)
    await make_key("key-1", max_concurrent=1)
    await make_key("key-2")
    assert (await store.admit(request("a1", key="key-1"))).admitted
    assert (await store.admit(request("a2", key="key-1"))).reason == "concurrency"
    assert (await store.admit(request("b1", key="key-2"))).admitted


async def test_an_unrenewed_lease_expires_and_frees_its_slot(store, make_team, make_key):
    await make_team(max_concurrent=1)
    await make_key()
    assert (await store.admit(request("r1", now=NOW))).admitted
    assert not (await store.admit(request("r2", now=NOW + 29.9))).admitted
    # the replica holding r1 died: 30 s later its slot is free
    assert (await store.admit(request("r2", now=NOW + 30))).admitted


async def test_renewing_keeps_a_lease_and_an_expired_lease_cannot_be_renewed(store, replica,
                                                                            make_team,
                                                                            make_key):
    await make_team(max_concurrent=1)
    await make_key()
    assert (await store.admit(request("r1", now=NOW))).admitted
    assert await replica.renew("team-a", "r1", NOW + 20)       # lease now ends at NOW + 50
    assert not (await store.admit(request("r2", now=NOW + 45))).admitted
    assert (await store.admit(request("r2", now=NOW + 50))).admitted
    assert not await store.renew("team-a", "r1", NOW + 51)
    assert not await store.renew("team-a", "never-admitted", NOW)


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_concurrent_admissions_never_exceed_max_concurrent(store, make_team, make_key):
    await make_team(max_concurrent=7)
    await make_key()
    assert await admitted_count(store, [request(f"r{i}") for i in range(50)]) == 7


# -- budgets --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_one_dollar_budget_admits_exactly_100_requests_of_one_cent(store, replica,
                                                                           make_team,
                                                                           make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    results = await asyncio.gather(*((store if i % 2 else replica).admit(
        request(f"r{i}", cost=0.01)) for i in range(150)))
    admitted = [f"r{i}" for i, a in enumerate(results) if a.admitted]
    assert len(admitted) == 100
    await asyncio.gather(*(store.settle("team-a", "key-1", rid, 0.01, 10, NOW + 1)
                           for rid in admitted))
    # spend is exactly $1.00: nothing more fits, not even a nano-dollar, but a free request does
    assert not (await store.admit(request("extra", cost=1e-9, now=NOW + 2))).admitted
    assert (await store.admit(request("free", cost=0.0, now=NOW + 2))).admitted


async def test_sequential_admit_and_settle_spend_the_budget_exactly(store, make_team, make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    admitted = 0
    for i in range(120):
        verdict = await store.admit(request(f"r{i}", cost=0.01, now=NOW + i))
        if verdict.admitted:
            admitted += 1
            await store.settle("team-a", "key-1", f"r{i}", 0.01, 10, NOW + i)
    assert admitted == 100


async def test_settle_replaces_the_reservation_by_the_actual_cost(store, make_team, make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    assert (await store.admit(request("r1", cost=0.80))).admitted
    assert not (await store.admit(request("r2", cost=0.30))).admitted
    await store.settle("team-a", "key-1", "r1", 0.50, 10, NOW)
    assert (await store.admit(request("r2", cost=0.30))).admitted
    assert not (await store.admit(request("r3", cost=0.30))).admitted


async def test_a_settlement_repeated_in_its_batch_is_charged_once(store, make_team, make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    assert (await store.admit(request("r1", cost=0.40))).admitted
    batch = new_batch_id()
    assert await store.settle("team-a", "key-1", "r1", 0.40, 10, NOW, batch)
    assert not await store.settle("team-a", "key-1", "r1", 0.40, 10, NOW, batch)
    assert not await store.settle("team-a", "key-1", "r1", 0.40, 10, NOW + 5, batch)
    # charged once: 0.60 is left
    assert (await store.admit(request("r2", cost=0.60))).admitted
    assert not (await store.admit(request("r3", cost=0.01))).admitted


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_batch_is_settled_once_until_its_writer_says_it_is_done(store, replica, make_team, make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    for rid in ("r1", "r2"):
        assert (await store.admit(request(rid, cost=0.30))).admitted
    batch = new_batch_id()
    settlements = [("team-a", "key-1", rid, 0.25, 10, NOW) for rid in ("r1", "r2")]
    assert (await store.write_batch(settlements, [], batch)).settled == 2
    assert (await replica.write_batch(settlements, [], batch)).settled == 0  # a replay by another process
    refused = await store.admit(request("r3", cost=0.51))
    assert refused.reason == "budget_daily" and refused.budget_left_usd == pytest.approx(0.50)
    # The writer has the reply: the mark goes with its next write, the writer never sending the
    # batch again (were it sent, it would be a new batch: settled again, and charged).
    await store.write_batch([], [], None, [("team-a", batch)])
    assert (await replica.write_batch(settlements, [], batch)).settled == 2
    refused = await store.admit(request("r3", cost=0.01))
    assert refused.reason == "budget_daily" and refused.budget_left_usd == 0


async def test_settle_with_zero_cost_releases_the_reservation(store, make_team, make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    assert (await store.admit(request("r1", cost=1.00))).admitted
    await store.settle("team-a", "key-1", "r1", 0.0, 0, NOW)
    assert (await store.admit(request("r2", cost=1.00))).admitted


async def test_a_reservation_never_settled_is_charged_as_abandoned_when_its_lease_expires(store, make_team,
                                                                                          make_key):
    await make_team(budget_daily_usd=1.00, max_concurrent=1)
    await make_key()
    assert (await store.admit(request("r1", cost=0.6, now=NOW))).admitted
    assert (await store.admit(request("r2", cost=0.3, now=NOW + 29))).reason == "concurrency"
    # The lease expired: its slot is free, its reservation is spent (the upstream may have billed it).
    assert (await store.admit(request("r2", cost=0.4, now=NOW + 30))).admitted
    assert await store.abandoned("team-a") == {"r1": (0.6, "key-1")}
    assert (await store.admit(request("r3", cost=0.01, now=NOW + 31))).reason == "concurrency"
    assert await store.settle("team-a", "key-1", "r2", 0.4, 1, NOW + 31)
    refused = await store.admit(request("r3", cost=0.01, now=NOW + 32))
    assert refused.reason == "budget_daily" and refused.budget_left_usd == 0
    # A late settlement of the abandoned request is a duplicate: it was charged at its reservation.
    assert not await store.settle("team-a", "key-1", "r1", 0.2, 1, NOW + 33)
    assert (await store.admit(request("r3", cost=0.01, now=NOW + 34))).reason == "budget_daily"


async def test_a_late_settle_still_charges_what_was_spent(store, make_team, make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    assert (await store.admit(request("r1", cost=0.5, now=NOW))).admitted
    await store.settle("team-a", "key-1", "r1", 0.7, 10, NOW + 100)  # after the lease expired
    assert not (await store.admit(request("r2", cost=0.31, now=NOW + 101))).admitted
    assert (await store.admit(request("r3", cost=0.30, now=NOW + 101))).admitted


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


async def test_daily_budget_refuses_until_the_next_utc_day(store, make_team, make_key):
    now = _epoch(2025, 1, 15, 23, 0, 0)
    await make_team(budget_daily_usd=1.00)
    await make_key()
    assert (await store.admit(request("r1", cost=1.00, now=now))).admitted
    await store.settle("team-a", "key-1", "r1", 1.00, 10, now)
    verdict = await store.admit(request("r2", cost=0.01, now=now + 1))
    assert (verdict.admitted, verdict.reason, verdict.retry_after) == \
        (False, "budget_daily", 3599.0)
    assert (await store.admit(request("r2", cost=0.01, now=_epoch(2025, 1, 16)))).admitted


async def test_monthly_budget_refuses_until_the_next_utc_month(store, make_team, make_key):
    await make_team(budget_daily_usd=1.00, budget_monthly_usd=1.50)
    await make_key()
    day1, day2 = _epoch(2025, 1, 30, 12), _epoch(2025, 1, 31, 12)
    assert (await store.admit(request("r1", cost=1.0, now=day1))).admitted
    await store.settle("team-a", "key-1", "r1", 1.0, 10, day1)
    verdict = await store.admit(request("r2", cost=0.6, now=day2))
    assert (verdict.reason, verdict.retry_after) == ("budget_monthly", 12 * 3600.0)
    assert (await store.admit(request("r2", cost=0.5, now=day2))).admitted
    # both spent: the month decides the wait
    await store.settle("team-a", "key-1", "r2", 1.0, 10, day2)
    verdict = await store.admit(request("r3", cost=0.1, now=day2 + 60))
    assert (verdict.reason, verdict.retry_after) == ("budget_monthly", 12 * 3600.0 - 60)
    assert (await store.admit(request("r3", cost=0.1, now=_epoch(2025, 2, 1)))).admitted


async def test_a_key_budget_is_its_own_within_the_team_budget(store, make_team, make_key):
    await make_team(budget_daily_usd=10.0)
    await make_key("key-1", budget_daily_usd=1.0)
    await make_key("key-2")
    assert (await store.admit(request("a1", key="key-1", cost=1.0))).admitted
    assert (await store.admit(request("a2", key="key-1", cost=0.01))).reason == "budget_daily"
    assert (await store.admit(request("b1", key="key-2", cost=5.0))).admitted


# -- all or nothing -------------------------------------------------------------------------
async def test_a_refused_request_consumes_nothing(store, make_team, make_key):
    await make_team(rpm=1, tpm=100, max_concurrent=1, budget_daily_usd=0.01)
    await make_key()
    refused = await store.admit(request("r1", cost=0.02, tokens=50))
    assert refused.reason == "budget_daily"
    assert (refused.requests_remaining, refused.tokens_remaining) == (1, 100)
    verdict = await store.admit(request("r2", cost=0.01, tokens=100))
    assert verdict.admitted
    assert (verdict.requests_remaining, verdict.tokens_remaining) == (0, 0)


async def test_admitting_the_same_request_twice_counts_it_once(store, make_team, make_key):
    await make_team(rpm=1, max_concurrent=1, budget_daily_usd=0.01)
    await make_key()
    assert (await store.admit(request("r1", cost=0.01))).admitted
    assert (await store.admit(request("r1", cost=0.01))).admitted
    assert not (await store.admit(request("r2", cost=0.0))).admitted
