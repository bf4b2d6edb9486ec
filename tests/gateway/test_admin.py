"""The admin API and GET /v1/usage, through a real gateway: teams, keys, access, usage, sessions."""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY, base_settings
from tests.fakes.anthropic import AUTO_INPUT_TOKENS
from tests.gateway_server import GatewayThread
from tests.redis_server import RedisServer

MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
SECRET = re.compile(r"sk-gw-[A-Za-z0-9_-]{40}")
MARCH_1 = 1740787200.0  # 2025-03-01T00:00:00Z: usage in a fixed past window, apart from other tests
FEBRUARY = MARCH_1 - 14 * 86400


def settings_for(upstream_url: str, spill_dir: Path, **extra: Any) -> dict[str, Any]:
    return base_settings(upstream_url, usage_spill_path=str(spill_dir / "usage-spill.jsonl"), **extra)


@pytest.fixture(scope="module")
def admin_gateway(anthropic_upstream, tmp_path_factory) -> Iterator[GatewayThread]:
    with GatewayThread(**settings_for(anthropic_upstream.url, tmp_path_factory.mktemp("admin"))) as running:
        yield running


@pytest.fixture
def admin(admin_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin_gateway.url, headers={"x-api-key": ADMIN_KEY}, timeout=10) as c:
        yield c


@pytest.fixture
def team(admin) -> str:
    name = f"team-{uuid.uuid4().hex[:8]}"
    assert admin.post("/admin/teams", json={"name": name}).status_code == 201
    return name


def send_message(gateway: GatewayThread, key: str) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/messages", json=MESSAGE, headers={"x-api-key": key}, timeout=10)


def accepted(gateway: GatewayThread, key: str) -> tuple[int, int]:
    """Statuses of a message (authenticated, then admitted by the store) and of a model listing
    (authenticated only, so a key this replica still remembers would pass)."""
    listing = httpx.get(gateway.url + "/v1/models", headers={"x-api-key": key}, timeout=10)
    return send_message(gateway, key).status_code, listing.status_code


