"""Refusals that waiting cannot cure tell clients so: the official `anthropic` SDK, with its default
retries, gets the error at once instead of sleeping on a budget's retry-after until UTC midnight.

Against a real Redis: the budget checks run in the store's admission script.
"""
from __future__ import annotations

import threading
import time

import anthropic
import httpx
import pytest

from tests.fakes.anthropic import AnthropicFake
from tests.gateway_server import GatewayThread
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

ADMIN_KEY = "sk-test-refusals-admin-0000"
MODEL = "test/metered"
# Output at $100 per million tokens: max_tokens 100 has a worst case of exactly $0.01, and the fake
# answers with exactly max_tokens output tokens.
MAX_TOKENS = 100


@pytest.fixture(scope="module")
def fake():
    with AnthropicFake() as server:
        yield server


@pytest.fixture
def gw(fake, redis_server, tmp_path):  # noqa: F811
    redis_server.flush()
    fake.reset()
    settings = {
        "redis_url": redis_server.url, "admin_key": ADMIN_KEY, "usage_spill_path": str(tmp_path / "spill"),
        "providers": {"anthropic": {"base_url": fake.url, "api_key": "sk-upstream-refusals"}},
        "models": [{"id": MODEL, "display_name": MODEL, "context_length": 100_000, "max_output": 4096,
                    "endpoints": [{"provider": "anthropic", "upstream_model": "metered-model",
                                   "pricing": {"input": 0.0, "output": 100.0}}]},
                   {"id": "test/other", "display_name": "other", "context_length": 100_000, "max_output": 4096,
                    "endpoints": [{"provider": "anthropic", "upstream_model": "other-model",
                                   "pricing": {"input": 0.0, "output": 100.0}}]}],
    }
    with GatewayThread(**settings) as running:
        yield running


def admin(gw, method: str, path: str, **body) -> dict:
    response = httpx.request(method, gw.url + path, headers={"x-api-key": ADMIN_KEY}, json=body or None, timeout=10)
    assert response.status_code < 300, response.text
    return response.json() if response.content else {}


def team_key(gw, key: dict | None = None, **limits) -> dict:
    name = f"t{time.monotonic_ns()}"
    admin(gw, "POST", "/admin/teams", name=name, **limits)
    return admin(gw, "POST", f"/admin/teams/{name}/keys", name="sdk", **(key or {}))


class CountingSdk:
    """The official SDK with its default retries, counting the HTTP requests it really sends."""

    def __init__(self, gw, key: str) -> None:
        self.sent = 0
        http = anthropic.DefaultHttpxClient(event_hooks={"request": [self._count]}, timeout=30)
        self.client = anthropic.Anthropic(base_url=gw.url, api_key=key, http_client=http)
        assert self.client.max_retries == 2  # the SDK's default: it would retry a plain 429

    def _count(self, request) -> None:
        self.sent += 1

    def create(self, **extra):
        return self.client.messages.create(model=MODEL, max_tokens=MAX_TOKENS,
                                           messages=[{"role": "user", "content": "hi"}], **extra)


def refused(sdk: CountingSdk, error: type[anthropic.APIStatusError], **extra) -> anthropic.APIStatusError:
    """The SDK's error, which must come back within 5 s (in a thread: an SDK that obeys a retry-after
    of hours would otherwise hold the test for as long)."""
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            sdk.create(**extra)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), f"the SDK was still retrying after 5 s ({sdk.sent} requests sent)"
    assert outcome and isinstance(outcome[0], error), outcome
    assert sdk.sent == 1, "the SDK retried a refusal that waiting cannot cure"
    assert outcome[0].response.headers["x-should-retry"] == "false"
    return outcome[0]


def test_a_spent_daily_budget_is_returned_by_the_sdk_at_once_and_says_spent(gw, fake):
    key = team_key(gw, budget_daily_usd=0.01)["key"]
    sdk = CountingSdk(gw, key)
    assert sdk.create().usage.output_tokens == MAX_TOKENS  # spends all of the $0.01
    sdk.sent = 0
    # Settlement is written in the background: until it lands the reservation holds the budget.
    error = refused(sdk, anthropic.RateLimitError)
    assert error.status_code == 429
    message = error.body["error"]["message"]
    assert "daily budget" in message and "is spent" in message and "renews at 00:00 UTC" in message
    assert int(error.response.headers["retry-after"]) > 0
    assert len(fake.requests) == 1


def test_a_request_whose_worst_case_exceeds_what_is_left_says_both_amounts(gw, fake):
    key = team_key(gw, budget_monthly_usd=0.005)["key"]
    sdk = CountingSdk(gw, key)
    error = refused(sdk, anthropic.RateLimitError)
    message = error.body["error"]["message"]
    assert "worst case (0.01 USD" in message and "exceeds the 0.005 USD left" in message
    assert "monthly budget" in message and "lower max_tokens" in message
    assert fake.requests == []
    # The message was right: a smaller max_tokens fits.
    sdk.sent = 0
    assert sdk.client.messages.create(model=MODEL, max_tokens=40,
                                      messages=[{"role": "user", "content": "hi"}]).usage.output_tokens == 40


def test_a_key_that_expired_while_cached_is_refused_for_good(gw, fake):
    created = team_key(gw, {"expires_at": time.time() + 1.0})
    sdk = CountingSdk(gw, created["key"])
    sdk.create()  # the key is now in the gateway's key cache
    time.sleep(1.1)
    sdk.sent = 0
    error = refused(sdk, anthropic.AuthenticationError)
    assert error.status_code == 401 and "expired" in error.body["error"]["message"]


def test_a_model_outside_the_allow_list_is_refused_for_good(gw, fake):
    key = team_key(gw, allowed_models=["test/other"])["key"]
    error = refused(CountingSdk(gw, key), anthropic.PermissionDeniedError)
    assert error.status_code == 403 and fake.requests == []


def test_an_unknown_or_revoked_key_is_refused_for_good(gw, fake):
    created = team_key(gw)
    admin(gw, "DELETE", f"/admin/keys/{created['id']}")
    error = refused(CountingSdk(gw, created["key"]), anthropic.AuthenticationError)
    assert error.status_code == 401 and fake.requests == []


def test_a_request_larger_than_the_whole_token_limit_is_refused_for_good(gw, fake):
    key = team_key(gw, tpm=50)["key"]
    error = refused(CountingSdk(gw, key), anthropic.RateLimitError)
    assert "token rate limit" in error.body["error"]["message"]
    assert "retry-after" not in error.response.headers
