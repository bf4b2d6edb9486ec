"""Model listing as Anthropic's SDK sees it, and the `gateway models` table."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import anthropic
import pytest
from anthropic.types import ModelInfo

from gateway.model_listing import format_table, list_page, model_info
from policies.catalog import load_catalog

CATALOG = load_catalog()
MODELS = list(CATALOG.models.values())
NEWEST_FIRST = [m.id for m in sorted(MODELS, key=lambda m: m.created_at, reverse=True)]


class _ListingHandler(BaseHTTPRequestHandler):
    """GET /v1/models backed by list_page, the way the gateway serves it."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.requests.append(query)  # type: ignore[attr-defined]
        try:
            body, status = list_page(MODELS, limit=int(query.get("limit", 20)),
                                     before_id=query.get("before_id"),
                                     after_id=query.get("after_id")), 200
        except ValueError as exc:
            body, status = {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": str(exc)}}, 400
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def sdk_client():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ListingHandler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = anthropic.Anthropic(api_key="sk-test", max_retries=0,
                                 base_url=f"http://127.0.0.1:{server.server_address[1]}")
    yield client, server
    client.close()
    server.shutdown()
    server.server_close()


def test_every_catalog_model_is_a_valid_sdk_model_info():
    for model in MODELS:
        info = ModelInfo.model_validate(model_info(model))
        assert (info.id, info.type, info.display_name) == (model.id, "model", model.display_name)
        assert info.created_at.isoformat().startswith(model.created_at[:10])
        assert (info.max_input_tokens, info.max_tokens) == (model.context_length, model.max_output)


def test_model_info_carries_the_router_extras_with_prices():
    info = model_info(CATALOG.models["anthropic/claude-opus-4.8"])
    assert info["aliases"] == ["claude-opus-4-8", "~anthropic/claude-opus-latest"]
    assert (info["context_length"], info["max_output"]) == (1_000_000, 128_000)
    assert "image" in info["input_modalities"] and "cache_control" in info["supported_parameters"]
    anthropic_host, bedrock, vertex = info["providers"]
    assert vertex["name"] == "google-vertex" and vertex["pricing"]["verified"] is False
    assert anthropic_host["name"] == "anthropic"
    assert anthropic_host["pricing"] == {"input": 5.0, "output": 25.0, "cache_write": 6.25,
                                         "cache_write_1h": 10.0, "cache_read": 0.5,
                                         "verified": True}
    assert (bedrock["name"], bedrock["retains_prompts"], bedrock["pricing"]["verified"]) == (
        "amazon-bedrock", False, False)
    json.dumps(info)  # plain JSON all the way down


def test_first_page_lists_newest_models_first():
    page = list_page(MODELS)
    assert [m["id"] for m in page["data"]] == NEWEST_FIRST
    assert page["has_more"] is False
    assert (page["first_id"], page["last_id"]) == (NEWEST_FIRST[0], NEWEST_FIRST[-1])


def test_paging_forward_with_after_id_visits_every_model_once():
    seen, after = [], None
    while True:
        page = list_page(MODELS, limit=5, after_id=after)
        assert len(page["data"]) == 5 or not page["has_more"]
        assert len(page["data"]) <= 5
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == NEWEST_FIRST


def test_paging_backward_with_before_id_visits_every_earlier_model_once():
    pages, before = [], NEWEST_FIRST[-1]
    while True:
        page = list_page(MODELS, limit=4, before_id=before)
        assert len(page["data"]) == 4 or not page["has_more"]
        assert len(page["data"]) <= 4
        pages.insert(0, [m["id"] for m in page["data"]])
        if not page["has_more"]:
            break
        before = page["first_id"]
    assert [model_id for page in pages for model_id in page] == NEWEST_FIRST[:-1]


def test_sdk_auto_pagination_forward_reaches_every_model(sdk_client):
    client, server = sdk_client
    server.requests.clear()
    ids = [info.id for info in client.models.list(limit=4)]
    assert ids == NEWEST_FIRST
    assert len(server.requests) == -(-len(NEWEST_FIRST) // 4)
    assert server.requests[1] == {"limit": "4", "after_id": NEWEST_FIRST[3]}


def test_sdk_auto_pagination_backward_reaches_every_earlier_model(sdk_client):
    client, _ = sdk_client
    first = client.models.list(limit=3, before_id=NEWEST_FIRST[-1])
    assert [info.id for info in first.data] == NEWEST_FIRST[-4:-1]
    ids = [info.id for info in first]
    assert sorted(ids) == sorted(NEWEST_FIRST[:-1]) and len(ids) == len(set(ids))


def test_sdk_sees_a_bad_cursor_as_a_bad_request(sdk_client):
    client, _ = sdk_client
    with pytest.raises(anthropic.BadRequestError, match="after_id 'gpt-9'"):
        client.models.list(after_id="gpt-9")


@pytest.mark.parametrize("limit", [0, 1001, -1, "5", True, 2.0])
def test_limit_outside_1_to_1000_is_refused(limit):
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 1000"):
        list_page(MODELS, limit=limit)


def test_limit_bounds_are_accepted():
    assert len(list_page(MODELS, limit=1)["data"]) == 1
    assert len(list_page(MODELS, limit=1000)["data"]) == len(MODELS)


def test_unknown_cursor_is_refused_naming_it():
    with pytest.raises(ValueError, match="before_id 'nope' is not a listed model id"):
        list_page(MODELS, before_id="nope")


def test_both_cursors_at_once_are_refused():
    with pytest.raises(ValueError, match="not both"):
        list_page(MODELS, before_id=NEWEST_FIRST[2], after_id=NEWEST_FIRST[1])


def test_an_empty_list_has_no_ids():
    assert list_page([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_page_after_the_last_model_is_empty():
    page = list_page(MODELS, after_id=NEWEST_FIRST[-1])
    assert (page["data"], page["has_more"], page["first_id"]) == ([], False, None)


def test_table_lists_every_endpoint_with_prices_in_aligned_columns():
    table = format_table(CATALOG)
    lines = table.splitlines()
    header = lines[0]
    for column in ["MODEL", "ALIASES", "PROVIDER", "IN", "OUT", "CACHE-W", "CACHE-R", "CONTEXT"]:
        assert column in header
    rows = [line for line in lines[2:] if line and not line.startswith(("Prices", "*"))]
    assert len(rows) == sum(len(m.endpoints) for m in MODELS)
    provider_column = header.index("PROVIDER")
    for row in rows:
        assert row[provider_column - 2:provider_column] == "  "
        assert row[provider_column] != " "
    opus = next(row for row in rows if row.startswith("anthropic/claude-opus-4.8 "))
    assert "claude-opus-4-8" in opus and "5.00" in opus and "25.00" in opus and "1M" in opus


def test_table_marks_unverified_prices_and_explains_the_mark():
    lines = format_table(CATALOG).splitlines()
    bedrock = next(line for line in lines if " amazon-bedrock " in line)
    assert "5.00*" in bedrock
    assert lines[-1] == "* price not confirmed on the provider's public list"
    gpt54 = next(line for line in lines if line.startswith("openai/gpt-5.4 "))
    assert "*" not in gpt54 and "0.25" in gpt54 and "1.05M" in gpt54