def error_of(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    assert body["type"] == "error"
    return body["error"]["type"], body["error"]["message"]


def new_key(admin: httpx.Client, team: str, **body: Any) -> dict[str, Any]:
    response = admin.post(f"/admin/teams/{team}/keys", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# -- teams --------------------------------------------------------------------------------------
def test_created_team_comes_back_with_201_and_its_limits(admin):
    name = f"team-{uuid.uuid4().hex[:8]}"
    response = admin.post("/admin/teams", json={
        "name": name, "rpm": 60, "tpm": 100_000, "max_concurrent": 4, "budget_daily_usd": 5,
        "budget_monthly_usd": 100.5, "allowed_models": ["anthropic/claude-sonnet-4.5"],
        "metadata": {"owner": "ops"}})
    assert response.status_code == 201
    team = response.json()
    assert team["name"] == name
    assert team["limits"] == {"rpm": 60, "tpm": 100_000, "max_concurrent": 4, "budget_daily_usd": 5.0,
                              "budget_monthly_usd": 100.5, "allowed_models": ["anthropic/claude-sonnet-4.5"]}
    assert team["metadata"] == {"owner": "ops"}
    assert abs(team["created_at"] - time.time()) < 60
    assert admin.get(f"/admin/teams/{name}").json() == team
    assert team in admin.get("/admin/teams").json()["data"]


def test_teams_are_listed_by_name(admin):
    names = [f"zz-{uuid.uuid4().hex[:6]}-{i}" for i in (2, 0, 1)]
    for name in names:
        admin.post("/admin/teams", json={"name": name})
    listed = [t["name"] for t in admin.get("/admin/teams").json()["data"]]
    assert [n for n in listed if n in names] == sorted(names)


def test_a_team_name_is_taken_once_409(admin, team):
    response = admin.post("/admin/teams", json={"name": team, "rpm": 5})
    assert response.status_code == 409
    kind, message = error_of(response)
    assert kind == "invalid_request_error" and team in message
    assert admin.get(f"/admin/teams/{team}").json()["limits"]["rpm"] is None


@pytest.mark.parametrize("body, field", [
    ({"name": "ok-name", "rpm": -1}, "rpm"),
    ({"name": "ok-name", "tpm": "1000"}, "tpm"),
    ({"name": "ok-name", "max_concurrent": 1.5}, "max_concurrent"),
    ({"name": "ok-name", "budget_daily_usd": -0.01}, "budget_daily_usd"),
    ({"name": "ok-name", "budget_monthly_usd": True}, "budget_monthly_usd"),
    ({"name": "ok-name", "allowed_models": "claude"}, "allowed_models"),
    ({"name": "ok-name", "metadata": ["x"]}, "metadata"),
    ({"name": "ok-name", "colour": "blue"}, "colour"),
    ({"name": "has space"}, "name"),
    ({"name": "{brace}"}, "name"),
    ({"name": 7}, "name"),
    ({"rpm": 5}, "name"),
])
def test_a_bad_team_is_a_400_naming_the_field(admin, body, field):
    response = admin.post("/admin/teams", json=body)
    assert response.status_code == 400
    kind, message = error_of(response)
    assert kind == "invalid_request_error"
    assert field in message
    assert admin.get("/admin/teams/ok-name").status_code == 404


def test_a_body_that_is_not_a_json_object_is_a_400(admin):
    for raw in (b"", b"{not json", b"[1, 2]"):
        response = admin.post("/admin/teams", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert error_of(response)[0] == "invalid_request_error"


def test_patch_changes_only_what_it_names_and_null_clears_a_limit(admin):
    name = f"team-{uuid.uuid4().hex[:8]}"
    admin.post("/admin/teams", json={"name": name, "rpm": 10, "tpm": 1000, "budget_daily_usd": 2})
    response = admin.patch(f"/admin/teams/{name}", json={"rpm": 20, "tpm": None})
    assert response.status_code == 200
    assert response.json()["limits"] == {"rpm": 20, "tpm": None, "max_concurrent": None,
                                         "budget_daily_usd": 2.0, "budget_monthly_usd": None,
                                         "allowed_models": None}
    assert admin.get(f"/admin/teams/{name}").json() == response.json()


@pytest.mark.parametrize("body, field", [({"rpm": -5}, "rpm"), ({"name": "renamed"}, "name"),
                                         ({"allowed_models": [1]}, "allowed_models")])
def test_a_bad_patch_is_a_400_and_changes_nothing(admin, team, body, field):
    before = admin.get(f"/admin/teams/{team}").json()
    response = admin.patch(f"/admin/teams/{team}", json=body)
    assert response.status_code == 400
    assert field in error_of(response)[1]
    assert admin.get(f"/admin/teams/{team}").json() == before


@pytest.mark.parametrize("method, path", [
    ("GET", "/admin/teams/nobody-here"), ("PATCH", "/admin/teams/nobody-here"),
    ("DELETE", "/admin/teams/nobody-here"), ("POST", "/admin/teams/nobody-here/keys"),
    ("GET", "/admin/keys/key_missing"), ("PATCH", "/admin/keys/key_missing"),
    ("DELETE", "/admin/keys/key_missing"), ("POST", "/admin/keys/key_missing/rotate"),
])
def test_a_missing_team_or_key_is_a_404(admin, method, path):
    response = admin.request(method, path, json={"rpm": 1} if method == "PATCH" else {})
    assert response.status_code == 404
    kind, message = error_of(response)
    assert kind == "not_found_error" and path.split("/")[3] in message


def test_deleting_a_team_revokes_its_keys_at_once(admin_gateway, admin, team, upstream):
    key = new_key(admin, team)
    assert accepted(admin_gateway, key["key"]) == (200, 200)
    response = admin.delete(f"/admin/teams/{team}")
    assert response.status_code == 200
    assert response.json() == {"name": team, "deleted": True, "revoked_keys": [key["id"]]}
    assert admin.get(f"/admin/teams/{team}").status_code == 404
    assert accepted(admin_gateway, key["key"]) == (401, 401)
    assert admin.get(f"/admin/keys/{key['id']}").json()["status"] == "revoked"


# -- keys ---------------------------------------------------------------------------------------
def test_a_new_key_shows_its_secret_once_and_authenticates(admin_gateway, admin, team, upstream):
    key = new_key(admin, team, name="ci")
    assert SECRET.fullmatch(key["key"])
    assert key["prefix"] == key["key"][:12]
    assert key["team"] == team and key["name"] == "ci" and key["status"] == "active"
    assert "secret_hash" not in key
    response = send_message(admin_gateway, key["key"])
    assert response.status_code == 200
    shown_later = [admin.get(f"/admin/keys/{key['id']}"), admin.get("/admin/keys", params={"team": team}),
                   admin.get("/admin/keys")]
    for later in shown_later:
        assert later.status_code == 200
        assert key["key"] not in later.text
        assert "secret_hash" not in later.text and '"key":' not in later.text
    assert [k["id"] for k in shown_later[1].json()["data"]] == [key["id"]]


def test_secrets_differ_between_keys_and_keys_list_by_team(admin, team):
    first, second = new_key(admin, team), new_key(admin, team)
    assert first["key"] != second["key"] and first["id"] != second["id"]
    listed = admin.get("/admin/keys", params={"team": team}).json()["data"]
    assert [k["id"] for k in listed] == [first["id"], second["id"]]


def test_a_key_carries_its_own_limits_and_expiry(admin, team):
    key = new_key(admin, team, rpm=5, allowed_models=["m1"], expires_at="2099-01-02T03:04:05Z")
    assert key["limits"]["rpm"] == 5 and key["limits"]["allowed_models"] == ["m1"]
    assert key["expires_at"] == 4071006245.0
    in_days = new_key(admin, team, expires_in_days=2)
    assert abs(in_days["expires_at"] - (time.time() + 2 * 86400)) < 60


@pytest.mark.parametrize("body, field", [
    ({"expires_at": 1000}, "expires_at"), ({"expires_at": "next tuesday"}, "expires_at"),
    ({"expires_in_days": 0}, "expires_in_days"), ({"expires_in_days": 1, "expires_at": 4071006245}, "expires_at"),
    ({"rpm": -1}, "rpm"), ({"name": 5}, "name"), ({"secret": "mine"}, "secret"),
])
def test_a_bad_key_request_is_a_400_naming_the_field(admin, team, body, field):
    response = admin.post(f"/admin/teams/{team}/keys", json=body)
    assert response.status_code == 400
    assert field in error_of(response)[1]
    assert admin.get("/admin/keys", params={"team": team}).json()["data"] == []


def test_a_revoked_key_gets_401_at_once_on_the_same_replica(admin_gateway, admin, team, upstream):
    key = new_key(admin, team)
    assert accepted(admin_gateway, key["key"]) == (200, 200)  # now remembered as valid
    response = admin.delete(f"/admin/keys/{key['id']}")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    assert accepted(admin_gateway, key["key"]) == (401, 401)
    assert error_of(send_message(admin_gateway, key["key"]))[0] == "authentication_error"


def test_an_expired_key_gets_401(admin_gateway, admin, team, upstream):
    key = new_key(admin, team)
    assert accepted(admin_gateway, key["key"]) == (200, 200)
    response = admin.patch(f"/admin/keys/{key['id']}", json={"expires_at": time.time() - 1})
    assert response.status_code == 200 and response.json()["status"] == "expired"
    assert accepted(admin_gateway, key["key"]) == (401, 401)


def test_patch_changes_a_keys_name_and_limits(admin, team):
    key = new_key(admin, team, name="old", rpm=5, tpm=100)
    response = admin.patch(f"/admin/keys/{key['id']}", json={"name": "new", "rpm": None, "budget_daily_usd": 1})
    assert response.status_code == 200
    changed = response.json()
    assert changed["name"] == "new"
    limits = changed["limits"]
    assert (limits["rpm"], limits["tpm"], limits["budget_daily_usd"]) == (None, 100, 1.0)
    assert admin.patch(f"/admin/keys/{key['id']}", json={"team": "other"}).status_code == 400


def test_rotation_gives_a_new_secret_and_revokes_the_old_one(admin_gateway, admin, team, upstream):
    old = new_key(admin, team, name="svc", rpm=7)
    assert accepted(admin_gateway, old["key"]) == (200, 200)
    response = admin.post(f"/admin/keys/{old['id']}/rotate")
    assert response.status_code == 201
    new = response.json()
    assert SECRET.fullmatch(new["key"]) and new["key"] != old["key"] and new["id"] != old["id"]
    assert (new["team"], new["name"], new["limits"], new["rotated_from"]) == (team, "svc", old["limits"], old["id"])
    assert new["previous"]["status"] == "revoked"
    assert accepted(admin_gateway, old["key"]) == (401, 401)
    assert accepted(admin_gateway, new["key"]) == (200, 200)
    again = admin.post(f"/admin/keys/{old['id']}/rotate")
    assert again.status_code == 400 and "revoked" in error_of(again)[1]


def test_rotation_with_grace_keeps_the_old_key_for_that_long(admin_gateway, admin, team, upstream):
    old = new_key(admin, team)
    response = admin.post(f"/admin/keys/{old['id']}/rotate", json={"grace_seconds": 3600})
    assert response.status_code == 201
    previous = response.json()["previous"]
    assert previous["status"] == "active" and abs(previous["expires_at"] - (time.time() + 3600)) < 60
    assert send_message(admin_gateway, old["key"]).status_code == 200
    assert send_message(admin_gateway, response.json()["key"]).status_code == 200
    assert admin.post(f"/admin/keys/{old['id']}/rotate", json={"grace_seconds": -1}).status_code == 400


# -- access -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [("GET", "/admin/teams"), ("POST", "/admin/teams"),
                                          ("GET", "/admin/keys"), ("GET", "/admin/usage"),
                                          ("DELETE", "/admin/keys/key_x"), ("GET", "/admin/sessions/s-1")])
def test_a_team_key_on_the_admin_api_is_a_403(admin_gateway, method, path):
    for headers in ({"x-api-key": TEAM_KEY}, {"authorization": f"Bearer {TEAM_KEY}"}):
        response = httpx.request(method, admin_gateway.url + path, headers=headers, json={"name": "sneaky"})
        assert response.status_code == 403
        assert error_of(response)[0] == "permission_error"


def test_no_key_or_a_wrong_key_on_the_admin_api_is_a_401(admin_gateway):
    for headers in ({}, {"x-api-key": "sk-not-a-key-at-all"}, {"authorization": "Bearer sk-wrong"}):
        response = httpx.get(admin_gateway.url + "/admin/teams", headers=headers)
        assert response.status_code == 401
        assert error_of(response)[0] == "authentication_error"


def test_the_admin_key_works_as_a_bearer_token_too(admin_gateway):
    response = httpx.get(admin_gateway.url + "/admin/teams", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200


def test_a_store_key_on_the_admin_api_is_a_403(admin_gateway, admin, team):
    key = new_key(admin, team)
    response = httpx.get(admin_gateway.url + "/admin/teams", headers={"x-api-key": key["key"]})
    assert response.status_code == 403


@pytest.mark.parametrize("admin_key", [None, ""])
def test_without_an_admin_key_the_admin_api_is_disabled(anthropic_upstream, tmp_path, admin_key):
    with GatewayThread(**settings_for(anthropic_upstream.url, tmp_path, admin_key=admin_key)) as running:
        for headers in ({}, {"x-api-key": ADMIN_KEY}, {"x-api-key": TEAM_KEY}, {"x-api-key": ""}):
            for method, path in (("GET", "/admin/teams"), ("POST", "/admin/teams/t/keys"), ("GET", "/admin/usage")):
                response = httpx.request(method, running.url + path, headers=headers)
                assert response.status_code == 403
                kind, message = error_of(response)
                assert kind == "permission_error" and "admin API disabled" in message
        assert httpx.get(running.url + "/v1/usage", headers={"x-api-key": TEAM_KEY}).status_code == 200


# -- usage --------------------------------------------------------------------------------------
def usage_record(team: str, model: str, *, ts: float, provider: str = "anthropic", user: str | None = None,
                 input_tokens: int = 100, output_tokens: int = 10, cost: float = 0.01,
                 session_id: str | None = None, trace: dict | None = None) -> dict[str, Any]:
    return {"request_id": "req_" + uuid.uuid4().hex, "ts": ts, "team": team, "key_id": "key_test",
            "model": model, "provider": provider, "user": user, "input_tokens": input_tokens,
            "output_tokens": output_tokens, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 20,
            "cost_usd": cost, "session_id": session_id, "trace": trace}


def append_usage(gateway: GatewayThread, records: list[dict[str, Any]]) -> None:
    """Write records as if earlier requests had made them: the rollups of the in-memory store and
    the rows of the SQLite record store. Only for a gateway that serves no messages: then nothing
    else writes to its in-memory store, which holds no loop-bound state (and the SQLite store runs
    on its own thread)."""
    assert asyncio.run(gateway.gateway.store.append_usage(records)) == len(records)
    assert asyncio.run(gateway.gateway.records.db.insert(records)) == len(records)


@pytest.fixture(scope="module")
def usage_gateway(anthropic_upstream, tmp_path_factory) -> Iterator[GatewayThread]:
    """A gateway holding usage of team-a and team-b (the static keys' teams) on 2025-03-01 and
    2025-03-02; no test sends it messages."""
    with GatewayThread(**settings_for(anthropic_upstream.url, tmp_path_factory.mktemp("usage"))) as running:
        sonnet, opus = "anthropic/claude-sonnet-4.5", "anthropic/claude-opus-4.8"
        append_usage(running, [
            usage_record("team-a", sonnet, ts=MARCH_1 + 3600, user="u1", cost=0.25),
            usage_record("team-a", sonnet, ts=MARCH_1 + 7200, user="u2", cost=0.5),
            usage_record("team-a", opus, ts=MARCH_1 + 86400 + 60, user="u1", provider="other", cost=1.0),
            usage_record("team-b", sonnet, ts=MARCH_1 + 600, input_tokens=1, output_tokens=1, cost=0.125),
        ])
        yield running


@pytest.fixture
def usage_admin(usage_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=usage_gateway.url, headers={"x-api-key": ADMIN_KEY}, timeout=10) as c:
        yield c


MARCH = {"from": "2025-03-01", "to": "2025-03-02"}


def test_admin_usage_groups_by_team_and_model(usage_admin):
    response = usage_admin.get("/admin/usage", params={**MARCH, "group_by": "team,model"})
    assert response.status_code == 200
    assert response.json()["data"] == [
        {"team": "team-a", "model": "anthropic/claude-opus-4.8", "requests": 1, "input_tokens": 100,
         "output_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 20, "cost_usd": 1.0},
        {"team": "team-a", "model": "anthropic/claude-sonnet-4.5", "requests": 2, "input_tokens": 200,
         "output_tokens": 20, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 40, "cost_usd": 0.75},
        {"team": "team-b", "model": "anthropic/claude-sonnet-4.5", "requests": 1, "input_tokens": 1,
         "output_tokens": 1, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 20, "cost_usd": 0.125},
    ]


def test_admin_usage_by_day_user_and_provider_for_one_team(usage_admin):
    response = usage_admin.get("/admin/usage", params={**MARCH, "group_by": "day,user,provider", "team": "team-a"})
    rows = [(r["day"], r["user"], r["provider"], r["requests"], r["cost_usd"]) for r in response.json()["data"]]
    assert rows == [("2025-03-01", "u1", "anthropic", 1, 0.25), ("2025-03-01", "u2", "anthropic", 1, 0.5),
                    ("2025-03-02", "u1", "other", 1, 1.0)]


@pytest.mark.parametrize("start, end", [("2025-03-01", "2025-03-01"), ("1740787200", "1740873599"),
                                        ("2025-03-01T00:00:00Z", "2025-03-01T23:00:00+00:00")])
def test_usage_ranges_take_dates_epoch_seconds_and_rfc3339(usage_admin, start, end):
    response = usage_admin.get("/admin/usage", params={"from": start, "to": end, "group_by": "", "team": "team-a"})
    assert response.status_code == 200
    assert [(r["requests"], r["cost_usd"]) for r in response.json()["data"]] == [(2, 0.75)]


def test_usage_defaults_to_the_last_30_days_by_team_and_model(usage_gateway, usage_admin):
    team = f"recent-{uuid.uuid4().hex[:6]}"
    append_usage(usage_gateway, [usage_record(team, "m", ts=time.time() - 86400),
                                 usage_record(team, "m", ts=time.time() - 40 * 86400)])
    answer = usage_admin.get("/admin/usage", params={"team": team}).json()
    assert answer["group_by"] == ["team", "model"]
    assert [(r["team"], r["model"], r["requests"]) for r in answer["data"]] == [(team, "m", 1)]


@pytest.mark.parametrize("params, field", [({"group_by": "team,colour"}, "group_by"),
                                           ({"from": "yesterday"}, "from"), ({"to": "2025-13-45"}, "to"),
                                           ({"from": "2025-03-02", "to": "2025-03-01"}, "from"),
                                           ({"team": "{bad}"}, "team"), ({"groupby": "team"}, "groupby")])
def test_bad_usage_parameters_are_a_400_naming_them(usage_admin, params, field):
    response = usage_admin.get("/admin/usage", params=params)
    assert response.status_code == 400
    assert field in error_of(response)[1]


def test_v1_usage_shows_a_team_key_only_its_own_team(usage_gateway):
    url = usage_gateway.url + "/v1/usage"
    response = httpx.get(url, params={**MARCH, "group_by": "team"}, headers={"x-api-key": TEAM_KEY})
    assert response.status_code == 200
    assert [(r["team"], r["requests"]) for r in response.json()["data"]] == [("team-a", 3)]
    response = httpx.get(url, params={**MARCH, "group_by": "team", "team": "team-a"},
                         headers={"authorization": f"Bearer {TEAM_KEY}"})
    assert [r["team"] for r in response.json()["data"]] == ["team-a"]
    other = httpx.get(url, params={**MARCH}, headers={"x-api-key": OTHER_TEAM_KEY}).json()["data"]
    assert [(r["team"], r["requests"]) for r in other] == [("team-b", 1)]


def test_v1_usage_naming_another_team_is_a_403(usage_gateway):
    response = httpx.get(usage_gateway.url + "/v1/usage", params={**MARCH, "team": "team-b"},
                         headers={"x-api-key": TEAM_KEY})
    assert response.status_code == 403
    assert error_of(response)[0] == "permission_error"


def test_v1_usage_without_a_valid_key_is_a_401(usage_gateway):
    for headers in ({}, {"x-api-key": "sk-nope-nope"}):
        response = httpx.get(usage_gateway.url + "/v1/usage", headers=headers)
        assert response.status_code == 401
        assert error_of(response)[0] == "authentication_error"


def test_a_request_made_with_a_new_key_shows_in_its_teams_usage(admin_gateway, admin, team, upstream):
    key = new_key(admin, team)
    assert send_message(admin_gateway, key["key"]).status_code == 200
    url = admin_gateway.url + "/v1/usage"
    deadline = time.monotonic() + 5
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:  # usage is written just after the answer
        rows = httpx.get(url, params={"group_by": "team,model"}, headers={"x-api-key": key["key"]}).json()["data"]
        time.sleep(0.02)
    assert [(r["team"], r["model"], r["requests"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        (team, "anthropic/claude-sonnet-4.5", 1, AUTO_INPUT_TOKENS, MESSAGE["max_tokens"])]
    assert rows[0]["cost_usd"] > 0


def test_a_session_lists_its_records_with_their_trace(usage_gateway, usage_admin):
    session, team = f"session-{uuid.uuid4().hex[:6]}", f"agents-{uuid.uuid4().hex[:6]}"
    trace = {"trace_id": "t-1", "span_name": "plan", "generation_name": "step-2"}
    append_usage(usage_gateway, [usage_record(team, "m", ts=FEBRUARY + 10, session_id=session, trace=trace),
                                 usage_record(team, "m", ts=FEBRUARY + 20, session_id=session),
                                 usage_record(team, "m", ts=FEBRUARY + 30, session_id="another")])
    response = usage_admin.get(f"/admin/sessions/{session}")
    assert response.status_code == 200
    records = response.json()["data"]
    assert [r["ts"] for r in records] == [FEBRUARY + 20, FEBRUARY + 10]
    assert records[1]["trace"] == trace and records[1]["session_id"] == session
    first = usage_admin.get(f"/admin/sessions/{session}", params={"limit": 1}).json()["data"]
    assert [r["ts"] for r in first] == [FEBRUARY + 20]
    assert usage_admin.get(f"/admin/sessions/{session}", params={"limit": 0}).status_code == 400
    assert usage_admin.get("/admin/sessions/" + "s" * 129).status_code == 400


# -- Redis --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_gateway(anthropic_upstream, tmp_path_factory) -> Iterator[GatewayThread]:
    with RedisServer() as server, GatewayThread(**settings_for(
            anthropic_upstream.url, tmp_path_factory.mktemp("redis"), redis_url=server.url)) as running:
        yield running


def test_key_lifecycle_on_redis(redis_gateway, upstream):
    with httpx.Client(base_url=redis_gateway.url, headers={"x-api-key": ADMIN_KEY}, timeout=10) as admin:
        assert admin.post("/admin/teams", json={"name": "redis-team", "rpm": 100}).status_code == 201
        assert admin.post("/admin/teams", json={"name": "redis-team"}).status_code == 409
        key = new_key(admin, "redis-team", name="first")
        assert send_message(redis_gateway, key["key"]).status_code == 200
        listed = admin.get("/admin/keys", params={"team": "redis-team"}).json()["data"]
        assert [(k["id"], k["status"]) for k in listed] == [(key["id"], "active")]
        assert key["key"] not in str(listed)

        rotated = admin.post(f"/admin/keys/{key['id']}/rotate").json()
        assert rotated["name"] == "first" and rotated["limits"] == key["limits"]
        assert accepted(redis_gateway, key["key"]) == (401, 401)
        assert accepted(redis_gateway, rotated["key"]) == (200, 200)

        assert admin.delete(f"/admin/keys/{rotated['id']}").json()["status"] == "revoked"
        assert accepted(redis_gateway, rotated["key"]) == (401, 401)
        listed = admin.get("/admin/keys", params={"team": "redis-team"}).json()["data"]
        assert [(k["id"], k["status"]) for k in listed] == [(key["id"], "revoked"), (rotated["id"], "revoked")]

        third = new_key(admin, "redis-team")
        assert admin.delete("/admin/teams/redis-team").json()["revoked_keys"] == [third["id"]]
        assert admin.get("/admin/teams/redis-team").status_code == 404
        assert accepted(redis_gateway, third["key"]) == (401, 401)


def test_an_unreachable_store_is_a_503_and_usage_still_reads_from_the_record_store(anthropic_upstream, tmp_path):
    with RedisServer() as server, GatewayThread(**settings_for(
            anthropic_upstream.url, tmp_path, redis_url=server.url)) as running:
        headers = {"x-api-key": ADMIN_KEY}
        assert httpx.post(running.url + "/admin/teams", json={"name": "t"}, headers=headers).status_code == 201
        server.stop()
        for method, path in (("GET", "/admin/teams"), ("POST", "/admin/teams/t/keys")):
            response = httpx.request(method, running.url + path, headers=headers, timeout=10)
            assert response.status_code == 503
            assert error_of(response) == ("api_error", "store unavailable")
        assert httpx.get(running.url + "/admin/usage", headers=headers, timeout=10).status_code == 200
