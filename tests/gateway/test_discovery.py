"""Discovery: a vLLM-like server lists its models; one deployed mid-test appears within an interval
and answers; a failed listing keeps the last list and logs one line."""
from __future__ import annotations

import logging

import httpx
import pytest

from gateway.discovery import DiscoveryFailed, listed_models, models_url
from policies.catalog import ProviderInfo
from tests.conftest import TEAM_KEY
from tests.fakes.base import wait_for
from tests.fakes.gemini import GeminiFake
from tests.fakes.selfhosted import VLLMFake
from tests.gateway_server import GatewayThread


@pytest.fixture
def vllm():
    with VLLMFake({"Qwen/Qwen2.5-Coder-7B-Instruct": 32768}) as fake:
        yield fake


def discovering(url: str, **extra) -> dict:
    return {"providers": {"vllm": {"protocol": "openai", "base_url": url + "/v1", "discover": True,
                                   "discover_interval": 1}},
            "keys": [{"key": TEAM_KEY, "team": "team-a"}], **extra}


def listed(gw) -> dict[str, dict]:
    page = httpx.get(gw.url + "/v1/models?limit=1000", headers={"x-api-key": TEAM_KEY}).json()
    return {m["id"]: m for m in page["data"]}


def test_discovered_models_are_served_and_a_new_one_appears_within_an_interval(vllm):
    with GatewayThread(**discovering(vllm.url)) as gw:
        models = listed(gw)
        assert models["vllm/Qwen/Qwen2.5-Coder-7B-Instruct"]["context_length"] == 32768
        assert models["vllm/Qwen/Qwen2.5-Coder-7B-Instruct"]["providers"][0]["pricing"] == "unpriced"
        assert "vllm/llama-3.1-8b" not in models
        vllm.deploy("llama-3.1-8b", 131072)
        assert wait_for(lambda: "vllm/llama-3.1-8b" in listed(gw), timeout=3, interval=0.1)
        answer = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
            "model": "vllm/llama-3.1-8b", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "vllm/llama-3.1-8b"
        assert vllm.chat_requests[-1]["model"] == "llama-3.1-8b"


def test_failed_discovery_keeps_the_last_list_and_logs_one_line(vllm, caplog):
    with GatewayThread(**discovering(vllm.url)) as gw:
        before = vllm.listings
        with caplog.at_level(logging.WARNING, logger="gateway.discovery"):
            vllm.listing_fails = True
            assert wait_for(lambda: vllm.listings >= before + 2, timeout=4, interval=0.05)
            assert "vllm/Qwen/Qwen2.5-Coder-7B-Instruct" in listed(gw)
        lines = [r.getMessage() for r in caplog.records if r.name == "gateway.discovery" and r.levelno >= logging.WARNING]
        assert lines and all(line.startswith("discovery: provider vllm: GET /models answered 503; keeping its last "
                                             "list (1 models)") for line in lines)
        assert len(lines) <= vllm.listings - before  # one line per failed listing, no traceback
        assert not any(r.exc_info for r in caplog.records)


def test_model_the_config_lists_wins_over_the_discovered_one(vllm):
    config = discovering(vllm.url, models=[{
        "id": "vllm/Qwen/Qwen2.5-Coder-7B-Instruct", "context_length": 16384,
        "endpoints": [{"provider": "vllm", "upstream_model": "Qwen/Qwen2.5-Coder-7B-Instruct",
                       "pricing": {"input": 0.1, "output": 0.2}}]}])
    with GatewayThread(**config) as gw:
        model = listed(gw)["vllm/Qwen/Qwen2.5-Coder-7B-Instruct"]
    assert model["context_length"] == 16384
    assert model["providers"][0]["pricing"]["input"] == 0.1


def test_listing_formats_of_other_servers_are_read():
    provider = ProviderInfo(name="ollama", protocol="openai", base_url="http://h/v1")
    entries = listed_models(provider, b'{"object":"list","data":[{"id":"llama3.2:3b","object":"model",'
                                      b'"created":1730000000,"owned_by":"library"},'
                                      b'{"id":"ctx-model","context_length":8192},'
                                      b'{"id":"llamacpp","meta":{"n_ctx_train":4096}},{"id":""},{"nope":1}]}')
    assert [(e["id"], e.get("context_length")) for e in entries] == [
        ("ollama/llama3.2:3b", None), ("ollama/ctx-model", 8192), ("ollama/llamacpp", 4096)]
    assert entries[0]["created_at"] == "2024-10-27T03:33:20Z"
    with pytest.raises(DiscoveryFailed, match="no 'data' array"):
        listed_models(provider, b'{"models": []}')


def test_a_gemini_provider_lists_its_generating_models_page_by_page():
    with GeminiFake(max_page_size=1) as gemini:
        config = {"providers": {"gem": {"protocol": "gemini", "base_url": gemini.base_url, "api_key": gemini.api_key,
                                        "discover": True}},
                  "keys": [{"key": TEAM_KEY, "team": "team-a"}]}
        with GatewayThread(**config) as gw:
            models = {name: m for name, m in listed(gw).items() if name.startswith("gem/")}
            answer = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
                "model": "gem/gemini-2.5-flash", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        listings = [r for r in gemini.requests if r.method == "GET"]
    # Three pages of one model each, the key in Gemini's own header; the embedding model is left out.
    assert [r.query for r in listings[:3]] == ["pageSize=1000", "pageSize=1000&pageToken=1",
                                               "pageSize=1000&pageToken=2"]
    assert all(r.headers.get("x-goog-api-key") == gemini.api_key for r in listings)
    assert sorted(models) == ["gem/gemini-2.5-flash", "gem/gemini-2.5-pro"]
    pro = models["gem/gemini-2.5-pro"]
    assert (pro["display_name"], pro["context_length"], pro["max_output"]) == ("Gemini 2.5 Pro", 1048576, 65536)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "gem/gemini-2.5-flash"
    assert gemini.requests[-1].path == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_an_anthropic_listing_is_read_page_by_page():
    provider = ProviderInfo(name="ant", protocol="anthropic", base_url="https://api.example")
    page = (b'{"data":[{"type":"model","id":"claude-sonnet-4-6","display_name":"Claude Sonnet 4.6",'
            b'"created_at":"2026-02-17T00:00:00Z"},{"type":"model","id":"claude-haiku-4-5","display_name":"Claude '
            b'Haiku 4.5","created_at":"bad date"}],"has_more":true,"first_id":"claude-sonnet-4-6",'
            b'"last_id":"claude-haiku-4-5"}')
    entries = listed_models(provider, page)
    assert [(e["id"], e["display_name"], e.get("created_at")) for e in entries] == [
        ("ant/claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
        ("ant/claude-haiku-4-5", "Claude Haiku 4.5", None)]
    assert models_url(provider) == "https://api.example/v1/models?limit=1000"
    assert models_url(provider, "claude-haiku-4-5") == \
        "https://api.example/v1/models?limit=1000&after_id=claude-haiku-4-5"
