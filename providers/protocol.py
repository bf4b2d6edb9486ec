"""The contract every wire protocol implements, and the registry that maps a catalog `protocol:` name
to its module.

A protocol is pure translation between the Anthropic Messages API the gateway speaks and one
upstream's wire format; the executor (`gateway.execute`) does all the I/O and knows no protocol by
name. For one attempt it asks the protocol, in this order:

  options(attempt, require_parameters)  the catalog endpoint's settings as the protocol's typed options
  request(call)                         the upstream request: method, URL, headers, body bytes, the
                                        parameters it had to drop and the content type of a streamed
                                        answer; or raises Refused. The executor then adds the provider's
                                        credentials (`auth:`) to its headers, signing it as it stands
  failure(call, status, headers, body)  an upstream error answer as a Failure (the outcome the retry
                                        policy knows, and what the client would see)
  message(call, raw)                    a JSON answer as the Anthropic message bytes and its usage, or
                                        raises Refused
  stream(call)                          a StreamTranslator for an SSE answer
  count_request(call) / counted(raw)    count_tokens upstream (None: the gateway estimates locally)

A protocol that answers in-process (`mock`) sets `local` and gives `local_answer(call)` instead of
reaching an upstream; everything after it (failure, message, stream) is the same as for a real one.

`answers` names the API a protocol's answers (JSON and stream) are written in: `messages` for all of
the above. A client that speaks another API (`gateway.inbound`: OpenAI's chat completions or
Responses) gets its answer translated from Messages, except from an upstream of its own API: there
the registry gives a passthrough protocol (`protocol_for(name, client)`), whose request is the
client's own body (`Call.client`) and whose `answers` is the client's API, so that the answer goes
back as the upstream wrote it. The executor treats both kinds alike.

Adding a protocol is one module implementing this contract, its tests and fake, a line in
`_MODULES`, and catalog data.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from providers.base import Usage
from providers.anthropic_input import UnsupportedParameters
from providers.jsonedit import label_answer
from providers.redaction import redact_bytes
from providers.sse import event_data

# The catalog's `protocol:` name → the module whose PROTOCOL implements it.
_MODULES = {
    "anthropic": "providers.anthropic",
    "openai": "providers.openai_chat",
    "openai-responses": "providers.openai_responses",
    "gemini": "providers.gemini",
    "bedrock": "providers.bedrock",
    "vertex": "providers.vertex",
    "azure": "providers.azure",
    "mock": "providers.mock",
}
NAMES = frozenset(_MODULES)
MESSAGES = "messages"  # the gateway's own API, which every protocol above answers in
# (the client's API, the catalog's `protocol:` name) → the module whose PROTOCOL passes that client's
# request through to that upstream and answers in the client's API.
_PASSTHROUGHS = {
    ("openai_chat", "openai"): "providers.openai_chat_passthrough",
    ("openai_chat", "azure"): "providers.azure_passthrough",
    ("openai_responses", "openai-responses"): "providers.openai_responses_passthrough",
}
_LOADED: dict[str, WireProtocol] = {}
_LOADED_PASSTHROUGHS: dict[tuple[str, str], WireProtocol] = {}


class Inbound(Protocol):
    """The parsed Anthropic request, as `gateway.request.MessagesRequest` holds it."""
    raw: bytes
    model: str
    stream: bool
    router_fields: tuple[str, ...]
    values: Mapping[str, Any] | None

    @property
    def spans(self) -> Mapping[str, tuple[int, int, int]] | None:
        """Where `values` lie in `raw` (`providers.jsonedit.top_level_spans`), or None."""

    @property
    def body(self) -> dict[str, Any]: ...

    @property
    def shape_problem(self) -> str | None:
        """Where the body is of another shape than the API's (`messages.0.content: ...`), or None."""


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's request in its own API, when that is not Messages: what a passthrough sends upstream."""
    api: str                      # the inbound API, as `Exchange.inbound` names it
    raw: bytes
    values: Mapping[str, Any]     # its top-level members, as `providers.jsonedit.top_level_values` reads them
    # Whether it limits its output: an upstream that gets it as it is may otherwise write up to the
    # model's maximum, where the canonical request carries the gateway's default `max_tokens`.
    limits_output: bool = True


