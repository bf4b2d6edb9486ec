"""Teams and keys: what the admin API relies on, identical on every backend."""
from __future__ import annotations

import pytest

from gateway.store.base import Conflict, Invalid, KeyRecord, Limits, NotFound, Team
from tests.store.conftest import ALL_BACKENDS, NOW, secret_hash

pytestmark = pytest.mark.anyio


async def test_created_team_reads_back_with_its_limits(store, make_team):
    await make_team("team-a", rpm=10, budget_daily_usd=2.5, allowed_models=["m1", "m2"])
    team = await store.get_team("team-a")
    assert team == Team("team-a", Limits(rpm=10, budget_daily_usd=2.5,
                                         allowed_models=("m1", "m2")), NOW)
    assert await store.get_team("nobody") is None


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_healthy_store_answers_ping(store):
    await store.ping()


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_teams_are_listed_by_name(store, make_team):
    for name in ("zeta", "alpha", "mid"):
        await make_team(name)
    assert [t.name for t in await store.list_teams()] == ["alpha", "mid", "zeta"]


async def test_a_team_name_is_taken_once(store, make_team):
    await make_team("team-a")
    with pytest.raises(Conflict):
        await make_team("team-a")


@pytest.mark.parametrize("name", ["", "has space", "{brace}", "-leading-dash", "x" * 65])
async def test_a_team_name_that_cannot_be_a_hash_tag_is_refused(store, name):
    with pytest.raises(Invalid):
        await store.create_team(Team(name=name, created_at=NOW))
    assert await store.list_teams() == []


@pytest.mark.parametrize("limits", [{"rpm": -1}, {"tpm": 1.5}, {"max_concurrent": True},
                                    {"budget_daily_usd": float("nan")},
                                    {"budget_monthly_usd": -0.01}, {"allowed_models": "m1"}])
async def test_negative_or_malformed_limits_are_refused(store, limits):
    with pytest.raises(Invalid):
        await store.create_team(Team(name="team-a", limits=Limits(**limits), created_at=NOW))


async def test_update_team_changes_flat_or_nested_limits_and_null_clears(store, make_team):
    await make_team("team-a", rpm=10, tpm=1000)
    team = await store.update_team("team-a", {"rpm": 20, "limits": {"budget_daily_usd": 5}})
    assert team.limits == Limits(rpm=20, tpm=1000, budget_daily_usd=5.0)
    team = await store.update_team("team-a", {"tpm": None, "metadata": {"owner": "ops"}})
    assert team.limits == Limits(rpm=20, budget_daily_usd=5.0)
    assert (await store.get_team("team-a")) == team
    assert team.metadata == {"owner": "ops"}


async def test_update_team_refuses_unknown_fields_bad_values_and_missing_teams(store, make_team):
    await make_team("team-a", rpm=10)
    with pytest.raises(Invalid):
        await store.update_team("team-a", {"name": "other"})
    with pytest.raises(Invalid):
        await store.update_team("team-a", {"rpm": -5})
    with pytest.raises(NotFound):
        await store.update_team("nobody", {"rpm": 1})
    assert (await store.get_team("team-a")).limits.rpm == 10


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_key_is_found_by_secret_hash_and_by_id(store, make_team, make_key):
    await make_team("team-a")
    key = await make_key("key-1", "team-a", rpm=5)
    assert await store.find_key(secret_hash("secret-key-1")) == key
    assert await store.get_key("key-1") == key
    assert await store.find_key(secret_hash("another secret")) is None
    assert await store.get_key("key-2") is None


async def test_a_key_needs_an_existing_team(store, make_key):
    with pytest.raises(NotFound):
        await make_key("key-1", "nobody")


async def test_key_id_and_secret_are_unique(store, make_team, make_key):
    await make_team("team-a")
    await make_key("key-1")
    with pytest.raises(Conflict):
        await make_key("key-1")
    same_secret = KeyRecord(id="key-2", team="team-a", prefix="sk", created_at=NOW,
                            secret_hash=secret_hash("secret-key-1"))
    with pytest.raises(Conflict):
        await store.create_key(same_secret)
    # the refused key left nothing behind: its id is still free
    await make_key("key-2")


@pytest.mark.parametrize("change", [{"id": "k9"}, {"team": "team-b"}, {"secret_hash": "0" * 64}])
async def test_key_identity_cannot_change(store, make_team, make_key, change):
    await make_team("team-a")
    await make_key("key-1")
    with pytest.raises(Invalid):
        await store.update_key("key-1", change)


async def test_malformed_keys_are_refused(store, make_team):
    await make_team("team-a")
    with pytest.raises(Invalid):
        await store.create_key(KeyRecord(id="key-1", team="team-a", prefix="sk",
                                         secret_hash="not-a-sha256", created_at=NOW))
    with pytest.raises(Invalid):
        await store.create_key(KeyRecord(id="bad id", team="team-a", prefix="sk",
                                         secret_hash=secret_hash("s"), created_at=NOW))
    assert await store.list_keys("team-a") == []


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_keys_are_listed_per_team_or_all(store, make_team, make_key):
    await make_team("team-a")
    await make_team("team-b")
    await make_key("key-1", "team-a")
    await make_key("key-2", "team-b")
    await make_key("key-3", "team-a")
    assert [k.id for k in await store.list_keys("team-a")] == ["key-1", "key-3"]
    assert [k.id for k in await store.list_keys()] == ["key-1", "key-2", "key-3"]
    assert await store.list_keys("nobody") == []


async def test_update_key_changes_name_expiry_and_limits(store, make_team, make_key):
    await make_team("team-a")
    await make_key("key-1", rpm=5)
    key = await store.update_key("key-1", {"name": "ci", "expires_at": NOW + 60, "tpm": 100})
    assert (key.name, key.expires_at, key.limits) == ("ci", NOW + 60, Limits(rpm=5, tpm=100))
    assert await store.find_key(secret_hash("secret-key-1")) == key
    with pytest.raises(NotFound):
        await store.update_key("nobody", {"name": "x"})


async def test_revoked_key_stays_revoked(store, make_team, make_key):
    await make_team("team-a")
    await make_key("key-1")
    await store.revoke_key("key-1")
    assert (await store.find_key(secret_hash("secret-key-1"))).revoked
    await store.revoke_key("key-1")  # again: no error
    with pytest.raises(Invalid):
        await store.update_key("key-1", {"revoked": False})
    with pytest.raises(NotFound):
        await store.revoke_key("nobody")


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_deleting_a_team_revokes_its_keys(store, make_team, make_key):
    await make_team("team-a")
    await make_team("team-b")
    await make_key("key-1", "team-a")
    await make_key("key-2", "team-b")
    await store.delete_team("team-a")
    assert await store.get_team("team-a") is None
    assert [t.name for t in await store.list_teams()] == ["team-b"]
    assert (await store.get_key("key-1")).revoked
    assert not (await store.get_key("key-2")).revoked
    with pytest.raises(NotFound):
        await store.delete_team("team-a")


def test_key_limits_narrow_the_team_limits_field_by_field():
    team = Limits(rpm=100, tpm=None, max_concurrent=4, budget_daily_usd=10.0,
                  allowed_models=("a", "b"))
    key = Limits(rpm=10, tpm=5000, max_concurrent=None, budget_daily_usd=20.0,
                 allowed_models=("b", "c"))
    assert team.narrowed_by(key) == Limits(rpm=10, tpm=5000, max_concurrent=4,
                                           budget_daily_usd=10.0, allowed_models=("b",))
    assert team.narrowed_by(Limits()) == team
