"""Egress: a real HTTP proxy (tinyproxy) between the gateway and an https upstream whose certificate
only a private CA vouches for; NO_PROXY, per-provider proxies with credentials, refusals, mTLS."""
from __future__ import annotations

import re

import httpx
import pytest

from gateway.egress import EgressError, ProxyEnvironment, egress_plan, parse_proxy
from policies.catalog import CatalogError, ProviderInfo, load_catalog
from tests.conftest import TEAM_KEY
from tests.fakes.openai import OpenAIFake
from tests.fakes.selfhosted import Tinyproxy, TLSOpenAIFake, VLLMFake, make_private_ca
from tests.gateway_server import GatewayThread

pytestmark = pytest.mark.skipif(not Tinyproxy.available(), reason="tinyproxy is not installed (scripts/test.sh "
                                "installs it)")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy")
HI = {"model": "internal/llama", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_private_ca(tmp_path_factory.mktemp("private-ca"))


@pytest.fixture(scope="module")
def https_upstream(ca):
    with TLSOpenAIFake(ca.server_context(), api_key="sk-internal-upstream") as fake:
        yield fake


@pytest.fixture(scope="module")
def mtls_upstream(ca):
    with TLSOpenAIFake(ca.server_context(require_client_cert=True)) as fake:
        yield fake


@pytest.fixture
def proxy(tmp_path):
    with Tinyproxy(tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def settings_for(url: str, **provider) -> dict:
    return {"providers": {"internal": {"protocol": "openai", "base_url": url + "/v1",
                                       "api_key": "sk-internal-upstream", **provider}},
            "models": [{"id": "internal/llama", "endpoints": [{"provider": "internal", "upstream_model": "llama"}]}],
            "keys": [{"key": TEAM_KEY, "team": "team-a"}], "retries": {"per_endpoint": 1, "max_attempts": 1}}


def ask(gw, n: int = 1) -> list[httpx.Response]:
    # trust_env=False: the test's own client goes to the gateway directly, whatever the variables say.
    with httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY}, timeout=30, trust_env=False) as client:
        return [client.post("/v1/messages", json=HI) for _ in range(n)]


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_https_proxy_variable_sends_every_upstream_call_through_a_connect_tunnel(
        monkeypatch, variable, proxy, https_upstream, ca):
    monkeypatch.setenv(variable, proxy.url)
    with GatewayThread(**settings_for(https_upstream.url, ca_file=str(ca.ca_cert))) as gw:
        answers = ask(gw, 3)
    assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
    assert answers[0].json()["content"][0]["text"] == "Hello from the OpenAI fake."
    # One tunnel, kept alive for the three requests: the pool is per origin and per proxy.
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{https_upstream.port} HTTP/1.1"]


def test_no_proxy_naming_the_host_bypasses_the_proxy(monkeypatch, proxy, https_upstream, ca):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.internal, 127.0.0.1")
    with GatewayThread(**settings_for(https_upstream.url, ca_file=str(ca.ca_cert))) as gw:
        answers = ask(gw, 2)
    assert [a.status_code for a in answers] == [200, 200]
    assert proxy.requests() == []


def test_http_upstream_goes_to_the_proxy_in_absolute_form(monkeypatch, proxy):
    with OpenAIFake() as plain:
        monkeypatch.setenv("http_proxy", proxy.url)
        with GatewayThread(**settings_for(plain.url)) as gw:
            [answer] = ask(gw)
        assert answer.status_code == 200
        assert proxy.requests() == [f"POST http://127.0.0.1:{plain.port}/v1/chat/completions HTTP/1.1"]
        assert "tinyproxy" in plain.requests[-1].headers.get("via", "")


def test_provider_proxy_with_credentials_passes_and_a_refusal_is_a_502_naming_the_proxy(tmp_path, https_upstream, ca):
    with Tinyproxy(tmp_path, credentials="gw-user:s3cret-pass") as guarded:
        good = f"http://gw-user:s3cret-pass@127.0.0.1:{guarded.port}"
        with GatewayThread(**settings_for(https_upstream.url, ca_file=str(ca.ca_cert), proxy=good)) as gw:
            [answer] = ask(gw)
        assert answer.status_code == 200, answer.text
        assert guarded.requests() == [f"CONNECT 127.0.0.1:{https_upstream.port} HTTP/1.1"]
        wrong = f"http://gw-user:not-the-pass@127.0.0.1:{guarded.port}"
        with GatewayThread(**settings_for(https_upstream.url, ca_file=str(ca.ca_cert), proxy=wrong)) as gw:
            [refused] = ask(gw)
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert error["type"] == "api_error"
    assert f"proxy http://127.0.0.1:{guarded.port} refused the tunnel" in error["message"]
    assert re.search(r": 40[17] ", error["message"])  # tinyproxy says 401 to wrong credentials, 407 to none
    assert "not-the-pass" not in refused.text and "gw-user" not in refused.text


def test_provider_proxy_direct_ignores_the_environment(monkeypatch, proxy, https_upstream, ca):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with GatewayThread(**settings_for(https_upstream.url, ca_file=str(ca.ca_cert), proxy="direct")) as gw:
        [answer] = ask(gw)
    assert answer.status_code == 200
    assert proxy.requests() == []


