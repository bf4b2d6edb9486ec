"""A fake OpenAI-compatible upstream, and builders of replies byte for byte as OpenAI sends them.

`OpenAIFake` validates every chat completions request against the official request schema (as
OpenAI would, answering 400 when it does not hold), optionally checks the bearer key, then answers
with the next scripted `Reply` or, unscripted, with `auto_reply`: a short text (or a call of the
forced tool) as JSON or as a chunk stream, per the request body. The auto reply counts exactly the
requested maximum as completion tokens and `prompt_tokens` as the prompt, so costs are exact.

`anthropic_events` and `assemble_message` read what a translator emitted back, checked with the
official Anthropic SDK's models, for tests that compare streams as a client would see them.

The builders (`chat_json`, `chat_stream`, `error_reply` and the named errors) return `Reply`s for
`enqueue`; `completion_body` and `stream_chunks` give the same payloads as data for unit tests.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic.types
import jsonschema
from anthropic.lib.streaming._messages import accumulate_event
from pydantic import TypeAdapter

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer

CREATED = 1767225600  # fixed, so that replies are reproducible
FINGERPRINT = "fp_f4ke0penai"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "data" / "openai_chat_request.schema.json"
JSON_HEADERS = {"openai-processing-ms": "12", "x-request-id": "req_fake0001"}
STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"


@dataclass
class ToolCall:
    """One tool call of an answer; `arguments` as one string, or the fragments a stream sends."""
    id: str
    name: str
    arguments: str | Sequence[str] = "{}"

    @property
    def fragments(self) -> list[str]:
        return [self.arguments] if isinstance(self.arguments, str) else list(self.arguments)


@dataclass
class Usage:
    prompt_tokens: int = 12
    completion_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


# -- request validation --------------------------------------------------------------------------

@functools.cache
def chat_request_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def chat_request_errors(request: Any) -> list[str]:
    """Why `request` is not a valid CreateChatCompletionRequest ([] when it is)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in chat_request_validator().iter_errors(request)]


@functools.cache
def chat_request_fields() -> frozenset[str]:
    """The top-level members the schema names. It allows others (no additionalProperties: false),
    so tests check against this set to catch a misspelt field the schema would let through."""
    defs = json.loads(SCHEMA_PATH.read_text())["$defs"]

    def members(schema: Mapping[str, Any]) -> set[str]:
        if "$ref" in schema:
            return members(defs[schema["$ref"].rsplit("/", 1)[-1]])
        found = set(schema.get("properties", {}))
        for part in schema.get("allOf", ()):
            found |= members(part)
        return found

    return frozenset(members(defs["CreateChatCompletionRequest"]))


# -- JSON completions ----------------------------------------------------------------------------

def completion_body(content: str | None = "Hello from the fake.", *, model: str = "gpt-4o-mini",
                    id: str = "chatcmpl-fake0001", tool_calls: Sequence[ToolCall] = (),
                    reasoning: str | None = None, reasoning_field: str = "reasoning_content",
                    refusal: str | None = None, finish_reason: str = "stop", usage: Usage | None = None,
                    choice_extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    if reasoning is not None:
        message[reasoning_field] = reasoning
    if tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": "".join(c.fragments)}}
                                 for c in tool_calls]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason, **(choice_extra or {})}
    return {"id": id, "object": "chat.completion", "created": CREATED, "model": model, "choices": [choice],
            "usage": (usage or Usage()).as_dict(), "service_tier": "default", "system_fingerprint": FINGERPRINT}


def chat_json(content: str | None = "Hello from the fake.", **kwargs: Any) -> Reply:
    """A chat completion as OpenAI answers it (pretty-printed JSON); arguments as completion_body."""
    headers = {**JSON_HEADERS, **kwargs.pop("headers", {})}
    body = json.dumps(completion_body(content, **kwargs), indent=2, ensure_ascii=False).encode()
    return Reply(status=200, headers=headers, chunks=[body])


# -- streams -------------------------------------------------------------------------------------