@dataclass(slots=True)
class Call:
    """One attempt, as a protocol sees it: the request, where it goes, and how the answer is labelled."""
    request: Inbound
    model: str                    # the router's model id, which answers carry
    upstream_model: str
    provider: str                 # the provider's name, which answers carry
    base_url: str
    api_key: str | None
    options: Any                  # what the protocol's `options` made of the catalog endpoint
    message_id: str
    price: Callable[[Usage], float]
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None    # the client's anthropic-version and anthropic-beta
    beta: str | None = None
    query: str = ""               # the client's query string
    # The values of the credentials the executor adds to the request (a key, a token), when the
    # provider's `auth:` has them added there rather than `api_key` placed by the protocol.
    credentials: tuple[str, ...] = ()
    client: ClientRequest | None = None  # the client's own request, when it spoke another API than Messages

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """What the upstream may quote back and must never reach the client: the provider's key."""
        return (self.api_key, *self.credentials)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"
    dropped: Sequence[str] = ()   # Anthropic parameters the upstream cannot honour, reported to the client
    stream_type: str = "text/event-stream"  # the content type of a streamed answer (`stream` reads it)


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt that failed with an answer: `outcome` for `policies.retry.next_step` and the attempts
    header, the rest for the client. `body` is an upstream error body passed through as it is."""
    outcome: str
    status: int
    error_type: str
    message: str
    retry_after: float | None = None
    body: bytes | None = None


class Refused(Exception):
    """Raised by `request` and `message` with the Failure the attempt ends in."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer in Anthropic's terms: the message bytes for the client, its usage and cost."""
    body: bytes
    usage: Usage
    cost: float


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """What an in-process protocol answers: a status, and the body as chunks, each with the seconds to
    wait after it (a simulated token rate) and `first_byte` seconds before the first."""
    status: int
    chunks: Sequence[tuple[bytes, float]]
    first_byte: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


class StreamTranslator(Protocol):
    """An SSE answer in the making: upstream bytes in, Anthropic SSE bytes out.

    `started`: an Anthropic message began (message_start went out). `error`: the upstream's own error,
    reported in the stream, as (Anthropic error type, message). `failure`: the error event this stream
    ended with, the upstream's or the translator's. `finished`: message_stop went out."""
    started: bool
    finished: bool
    error: tuple[str, str] | None
    failure: tuple[str, str] | None

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes:
        """The upstream body ended: what closes the answer, or an error event if it was cut short."""

    def fail(self, message: str, error_type: str) -> bytes:
        """The error event for a broken upstream connection."""

    def close_usage(self) -> Usage:
        """The usage to account for so far (estimated from the output seen when never reported)."""

    def usage_so_far(self, input_bound: int) -> Usage | None:
        """The usage while the stream runs, for a budget to cut it at: its input as reported where
        the stream reports it at its start, else `input_bound` (the reservation's, never below the
        actual), with no output (the relay's meter counts it); None once the final usage has come
        (the cost is incurred)."""


class WireProtocol(Protocol):
    local: bool
    answers: str  # the API its answers are in: MESSAGES, or a passthrough's client API

    def options(self, attempt: Any, require_parameters: bool) -> Any: ...

    def request(self, call: Call) -> UpstreamRequest: ...

    def failure(self, call: Call, status: int, headers: Mapping[str, str] | None, body: bytes) -> Failure: ...

    def message(self, call: Call, raw: bytes) -> Answer: ...

    def stream(self, call: Call) -> StreamTranslator: ...

    def count_request(self, call: Call) -> UpstreamRequest | None: ...

    def counted(self, raw: bytes) -> dict[str, Any] | None: ...

    def local_answer(self, call: Call) -> LocalAnswer: ...


def passes_through(client: ClientRequest | None, name: str) -> bool:
    """Whether protocol `name` sends the client's own request (an upstream of the client's API)."""
    return client is not None and (client.api, name) in _PASSTHROUGHS


