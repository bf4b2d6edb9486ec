"""What a streamed answer has generated so far, read from the Anthropic events sent to the client.

Two things need it: the output of a stream that ends before the upstream's final count (cut by
the budget, the client or the upstream), estimated from the deltas' text with the token
estimator used everywhere else and never above `max_tokens`; and the budget cut, which stops a
stream whose cost so far passes what admission reserved for it (`Exchange.allowance_usd`, set
when a budget applies).

A relay sends the client Anthropic events whatever the upstream speaks, except where a client of
another API is passed through to an upstream of that API: then the events are that API's. One meter
serves them all, reading the generated text where the stream's API puts it (`TEXT`): a relay
calls `sent(block)` with each block it forwards, `over_budget(usage)` after it while the upstream's
final usage has not come (only when `budgeted`), and `settle(usage)` once at the end. A block costs
a list append: blocks are counted 32 at a time (and whenever a count is asked for), by one C-speed
search for the deltas' text values over them all; a value is decoded only when it holds an escape
or a non-ASCII byte, and otherwise counts as its byte length.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import orjson

from gateway.exchange import Exchange
from policies.plan import Attempt
from policies.tokens import TextTally
from providers.base import Usage

_STRING = rb'\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'  # a member's JSON string value, its escapes kept
# The generated text in a stream of each API, by the API's name (`providers.protocol`):
#   messages          a content_block_delta's text, thinking or partial_json (a tool call's JSON); the
#                     literal prefix makes the search skip through everything else at C speed (a JSON
#                     string cannot hold `_delta","` unescaped)
#   openai_chat       a chunk's delta content, reasoning_content, refusal, or tool call arguments
#   openai_responses  a delta event's delta (output text, refusal, reasoning summary, call arguments)
TEXT = {
    "messages": re.compile(rb'_delta",\s*"(?:text|thinking|partial_json)"' + _STRING).findall,
    "openai_chat": re.compile(rb'"(?:content|reasoning_content|reasoning|refusal|arguments)"' + _STRING).findall,
    "openai_responses": re.compile(rb'"delta"' + _STRING).findall,
}
_PER_MILLION = 1_000_000
_BATCH = 32  # blocks kept before they are counted: a few kilobytes


class StreamMeter:
    __slots__ = ("max_tokens", "chars_per_token", "allowance_usd", "price", "budgeted", "_find_text", "_pending",
                 "_plain", "_tally", "_priced_input", "_output_limit")

    def __init__(self, *, max_tokens: int | None, chars_per_token: float, allowance_usd: float | None = None,
                 price: Callable[[Usage], float] | None = None, api: str = "messages") -> None:
        self.max_tokens = max_tokens
        self.chars_per_token = chars_per_token
        self.allowance_usd = allowance_usd
        self.price = price
        self.budgeted = allowance_usd is not None and price is not None
        self._find_text = TEXT[api]
        self._pending: list[bytes] = []  # blocks sent and not counted yet (whole events)
        self._plain = 0  # bytes of text values with no escape and no non-ASCII byte: one character each
        self._tally = TextTally()  # the other values, decoded
        self._priced_input: tuple[int, int, int, int] | None = None
        self._output_limit = 0

    def sent(self, block: bytes) -> None:
        """Take a block of events forwarded to the client, for its output text."""
        pending = self._pending
        pending.append(block)
        if len(pending) == _BATCH:
            self._count()

    def _count(self) -> None:
        pending = self._pending
        found = self._find_text(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        if not found:
            return
        text = found[0] if len(found) == 1 else b"".join(found)
        if text.isascii() and b"\\" not in text:
            self._plain += len(text)
            return
        for value in found:
            if value.isascii() and b"\\" not in value:
                self._plain += len(value)
                continue
            try:
                self._tally.add(orjson.loads(b'"' + value + b'"'))
            except orjson.JSONDecodeError:  # not valid JSON text: its bytes, an overcount
                self._plain += len(value)

    def output_tokens(self, reported: int = 0) -> int:
        """The output so far: the deltas' text by the estimate (or what the upstream reported so
        far, when more), never above `max_tokens`, which the upstream cannot pass."""
        if self._pending:
            self._count()
        tally = self._tally
        counted = math.ceil((self._plain + tally.ascii_chars) / self.chars_per_token) + tally.other_chars
        tokens = max(counted, reported)
        return tokens if self.max_tokens is None else min(tokens, self.max_tokens)

    def over_budget(self, usage: Usage) -> bool:
        """Whether the answer's cost so far (its input as reported, its output so far) has passed
        its allowance. Prices are linear in the output, so the output that fits is worked out once
        per input count and each call compares two integers."""
        if not self.budgeted:
            return False
        priced = (usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens,
                  usage.cache_creation_1h_input_tokens)
        if priced != self._priced_input:
            self._priced_input = priced
            self._output_limit = self._fitting_output(usage)
        limit = self._output_limit
        if self._pending and usage.output_tokens <= limit:
            # A token of text takes at least a byte: while the bytes not yet counted could not
            # pass the limit, they need no counting.
            tally = self._tally
            counted = math.ceil((self._plain + tally.ascii_chars) / self.chars_per_token) + tally.other_chars
            if counted + sum(map(len, self._pending)) <= limit:
                return False
        return self.output_tokens(usage.output_tokens) > limit

    def settle(self, usage: Usage) -> Usage:
        """The usage to account for: a stream without the upstream's final count (`estimated`)
        gets the output counted here."""
        if usage.estimated:
            usage.output_tokens = self.output_tokens(usage.output_tokens)
        return usage

    def cut_message(self, ex: Exchange) -> str:
        """The error event's message of a stream cut at its budget (and the record says so)."""
        ex.limited_by = "budget"
        team = ex.principal.team if ex.principal else ""
        return (f"the budget of this key (team {team!r}) is reached: the answer was cut at the "
                f"{self.allowance_usd:.6f} USD reserved for it")

    def _fitting_output(self, usage: Usage) -> int:
        """The most output tokens whose cost, with this input, stays within the allowance (-1: none)."""
        assert self.price is not None and self.allowance_usd is not None
        base = self.price(dataclasses.replace(usage, output_tokens=0))
        per_token = (self.price(dataclasses.replace(usage, output_tokens=_PER_MILLION)) - base) / _PER_MILLION
        left = self.allowance_usd - base
        if left < 0:
            return -1
        if per_token <= 0:
            return 2**62
        return math.floor(left / per_token + 1e-6)


def stream_meter(ex: Exchange, attempt: Attempt, api: str, *, chars_per_token: float,
                 price: Callable[[Usage], float]) -> StreamMeter:
    """The meter of one relayed stream of `ex` by `attempt`, whose events are API `api`'s."""
    return StreamMeter(max_tokens=ex.output_limit(attempt), chars_per_token=chars_per_token,
                       allowance_usd=ex.allowance_usd, price=price, api=api)
