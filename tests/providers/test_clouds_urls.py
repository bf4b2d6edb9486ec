"""Vertex AI and Azure request building: URLs, bodies and headers as each cloud documents them."""
from __future__ import annotations

import json

from providers import azure, vertex


def test_vertex_claude_urls_regional_and_global():
    assert vertex.claude_url("my-proj", "us-east5", "claude-sonnet-4-5@20250929", stream=False) == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-east5/publishers/anthropic/"
        "models/claude-sonnet-4-5@20250929:rawPredict")
    assert vertex.claude_url("my-proj", "global", "claude-opus-4-5@20251101", stream=True) == (
        "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/publishers/anthropic/"
        "models/claude-opus-4-5@20251101:streamRawPredict")


def test_vertex_gemini_urls():
    assert vertex.gemini_url("p", "europe-west4", "gemini-3-flash-preview", stream=False) == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/publishers/google/"
        "models/gemini-3-flash-preview:generateContent")
    assert vertex.gemini_url("p", "global", "gemini-3.1-pro-preview", stream=True,
                             base_url="http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/v1/projects/p/locations/global/publishers/google/models/gemini-3.1-pro-preview"
        ":streamGenerateContent?alt=sse")


def test_vertex_claude_body_keeps_stream_drops_model_and_router_fields():
    raw = b'{"model":"anthropic/claude-sonnet-4.5","stream":true,"max_tokens":9,"messages":[],"models":["x"]}'
    assert json.loads(vertex.claude_body(raw)) == {"stream": True, "max_tokens": 9, "messages": [],
                                                   "anthropic_version": "vertex-2023-10-16"}
    assert vertex.claude_headers(beta="a,b") == {"content-type": "application/json", "anthropic-beta": "a,b"}


def test_azure_deployment_and_v1_urls():
    base = azure.resource_base_url("contoso")
    assert azure.deployment_url(base, "gpt-4o prod", "2025-04-01-preview") == (
        "https://contoso.openai.azure.com/openai/deployments/gpt-4o%20prod/chat/completions"
        "?api-version=2025-04-01-preview")
    assert azure.deployment_url(base + "/openai/", "d").endswith("/openai/deployments/d/chat/completions"
                                                                 "?api-version=2024-10-21")
    assert azure.v1_url(base + "/openai/v1") == "https://contoso.openai.azure.com/openai/v1/chat/completions"
    assert azure.v1_url(base, "preview") == (
        "https://contoso.openai.azure.com/openai/v1/chat/completions?api-version=preview")


def test_claude_on_foundry_is_anthropics_protocol_under_the_resource():
    assert azure.foundry_anthropic_base_url("contoso") == "https://contoso.services.ai.azure.com/anthropic"


def test_azure_key_and_entra_headers():
    assert azure.api_key_headers("k") == {"api-key": "k"}
    assert azure.bearer_headers("t") == {"authorization": "Bearer t"}


def test_vertex_errors_in_googles_envelope_and_anthropics():
    quota = (b'{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/'
             b'online_prediction_requests_per_base_model","status":"RESOURCE_EXHAUSTED"}}')
    assert vertex.map_error(429, quota)[:2] == (429, "rate_limit_error")
    denied = b'{"error":{"code":403,"message":"Permission denied on resource project p.","status":"PERMISSION_DENIED"}}'
    assert vertex.map_error(403, denied) == (403, "permission_error", "Permission denied on resource project p.")
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert vertex.map_error(529, overloaded) == (529, "overloaded_error", "Overloaded")
    too_long = b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}'
    assert vertex.map_error(400, too_long) == (400, "invalid_request_error", "prompt is too long")
    assert vertex.map_error(503, b'{"error":{"code":503,"message":"The service is currently unavailable.",'
                                 b'"status":"UNAVAILABLE"}}')[:2] == (502, "api_error")
