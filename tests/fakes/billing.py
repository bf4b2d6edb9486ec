"""An Anthropic fake that bills: every answer's usage is what it charges, recorded per request,
and its count_tokens counts input exactly as it bills it, as Anthropic's does.

Input tokens are the messages' JSON length / 4, plus `IMAGE_URL_TOKENS` for each image given by URL
(a size only the upstream knows). Output is `min(max_tokens, OUTPUT_TOKENS)`; a message whose text
holds `cut:N` is streamed as N deltas and then the connection dies (no final usage), billed as the
tokens of the text it sent, by the gateway's estimator, capped at max_tokens.
"""
from __future__ import annotations

import json
import re
import threading

from policies.tokens import DEFAULT_CHARS_PER_TOKEN, TextTally
from tests.fakes.anthropic import AnthropicFake, json_reply, message_body, sse_reply, stream_events
from tests.fakes.base import RecordedRequest, Reply

IMAGE_URL_TOKENS = 2_000
OUTPUT_TOKENS = 20
PIECE = "abc "
_CUT = re.compile(r"cut:(\d+)")


def billed_input(body: dict) -> int:
    messages = body.get("messages") or []
    text = json.dumps(messages)
    images = text.count('"type": "url"')
    return len(text) // 4 + IMAGE_URL_TOKENS * images


class BillingFake(AnthropicFake):
    def __init__(self) -> None:
        super().__init__()
        self.bills: dict[str, tuple[int, int]] = {}  # message id -> (input, output) tokens charged
        self._lock = threading.Lock()
        self._seq = 0
        self.pace = 0.0  # seconds between a stream's events

    def reset(self) -> None:
        super().reset()
        self.bills.clear()
        self.pace = 0.0

    def auto_reply(self, request: RecordedRequest) -> Reply:
        body = request.json()
        input_tokens = billed_input(body)
        if request.path.endswith("/count_tokens"):
            return json_reply({"input_tokens": input_tokens})
        max_tokens = int(body.get("max_tokens", 16))
        with self._lock:
            self._seq += 1
            msg_id = f"msg_bill{self._seq:06d}"
        cut = _CUT.search(json.dumps(body.get("messages")))
        if cut and body.get("stream"):
            pieces = [PIECE] * int(cut.group(1))
            tally = TextTally()
            tally.add("".join(pieces))
            output = min(max_tokens, max(1, tally.tokens(DEFAULT_CHARS_PER_TOKEN)))
            events = stream_events(pieces, input_tokens=input_tokens, msg_id=msg_id)[:-3]  # no stop, no usage
            self.bills[msg_id] = (input_tokens, output)
            return sse_reply(events, cut=True, delay_between=self.pace)
        output = min(max_tokens, OUTPUT_TOKENS)
        self.bills[msg_id] = (input_tokens, output)
        if body.get("stream"):
            return sse_reply(stream_events([PIECE] * output, input_tokens=input_tokens, output_tokens=output,
                                           msg_id=msg_id), delay_between=self.pace)
        return json_reply(message_body(PIECE * output, input_tokens=input_tokens, output_tokens=output,
                                       msg_id=msg_id))