def protocol_for(name: str, client: ClientRequest | None = None) -> WireProtocol:
    """The implementation of a catalog protocol name (KeyError for a name no module implements); for a
    request that is a client's own in another API than Messages (`client`), the passthrough to an
    upstream of that API."""
    if passes_through(client, name):
        key = (client.api, name)  # type: ignore[union-attr]
        protocol = _LOADED_PASSTHROUGHS.get(key)
        if protocol is None:
            protocol = _LOADED_PASSTHROUGHS[key] = importlib.import_module(_PASSTHROUGHS[key]).PROTOCOL
        return protocol
    protocol = _LOADED.get(name)
    if protocol is None:
        protocol = _LOADED[name] = importlib.import_module(_MODULES[name]).PROTOCOL
    return protocol


# -- what every protocol classifies alike -------------------------------------------------------------

def retry_after_header(headers: Mapping[str, str] | None) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def classify(provider: str, status: int, *, client_status: int, error_type: str, message: str,
             headers: Mapping[str, str] | None = None, retry_after: float | None = None,
             context_length: bool = False, moderation: bool = False, body: bytes | None = None) -> Failure:
    """An upstream error answer, read by its protocol (`client_status`, `error_type`, `message`, what
    the body says about the model), as the Failure every protocol gives alike.

    The upstream's own failures come first, whatever the body says: rate limited, our credentials
    refused, overloaded, timed out, broken. Then context length and moderation (another model may
    serve), then the request's own error, which the client sees with the upstream's status."""
    detail = f"provider {provider}: {message}" if message else f"provider {provider} answered {status}"
    if status == 429:
        wait = retry_after_header(headers)
        return Failure("429", 429, "rate_limit_error", detail, wait if wait is not None else retry_after)
    if status in (401, 403) or client_status in (401, 403):  # Google says 400 API_KEY_INVALID: read as 401
        return Failure(str(status if status in (401, 403) else client_status), 502, "api_error",
                       f"provider {provider} rejected the gateway's credentials")
    if client_status == 529:
        return Failure(str(status), 529, "overloaded_error", detail)
    if client_status == 504 or status == 408:
        return Failure(str(status), 504, "timeout_error", detail)
    if status >= 500:
        return Failure(str(status), 502, "api_error", detail)
    outcome = "context_length" if context_length else "moderation" if moderation else str(status)
    return Failure(outcome, client_status, error_type, detail if body is not None else message, body=body)


def stream_failure(provider: str, error: tuple[str, str]) -> Failure:
    """The upstream's error event, arrived before anything reached the client: a failure the next
    endpoint may do better on."""
    error_type, message = error
    status = {"overloaded_error": 529, "rate_limit_error": 429}.get(error_type, 502)
    return classify(provider, status, client_status=status, error_type=error_type, message=message)


def unsupported(provider: str, parameters: Sequence[str]) -> Refused:
    names = ", ".join(parameters)
    return Refused(Failure("unsupported", 400, "invalid_request_error",
                           f"provider {provider} cannot honour {names} and provider.require_parameters is true"))


def well_shaped(call: Call) -> None:
    """A translator reads the content itself, so a body of another shape than the API's is the
    client's 400 here (an Anthropic upstream would answer one too), never a translator's crash."""
    problem = call.request.shape_problem
    if problem is not None:
        raise Refused(Failure("400", 400, "invalid_request_error", problem))


def bad_response(provider: str, what: str) -> Refused:
    """An answer that cannot be read: another endpoint may serve."""
    return Refused(Failure("bad_response", 502, "api_error", f"provider {provider} answered with {what}"))


class Translated:
    """A StreamTranslator over a translating protocol's state machine, whose `feed`, `finish` and
    `error` return lists of events: the events joined, and redacted once the stream ends in an error
    (an upstream's error text may quote our key)."""

    __slots__ = ("_machine", "_secrets", "_reported", "started", "finished")

    def __init__(self, machine: Any, secrets: Sequence[str | None]) -> None:
        self._machine = machine
        self._secrets = secrets
        self._reported = False  # an error object among the bytes before the message began
        self.started = False
        self.finished = False

    @property
    def failure(self) -> tuple[str, str] | None:
        return self._machine.failure

    @property
    def error(self) -> tuple[str, str] | None:
        return self._machine.failure if self._reported else None

    def _joined(self, events: list[bytes]) -> bytes:
        if not events:
            return b""
        block = b"".join(events)
        if not self.started:
            self.started = block.startswith(b"event: message_start")
        self.finished = self._machine.finished
        return redact_bytes(block, self._secrets) if self._machine.failure is not None else block

    def feed(self, data: bytes) -> bytes:
        if not self.started and not self._reported:
            self._reported = b'"error"' in data
        return self._joined(self._machine.feed(data))

    def finish(self) -> bytes:
        return self._joined(self._machine.finish())

    def fail(self, message: str, error_type: str) -> bytes:
        return self._joined(self._machine.error(message, error_type))

    def close_usage(self) -> Usage:
        return self._machine.close_usage()

    def usage_so_far(self, input_bound: int) -> Usage | None:
        # These upstreams report their input only at the end, with the output.
        return None if self.finished else Usage(input_tokens=input_bound)


