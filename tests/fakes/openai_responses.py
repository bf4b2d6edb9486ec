"""A fake OpenAI Responses API upstream (`POST /v1/responses`), and builders of its answers byte for byte.

Written from the public API reference (the OpenAPI spec's CreateResponse, Response and
ResponseStreamEvent schemas, and the `openai` SDK's models generated from it): a JSON answer is a
`Response` object; a stream is `event: <type>` / `data: <json>` events with a `sequence_number`
counting from 0: response.created, response.in_progress, then per output item
output_item.added, its parts (content_part / reasoning_summary_part added, text deltas, done) and
output_item.done, then response.completed, response.incomplete or response.failed (or an `error`
event).

`ResponsesFake` requires `Authorization: Bearer <key>` (401 otherwise, as OpenAI answers), validates
every request against CreateResponse (400 when it does not hold), records requests, and answers the
next scripted `Reply` or, unscripted, `auto_reply`: a short text, or a call of the forced tool, as
JSON or a stream per the request, with `max_output_tokens` as output tokens so costs are exact, and
a reasoning item (encrypted content only when the request's `include` asks for it) when the
request asks for reasoning.

About validation: the spec's `oneOf`s that carry an OpenAPI `discriminator` list schemas that share
a discriminator value (a user message matches both EasyInputMessage and InputMessage), so under
JSON Schema's exactly-one rule no valid request would pass. OpenAPI picks the branch by the
discriminator; the validator reads such a `oneOf` as `anyOf`, which still refuses anything no branch
allows. A `oneOf` without a discriminator keeps its JSON Schema meaning.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import validators

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer

CREATED_AT = 1767225600  # fixed, so that replies are reproducible
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "data" / "openai_responses_request.schema.json"
JSON_HEADERS = {"openai-processing-ms": "15", "x-request-id": "req_fakeresp0001", "openai-version": "2020-10-01"}
STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"


# -- request validation --------------------------------------------------------------------------

_DRAFT = jsonschema.Draft202012Validator.VALIDATORS


def _one_of(validator: Any, one_of: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
    return _DRAFT["anyOf" if "discriminator" in schema else "oneOf"](validator, one_of, instance, schema)


_Validator = validators.extend(jsonschema.Draft202012Validator, {"oneOf": _one_of})


@functools.cache
def responses_request_validator() -> Any:
    return _Validator(json.loads(SCHEMA_PATH.read_text()))


def responses_request_errors(request: Any) -> list[str]:
    """Why `request` is not a valid CreateResponse ([] when it is), deepest causes first."""
    errors = []
    for error in responses_request_validator().iter_errors(request):
        leaves = [error]
        while leaves[0].context:
            leaves = sorted(leaves[0].context, key=lambda e: -len(e.absolute_path))
        leaf = leaves[0]
        errors.append(f"{'/'.join(map(str, leaf.absolute_path)) or '(root)'}: {leaf.message}")
    return errors


@functools.cache
def responses_request_fields() -> frozenset[str]:
    """The top-level members CreateResponse names. It allows others (no additionalProperties: false),
    so tests check against this set to catch a misspelt field the schema would let through."""
    defs = json.loads(SCHEMA_PATH.read_text())["$defs"]

    def members(schema: Mapping[str, Any]) -> set[str]:
        if "$ref" in schema:
            return members(defs[schema["$ref"].rsplit("/", 1)[-1]])
        found = set(schema.get("properties", {}))
        for part in schema.get("allOf", ()):
            found |= members(part)
        return found

    return frozenset(members(defs["CreateResponse"]))


# -- what an answer carries ----------------------------------------------------------------------

@dataclass
class Text:
    """A message item; each element of `parts` is one output_text part, as its deltas."""
    parts: Sequence[Sequence[str]] = (("Hello from the fake.",),)
    id: str = "msg_fake0001"
    refusal: bool = False  # the parts are refusal parts instead

    @classmethod
    def of(cls, *deltas: str, **kwargs: Any) -> Text:
        return cls(parts=(deltas,), **kwargs)


@dataclass
class FunctionCall:
    call_id: str
    name: str
    arguments: str | Sequence[str] = "{}"  # one string, or the deltas a stream sends
    id: str = ""

    @property
    def fragments(self) -> list[str]:
        return [self.arguments] if isinstance(self.arguments, str) else list(self.arguments)


@dataclass
class Reasoning:
    """A reasoning item: summary parts (each as its deltas) and the opaque encrypted content."""
    summary: Sequence[Sequence[str]] = ()
    encrypted_content: str | None = "gAAAAABfakeEncryptedReasoning0001=="
    id: str = "rs_fake0001"


Item = Text | FunctionCall | Reasoning


@dataclass
class Usage:
    input_tokens: int = 12
    output_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens,
                                         "cache_write_tokens": self.cache_write_tokens},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                "total_tokens": self.input_tokens + self.output_tokens}


@dataclass
class Script:
    """One answer: its output items, how it ends, and what the request said (echoed back)."""
    items: Sequence[Item] = field(default_factory=lambda: [Text()])
    status: str = "completed"  # completed, incomplete or failed
    incomplete_reason: str = "max_output_tokens"
    error: Mapping[str, Any] = field(default_factory=lambda: {
        "code": "server_error", "message": "The model failed to generate a response."})
    usage: Usage | None = field(default_factory=Usage)
    model: str = "gpt-5.5-pro-2026-06-01"
    id: str = "resp_fake0001"
    request: Mapping[str, Any] = field(default_factory=dict)
    error_event: Mapping[str, Any] | None = None  # stream only: an `error` event after the items, instead of the end
    end: bool = True  # stream only: False stops after the items, with no final event


# -- JSON ----------------------------------------------------------------------------------------

def _item_id(item: Item, position: int) -> str:
    if isinstance(item, FunctionCall):
        return item.id or f"fc_fake{position:04d}"
    return item.id if position == 0 else f"{item.id}_{position}"


def output_item(item: Item, position: int, *, done: bool = True) -> dict[str, Any]:
    """An output item as `Response.output` lists it (done) or `output_item.added` announces it."""
    status = "completed" if done else "in_progress"
    item_id = _item_id(item, position)
    if isinstance(item, Text):
        return {"id": item_id, "type": "message", "status": status,
                "content": [content_part(item, "".join(p)) for p in item.parts] if done else [],
                "role": "assistant"}
    if isinstance(item, FunctionCall):
        return {"id": item_id, "type": "function_call", "status": status,
                "arguments": "".join(item.fragments) if done else "", "call_id": item.call_id, "name": item.name}
    return {"id": item_id, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "".join(p)} for p in item.summary] if done else [],
            **({"encrypted_content": item.encrypted_content} if done and item.encrypted_content else {})}


def content_part(item: Text, text: str) -> dict[str, Any]:
    if item.refusal:
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def response_body(script: Script | None = None, *, in_progress: bool = False) -> dict[str, Any]:
    """The `Response` object: finished as `script` says, or as `response.created` shows it."""
    script = script or Script()
    request = script.request
    reasoning = request.get("reasoning") or {}
    status = "in_progress" if in_progress else script.status
    return {
        "id": script.id, "object": "response", "created_at": CREATED_AT, "status": status,
        "background": False,
        "completed_at": CREATED_AT + 2 if status == "completed" else None,
        "error": dict(script.error) if status == "failed" else None,
        "incomplete_details": {"reason": script.incomplete_reason} if status == "incomplete" else None,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None, "model": script.model,
        "output": [] if in_progress else [output_item(item, i) for i, item in enumerate(script.items)],
        "parallel_tool_calls": request.get("parallel_tool_calls", True), "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"), "service_tier": "default",
        "store": request.get("store", True), "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": request.get("tool_choice", "auto"), "tools": list(request.get("tools", [])),
        "top_logprobs": 0, "top_p": request.get("top_p", 1.0), "truncation": "disabled",
        "usage": None if in_progress or script.usage is None else script.usage.as_dict(),
        "user": None, "metadata": {}}


def responses_json(script: Script | None = None, *, headers: Mapping[str, str] | None = None,
                   **fields: Any) -> Reply:
    """A Response as OpenAI answers it (pretty-printed JSON); `fields` are Script's."""
    body = json.dumps(response_body(script or Script(**fields)), indent=2, ensure_ascii=False).encode()
    return Reply(status=200, headers={**JSON_HEADERS, **(headers or {})}, chunks=[body])


