"""The console's sign-in and sessions, the audit log, and the admin endpoints the console reads
(budget state, routing state), through a real gateway on a loopback port with the in-memory store."""
from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.anthropic import AnthropicFake
from tests.gateway_server import GatewayThread

ADMIN_KEY = "sk-test-console-api-admin-0000"
ASK = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[GatewayThread]:
    spill = tmp_path_factory.mktemp("console-api") / "spill.jsonl"
    with GatewayThread(admin_key=ADMIN_KEY, usage_spill_path=str(spill), console={"session_ttl": 2},
                       providers={"anthropic": {"base_url": fake.url, "api_key": "sk-upstream"}}) as running:
        yield running


@pytest.fixture
def admin(gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": ADMIN_KEY}, timeout=10) as client:
        yield client


def new_team_key(client: httpx.Client, team: str, **team_fields) -> dict:
    if client.get(f"/admin/teams/{team}").status_code == 404:
        assert client.post("/admin/teams", json={"name": team, **team_fields}).status_code == 201
    response = client.post(f"/admin/teams/{team}/keys", json={"name": "k"})
    assert response.status_code == 201
    return response.json()


def signed_in(gateway, key: str, **headers) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    response = client.post("/console/api/session", json={"key": key}, headers=headers)
    return client, response


def test_sign_in_sets_an_httponly_samesite_strict_cookie_secure_only_over_tls(gateway):
    _, response = signed_in(gateway, ADMIN_KEY)
    assert response.status_code == 200 and response.json()["kind"] == "admin"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie and "secure" not in cookie
    _, behind_tls = signed_in(gateway, ADMIN_KEY, **{"x-forwarded-proto": "https"})
    assert "; secure" in behind_tls.headers["set-cookie"].lower()


def test_the_console_pages_load_nothing_from_elsewhere(gateway):
    page = httpx.get(gateway.url + "/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for name in ("app.js", "api.js", "chart.js", "dom.js", "style.css"):
        asset = httpx.get(gateway.url + f"/console/static/{name}")
        text = asset.text.replace('"http://www.w3.org/2000/svg"', "")  # a namespace name, not a download
        assert asset.status_code == 200 and "http://" not in text and "https://" not in text
    missing = httpx.get(gateway.url + "/console/static/..%2Fadmin.py")
    assert missing.status_code == 404 and missing.json()["type"] == "error"


def test_a_console_write_needs_the_sessions_csrf_token(gateway):
    client, response = signed_in(gateway, ADMIN_KEY)
    csrf = response.json()["csrf"]
    refused = client.post("/admin/teams", json={"name": "csrf-less"})
    assert refused.status_code == 403 and "x-csrf-token" in refused.json()["error"]["message"]
    assert client.post("/admin/teams", json={"name": "csrf-less"}, headers={"x-csrf-token": "wrong"}).status_code == 403
    assert client.post("/admin/teams", json={"name": "csrf-ok"}, headers={"x-csrf-token": csrf}).status_code == 201
    assert client.get("/admin/teams").status_code == 200  # reads need no token


def test_a_session_ends_with_sign_out_and_with_its_ttl_on_every_call(gateway):
    client, response = signed_in(gateway, ADMIN_KEY)
    csrf = response.json()["csrf"]
    assert client.get("/console/api/session").status_code == 200
    assert client.delete("/console/api/session", headers={"x-csrf-token": csrf}).status_code == 200
    client.cookies.set("gw_console", response.cookies["gw_console"])  # a copy of the cookie kept aside
    assert client.get("/admin/teams").status_code == 401
    later, again = signed_in(gateway, ADMIN_KEY)
    assert later.get("/admin/teams").status_code == 200
    time.sleep(2.2)  # console.session_ttl is 2 s here
    # The browser drops the cookie then (its Max-Age); one kept past it is refused by the store.
    later.cookies.set("gw_console", again.cookies["gw_console"])
    expired = later.get("/admin/teams")
    assert expired.status_code == 401 and "sign in again" in expired.json()["error"]["message"]


def test_a_revoked_keys_console_session_stops_at_once(gateway, admin):
    key = new_team_key(admin, "console-revoked")
    client, response = signed_in(gateway, key["key"])
    assert response.json()["team"] == "console-revoked" and response.json()["team_admin"] is False
    assert client.get("/admin/keys", params={"team": "console-revoked"}).status_code == 200
    assert admin.delete(f"/admin/keys/{key['id']}").status_code == 200
    assert client.get("/admin/keys", params={"team": "console-revoked"}).status_code == 401


def test_a_team_key_reads_its_own_team_on_the_admin_api_and_nothing_else(gateway, admin):
    mine = new_team_key(admin, "reader-a", budget_daily_usd=3)
    new_team_key(admin, "reader-b")
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": mine["key"]}, timeout=10) as team:
        for path in ("/admin/teams/reader-a", "/admin/keys?team=reader-a", "/admin/usage?team=reader-a",
                     "/admin/teams/reader-a/budget", "/admin/sessions/s-1?team=reader-a", f"/admin/keys/{mine['id']}"):
            assert team.get(path).status_code == 200, path
        for path in ("/admin/teams/reader-b", "/admin/keys?team=reader-b", "/admin/usage?team=reader-b",
                     "/admin/teams/reader-b/budget", "/admin/audit", "/admin/routing", "/admin/alerts", "/admin/teams"):
            response = team.get(path)
            assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error", path
        assert team.post("/admin/teams/reader-a/keys", json={}).status_code == 403  # no admin flag
        assert team.patch("/admin/teams/reader-a", json={"admin": True}).status_code == 403
    # The team sees where its alerts go, not the webhook's path (a Slack URL holds its secret there).
    assert admin.patch("/admin/teams/reader-a", json={"alerts": {"webhook_url": "https://hooks.example/T0/B0/xyz"}}
                       ).status_code == 200
    assert admin.get("/admin/teams/reader-a").json()["alerts"]["webhook_url"] == "https://hooks.example/T0/B0/xyz"
    seen = httpx.get(gateway.url + "/admin/teams/reader-a", headers={"x-api-key": mine["key"]}).json()
    assert seen["alerts"]["webhook_url"] == "https://hooks.example"


def test_a_team_with_the_admin_flag_manages_its_own_keys_only(gateway, admin):
    mine = new_team_key(admin, "manager-a", admin=True)
    other = new_team_key(admin, "manager-b")
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": mine["key"]}, timeout=10) as team:
        made = team.post("/admin/teams/manager-a/keys", json={"name": "made"})
        assert made.status_code == 201
        assert team.post(f"/admin/keys/{made.json()['id']}/rotate").status_code == 201
        assert team.delete(f"/admin/keys/{other['id']}").status_code == 403
        assert team.post("/admin/teams/manager-b/keys", json={}).status_code == 403
    assert admin.get(f"/admin/keys/{other['id']}").json()["status"] == "active"


def test_every_admin_action_and_sign_in_is_in_the_audit_log_with_who_and_from_where(gateway, admin):
    key = new_team_key(admin, "audited", admin=True)
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": key["key"]}, timeout=10) as team:
        made = team.post("/admin/teams/audited/keys", json={"name": "by-team"}).json()
        assert team.delete(f"/admin/keys/{made['id']}").status_code == 200
    assert admin.patch("/admin/teams/audited", json={"rpm": 5, "alerts": {"secret": "s3cret"}}).status_code == 200
    signed_in(gateway, "sk-wrong-key-for-audit")
    entries = admin.get("/admin/audit", params={"limit": 50}).json()["data"]
    by_action = {}
    for entry in entries:
        by_action.setdefault(entry["action"], []).append(entry)
    assert by_action["key.revoke"][0]["actor"] == f"key:{key['id']}" and by_action["key.revoke"][0]["actor_team"] == "audited"
    assert by_action["key.revoke"][0]["target"] == made["id"] and by_action["key.revoke"][0]["address"] == "127.0.0.1"
    create = next(e for e in by_action["key.create"] if e["target"] == made["id"])
    assert create["details"] == {"team": "audited"} and create["via"] == "api"
    update = by_action["team.update"][0]
    assert update["actor"] == "admin" and update["details"]["fields"] == ["alerts", "rpm"]
    assert "s3cret" not in str(entries)
    failed = by_action["console.sign_in_failed"][0]
    assert failed["actor"] == "anonymous" and failed["outcome"] == "failed"
    assert [e["ts"] for e in entries] == sorted((e["ts"] for e in entries), reverse=True)
    assert admin.get("/admin/audit", params={"limit": 1}).json()["data"] == entries[:1]
    assert admin.get("/admin/audit", params={"from": time.time() + 60}).json()["data"] == []


def test_the_audit_log_is_append_only_and_its_query_is_checked(gateway, admin):
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        assert admin.request(method, "/admin/audit").status_code == 405
    for params in ({"limit": 0}, {"limit": "x"}, {"limit": 5000}, {"from": "yesterday"}, {"order": "asc"}):
        response = admin.get("/admin/audit", params=params)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_the_budget_endpoint_shows_spent_reserved_and_remaining(gateway, admin):
    key = new_team_key(admin, "budgeted", budget_daily_usd=1.0, budget_monthly_usd=10.0)
    answer = httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key["key"]}, timeout=10)
    cost = answer.json()["usage"]["cost"]
    assert cost > 0
    deadline = time.monotonic() + 5
    while True:
        budget = admin.get("/admin/teams/budgeted/budget").json()
        if budget["daily"]["spent_usd"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert budget["daily"] == {"limit_usd": 1.0, "spent_usd": pytest.approx(cost), "reserved_usd": 0.0,
                               "remaining_usd": pytest.approx(1.0 - cost)}
    assert budget["monthly"]["remaining_usd"] == pytest.approx(10.0 - cost)
    [own] = budget["keys"]
    assert own["id"] == key["id"] and own["daily"]["spent_usd"] == pytest.approx(cost) and own["daily"]["limit_usd"] is None
    assert admin.get("/admin/teams/nobody/budget").status_code == 404


def test_the_routing_endpoint_shows_cooldowns_measurements_and_recent_errors(gateway, admin, fake):
    from tests.fakes.anthropic import error_reply
    key = new_team_key(admin, "routed")
    fake.reset()
    # One success of its own first, so that the attempts outnumber the failures whatever ran before.
    ok = httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key["key"]}, timeout=10)
    assert ok.status_code == 200, ok.text
    fake.enqueue(*[error_reply(529, "overloaded_error", "busy")] * 8)
    for _ in range(2):
        httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key["key"]}, timeout=10)
    fake.reset()
    deadline = time.monotonic() + 5
    while True:
        rows = {e["model"]: e for e in admin.get("/admin/routing").json()["endpoints"]}
        row = rows["anthropic/claude-sonnet-4.5"]
        if row["state"] == "cooldown" and row["recent_attempts"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert row["state"] == "cooldown" and row["cooldown_reason"] == "529" and row["cooldown_until"] > time.time()
    assert row["recent_failures"] >= 2 and row["recent_attempts"] > row["recent_failures"]
    assert row["recent_error_rate"] == round(row["recent_failures"] / row["recent_attempts"], 4)
    assert row["endpoint"] == "anthropic/claude-sonnet-4-5-20250929" and row["provider"] == "anthropic"


def test_the_demo_console_opens_on_sample_data(tmp_path):
    with GatewayThread(demo=True, admin_key=ADMIN_KEY, usage_spill_path=str(tmp_path / "spill.jsonl")) as demo:
        client, response = signed_in(demo, ADMIN_KEY)
        assert response.json()["sample_data"] is True
        teams = {t["name"]: t for t in client.get("/admin/teams").json()["data"]}
        assert {"sample-research", "sample-support"} <= set(teams)
        assert teams["sample-research"]["metadata"] == {"sample": True}
        rows = client.get("/admin/usage", params={"group_by": "team,day"}).json()["data"]
        assert len({r["day"] for r in rows}) >= 14 and all(r["cost_usd"] > 0 for r in rows)
        assert client.get("/admin/teams/sample-research/budget").json()["daily"]["spent_usd"] > 0
    with GatewayThread(admin_key=ADMIN_KEY, usage_spill_path=str(tmp_path / "spill2.jsonl"),
                       providers={"anthropic": {"base_url": "http://127.0.0.1:9", "api_key": "x"}}) as plain:
        client, response = signed_in(plain, ADMIN_KEY)
        assert response.json()["sample_data"] is False and client.get("/admin/teams").json()["data"] == []


def test_gateway_serve_demo_prints_a_console_sign_in_that_opens_on_sample_data(tmp_path):
    from tests.served_process import ServedProcess
    # A data folder of its own: its record store holds this demo's records only.
    with ServedProcess(["--demo"], env={"GATEWAY_DATA_DIR": str(tmp_path / "data")}) as served:
        line = served.wait_for("console: ")
        url, key = line.split("console: ")[1].split()[0], line.rsplit(": ", 1)[1].rstrip(")")
        assert url == served.url + "/console" and httpx.get(url).status_code == 200
        client = httpx.Client(base_url=served.url, timeout=10)
        assert client.post("/console/api/session", json={"key": key}).json()["sample_data"] is True
        rows = client.get("/admin/usage", params={"group_by": "team"}).json()["data"]
        assert {r["team"] for r in rows} == {"sample-research", "sample-support"}


def test_without_a_gateway_webhook_a_team_with_its_own_alerts_is_alerted(gateway, admin):
    from tests.fakes.base import wait_for
    from tests.fakes.webhook import WebhookReceiver
    with WebhookReceiver("own-secret") as hook:
        key = new_team_key(admin, "own-alerts", budget_daily_usd=0.01)
        assert admin.patch("/admin/teams/own-alerts", json={"alerts": {
            "webhook_url": hook.url + "/in", "secret": "own-secret", "thresholds": [0.01]}}).status_code == 200
        answer = httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key["key"]}, timeout=10)
        assert answer.status_code == 200 and answer.json()["usage"]["cost"] >= 0.0001
        assert wait_for(lambda: len(hook.requests) == 1, timeout=5)
        [alert] = hook.alerts()  # the signature checked
        assert (alert["team"], alert["threshold"], alert["budget"]) == ("own-alerts", 0.01, "daily")


def test_a_demo_started_again_on_its_data_adds_the_new_day_and_no_second_copy(tmp_path):
    import asyncio

    from gateway.console.sample import load_sample_data
    from gateway.records import create_record_store
    from gateway.records.base import RequestFilter
    from gateway.store.memory import MemoryStore
    from policies.catalog import load_catalog

    async def scenario() -> tuple[list[int], list[dict]]:
        db = create_record_store(f"sqlite:///{tmp_path / 'usage.db'}")
        await db.open(migrate=True)
        try:
            now, catalog = time.time(), load_catalog()
            written = [await load_sample_data(MemoryStore(), db, catalog, now=start)
                       for start in (now, now + 60, now + 86400)]
            tomorrow, _ = await db.requests(RequestFilter(team="sample-research", start=now + 60), limit=1000)
            return written, tomorrow
        finally:
            await db.close()
    written, tomorrow = asyncio.run(scenario())
    # A minute later: at most the minute's records; a day later: about a day's, which the console shows.
    assert written[0] > 14 * 9 * 2 and written[1] < 10
    assert 9 <= written[2] < 2 * (18 + 3 + 9 + 3) and tomorrow
