"""Rate-only admission (token counting) and the key reads authentication makes, on every backend."""
from __future__ import annotations

import pytest

from gateway.store.base import AdmissionRequest
from tests.store.conftest import ALL_BACKENDS, NOW, secret_hash

pytestmark = pytest.mark.anyio


def counting(rid: str, *, now: float = NOW, model: str = "m1") -> AdmissionRequest:
    return AdmissionRequest(team="team-a", key_id="key-1", request_id=rid, tokens=0, cost_usd=0.0,
                            model=model, now=now, rate_only=True)


def message(rid: str, *, tokens: int = 10, cost: float = 0.0) -> AdmissionRequest:
    return AdmissionRequest(team="team-a", key_id="key-1", request_id=rid, tokens=tokens, cost_usd=cost,
                            model="m1", now=NOW)


async def test_a_rate_only_admission_counts_against_rpm_of_team_and_key(store, make_team, make_key):
    await make_team(rpm=3)
    await make_key(rpm=2)
    verdicts = [await store.admit(counting(f"c{i}")) for i in range(3)]
    assert [v.admitted for v in verdicts] == [True, True, False]
    assert verdicts[2].reason == "rpm" and verdicts[2].retry_after is not None
    assert verdicts[1].requests_remaining == 0


async def test_a_rate_only_admission_ignores_tpm_concurrency_and_budgets(store, make_team, make_key):
    await make_team(tpm=5, max_concurrent=1, budget_daily_usd=0.0, budget_monthly_usd=0.0)
    await make_key()
    assert (await store.admit(message("m1"))).reason == "tpm"
    for i in range(5):
        assert (await store.admit(counting(f"c{i}"))).admitted


async def test_a_rate_only_admission_holds_no_lease_or_reservation(store, make_team, make_key):
    await make_team(max_concurrent=1, budget_daily_usd=1.0)
    await make_key()
    assert (await store.admit(counting("c1"))).admitted
    # Had the count taken the only concurrency slot or reserved money, this would be refused.
    assert (await store.admit(message("m1", cost=1.0))).admitted


async def test_a_rate_only_admission_checks_key_validity_and_allowed_models(store, make_team, make_key):
    await make_team(allowed_models=["m1"])
    await make_key(expires_at=NOW + 10)
    assert (await store.admit(counting("c1", model="m2"))).reason == "model_not_allowed"
    assert (await store.admit(counting("c2", now=NOW + 10))).reason == "expired"
    await store.revoke_key("key-1")
    assert (await store.admit(counting("c3"))).reason == "revoked"


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_key_is_located_by_its_secret_and_read_with_its_team(store, make_team, make_key):
    await make_team(rpm=7)
    key = await make_key(rpm=3)
    assert await store.locate_key(secret_hash("secret-key-1")) == ("team-a", "key-1")
    assert await store.locate_key(secret_hash("no-such-secret")) is None
    record, team = await store.key_and_team("team-a", "key-1")
    assert record == key and team is not None and team.limits.rpm == 7
    await store.revoke_key("key-1")
    record, _ = await store.key_and_team("team-a", "key-1")
    assert record.revoked
    assert await store.locate_key(secret_hash("secret-key-1")) == ("team-a", "key-1"), "revoking keeps the lookup"
    await store.delete_team("team-a")
    record, team = await store.key_and_team("team-a", "key-1")
    assert team is None
