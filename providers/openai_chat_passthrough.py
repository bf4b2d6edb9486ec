"""Chat completions to an OpenAI-compatible upstream, passed through instead of translated twice.

A chat completions client routed to a `protocol: openai` endpoint gets this protocol instead of the
`openai` one (`providers.protocol.protocol_for`): the upstream gets the client's own bytes with
`model` spliced and the router's fields cut, as the Anthropic protocol treats a Messages request
(unknown fields survive), and the answer comes back as the upstream wrote it (`answers` is the
client's API, so `gateway.inbound` does not translate it), labelled as every answer is: the
router's `model`, the `provider` and `usage.cost`. A stream asks for its usage
(`stream_options.include_usage`) so that the gateway can count it, and a client that did not ask
is not shown the extra usage chunk. Errors are read as the `openai` protocol reads them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from providers import protocol
from providers.anthropic import UnreadableBody
from providers.anthropic import upstream_body as spliced
from providers.anthropic_events import usage_to_account
from providers.base import ROUTER_FIELDS, Usage
from providers.jsonedit import EditError, edit_members
from providers.openai_chat import ChatCompletions
from providers.openai_chat_errors import error_type_of_object, redact_secrets
from providers.openai_chat_response import anthropic_usage
from providers.openai_inbound import stream_error
from providers.redaction import redact_bytes
from providers.sse import EventSplitter, event_data

API = "openai_chat"
_USAGE = b'"usage"'
_NO_USAGE = b'"usage":null'  # what every chunk but the last says once include_usage is on (OpenAI's spacing)
_ERROR = b'"error"'
_DONE = b"data: [DONE]"


def asks_for_usage(values: Mapping[str, msgspec.Raw]) -> bool:
    options = _decoded(values.get("stream_options"))
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_body(raw: bytes, values: Mapping[str, msgspec.Raw], upstream_model: str, *,
                  stream: bool) -> tuple[bytes, bool]:
    """The bytes for the upstream, and whether the usage chunk was added (the client did not ask)."""
    router_fields = [f for f in ROUTER_FIELDS if f in values]
    if not stream or asks_for_usage(values):
        return spliced(raw, upstream_model, router_fields=router_fields, values=values), False
    options = _decoded(values.get("stream_options"))
    options = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    present = "stream_options" in values
    try:
        body = edit_members(raw, replace={"model": upstream_model, **({"stream_options": options} if present else {})},
                            remove=router_fields, append=None if present else {"stream_options": options})
    except EditError:  # a member repeated: decoding keeps the last of each, as routing did
        decoded = {k: v for k, v in orjson.loads(raw).items() if k not in ROUTER_FIELDS}
        body = orjson.dumps({**decoded, "model": upstream_model, "stream_options": options})
    return body, True


def _decoded(value: msgspec.Raw | None) -> Any:
    if value is None:
        return None
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None


def usage_of_completion(completion: Any) -> Usage:
    usage = completion.get("usage") if isinstance(completion, Mapping) else None
    return usage_to_account(anthropic_usage(usage if isinstance(usage, Mapping) else None),
                            output_counted=isinstance(usage, Mapping))


class UsageFilter:
    """Passes a chunk stream through as it arrives, cut at event boundaries; reads the usage chunk,
    drops it when the client did not ask for it (`hide`) and else adds its `cost` (`price`). Only
    events that name `usage` with a value other than null are decoded."""

    def __init__(self, *, hide: bool, price: Callable[[Usage], float] | None = None) -> None:
        self.hide = hide
        self.price = price
        self._splitter = EventSplitter()
        self._usage: dict[str, int] | None = None

    def feed(self, chunk: bytes) -> bytes:
        block = self._splitter.feed(chunk)
        if _USAGE not in block or block.count(_USAGE) == block.count(_NO_USAGE):
            return block
        kept = []
        for event in block.split(b"\n\n"):
            if _USAGE in event and event.count(_USAGE) != event.count(_NO_USAGE) and self._read_usage(event):
                if self.hide:
                    continue
                if self.price is not None:
                    event = protocol.EventLabels.with_cost(event, self.price(self.usage()))
            kept.append(event)
        return b"\n\n".join(kept)

    def _read_usage(self, event: bytes) -> bool:
        """Whether `event` is the usage chunk (no choices) once its usage is read."""
        try:
            payload = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return False
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if not isinstance(usage, Mapping):
            return False
        self._usage = anthropic_usage(usage)
        return not payload.get("choices")

    def usage(self) -> Usage:
        """What the stream used; without a usage chunk, `estimated` with no output (the relay's meter
        counts it from the text sent, gateway/stream_meter.py)."""
        return usage_to_account(self._usage or anthropic_usage(None), output_counted=self._usage is not None)


def _error_of(payload: Any) -> tuple[str, str] | None:
    """(Anthropic error type, message) of a chunk that is an error object, else None."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not error:
        return None
    error = error if isinstance(error, Mapping) else {"message": str(error)}
    return error_type_of_object(error), redact_secrets(str(error.get("message") or "the upstream reported an error"))


