"""A budget refusal reports what the refusing budget has left, on every backend: the gateway's
message tells "spent" from "this request's worst case is more than what is left"."""
from __future__ import annotations

import pytest

from gateway.store.base import AdmissionRequest
from tests.store.conftest import NOW

pytestmark = pytest.mark.anyio


def request(rid: str, cost: float) -> AdmissionRequest:
    return AdmissionRequest(team="team-a", key_id="key-1", request_id=rid, tokens=10, cost_usd=cost,
                            model="m1", now=NOW)


async def test_a_refusal_reports_the_budget_left_after_spend_and_reservations(store, make_team, make_key):
    await make_team(budget_daily_usd=1.00)
    await make_key()
    assert (await store.admit(request("r1", 0.30))).admitted  # settled below
    assert await store.settle("team-a", "key-1", "r1", 0.25, 10, NOW)
    assert (await store.admit(request("r2", 0.40))).admitted  # still reserved, in flight
    verdict = await store.admit(request("r3", 0.50))
    assert not verdict.admitted and verdict.reason == "budget_daily"
    assert verdict.budget_left_usd == pytest.approx(0.35)


async def test_the_tighter_of_team_and_key_budgets_is_reported(store, make_team, make_key):
    await make_team(budget_monthly_usd=10.0)
    await make_key(budget_monthly_usd=0.10)
    verdict = await store.admit(request("r1", 0.20))
    assert verdict.reason == "budget_monthly" and verdict.budget_left_usd == pytest.approx(0.10)


async def test_a_spent_budget_reports_nothing_left(store, make_team, make_key):
    await make_team(budget_daily_usd=0.10)
    await make_key()
    assert (await store.admit(request("r1", 0.10))).admitted
    assert await store.settle("team-a", "key-1", "r1", 0.12, 10, NOW)  # the actual cost ran over
    verdict = await store.admit(request("r2", 0.01))
    assert verdict.reason == "budget_daily" and verdict.budget_left_usd == 0


async def test_other_refusals_report_no_budget(store, make_team, make_key):
    await make_team(rpm=1, budget_daily_usd=5.0)
    await make_key()
    assert (await store.admit(request("r1", 0.01))).admitted
    verdict = await store.admit(request("r2", 0.01))
    assert verdict.reason == "rpm" and verdict.budget_left_usd is None
