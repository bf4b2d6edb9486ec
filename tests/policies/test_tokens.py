"""The offline input-token estimate follows its documented rule."""
from __future__ import annotations

import base64

import pytest

from policies.catalog import load_catalog
from policies.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    PDF_PAGE_TOKENS,
    REQUEST_OVERHEAD,
    TOOL_OVERHEAD,
    TOOL_SYSTEM_TOKENS,
    estimate_input_tokens,
)

CATALOG = load_catalog()
GPT = CATALOG.models["openai/gpt-5.5"]          # o200k: 4 characters per token
KIMI = CATALOG.models["moonshotai/kimi-k2.6"]   # 3.6 characters per token


def user(content):
    return {"messages": [{"role": "user", "content": content}]}


def estimate(body, model=GPT):
    return estimate_input_tokens(body, model)


def test_ascii_text_counts_characters_over_the_tokenizer_ratio_plus_overheads():
    assert estimate(user("a" * 400)) == 100 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD
    assert estimate(user("a" * 401)) == 101 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD  # rounds up


def test_ratio_depends_on_the_models_tokenizer_family():
    assert estimate(user("a" * 360), KIMI) == 100 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD
    custom = load_catalog([{"id": "local/x", "context_length": 1000, "max_output": 100,
                            "endpoints": []}]).models["local/x"]
    assert estimate(user("a" * 350), custom) == 100 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD


def test_each_non_ascii_character_counts_as_one_token():
    assert estimate(user("你好世界" + "a" * 8)) == 4 + 2 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD


def test_every_message_and_the_system_prompt_cost_their_overhead():
    body = {"system": "", "messages": [{"role": "user", "content": ""},
                                        {"role": "assistant", "content": ""}]}
    assert estimate(body) == 2 * MESSAGE_OVERHEAD + REQUEST_OVERHEAD
    with_system = dict(body, system=[{"type": "text", "text": "a" * 40}])
    assert estimate(with_system) == 10 + 3 * MESSAGE_OVERHEAD + REQUEST_OVERHEAD
    assert estimate(dict(body, system="a" * 40)) == estimate(with_system)


def test_an_empty_request_still_counts_its_overhead():
    assert estimate({}) == REQUEST_OVERHEAD


def test_an_image_costs_a_fixed_number_of_tokens_whatever_its_size():
    small = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    large = {"type": "image", "source": {"type": "url", "url": "https://example.com/big.png"}}
    assert estimate(user([small])) == IMAGE_TOKENS + MESSAGE_OVERHEAD + REQUEST_OVERHEAD
    assert estimate(user([large])) == estimate(user([small]))


def test_a_pdf_costs_a_fixed_number_of_tokens_per_page():
    pages = b"".join(b"%d 0 obj << /Type /Page /Parent 1 0 R >> endobj\n" % i for i in range(3))
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages /Count 3 >> endobj\n" + pages + b"%%EOF"
    block = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": base64.b64encode(pdf).decode()}}
    assert estimate(user([block])) == 3 * PDF_PAGE_TOKENS + MESSAGE_OVERHEAD + REQUEST_OVERHEAD
    by_url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    assert estimate(user([by_url])) == PDF_PAGE_TOKENS + MESSAGE_OVERHEAD + REQUEST_OVERHEAD


def test_a_plain_text_document_counts_its_text_and_title():
    block = {"type": "document", "title": "a" * 8,
             "source": {"type": "text", "media_type": "text/plain", "data": "a" * 40}}
    assert estimate(user([block])) == 2 + 10 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD


def test_tools_cost_their_definitions_and_the_tool_use_instructions():
    tool = {"name": "get_weather", "description": "Weather for a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    without = estimate(user("hi"))
    with_one = estimate(dict(user("hi"), tools=[tool]))
    with_two = estimate(dict(user("hi"), tools=[tool, dict(tool, name="get_time")]))
    assert with_one - without > TOOL_SYSTEM_TOKENS + TOOL_OVERHEAD
    assert with_two - with_one < with_one - without  # the instructions are paid once


BLOCKS = [
    {"type": "text", "text": "the weather in Paris"},
    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    {"type": "tool_result", "tool_use_id": "toolu_1",
     "content": [{"type": "text", "text": "sunny, 21 degrees"}]},
    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21 degrees"},
    {"type": "thinking", "thinking": "the user wants the weather", "signature": "sig"},
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
     "input": {"query": "weather paris"}},
    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
     "content": [{"type": "web_search_result", "url": "https://example.com", "title": "Paris"}]},
    {"type": "search_result", "source": "https://example.com", "title": "Paris",
     "content": [{"type": "text", "text": "sunny"}]},
    {"type": "container_upload", "file_id": "file_123"},
]


@pytest.mark.parametrize("block", BLOCKS, ids=[b["type"] for b in BLOCKS])
def test_every_block_type_adds_to_the_count(block):
    baseline = estimate(user([]))
    assert estimate(user([block])) > baseline
    assert estimate(user([block, block])) > estimate(user([block]))


def test_cache_control_markers_do_not_change_the_count():
    plain = {"type": "text", "text": "a" * 100}
    marked = dict(plain, cache_control={"type": "ephemeral", "ttl": "1h"})
    assert estimate(user([marked])) == estimate(user([plain]))