def sse_data(payload: Mapping[str, Any] | str, *, ascii_only: bool = False) -> bytes:
    if isinstance(payload, str):
        return f"data: {payload}\n\n".encode()
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=ascii_only).encode() + b"\n\n"


@dataclass
class StreamScript:
    """What a chunk stream carries, in order: reasoning, text, then tool calls."""
    text: Sequence[str] = ()
    reasoning: Sequence[str] = ()
    reasoning_field: str = "reasoning_content"
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str | None = "stop"  # None: the stream stops before saying why
    usage: Usage | None = field(default_factory=Usage)  # None: no usage chunk (include_usage off)
    model: str = "gpt-4o-mini"
    id: str = "chatcmpl-fake0001"
    error: Mapping[str, Any] | None = None  # an error object sent after the content, ending the stream
    done: bool = True
    ascii_only: bool = False  # escape non-ASCII as \\uXXXX, as some servers do
    choice_extra: Mapping[str, Any] | None = None  # extra members of the finish chunk's choice


def stream_chunks(script: StreamScript) -> list[bytes]:
    """The SSE events of a chat completion stream, one `data:` event per element."""
    with_usage = script.usage is not None

    def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
        payload = {"id": script.id, "object": "chat.completion.chunk", "created": CREATED, "model": script.model,
                   "service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": choices}
        if with_usage:
            payload["usage"] = None  # every chunk says so when include_usage is on
        return payload

    def chunk(delta: Mapping[str, Any], finish: str | None = None, **choice_extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **choice_extra}
        return sse_data(envelope([choice]), ascii_only=script.ascii_only)

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": None, script.reasoning_field: r}) for r in script.reasoning]
    events += [chunk({"content": t}) for t in script.text]
    for index, call in enumerate(script.tool_calls):
        fragments = call.fragments or [""]
        events.append(chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                             "function": {"name": call.name, "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]}) for f in fragments if f]
    if script.error is not None:
        return events + [sse_data({"error": dict(script.error)}, ascii_only=script.ascii_only)]
    if script.finish_reason is not None:
        events.append(chunk({}, script.finish_reason, **(script.choice_extra or {})))
    if script.usage is not None and script.finish_reason is not None:
        final = envelope([])
        final["usage"] = script.usage.as_dict()
        events.append(sse_data(final, ascii_only=script.ascii_only))
    if script.done and script.finish_reason is not None:
        events.append(sse_data("[DONE]"))
    return events


def chat_stream(script: StreamScript | None = None, *, cut: bool = False, delay_between: float = 0.0,
                headers: Mapping[str, str] | None = None, **fields: Any) -> Reply:
    """A streamed chat completion; `fields` are StreamScript's when no script is given."""
    script = script or StreamScript(**fields)
    return Reply(status=200, headers={**JSON_HEADERS, **(headers or {})}, chunks=stream_chunks(script),
                 content_type=STREAM_CONTENT_TYPE, cut=cut, delay_between=delay_between)


# -- errors --------------------------------------------------------------------------------------

def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": param, "code": code}}, indent=2).encode()


def error_reply(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                param: str | None = None, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status=status, headers={**JSON_HEADERS, **(headers or {})},
                 chunks=[error_body(message, type=type, code=code, param=param)])


def invalid_api_key(key: str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789") -> Reply:
    return error_reply(401, f"Incorrect API key provided: {key}. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.", code="invalid_api_key")


def rate_limited(retry_after: int = 1) -> Reply:
    return error_reply(429, "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min "
                            "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
                       type="requests", code="rate_limit_exceeded",
                       headers={"retry-after": str(retry_after), "x-ratelimit-limit-requests": "3",
                                "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"})


def context_length_exceeded() -> Reply:
    return error_reply(400, "This model's maximum context length is 128000 tokens. However, your messages "
                            "resulted in 130442 tokens. Please reduce the length of the messages.",
                       code="context_length_exceeded", param="messages")


def content_filtered() -> Reply:
    return error_reply(400, "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
                       code="invalid_prompt")


def server_error() -> Reply:
    return error_reply(500, "The server had an error while processing your request. Sorry about that!",
                       type="server_error")


def overloaded() -> Reply:
    return error_reply(503, "The engine is currently overloaded, please try again later.", type="server_error")


# -- the server ----------------------------------------------------------------------------------

class OpenAIFake(ScriptedServer):
    """Real HTTP on loopback, speaking OpenAI's chat completions. Point a provider at `url + "/v1"`."""

    def __init__(self, *, api_key: str | None = None, prompt_tokens: int = 12,
                 reply_text: str = "Hello from the OpenAI fake.", validate: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.prompt_tokens = prompt_tokens
        self.reply_text = reply_text
        self.validate = validate

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat completions requests received so far."""
        return [r.json() for r in self.requests if r.path.endswith("/chat/completions")]

    def next_reply(self, request: RecordedRequest) -> Reply:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return invalid_api_key(key="sk-wrong-key-" + "x" * 20)
        if request.method == "POST" and request.path.endswith("/chat/completions") and self.validate:
            try:
                body = json.loads(request.body)
            except ValueError:
                return error_reply(400, "We could not parse the JSON body of your request.")
            errors = chat_request_errors(body)
            if errors:
                return error_reply(400, "Invalid request: " + "; ".join(errors[:3]))
        return super().next_reply(request)

    def auto_reply(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return error_reply(404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
        body = request.json()
        model = str(body.get("model", "gpt-4o-mini"))
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        usage = Usage(prompt_tokens=self.prompt_tokens, completion_tokens=int(limit))
        forced = _forced_tool(body)
        calls = [ToolCall(id="call_fake0001", name=forced, arguments=["{", "}"])] if forced else []
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            return chat_json(None if calls else self.reply_text, model=model, tool_calls=calls,
                             finish_reason=finish, usage=usage)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        words = self.reply_text.split(" ")
        text = [] if calls else [w if i == 0 else " " + w for i, w in enumerate(words)]
        return chat_stream(StreamScript(text=text, tool_calls=calls, finish_reason=finish, model=model,
                                        usage=usage if include_usage else None))


def _forced_tool(body: Mapping[str, Any]) -> str | None:
    """The tool a request forces (named, or the first when any is required), else None."""
    choice = body.get("tool_choice")
    tools = body.get("tools") or []
    if isinstance(choice, Mapping):
        return choice.get("function", {}).get("name")
    if choice == "required" and tools:
        return tools[0].get("function", {}).get("name")
    return None


# -- reading translated streams ------------------------------------------------------------------

_STREAM_EVENT: TypeAdapter[anthropic.types.RawMessageStreamEvent] = TypeAdapter(anthropic.types.RawMessageStreamEvent)


def anthropic_events(raw: Sequence[bytes]) -> list[dict[str, Any]]:
    """Each SSE event as its payload, after checking the framing (`event: X` naming the payload's
    type, one `data:` line, a blank line) and the payload against the SDK's event models."""
    events = []
    for event in raw:
        head, _, rest = event.partition(b"\n")
        assert head.startswith(b"event: ") and rest.startswith(b"data: ") and rest.endswith(b"\n\n"), event
        payload = json.loads(rest[6:])
        assert payload["type"] == head[7:].decode(), event
        if payload["type"] == "error":
            anthropic.types.ErrorResponse.model_validate(payload)
        else:
            _STREAM_EVENT.validate_python(payload)
        events.append(payload)
    return events


def assemble_message(events: Sequence[Mapping[str, Any]]) -> anthropic.types.Message:
    """The message a client rebuilds from the events, with the SDK's own accumulator."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] in ("error", "ping"):
            continue
        snapshot = accumulate_event(event=_STREAM_EVENT.validate_python(event), current_snapshot=snapshot,
                                    json_bufs=json_bufs)
    assert snapshot is not None, "no message_start"
    return anthropic.types.Message.model_validate(snapshot.model_dump())