def test_unreachable_proxy_is_a_502_naming_it(monkeypatch, https_upstream, ca):
    from tests.fakes.base import free_port
    port = free_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://someone:hidden@127.0.0.1:{port}")
    with GatewayThread(**settings_for(https_upstream.url, ca_file=str(ca.ca_cert))) as gw:
        [answer] = ask(gw)
    assert answer.status_code == 502
    assert f"could not connect to proxy http://127.0.0.1:{port}" in answer.json()["error"]["message"]
    assert "hidden" not in answer.text


def test_private_ca_is_needed_and_enough(https_upstream, ca):
    with GatewayThread(**settings_for(https_upstream.url)) as gw:
        [untrusted] = ask(gw)
    assert untrusted.status_code == 502  # the system's trust store does not know the private CA
    with GatewayThread(**settings_for(https_upstream.url, ca_file=str(ca.ca_cert))) as gw:
        [trusted] = ask(gw)
    assert trusted.status_code == 200


def test_client_certificate_opens_an_mtls_upstream(mtls_upstream, ca):
    base = settings_for(mtls_upstream.url, ca_file=str(ca.ca_cert), api_key="x")
    with GatewayThread(**base) as gw:
        [without] = ask(gw)
    assert without.status_code == 502
    base["providers"]["internal"].update(tls_cert=str(ca.client_cert), tls_key=str(ca.client_key))
    with GatewayThread(**base) as gw:
        [answer] = ask(gw)
    assert answer.status_code == 200, answer.text


def test_unreadable_ca_file_and_non_http_proxies_are_refused_naming_the_setting(tmp_path):
    catalog = load_catalog(provider_overrides={"internal": {"protocol": "openai", "base_url": "https://h/v1",
                                                            "ca_file": str(tmp_path / "missing.pem")}})
    with pytest.raises(EgressError, match=r"provider 'internal': field 'ca_file'"):
        egress_plan(catalog.providers.values(), {})
    with pytest.raises(CatalogError, match=r"provider 'internal': field 'proxy' must be an http:// URL"):
        load_catalog(provider_overrides={"internal": {"protocol": "openai", "base_url": "https://h/v1",
                                                      "proxy": "socks5://u:p@h:1080"}})
    with pytest.raises(EgressError, match=r"HTTPS_PROXY: only http:// proxies"):
        ProxyEnvironment.from_environ({"HTTPS_PROXY": "socks5://h:1080"})


def test_no_proxy_matches_like_curl():
    env = ProxyEnvironment.from_environ({"https_proxy": "proxy.corp:3128",
                                         "NO_PROXY": ".internal.example, corp.example, 10.0.0.0/8, [::1], h:8443"})
    proxied = env.https
    assert (proxied.host, proxied.port) == ("proxy.corp", 3128)
    assert env.proxy_for(True, "api.internal.example", 443) is None
    assert env.proxy_for(True, "corp.example", 443) is None
    assert env.proxy_for(True, "git.corp.example", 443) is None
    assert env.proxy_for(True, "notcorp.example", 443) is proxied
    assert env.proxy_for(True, "10.1.2.3", 443) is None
    assert env.proxy_for(True, "::1", 443) is None
    assert env.proxy_for(True, "h", 8443) is None and env.proxy_for(True, "h", 443) is proxied
    # Loopback is proxied unless named, as curl does it.
    assert env.proxy_for(True, "127.0.0.1", 443) is proxied and env.proxy_for(True, "localhost", 443) is proxied
    assert env.proxy_for(False, "api.openai.com", 80) is None  # no http proxy set
    assert ProxyEnvironment.from_environ({"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}).proxy_for(
        True, "anything", 443) is None


def test_proxy_credentials_become_basic_authorization_and_never_show():
    proxy = parse_proxy("http://us%40er:p%3Ass@proxy:8080", "HTTPS_PROXY")
    assert proxy.authorization == "Basic dXNAZXI6cDpzcw=="  # base64 of "us@er:p:ss"
    assert proxy.shown == "http://proxy:8080" and "p:ss" not in repr(proxy)


def test_two_providers_on_one_origin_must_agree_on_their_egress():
    providers = [ProviderInfo(name="a", protocol="openai", base_url="https://h/v1", proxy="http://p:1"),
                 ProviderInfo(name="b", protocol="openai", base_url="https://h/v2", proxy="http://q:1")]
    with pytest.raises(EgressError, match="share the origin"):
        egress_plan(providers, {})


def test_discovery_goes_through_the_proxy_too(monkeypatch, proxy):
    with VLLMFake({"llama-3.1-8b": 131072}) as vllm:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        config = {"providers": {"vllm": {"protocol": "openai", "base_url": vllm.url + "/v1", "discover": True}},
                  "keys": [{"key": TEAM_KEY, "team": "team-a"}]}
        with GatewayThread(**config) as gw:
            listed = httpx.get(gw.url + "/v1/models/vllm/llama-3.1-8b", headers={"x-api-key": TEAM_KEY},
                               trust_env=False)
        assert listed.status_code == 200 and listed.json()["context_length"] == 131072
        assert proxy.requests() == [f"GET http://127.0.0.1:{vllm.port}/v1/models HTTP/1.1"]
