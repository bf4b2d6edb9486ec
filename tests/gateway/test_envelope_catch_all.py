"""What no handler expected (here: a store whose data was damaged by hand) still answers 500
`api_error` in Anthropic's envelope with a request id, on every kind of route, and is logged once
under that request id."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY, base_settings
from tests.fakes.base import wait_for
from tests.gateway_server import GatewayThread
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (session fixture)

COUNT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
ASK = {**COUNT, "max_tokens": 5}


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors_logged() -> Iterator[Collected]:
    """ERROR records of the gateway and of uvicorn (which logs what an application lets escape)."""
    handler = Collected()
    loggers = [logging.getLogger(name) for name in ("gateway", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def gateway(anthropic_upstream, redis_server: RedisServer, tmp_path_factory) -> Iterator[GatewayThread]:  # noqa: F811
    redis_server.flush()
    settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url,
                             usage_spill_path=str(tmp_path_factory.mktemp("spill") / "spill.jsonl"))
    with GatewayThread(**settings) as gw:
        yield gw


def damaged_team(gw: GatewayThread, redis: RedisServer) -> tuple[str, str]:
    """A team and key whose admission fails inside Redis: its leases key holds a string."""
    team = "dmg-" + uuid.uuid4().hex[:8]
    admin = {"x-api-key": ADMIN_KEY}
    assert httpx.post(gw.url + "/admin/teams", json={"name": team}, headers=admin).status_code == 201
    key = httpx.post(gw.url + f"/admin/teams/{team}/keys", json={}, headers=admin).json()["key"]
    with redis.client() as c:
        c.set(f"gw:{{{team}}}:leases", "not a sorted set")
    return team, key


def assert_internal_error_logged_once(response: httpx.Response, logged: Collected) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    request_id = response.headers["request-id"]
    assert request_id.startswith("req_") and request_id in body["error"]["message"]
    # A Starlette route's failure is logged once its answer is sent: on a loaded machine the line can
    # come after the client has read the answer.
    wait_for(lambda: logged.records, timeout=5)
    assert len(logged.records) == 1, [r.getMessage() for r in logged.records]
    [record] = logged.records
    assert request_id in record.getMessage() and record.exc_info is not None


def test_an_unexpected_failure_on_messages_is_an_enveloped_500_logged_once(gateway, redis_server,  # noqa: F811
                                                                          upstream, errors_logged):
    _, key = damaged_team(gateway, redis_server)
    response = httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key})
    assert_internal_error_logged_once(response, errors_logged)
    assert upstream.requests == []


def test_an_unexpected_failure_on_a_streamed_message_is_an_enveloped_500(gateway, redis_server,  # noqa: F811
                                                                        upstream, errors_logged):
    _, key = damaged_team(gateway, redis_server)
    response = httpx.post(gateway.url + "/v1/messages", json={**ASK, "stream": True}, headers={"x-api-key": key})
    assert_internal_error_logged_once(response, errors_logged)


def test_an_unexpected_failure_on_count_tokens_is_an_enveloped_500_logged_once(gateway, redis_server,  # noqa: F811
                                                                              upstream, errors_logged):
    _, key = damaged_team(gateway, redis_server)
    response = httpx.post(gateway.url + "/v1/messages/count_tokens", json=COUNT, headers={"x-api-key": key})
    assert_internal_error_logged_once(response, errors_logged)


def test_an_unexpected_failure_on_an_admin_route_is_an_enveloped_500_logged_once(gateway, redis_server,  # noqa: F811
                                                                                errors_logged):
    team = "dmg-" + uuid.uuid4().hex[:8]
    admin = {"x-api-key": ADMIN_KEY}
    assert httpx.post(gateway.url + "/admin/teams", json={"name": team}, headers=admin).status_code == 201
    with redis_server.client() as c:
        c.set(f"gw:{{{team}}}:team", "{not json")
    response = httpx.get(gateway.url + f"/admin/teams/{team}", headers=admin)
    assert_internal_error_logged_once(response, errors_logged)


def test_the_gateway_answers_normally_after_an_unexpected_failure(gateway, redis_server, upstream):  # noqa: F811
    _, key = damaged_team(gateway, redis_server)
    assert httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key}).status_code == 500
    admin = {"x-api-key": ADMIN_KEY}
    team = "ok-" + uuid.uuid4().hex[:8]
    assert httpx.post(gateway.url + "/admin/teams", json={"name": team}, headers=admin).status_code == 201
    fresh = httpx.post(gateway.url + f"/admin/teams/{team}/keys", json={}, headers=admin).json()["key"]
    assert httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": fresh}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/models", "/healthz", "/readyz", "/admin/teams", "/no/such/route"])
def test_every_answer_of_the_other_routes_carries_one_request_id(gateway, path):
    response = httpx.get(gateway.url + path, headers={"x-api-key": ADMIN_KEY})
    assert len(response.headers.get_list("request-id")) == 1
    assert response.headers["request-id"].startswith("req_")