def _payload(event: bytes) -> Any:
    try:
        return orjson.loads(event_data(event))
    except orjson.JSONDecodeError:
        return None


class ChunkRelay(protocol.Relayed):
    """The StreamTranslator of a passed-through chat completions stream: chunks leave as they came
    (bar a hidden usage chunk). The first event with data says whether an answer began or the
    upstream failed (`protocol.Relayed`); `[DONE]` that it finished; an error object after the start
    how it ended. Only events that name `error` are decoded after the first."""

    __slots__ = ("_usage", "_labels")
    END = "[DONE]"

    def __init__(self, *, hide_usage: bool, provider: str, secrets: Sequence[str | None], model: str | None = None,
                 price: Callable[[Usage], float] | None = None) -> None:
        super().__init__(provider, secrets)
        self._usage = UsageFilter(hide=hide_usage, price=price)
        # Chunks name the router's model and the provider, as every answer does.
        self._labels = protocol.EventLabels(model, provider) if model is not None else None

    failure_of = staticmethod(_error_of)

    def split(self, data: bytes) -> bytes:
        return self._usage.feed(data)

    def read(self, block: bytes) -> bytes:
        if self._labels is not None:
            block = self._labels.events(block)
        if _ERROR in block:
            block = self._ended_in_error(block)
        if _DONE in block:
            self.finished = True
        return block

    def _ended_in_error(self, block: bytes) -> bytes:
        for event in block.split(b"\n\n"):
            if _ERROR in event:
                failure = _error_of(_payload(event))
                if failure is not None:
                    self.failure = failure
        return redact_bytes(block, self._secrets) if self.failure is not None else block

    @staticmethod
    def error_event(error_type: str, message: str) -> bytes:
        return stream_error(error_type, message)

    def close_usage(self) -> Usage:
        return self._usage.usage()

    def usage_so_far(self, input_bound: int) -> Usage | None:
        """A chat completions stream reports its input only in its last chunk, with its output: until
        then its input is taken at the reservation's bound."""
        return None if self.finished else Usage(input_tokens=input_bound)


class ChatPassthrough(protocol.Passing, ChatCompletions):
    """The `openai` protocol for a chat completions client: its request and the upstream's answer as
    they are. Failures and the options are the `openai` protocol's."""

    answers = API
    usage_of = staticmethod(usage_of_completion)

    def request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        client = call.client
        try:
            body, _ = upstream_body(client.raw, client.values, call.upstream_model, stream=call.request.stream)
        except UnreadableBody as exc:
            raise protocol.Refused(protocol.Failure("400", 400, "invalid_request_error", str(exc))) from None
        return protocol.UpstreamRequest(self.url(call), self.headers(call), body)

    def stream(self, call: protocol.Call) -> ChunkRelay:
        return ChunkRelay(hide_usage=not asks_for_usage(call.client.values), provider=call.provider,
                          secrets=call.secrets, model=call.model, price=call.price)


PROTOCOL = ChatPassthrough()