class Passing:
    """What the passthrough protocols do alike, mixed in before the translating protocol of their
    upstream (whose `answer_error`, `embedded_failure` and failures they keep): a JSON answer goes to
    the client as its bytes, with the usage the subclass's `usage_of(answer)` reads, labelled as
    every answer is: the router's `model`, the `provider` that served and `usage.cost`."""

    answers: str

    def message(self, call: Call, raw: bytes) -> Answer:
        answer = json_object(call.provider, raw)
        failed = self.answer_error(answer)
        if failed is not None:
            raise Refused(self.embedded_failure(call, failed))
        usage = self.usage_of(answer)
        cost = call.price(usage)
        return Answer(label_answer(raw, answer, model=call.model, provider=call.provider, cost=cost), usage, cost)


# A `model` or `usage` member as an event's JSON writes it: a quote inside a string is escaped, so
# one that no backslash precedes starts a member's key.
_MODEL_MEMBER = re.compile(rb'(?<!\\)"model"[ \t]*:[ \t]*"(?:[^"\\]|\\.)*"')
_USAGE_OPEN = re.compile(rb'(?<!\\)"usage"[ \t]*:[ \t]*\{')


class EventLabels:
    """A passed-through stream's events labelled as every answer is: each `model` member names the
    router's model, followed by the `provider` that served (unless the events name one already),
    and the usage object gets its `cost` (`with_cost`)."""

    __slots__ = ("_model", "_with_provider")

    def __init__(self, model: str, provider: str) -> None:
        self._model = b'"model":' + orjson.dumps(model)
        self._with_provider = self._model + b',"provider":' + orjson.dumps(provider)

    def events(self, block: bytes) -> bytes:
        if b'"model"' not in block:
            return block
        label = self._model if b'"provider"' in block else self._with_provider
        return _MODEL_MEMBER.sub(lambda _: label, block)

    @staticmethod
    def with_cost(event: bytes, cost: float) -> bytes:
        """`event` with `cost` first in its one usage object (unchanged when it has none, or more)."""
        found = _USAGE_OPEN.search(event)
        if found is None or _USAGE_OPEN.search(event, found.end()) is not None:
            return event
        at = found.end()
        empty = event[at:].lstrip(b" \t\r\n")[:1] == b"}"
        return event[:at] + b'"cost":' + orjson.dumps(cost) + (b"" if empty else b",") + event[at:]


class Relayed:
    """What the passthroughs' stream translators do alike until their answer begins: events with no
    data (keep-alive comments) are dropped; the first with data is the upstream's error (as the
    subclass's `failure_of(payload)` reads it), the start of an answer (a JSON object, then `read`
    takes the block), or not a stream of the API (left unstarted: the relay finds it unreadable).
    After it, the subclass's `read` marks `finished` and `failure`; a stream that ends short of
    `finished` gets the API's error event (`error_event`), as does a broken connection."""

    __slots__ = ("_provider", "_secrets", "started", "finished", "error", "failure")
    END = ""  # what finishes a stream of the API, for the message of one that ended without it

    def __init__(self, provider: str, secrets: Sequence[str | None]) -> None:
        self._provider = provider
        self._secrets = secrets
        self.started = False
        self.finished = False
        self.error: tuple[str, str] | None = None
        self.failure: tuple[str, str] | None = None

    def finish(self) -> bytes:
        """The upstream body ended: nothing to add after the end or the upstream's own error, else
        the error event of a stream cut short."""
        if self.finished or self.failure is not None:
            return b""
        return self.fail(f"provider {self._provider} ended the stream before {self.END}", "api_error")

    def fail(self, message: str, error_type: str) -> bytes:
        self.failure = (error_type, message)
        return redact_bytes(self.error_event(error_type, message), self._secrets)

    def feed(self, data: bytes) -> bytes:
        block = self.split(data)  # the events `data` completes, as the subclass keeps them
        if not block:
            return block
        return self.read(block) if self.started else self._first(block)

    def _first(self, block: bytes) -> bytes:
        at = 0
        while at < len(block):
            end = block.find(b"\n\n", at)
            end = len(block) if end < 0 else end + 2
            data = event_data(block[at:end])
            if data:
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    payload = None
                self.error = self.failure = self.failure_of(payload)
                if self.error is not None:
                    return redact_bytes(block[at:], self._secrets)
                self.started = isinstance(payload, dict)
                return self.read(block[at:]) if self.started else block[at:]
            at = end
        return b""


