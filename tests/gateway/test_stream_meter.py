"""The stream meter: a cut stream's output counted from the deltas' text sent to the client (not
their envelopes), by the token estimator, never above max_tokens; and the budget cut's decision."""
from __future__ import annotations

import orjson
import pytest

from gateway.stream_meter import StreamMeter
from policies.catalog import Pricing
from policies.pricing import cost_usd
from policies.tokens import text_tokens
from providers.anthropic import StreamScanner
from providers.base import Usage
from providers.openai_chat import ChatStreamTranslator
from tests.providers.test_anthropic_stream import START, event

PRICING = Pricing(input=3.0, output=15.0, cache_write=None, cache_write_1h=None, cache_read=None)


def delta(kind: str, field: str, text: str) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": kind, field: text}})


def text_deltas(texts: list[str]) -> list[bytes]:
    return [delta("text_delta", "text", t) for t in texts]


def cut_output(blocks: list[bytes], **options) -> int:
    """What the meter settles a stream at whose upstream never sent its final count."""
    scanner = StreamScanner(model="router/model", provider="anthropic")
    meter = StreamMeter(chars_per_token=options.pop("chars_per_token", 4.0), max_tokens=options.pop("max_tokens", None))
    for block in [START, *blocks]:
        meter.sent(scanner.feed(block))
    usage = meter.settle(scanner.close_usage())
    assert usage.estimated
    return usage.output_tokens


def test_a_cut_stream_counts_the_deltas_text_not_their_envelopes():
    assert cut_output(text_deltas(["abcd"] * 30)) == 30
    assert cut_output(text_deltas(["ab"] * 30)) == 15  # no rounding up per delta
    assert cut_output([b"".join(text_deltas(["abcd"] * 30))]) == 30  # many events in one block


def test_non_ascii_and_escaped_text_counts_as_the_estimator_counts_it():
    texts = ["\u4f60\u597d"] * 10 + ['say "hi"\n'] * 4 + ["caf\u00e9 \\ done"]
    assert cut_output(text_deltas(texts)) == text_tokens("".join(texts), 4.0)
    assert cut_output(text_deltas(["\u4f60\u597d"] * 10)) == 20  # a token per CJK character


def test_a_cut_stream_is_never_counted_above_max_tokens():
    assert cut_output(text_deltas(["abcd"] * 30), max_tokens=20) == 20


def test_thinking_and_tool_input_count_as_output_and_signatures_do_not():
    blocks = [delta("thinking_delta", "thinking", "abcdabcd"), delta("input_json_delta", "partial_json", '{"a":1}'),
              delta("signature_delta", "signature", "x" * 400)]
    assert cut_output(blocks) == text_tokens("abcdabcd" + '{"a":1}', 4.0)


def test_what_the_upstream_reported_so_far_counts_when_more():
    # message_start reported one output token; one delta of two characters is less.
    assert cut_output(text_deltas(["ab"])) == 1


def test_a_final_count_from_the_upstream_is_kept_as_it_is():
    meter = StreamMeter(chars_per_token=4.0, max_tokens=10)
    meter.sent(b"".join(text_deltas(["abcd"] * 30)))
    usage = Usage(input_tokens=5, output_tokens=42)
    assert meter.settle(usage).output_tokens == 42


def test_a_chat_stream_without_usage_is_counted_from_its_translated_deltas():
    translator = ChatStreamTranslator(model="m", provider="p", message_id="msg_1")
    meter = StreamMeter(chars_per_token=4.0, max_tokens=None)
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "x" * 10}, "finish_reason": None}]}
    for _ in range(4):
        meter.sent(b"".join(translator.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")))
    assert meter.settle(translator.close_usage()).output_tokens == 10


def price(usage: Usage) -> float:
    return cost_usd(usage, PRICING)


@pytest.mark.parametrize("input_tokens, fitting", [(1000, 200), (0, 400), (2000, 0)])
def test_the_cut_comes_once_the_cost_so_far_passes_the_allowance(input_tokens, fitting):
    allowance = price(Usage(input_tokens=1000, output_tokens=200))  # $0.006
    meter = StreamMeter(chars_per_token=1.0, max_tokens=None, allowance_usd=allowance, price=price)
    usage = Usage(input_tokens=input_tokens)
    meter.sent(delta("text_delta", "text", "x" * fitting))
    assert not meter.over_budget(usage)
    meter.sent(delta("text_delta", "text", "x"))
    assert meter.over_budget(usage)


def test_input_alone_past_the_allowance_is_over_at_once():
    meter = StreamMeter(chars_per_token=4.0, max_tokens=None, allowance_usd=0.001, price=price)
    assert meter.over_budget(Usage(input_tokens=1000))  # $0.003 of input


def test_without_a_budget_nothing_is_ever_over():
    meter = StreamMeter(chars_per_token=4.0, max_tokens=None, price=price)
    meter.sent(delta("text_delta", "text", "x" * 10_000))
    assert not meter.budgeted and not meter.over_budget(Usage(input_tokens=10**9))


def test_a_long_stream_is_counted_exactly_across_its_batches():
    texts = ["abc"] * 100 + ["\u00e9t\u00e9"] * 7 + ["abc"] * 50  # blocks past several batches
    assert cut_output(text_deltas(texts), chars_per_token=3.5) == text_tokens("".join(texts), 3.5)


def test_blocks_not_yet_counted_are_counted_when_they_could_pass_the_limit():
    allowance = price(Usage(input_tokens=1000, output_tokens=500))
    meter = StreamMeter(chars_per_token=1.0, max_tokens=None, allowance_usd=allowance, price=price)
    usage = Usage(input_tokens=1000)
    for _ in range(5):  # 500 tokens in blocks of over 600 bytes: the byte bound passes, the count does not
        meter.sent(delta("text_delta", "text", "x" * 100))
        assert not meter.over_budget(usage)
    meter.sent(delta("text_delta", "text", "x"))
    assert meter.over_budget(usage)
