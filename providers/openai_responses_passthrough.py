"""Responses to a Responses-protocol upstream, passed through instead of translated twice.

A Responses client routed to a `protocol: openai-responses` endpoint gets this protocol instead of
the `openai-responses` one (`providers.protocol.protocol_for`): the upstream gets the client's own
bytes with `model` spliced, the router's fields cut and `store: false` added when the client did not
say (the gateway is stateless, and OpenAI stores by default), and the answer comes back as the
upstream wrote it, labelled as every answer is: the router's `model`, the `provider` and
`usage.cost`. Its usage is read from the terminal event (`response.completed`, or
`response.incomplete`). Errors are read as the `openai-responses` protocol reads them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from providers import protocol
from providers.anthropic_events import usage_to_account
from providers.base import ROUTER_FIELDS, Usage
from providers.jsonedit import EditError, edit_members
from providers.openai_responses import Responses
from providers.openai_responses_errors import error_of_object
from providers.openai_responses_inbound import error_event
from providers.openai_responses_response import anthropic_usage
from providers.redaction import redact_bytes
from providers.sse import EventSplitter, event_data

API = "openai_responses"
_TERMINAL = ("response.completed", "response.incomplete")
# What makes an event worth decoding: the terminal events (usage), a failed response and an error
# event. A JSON string holds a quote only escaped, so these quoted names are the events' own types
# (or a snapshot's `"error":null`).
_NOTABLE = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"', b'"error"')


def upstream_body(raw: bytes, values: Mapping[str, msgspec.Raw], upstream_model: str) -> bytes:
    router_fields = [f for f in ROUTER_FIELDS if f in values]
    append = None if "store" in values else {"store": False}
    try:
        return edit_members(raw, replace={"model": upstream_model}, remove=router_fields, append=append)
    except EditError:  # a member repeated: decoding keeps the last of each, as routing did
        body = {k: v for k, v in orjson.loads(raw).items() if k not in ROUTER_FIELDS}
        return orjson.dumps({"store": False, **body, "model": upstream_model})


def usage_of(response: Any) -> Usage:
    usage = response.get("usage") if isinstance(response, Mapping) else None
    return usage_to_account(anthropic_usage(usage if isinstance(usage, Mapping) else None),
                            output_counted=isinstance(usage, Mapping))


def _payload(event: bytes) -> Any:
    try:
        return orjson.loads(event_data(event))
    except orjson.JSONDecodeError:
        return None


def _failure_of(payload: Any) -> tuple[str, str] | None:
    """(Anthropic error type, message) of an error event or a failed response's event, else None."""
    if not isinstance(payload, dict):
        return None
    kind = payload.get("type")
    if kind == "error":
        return error_of_object(payload)[1:]
    if kind == "response.failed":
        response = payload.get("response") if isinstance(payload.get("response"), Mapping) else {}
        error = response.get("error")
        return error_of_object(error)[1:] if isinstance(error, Mapping) else ("api_error", "the response failed")
    return None


class EventRelay(protocol.Relayed):
    """The StreamTranslator of a passed-through Responses stream: events leave as they came. The
    first event with data says whether an answer began or the upstream failed (`protocol.Relayed`);
    the terminal event that it finished, with its usage; an error event or `response.failed` after
    the start how it ended. Only notable events are decoded."""

    __slots__ = ("_splitter", "_usage", "_events", "_labels", "_price")
    END = "response.completed"

    def __init__(self, *, provider: str, secrets: Sequence[str | None], model: str | None = None,
                 price: Callable[[Usage], float] | None = None) -> None:
        super().__init__(provider, secrets)
        self._splitter = EventSplitter()
        self._usage: Usage | None = None
        self._events = 0  # forwarded: the next event's sequence_number
        # The response snapshots name the router's model and the provider, the terminal one its cost.
        self._labels = protocol.EventLabels(model, provider) if model is not None else None
        self._price = price

    failure_of = staticmethod(_failure_of)

    def split(self, data: bytes) -> bytes:
        return self._splitter.feed(data)

    def read(self, block: bytes) -> bytes:
        self._events += block.count(b"\n\n")
        if self._labels is not None:
            block = self._labels.events(block)
        if not any(marker in block for marker in _NOTABLE):
            return block
        events = block.split(b"\n\n")
        for n, event in enumerate(events):
            if not any(marker in event for marker in _NOTABLE):
                continue
            payload = _payload(event)
            failure = _failure_of(payload)
            if failure is not None:
                self.failure, self.finished = failure, True
            elif isinstance(payload, dict) and payload.get("type") in _TERMINAL:
                self._usage = usage_of(payload.get("response"))
                self.finished = True
                if self._price is not None:
                    events[n] = protocol.EventLabels.with_cost(event, self._price(self._usage))
        block = b"\n\n".join(events)
        return redact_bytes(block, self._secrets) if self.failure is not None else block

    def error_event(self, error_type: str, message: str) -> bytes:
        return error_event(error_type, message, sequence=self._events)

    def close_usage(self) -> Usage:
        """What the stream used; without its terminal event, `estimated` with no output (the relay's
        meter counts it from the text sent, gateway/stream_meter.py)."""
        if self._usage is not None:
            return self._usage
        return usage_to_account(anthropic_usage(None), output_counted=False)

    def usage_so_far(self, input_bound: int) -> Usage | None:
        """A Responses stream reports its input only at its end, with its output: until then its
        input is taken at the reservation's bound."""
        return None if self.finished else Usage(input_tokens=input_bound)


class ResponsesPassthrough(protocol.Passing, Responses):
    """The `openai-responses` protocol for a Responses client: its request and the upstream's answer
    as they are. Failures and the options are the `openai-responses` protocol's."""

    answers = API
    usage_of = staticmethod(usage_of)

    def request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        client = call.client
        return protocol.UpstreamRequest(self.url(call), self.headers(call),
                                        upstream_body(client.raw, client.values, call.upstream_model))

    def stream(self, call: protocol.Call) -> EventRelay:
        return EventRelay(provider=call.provider, secrets=call.secrets, model=call.model, price=call.price)


PROTOCOL = ResponsesPassthrough()