def json_object(provider: str, raw: bytes) -> dict[str, Any]:
    """A JSON answer's object, or the Refused of an unreadable one."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_response(provider, "malformed JSON") from None
    if not isinstance(answer, dict):
        raise bad_response(provider, "an unexpected body")
    return answer


def json_or_none(raw: bytes) -> dict[str, Any] | None:
    """A JSON object answer, or None for anything else (count_tokens then estimates)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def priced(call: Call, message: dict[str, Any]) -> Answer:
    """A translated Anthropic message with its cost in `usage.cost`, as the client gets it."""
    usage = Usage()
    if isinstance(message.get("usage"), dict):
        usage.update_from(message["usage"])
    cost = call.price(usage)
    message["usage"]["cost"] = cost
    return Answer(orjson.dumps(message), usage, cost)


class Translating:
    """What the translating protocols (chat completions, Responses, Gemini) do alike around their own
    translators, which a subclass names:

      translate(call) -> (body, dropped)        the upstream body as objects (UnsupportedParameters
                                                under require_parameters), and what it dropped
      url(call), headers(call)                  where it goes
      read_error(status, body) -> (client status, error type, message); is_context_length_error,
      is_moderation_error (status, body)        the error body's reading
      answer_error(answer) -> mapped | None     a 200 answer that stands for a failure
      to_message(call, answer) -> dict          the Anthropic message of a JSON answer
      machine(call)                             the stream's state machine (see Translated)
    """

    local = False
    answers = MESSAGES

    def request(self, call: Call) -> UpstreamRequest:
        well_shaped(call)
        try:
            body, dropped = self.translate(call)
        except UnsupportedParameters as exc:
            raise unsupported(call.provider, exc.parameters) from None
        return UpstreamRequest(self.url(call), self.headers(call), orjson.dumps(body), dropped=dropped)

    def retry_after(self, body: bytes) -> float | None:
        """A wait the error body asks for (when the protocol's errors carry one)."""
        return None

    def failure(self, call: Call, status: int, headers: Mapping[str, str] | None, body: bytes) -> Failure:
        body = redact_bytes(body, call.secrets)
        client_status, error_type, message = self.read_error(status, body)
        return classify(call.provider, status, client_status=client_status, error_type=error_type,
                        message=message, headers=headers, retry_after=self.retry_after(body),
                        context_length=self.is_context_length_error(status, body),
                        moderation=self.is_moderation_error(status, body))

    def embedded_failure(self, call: Call, mapped: tuple[int, str, str]) -> Failure:
        status, error_type, message = mapped
        return classify(call.provider, status, client_status=status, error_type=error_type, message=message)

    def message(self, call: Call, raw: bytes) -> Answer:
        answer = json_object(call.provider, raw)
        failed = self.answer_error(answer)
        if failed is not None:
            raise Refused(self.embedded_failure(call, failed))
        return priced(call, self.to_message(call, answer))

    def stream(self, call: Call) -> Translated:
        return Translated(self.machine(call), call.secrets)

    def count_request(self, call: Call) -> UpstreamRequest | None:
        return None  # the gateway estimates

    def counted(self, raw: bytes) -> dict[str, Any] | None:
        return None