# -- streams -------------------------------------------------------------------------------------

def sse_event(payload: Mapping[str, Any]) -> bytes:
    return (f"event: {payload['type']}\ndata: ".encode()
            + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n")


def stream_payloads(script: Script) -> list[dict[str, Any]]:
    """Every event of the stream, as its JSON payload, numbered in order."""
    events: list[dict[str, Any]] = [{"type": "response.created", "response": response_body(script, in_progress=True)},
                                    {"type": "response.in_progress",
                                     "response": response_body(script, in_progress=True)}]
    for index, item in enumerate(script.items):
        item_id = _item_id(item, index)
        at = {"item_id": item_id, "output_index": index}
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": output_item(item, index, done=False)})
        if isinstance(item, Text):
            for part_index, deltas in enumerate(item.parts):
                text = "".join(deltas)
                where = {**at, "content_index": part_index}
                events.append({"type": "response.content_part.added", **where, "part": content_part(item, "")})
                if item.refusal:
                    events += [{"type": "response.refusal.delta", **where, "delta": d} for d in deltas]
                    events.append({"type": "response.refusal.done", **where, "refusal": text})
                else:
                    events += [{"type": "response.output_text.delta", **where, "delta": d, "logprobs": []}
                               for d in deltas]
                    events.append({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
                events.append({"type": "response.content_part.done", **where, "part": content_part(item, text)})
        elif isinstance(item, FunctionCall):
            events += [{"type": "response.function_call_arguments.delta", **at, "delta": f}
                       for f in item.fragments if f]
            events.append({"type": "response.function_call_arguments.done", **at,
                           "arguments": "".join(item.fragments)})
        else:
            for summary_index, deltas in enumerate(item.summary):
                text = "".join(deltas)
                where = {**at, "summary_index": summary_index}
                events.append({"type": "response.reasoning_summary_part.added", **where,
                               "part": {"type": "summary_text", "text": ""}})
                events += [{"type": "response.reasoning_summary_text.delta", **where, "delta": d} for d in deltas]
                events.append({"type": "response.reasoning_summary_text.done", **where, "text": text})
                events.append({"type": "response.reasoning_summary_part.done", **where,
                               "part": {"type": "summary_text", "text": text}})
        events.append({"type": "response.output_item.done", "output_index": index, "item": output_item(item, index)})
    if script.error_event is not None:
        events.append({"type": "error", "code": None, "param": None, **script.error_event})
    elif script.end:
        final = {"completed": "response.completed", "incomplete": "response.incomplete",
                 "failed": "response.failed"}[script.status]
        events.append({"type": final, "response": response_body(script)})
    return [{"type": event["type"], "sequence_number": number, **event} for number, event in enumerate(events)]


def stream_events(script: Script) -> list[bytes]:
    """The stream's SSE events as OpenAI writes them, one element per event."""
    return [sse_event(payload) for payload in stream_payloads(script)]


def responses_stream(script: Script | None = None, *, cut: bool = False, delay_between: float = 0.0,
                     headers: Mapping[str, str] | None = None, **fields: Any) -> Reply:
    """A streamed Response; `fields` are Script's when no script is given."""
    return Reply(status=200, headers={**JSON_HEADERS, **(headers or {})},
                 chunks=stream_events(script or Script(**fields)), content_type=STREAM_CONTENT_TYPE, cut=cut,
                 delay_between=delay_between)


# -- errors --------------------------------------------------------------------------------------

def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": param, "code": code}}, indent=2).encode()


def error_reply(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                param: str | None = None, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status=status, headers={**JSON_HEADERS, **(headers or {})},
                 chunks=[error_body(message, type=type, code=code, param=param)])


def missing_api_key() -> Reply:
    return error_reply(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


def invalid_api_key(key: str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789") -> Reply:
    return error_reply(401, f"Incorrect API key provided: {key}. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.", code="invalid_api_key")


def rate_limited(retry_after: int = 1) -> Reply:
    return error_reply(429, "Rate limit reached for gpt-5.5-pro in organization org-fake on tokens per min (TPM): "
                            "Limit 30000, Used 30000, Requested 1200. Please try again in 2.4s.",
                       type="tokens", code="rate_limit_exceeded",
                       headers={"retry-after": str(retry_after), "x-ratelimit-limit-tokens": "30000",
                                "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2.4s"})


def context_window_exceeded() -> Reply:
    return error_reply(400, "Your input exceeds the context window of this model. Please adjust your input and "
                            "try again.", code="context_length_exceeded", param="input")


def content_flagged() -> Reply:
    return error_reply(400, "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
                            "Please try again with a different prompt.", code="invalid_prompt")


def server_error() -> Reply:
    return error_reply(500, "The server had an error processing your request. Sorry about that! You can retry "
                            "your request, or contact us through our help center at help.openai.com.",
                       type="server_error")


def unknown_model(model: str) -> Reply:
    return error_reply(400, f"The requested model '{model}' does not exist.", code="model_not_found", param="model")


# -- the server ----------------------------------------------------------------------------------

class ResponsesFake(ScriptedServer):
    """Real HTTP on loopback, speaking the Responses API. Point a provider at `url + "/v1"`."""

    def __init__(self, *, api_key: str = "sk-fake-responses-key-0123456789", input_tokens: int = 12,
                 reply_text: str = "Hello from the Responses fake.", validate: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.input_tokens = input_tokens
        self.reply_text = reply_text
        self.validate = validate

    @property
    def responses_requests(self) -> list[dict[str, Any]]:
        """Bodies of the `POST /v1/responses` requests received so far."""
        return [r.json() for r in self.requests if r.method == "POST" and r.path == "/v1/responses"]

    def next_reply(self, request: RecordedRequest) -> Reply:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return missing_api_key()
        if authorization != f"Bearer {self.api_key}":
            return invalid_api_key(key=authorization[7:14] + "*" * 8)  # OpenAI shows only a part of it
        if request.method == "POST" and request.path == "/v1/responses" and self.validate:
            try:
                body = json.loads(request.body)
            except ValueError:
                return error_reply(400, "We could not parse the JSON body of your request. (HINT: This likely "
                                        "means you aren't using your HTTP library correctly.)")
            errors = responses_request_errors(body)
            if errors:
                return error_reply(400, "Invalid request: " + "; ".join(errors[:3]))
        return super().next_reply(request)

    def auto_reply(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or request.path != "/v1/responses":
            return error_reply(404, f"Invalid URL ({request.method} {request.path})")
        body = request.json()
        limit = int(body.get("max_output_tokens") or 16)
        forced = _forced_tool(body)
        items: list[Item] = []
        if body.get("reasoning"):
            wants_encrypted = "reasoning.encrypted_content" in (body.get("include") or ())
            summary = (("Thinking ", "it over."),) if (body["reasoning"] or {}).get("summary") else ()
            items.append(Reasoning(summary=summary,
                                   encrypted_content="gAAAAABautoEncrypted==" if wants_encrypted else None))
        if forced:
            items.append(FunctionCall(call_id="call_fake0001", name=forced, arguments=["{", "}"]))
        else:
            words = self.reply_text.split(" ")
            items.append(Text.of(*[w if i == 0 else " " + w for i, w in enumerate(words)]))
        script = Script(items=items, model=str(body.get("model", "gpt-5.5-pro")), request=body,
                        usage=Usage(input_tokens=self.input_tokens, output_tokens=limit))
        return responses_stream(script) if body.get("stream") else responses_json(script)


def _forced_tool(body: Mapping[str, Any]) -> str | None:
    """The function a request forces (named, or the first when one is required), else None."""
    choice = body.get("tool_choice")
    functions = [t for t in body.get("tools") or () if t.get("type") == "function"]
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return choice.get("name")
    if choice == "required" and functions:
        return functions[0].get("name")
    return None
