"""The console in a real browser (Debian's chromium, headless, driven by Playwright) against two
`gateway serve` processes sharing a real Redis, after traffic from two teams: what each page shows
is what the admin API says, a team's key sees only its team, a key revoked in the console fails
at once on both replicas, and the main pages have no serious accessibility violations (axe-core).
Screenshots of each page are saved under tests/console/artifacts/.

One browser for the module; each test opens its own context (its own cookies).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.console.browser import axe_violations, launch, screenshot, sign_in
from tests.fakes.anthropic import AnthropicFake
from tests.gateway.replicas import Replicas
from tests.postgres_server import PostgresServer, postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (session fixture)

ADMIN_KEY = "sk-test-console-admin-0000"
TEAM_A, TEAM_B = "console-a", "console-b"
MODELS = ("claude-sonnet-4-5", "claude-opus-4-8")


@pytest.fixture(scope="module")
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


@pytest.fixture(scope="module")
def replicas(fake, redis_server: RedisServer, postgres_server: PostgresServer,  # noqa: F811
             tmp_path_factory) -> Iterator[Replicas]:
    redis_server.flush()
    config = {"admin_key": ADMIN_KEY, "redis_url": redis_server.url, "key_cache_ttl": 300,
              "usage_db_url": postgres_server.database("console"),
              "providers": {"anthropic": {"base_url": fake.url, "api_key": "sk-upstream-console"}}}
    with Replicas(config, tmp_path_factory.mktemp("console"), count=2, admin_key=ADMIN_KEY) as running:
        yield running


def ask(url: str, secret: str, model: str, **extra) -> httpx.Response:
    return httpx.post(url + "/v1/messages", timeout=10,
                      headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
                      json={"model": model, "max_tokens": 20 + len(extra), "messages": [{"role": "user", "content": "hi"}],
                            **extra})


@pytest.fixture(scope="module")
def traffic(replicas) -> dict:
    """Two teams' keys and their requests through both replicas; team B's keys may manage keys."""
    replicas.create_team(TEAM_A, budget_daily_usd=5, budget_monthly_usd=50)
    replicas.create_team(TEAM_B, budget_daily_usd=2, admin=True)
    keys = {TEAM_A: replicas.create_key(TEAM_A, name="a-main"), TEAM_B: replicas.create_key(TEAM_B, name="b-main")}
    sent = 0
    for i in range(6):
        for team, key in keys.items():
            extra = {"session_id": f"sess-{team}", "trace": {"step": i, "trace_name": "browser"}} if i < 3 else {}
            assert ask(replicas.urls[i % 2], key["key"], MODELS[(i + len(team)) % 2], **extra).status_code == 200
            sent += 1
    replicas.wait_recorded(TEAM_A, 6)
    replicas.wait_recorded(TEAM_B, 6)
    return keys


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


def days() -> tuple[str, str]:
    today = datetime.now(UTC).date()
    return str(today - timedelta(days=13)), str(today)


def spend_rows(page) -> list[list[str]]:
    page.wait_for_selector("#spend-table")
    return [[cell.inner_text() for cell in row.query_selector_all("td")]
            for row in page.query_selector_all("#spend-table tbody tr")]


def show_spend(page, by: str) -> list[list[str]]:
    page.get_by_label("Break down by").select_option(by)
    page.get_by_role("button", name="Show").click()
    page.wait_for_selector(f"#spend-table caption:has-text('by day and {by}')")
    return spend_rows(page)


def test_admin_sees_both_teams_spend_by_day_and_model_as_the_admin_api_counts_it(page, replicas, traffic):
    sign_in(page, replicas.urls[0], ADMIN_KEY)
    start, end = days()
    shown = show_spend(page, "model")
    expected = replicas.admin("GET", "/admin/usage", params={"from": start, "to": end, "group_by": "day,model"}).json()["data"]
    assert {(r[0], r[1]): r[-1] for r in shown} == {(e["day"], e["model"]): f"${e['cost_usd']:.4f}" for e in expected}
    assert {r[1] for r in shown} == {"anthropic/claude-sonnet-4.5", "anthropic/claude-opus-4.8"}
    assert sum(float(r[-1][1:]) for r in shown) == pytest.approx(sum(e["cost_usd"] for e in expected), abs=0.005)
    screenshot(page, "spend")
    by_team = {(r[0], r[1]): r[-1] for r in show_spend(page, "team")}
    teams = replicas.admin("GET", "/admin/usage", params={"from": start, "to": end, "group_by": "day,team"}).json()["data"]
    assert by_team == {(e["day"], e["team"]): f"${e['cost_usd']:.4f}" for e in teams}
    assert {team for _, team in by_team} == {TEAM_A, TEAM_B}
    budgets = page.locator("#budgets")
    assert budgets.get_by_role("heading", name=TEAM_A).count() == 1
    assert "of $5.00" in budgets.inner_text() and "of $50.00" in budgets.inner_text()


def test_an_answer_that_arrives_after_the_form_changed_is_not_drawn_under_the_new_breakdown(page, replicas, traffic):
    """The page's first load (by model, for a team key) answers after the user asked by team: the
    table shows the team breakdown, never model rows under a team column."""
    held = []

    def hold_the_model_breakdown(route):
        if "group_by=day%2Cmodel" in route.request.url:
            held.append(route)  # answered once the breakdown by team has been drawn
        else:
            route.continue_()

    page.route("**/admin/usage?*", hold_the_model_breakdown)
    sign_in(page, replicas.urls[0], traffic[TEAM_A]["key"])
    page.wait_for_function("() => document.querySelector('#spend-output') !== null")
    shown = show_spend(page, "team")
    assert {r[1] for r in shown} == {TEAM_A}
    assert held, "the first load's request was not seen"
    for route in held:
        route.continue_()
    page.wait_for_timeout(500)  # the held answer arrives and is dropped
    assert "Cost by day and team" in page.locator("#spend-table caption").inner_text()
    assert {r[1] for r in spend_rows(page)} == {TEAM_A}


def test_the_csv_export_holds_the_table_with_exact_costs(page, replicas, traffic):
    sign_in(page, replicas.urls[1], ADMIN_KEY)
    show_spend(page, "model")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    start, end = days()
    expected = replicas.admin("GET", "/admin/usage", params={"from": start, "to": end, "group_by": "day,model"}).json()["data"]
    assert {(r["Day"], r["model"]): float(r["Cost (USD)"]) for r in rows} == \
        {(e["day"], e["model"]): e["cost_usd"] for e in expected}
    assert {int(r["Requests"]) for r in rows} <= {e["requests"] for e in expected}
    assert download.value.suggested_filename.endswith("-by-model.csv")


def test_a_team_key_sees_its_own_team_only_and_the_admin_api_stays_closed_to_it(page, replicas, traffic):
    sign_in(page, replicas.urls[0], traffic[TEAM_A]["key"])
    assert "team console-a" in page.locator("#who").inner_text()
    shown = show_spend(page, "team")
    assert {r[1] for r in shown} == {TEAM_A}
    start, end = days()
    mine = replicas.admin("GET", "/admin/usage", params={"from": start, "to": end, "group_by": "day,team",
                                                         "team": TEAM_A}).json()["data"]
    assert {(r[0], r[-1]) for r in shown} == {(e["day"], f"${e['cost_usd']:.4f}") for e in mine}
    assert page.get_by_role("link", name="Health").is_hidden() and page.get_by_role("link", name="Audit").is_hidden()
    screenshot(page, "spend-team")
    base = replicas.urls[0]
    # The session's cookie carries exactly the key's rights.
    assert page.request.get(base + f"/admin/usage?team={TEAM_B}").status == 403
    assert page.request.get(base + "/admin/usage").status == 403
    assert page.request.get(base + "/admin/teams").status == 403
    assert page.request.get(base + f"/admin/teams/{TEAM_B}/budget").status == 403
    assert page.request.get(base + "/admin/audit").status == 403
    assert page.request.get(base + f"/admin/keys?team={TEAM_A}").status == 200
    page.goto(base + "/console#/teams")
    page.wait_for_selector("#keys-table")
    assert page.locator("#teams-table").count() == 0 and page.locator("#create-key").count() == 0
    assert TEAM_B not in page.locator("main").inner_text()


def test_a_team_key_writes_only_when_its_team_may_manage_keys(page, replicas, traffic):
    base = replicas.urls[1]
    sign_in(page, base, traffic[TEAM_A]["key"])
    csrf = page.request.get(base + "/console/api/session").json()["csrf"]
    refused = page.request.post(base + f"/admin/teams/{TEAM_A}/keys", data={}, headers={"x-csrf-token": csrf})
    assert refused.status == 403 and "admin flag" in refused.json()["error"]["message"]
    page.context.clear_cookies()
    sign_in(page, base, traffic[TEAM_B]["key"])
    csrf = page.request.get(base + "/console/api/session").json()["csrf"]
    assert page.request.post(base + f"/admin/teams/{TEAM_B}/keys", data={}).status == 403  # no CSRF token
    assert page.request.post(base + f"/admin/teams/{TEAM_A}/keys", data={}, headers={"x-csrf-token": csrf}).status == 403
    page.goto(base + "/console#/teams")
    page.get_by_label("Name", exact=True).fill("made-by-team-b")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("sk-gw-") and ask(base, secret, MODELS[0]).status_code == 200


def test_a_key_revoked_in_the_console_fails_at_once_on_both_replicas_and_the_audit_log_names_who(page, replicas, traffic):
    sign_in(page, replicas.urls[0], ADMIN_KEY)
    page.goto(replicas.urls[0] + f"/console#/teams?team={TEAM_A}")
    page.locator("#create-key").get_by_label("Name", exact=True).fill("short-lived")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").inner_text()
    key_id = page.locator(".secret p").inner_text().split()[1]
    assert [ask(url, secret, MODELS[0]).status_code for url in replicas.urls] == [200, 200]  # both have cached it
    screenshot(page, "teams")
    page.get_by_role("button", name=f"Revoke {key_id}").click()
    page.wait_for_selector(f"text=Key {key_id}: revoked.")
    assert [ask(url, secret, MODELS[0]).status_code for url in replicas.urls] == [401, 401]
    # The session signed in on replica 0 works on replica 1 (sessions live in Redis), which shows the same log.
    page.goto(replicas.urls[1] + "/console#/audit")
    page.wait_for_selector("#audit-table")
    rows = [[c.inner_text() for c in r.query_selector_all("td")] for r in page.query_selector_all("#audit-table tbody tr")]
    revoke = next(r for r in rows if r[2] == "key.revoke" and r[3] == key_id)
    assert revoke[1] == "admin" and revoke[4] == "127.0.0.1" and revoke[5] == "console"
    assert any(r[2] == "key.create" for r in rows) and any(r[2] == "console.sign_in" for r in rows)
    screenshot(page, "audit")


def test_rotating_expiring_and_editing_limits_in_the_console_take_effect(page, replicas, traffic):
    base = replicas.urls[1]
    sign_in(page, base, ADMIN_KEY)
    page.goto(base + f"/console#/teams?team={TEAM_B}")
    form = page.locator("#create-key")
    form.get_by_label("Name", exact=True).fill("to-rotate")
    form.get_by_label("RPM").fill("30")
    page.get_by_role("button", name="Create key").click()
    old_secret = page.locator("#new-secret").inner_text()
    old_id = page.locator(".secret p").inner_text().split()[1]
    assert replicas.admin("GET", f"/admin/keys/{old_id}").json()["limits"]["rpm"] == 30
    page.get_by_role("button", name=f"Rotate {old_id}").click()
    expect(page.locator(".secret p")).not_to_contain_text(old_id)
    new_secret = page.locator("#new-secret").inner_text()
    new_id = page.locator(".secret p").inner_text().split()[1]
    assert ask(replicas.urls[0], old_secret, MODELS[0]).status_code == 401
    assert ask(replicas.urls[0], new_secret, MODELS[0]).status_code == 200
    page.get_by_role("button", name=f"Expire now {new_id}").click()
    page.wait_for_selector(f"text=Key {new_id}: expired.")
    assert ask(replicas.urls[0], new_secret, MODELS[0]).status_code == 401
    edit = page.locator("#edit-team")
    edit.get_by_label("RPM").fill("500")
    edit.get_by_label("Allowed models (comma-separated)").fill("anthropic/claude-sonnet-4.5")
    page.get_by_role("button", name="Save limits").click()
    page.wait_for_selector(f"text=Team {TEAM_B} saved.")
    limits = replicas.admin("GET", f"/admin/teams/{TEAM_B}").json()["limits"]
    assert limits["rpm"] == 500 and limits["allowed_models"] == ["anthropic/claude-sonnet-4.5"]
    assert ask(base, traffic[TEAM_B]["key"], "claude-opus-4-8").status_code == 403
    replicas.admin("PATCH", f"/admin/teams/{TEAM_B}", json={"allowed_models": None})


@pytest.mark.parametrize("name, ready", [("spend", "#spend-table"), ("teams", "#keys-table"),
                                         ("requests", "#requests-table, #requests-unavailable"),
                                         ("health", "#health-table"), ("audit", "#audit-table")])
def test_each_page_opens_with_no_serious_accessibility_violations(page, replicas, traffic, name, ready):
    sign_in(page, replicas.urls[0], ADMIN_KEY)
    page.goto(replicas.urls[0] + f"/console#/{name}")
    page.wait_for_selector(ready)
    screenshot(page, name)
    assert axe_violations(page) == []


def test_the_sign_in_page_has_no_serious_accessibility_violations_and_a_wrong_key_is_refused(page, replicas):
    page.goto(replicas.urls[0] + "/console")
    page.wait_for_selector("#sign-in-form")
    assert axe_violations(page) == []
    page.get_by_label("Admin key or team key").fill("sk-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_contain_text("sign-in failed")
    screenshot(page, "sign-in")


def test_the_requests_page_shows_the_log_when_the_gateway_has_one_and_a_session_with_its_trace(page, replicas, traffic):
    sign_in(page, replicas.urls[0], ADMIN_KEY)
    page.goto(replicas.urls[0] + "/console#/requests")
    page.wait_for_selector("#requests-table, #requests-unavailable")
    if replicas.admin("GET", "/admin/requests", params={"team": TEAM_A}).status_code == 404:
        assert "Request log unavailable" in page.locator("#requests-unavailable").inner_text()
    else:
        page.get_by_label("Team", exact=True).select_option(TEAM_A)
        page.get_by_role("button", name="Search").click()
        # The unfiltered table is already on the page, so wait for the search's own answer to replace it.
        page.wait_for_function(
            """team => {
                const cells = [...document.querySelectorAll('#requests-table tbody tr td:nth-child(2)')];
                return cells.length > 0 && cells.every(c => c.innerText === team);
            }""",
            arg=TEAM_A,
            timeout=10_000,
        )
        teams = {r.inner_text() for r in page.query_selector_all("#requests-table tbody tr td:nth-child(2)")}
        assert teams == {TEAM_A}
    page.get_by_label("Session id").fill(f"sess-{TEAM_A}")
    page.get_by_role("button", name="Show session").click()
    page.wait_for_selector("#session-table")
    rows = page.query_selector_all("#session-table tbody tr")
    assert len(rows) == 3
    traces = [r.query_selector_all("td")[-1].inner_text() for r in rows]
    assert traces == [f'{{"step":{i},"trace_name":"browser"}}' for i in range(3)]
    assert "hi" not in page.locator("#session-table").inner_text()  # never a prompt
    screenshot(page, "session")
