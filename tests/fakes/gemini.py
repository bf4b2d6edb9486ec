"""A fake native Gemini upstream (generativelanguage `v1beta`), and builders of its answers byte for byte.

Written from Google's public API reference: `POST /v1beta/models/{model}:generateContent` answers
one pretty-printed `GenerateContentResponse`; `:streamGenerateContent?alt=sse` answers `data: {...}`
events with CRLF line ends, one chunk of parts each, the last with `finishReason` (no end marker),
every chunk with the usage so far; without `alt=sse` the stream is one JSON array; `:countTokens`
answers `{"totalTokens", "promptTokensDetails"}`. Errors are Google's envelope `{"error": {"code",
"message", "status", "details"}}`; an invalid key is 400 INVALID_ARGUMENT / API_KEY_INVALID, a
missing one 403 PERMISSION_DENIED.

`GeminiFake` checks what Google checks before answering: the `x-goog-api-key`, the request's known
fields (an unknown one is 400 "Unknown name ... Cannot find field", as Google's JSON parser says,
in function parameter schemas too), OBJECT parameters with properties, and, for Gemini 3 models,
the thought signatures of the current turn: the first functionCall part of every model step after
the last user prompt must carry the signature the fake issued for it (or the value Google documents
for histories it did not write), else 400 INVALID_ARGUMENT. Issued signatures are read from the
answers it sends, scripted or not.
"""
from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer

JSON_TYPE = "application/json; charset=UTF-8"
SSE_TYPE = "text/event-stream"
HEADERS = {"vary": "Origin, X-Origin, Referer", "server": "scaffolding on HTTPServer2", "x-xss-protection": "0",
           "x-frame-options": "SAMEORIGIN", "x-content-type-options": "nosniff"}
DUMMY_SIGNATURES = frozenset({"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"})
_PATH = re.compile(r"^/v1(?:beta)?/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")
_LIST_PATH = re.compile(r"^/v1(?:beta)?/models$")
# models.list: Model resources as Google's reference describes them (a chat model, and an
# embedding model that only embeds).
LISTED_MODELS = (
    {"name": "models/gemini-2.5-pro", "version": "2.5", "displayName": "Gemini 2.5 Pro",
     "description": "Stable release (June 17th, 2025) of Gemini 2.5 Pro", "inputTokenLimit": 1048576,
     "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens",
                                                               "createCachedContent", "batchGenerateContent"],
     "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": True},
    {"name": "models/gemini-2.5-flash", "version": "001", "displayName": "Gemini 2.5 Flash",
     "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
     "supportedGenerationMethods": ["generateContent", "countTokens"], "thinking": True},
    {"name": "models/text-embedding-004", "version": "004", "displayName": "Text Embedding 004",
     "inputTokenLimit": 2048, "outputTokenLimit": 1, "supportedGenerationMethods": ["embedContent"]},
)
_SIGNATURE = re.compile(rb'"thoughtSignature":\s*"([^"]+)"')

# Field names of the reference's request objects, camelCase as the REST API writes them.
REQUEST_FIELDS = {"contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig",
                  "cachedContent", "model"}
CONTENT_FIELDS = {"role", "parts"}
PART_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
               "codeExecutionResult", "thought", "thoughtSignature", "videoMetadata", "partMetadata"}
TOOL_FIELDS = {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext",
               "fileSearch", "googleMaps", "computerUse"}
DECLARATION_FIELDS = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema",
                      "behavior"}
SCHEMA_FIELDS = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
                 "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
                 "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum"}
SCHEMA_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
GENERATION_FIELDS = {"stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
                     "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
                     "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers",
                     "speechConfig", "thinkingConfig", "mediaResolution"}
THINKING_FIELDS = {"includeThoughts", "thinkingBudget", "thinkingLevel"}
FUNCTION_CALLING_FIELDS = {"mode", "allowedFunctionNames"}


# -- answers ---------------------------------------------------------------------------------------

@dataclass
class Usage:
    prompt: int = 12
    candidates: int = 5
    thoughts: int = 0
    cached: int = 0

    def as_dict(self, *, final: bool = True) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": self.prompt}
        if final:
            usage["candidatesTokenCount"] = self.candidates
        usage["totalTokenCount"] = self.prompt + (self.candidates + self.thoughts if final else 0)
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt}]
        if self.cached:
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached}]
        if final and self.thoughts:
            usage["thoughtsTokenCount"] = self.thoughts
        return usage


def text(value: str, *, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"text": value}
    if signature:
        part["thoughtSignature"] = signature
    return part


def thought(value: str, *, signature: str | None = None) -> dict[str, Any]:
    return {**text(value, signature=signature), "thought": True}


def function_call(name: str, args: Mapping[str, Any] | None = None, *, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": dict(args or {})}}
    if signature:
        part["thoughtSignature"] = signature
    return part


@dataclass
class Answer:
    """One answer: its parts (in order), how it ended and what it counted."""
    parts: Sequence[Mapping[str, Any]] = field(default_factory=lambda: [text("Hello from the Gemini fake.")])
    finish_reason: str | None = "STOP"  # None: a stream that stops before saying why
    usage: Usage = field(default_factory=Usage)
    model: str = "gemini-3.5-flash"
    response_id: str = "fAkE0rEsPoNsE1d"
    block_reason: str | None = None  # promptFeedback.blockReason: the prompt itself was refused
    finish_message: str | None = None


def response_body(answer: Answer) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if answer.block_reason is None:
        candidate: dict[str, Any] = {"content": {"parts": [dict(p) for p in answer.parts], "role": "model"}}
        if answer.finish_reason is not None:
            candidate["finishReason"] = answer.finish_reason
        if answer.finish_message is not None:
            candidate["finishMessage"] = answer.finish_message
        candidate["index"] = 0
        body["candidates"] = [candidate]
    else:
        body["promptFeedback"] = {"blockReason": answer.block_reason}
    body["usageMetadata"] = answer.usage.as_dict()
    body["modelVersion"] = answer.model
    body["responseId"] = answer.response_id
    return body


def generate_json(answer: Answer | None = None, **fields: Any) -> Reply:
    """A generateContent answer as Google writes it (JSON indented by two spaces)."""
    body = json.dumps(response_body(answer or Answer(**fields)), indent=2, ensure_ascii=False).encode()
    return Reply(status=200, headers=dict(HEADERS), chunks=[body + b"\n"], content_type=JSON_TYPE)


def stream_chunks(answer: Answer) -> list[dict[str, Any]]:
    """The chunks a stream of `answer` sends: one part each, the last one with finishReason and final usage."""
    if answer.block_reason is not None:
        return [response_body(answer)]
    parts = list(answer.parts) or [text("")]
    chunks = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        candidate: dict[str, Any] = {"content": {"parts": [dict(part)], "role": "model"}}
        if last and answer.finish_reason is not None:
            candidate["finishReason"] = answer.finish_reason
        candidate["index"] = 0
        chunks.append({"candidates": [candidate],
                       "usageMetadata": answer.usage.as_dict(final=last and answer.finish_reason is not None),
                       "modelVersion": answer.model, "responseId": answer.response_id})
    return chunks


def sse_events(chunks: Sequence[Mapping[str, Any]]) -> list[bytes]:
    return [b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode() + b"\r\n\r\n"
            for c in chunks]


def generate_stream(answer: Answer | None = None, *, cut: bool = False, delay_between: float = 0.0,
                    **fields: Any) -> Reply:
    """A streamGenerateContent?alt=sse answer; `cut` drops the connection after the chunks."""
    events = sse_events(stream_chunks(answer or Answer(**fields)))
    return Reply(status=200, headers=dict(HEADERS), chunks=events, content_type=SSE_TYPE, cut=cut,
                 delay_between=delay_between)


def stream_error_midway(answer: Answer, error: Mapping[str, Any]) -> Reply:
    """A stream whose status line said 200 and that then writes an error body, as plain JSON lines."""
    events = sse_events(stream_chunks(answer)[:-1])
    body = json.dumps({"error": dict(error)}, indent=2).encode() + b"\n"
    return Reply(status=200, headers=dict(HEADERS), chunks=[*events, body], content_type=SSE_TYPE)


# -- errors ----------------------------------------------------------------------------------------

def error_body(code: int, status: str, message: str, details: Sequence[Mapping[str, Any]] = ()) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = [dict(d) for d in details]
    return json.dumps({"error": error}, indent=2).encode() + b"\n"


def error_reply(code: int, status: str, message: str, details: Sequence[Mapping[str, Any]] = ()) -> Reply:
    return Reply(status=code, headers=dict(HEADERS), chunks=[error_body(code, status, message, details)],
                 content_type=JSON_TYPE)


def invalid_argument(message: str) -> Reply:
    return error_reply(400, "INVALID_ARGUMENT", message)


def api_key_invalid() -> Reply:
    return error_reply(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
         "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
         "message": "API key not valid. Please pass a valid API key."}])


def key_missing() -> Reply:
    return error_reply(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                       "established identity). Please use API Key or other form of API consumer identity to call "
                       "this API.")


def resource_exhausted(retry_seconds: int = 21) -> Reply:
    return error_reply(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and "
                       "billing details. For more information on this error, head to: "
                       "https://ai.google.dev/gemini-api/docs/rate-limits.", [
                           {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                               {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                           {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_seconds}s"}])


def overloaded() -> Reply:
    return error_reply(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def deadline_exceeded() -> Reply:
    return error_reply(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.")


def internal() -> Reply:
    return error_reply(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                       "https://developers.generativeai.google/guide/troubleshooting")


def model_not_found(model: str) -> Reply:
    return error_reply(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not supported "
                       "for generateContent. Call ListModels to see the list of available models and their "
                       "supported methods.")


def context_too_long(tokens: int = 1_200_000) -> Reply:
    return invalid_argument(f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
                            "(1048576).")


# -- request checks ----------------------------------------------------------------------------------

def _unknown(obj: Any, known: set[str], where: str) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    for name in obj:
        if name not in known:
            return f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': Cannot find field.'
    return None


def _schema_problem(schema: Any, where: str) -> str | None:
    if not isinstance(schema, Mapping):
        return None
    problem = _unknown(schema, SCHEMA_FIELDS, where)
    if problem:
        return problem
    kind = schema.get("type")
    if kind is not None and str(kind).upper() not in SCHEMA_TYPES:
        return (f'Invalid value at \'{where}.type\' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), '
                f'"{kind}"')
    if "properties" in schema and str(kind).upper() == "OBJECT" and not schema["properties"]:
        return f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type\n"
    for name, sub in (schema.get("properties") or {}).items():
        problem = _schema_problem(sub, f"{where}.properties[{name}].value")
        if problem:
            return problem
    if "items" in schema:
        problem = _schema_problem(schema["items"], f"{where}.items")
        if problem:
            return problem
    for i, sub in enumerate(schema.get("anyOf") or ()):
        problem = _schema_problem(sub, f"{where}.any_of[{i}]")
        if problem:
            return problem
    return None


def request_problem(body: Any) -> str | None:
    """Why Google would refuse this GenerateContentRequest's shape (None when it would not)."""
    if not isinstance(body, Mapping):
        return "Invalid JSON payload received. Expected an object."
    checks = [_unknown(body, REQUEST_FIELDS, "")]
    for i, content in enumerate(body.get("contents") or ()):
        checks.append(_unknown(content, CONTENT_FIELDS, f"contents[{i}]"))
        if isinstance(content, Mapping) and content.get("role") not in (None, "user", "model"):
            checks.append(f"Please use a valid role: user, model. Got {content.get('role')}.")
        for j, part in enumerate((content or {}).get("parts") or ()):
            checks.append(_unknown(part, PART_FIELDS, f"contents[{i}].parts[{j}]"))
    if isinstance(body.get("systemInstruction"), Mapping):
        checks.append(_unknown(body["systemInstruction"], CONTENT_FIELDS, "system_instruction"))
    for i, tool in enumerate(body.get("tools") or ()):
        checks.append(_unknown(tool, TOOL_FIELDS, f"tools[{i}]"))
        for j, declaration in enumerate((tool or {}).get("functionDeclarations") or ()):
            where = f"tools[{i}].function_declarations[{j}]"
            checks.append(_unknown(declaration, DECLARATION_FIELDS, where))
            checks.append(_schema_problem((declaration or {}).get("parameters"), f"{where}.parameters"))
    config = body.get("generationConfig")
    if isinstance(config, Mapping):
        checks.append(_unknown(config, GENERATION_FIELDS, "generation_config"))
        checks.append(_unknown(config.get("thinkingConfig"), THINKING_FIELDS, "generation_config.thinking_config"))
        checks.append(_schema_problem(config.get("responseSchema"), "generation_config.response_schema"))
        if len(config.get("stopSequences") or ()) > 5:
            checks.append("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences")
    tool_config = body.get("toolConfig")
    if isinstance(tool_config, Mapping):
        checks.append(_unknown(tool_config.get("functionCallingConfig"), FUNCTION_CALLING_FIELDS,
                               "tool_config.function_calling_config"))
    if not body.get("contents"):
        checks.append("* GenerateContentRequest.contents: contents is not specified\n")
    return next((c for c in checks if c), None)


def signature_problem(contents: Sequence[Mapping[str, Any]], issued: set[str]) -> str | None:
    """Gemini 3's check of the current turn: every model step's first functionCall part carries a
    signature this server issued (or a documented dummy)."""
    start = 0
    for i, content in enumerate(contents):
        parts = content.get("parts") or ()
        if content.get("role", "user") == "user" and any("functionResponse" not in p for p in parts):
            start = i + 1
    for i in range(start, len(contents)):
        content = contents[i]
        if content.get("role") != "model":
            continue
        calls = [p for p in content.get("parts") or () if "functionCall" in p]
        if not calls:
            continue
        signature = calls[0].get("thoughtSignature")
        if not signature:
            name = calls[0]["functionCall"].get("name")
            return (f"Function call is missing a thought_signature in functionCall parts. This is required for "
                    f"tools to work correctly, and missing thought_signature may lead to degraded model "
                    f"performance. Additional data, function call `default_api:{name}` , position {i + 1}. Please "
                    f"refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")
        if signature not in issued and signature not in DUMMY_SIGNATURES:
            return "Corrupted thought signature."
    return None


def token_count(request: Mapping[str, Any]) -> int:
    """The fake's deterministic count: a token per 4 characters of text, tool declaration and media data."""
    total = len(json.dumps(request["tools"])) if request.get("tools") else 0
    for content in [*(request.get("contents") or ()), request.get("systemInstruction") or {}]:
        for part in content.get("parts") or ():
            total += len(part.get("text") or "") + len((part.get("inlineData") or {}).get("data", ""))
            total += sum(len(json.dumps(part[k])) for k in ("functionCall", "functionResponse") if k in part)
    return math.ceil(total / 4)


# -- the server ------------------------------------------------------------------------------------

class GeminiFake(ScriptedServer):
    """Real HTTP on loopback, speaking Gemini's REST API. Point a provider at `url + "/v1beta"`."""

    def __init__(self, *, api_key: str | None = "AIzaFakeKey0123456789abcdefghijklmnop", prompt_tokens: int = 12,
                 reply_text: str = "Hello from the Gemini fake.", check_signatures: bool | None = None,
                 models: Sequence[Mapping[str, Any]] = LISTED_MODELS, max_page_size: int = 1000,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = list(models)  # what models.list answers, `max_page_size` at a time at most
        self.max_page_size = max_page_size
        self.api_key = api_key
        self.prompt_tokens = prompt_tokens
        self.reply_text = reply_text
        self.check_signatures = check_signatures  # None: as Google does, for gemini-3 models only
        self.issued: set[str] = set()
        self._calls = 0

    @property
    def base_url(self) -> str:
        return self.url + "/v1beta"

    def generate_requests(self) -> list[dict[str, Any]]:
        """Bodies of the generateContent / streamGenerateContent requests received so far."""
        return [r.json() for r in self.requests if "enerateContent" in r.path]

    def next_reply(self, request: RecordedRequest) -> Reply:
        reply = self._check(request) or super().next_reply(request)
        for chunk in reply.chunks if reply.status == 200 else ():
            self.issued.update(s.decode() for s in _SIGNATURE.findall(chunk))
        return reply

    def _check(self, request: RecordedRequest) -> Reply | None:
        if self.api_key is not None:
            key = request.headers.get("x-goog-api-key")
            if key is None:
                return key_missing()
            if key != self.api_key:
                return api_key_invalid()
        if request.method == "GET" and _LIST_PATH.match(request.path):
            return self._list_models(request.query)
        match = _PATH.match(request.path)
        if request.method != "POST" or match is None:
            return error_reply(404, "NOT_FOUND", f"The requested URL {request.path} was not found on this server.")
        try:
            body = json.loads(request.body)
        except ValueError:
            return invalid_argument("Invalid JSON payload received. Unexpected token.")
        model, method = match.groups()
        if method == "countTokens":
            inner = body.get("generateContentRequest") if isinstance(body, Mapping) else None
            problem = request_problem(inner) if inner is not None else _unknown(body, {"contents"}, "")
            return invalid_argument(problem) if problem else None
        problem = request_problem(body)
        if problem:
            return invalid_argument(problem)
        if self.check_signatures or (self.check_signatures is None and model.startswith("gemini-3")):
            problem = signature_problem([c for c in body["contents"] if isinstance(c, Mapping)], self.issued)
            if problem:
                return invalid_argument(problem)
        return None

    def _list_models(self, query: str) -> Reply:
        """models.list: `pageSize` (default 50, at most 1000) models from `pageToken` on, and a
        `nextPageToken` while more remain."""
        params = dict(part.partition("=")[::2] for part in query.split("&") if part)
        try:
            size = min(int(params.get("pageSize") or 50), 1000, self.max_page_size)
            start = int(params.get("pageToken") or 0)
        except ValueError:
            return invalid_argument("Invalid value at 'page_size' (TYPE_INT32)")
        payload: dict[str, Any] = {"models": self.models[start:start + size]}
        if start + size < len(self.models):
            payload["nextPageToken"] = str(start + size)
        return Reply(status=200, headers=dict(HEADERS), chunks=[json.dumps(payload, indent=2).encode() + b"\n"],
                     content_type=JSON_TYPE)

    def auto_reply(self, request: RecordedRequest) -> Reply:
        model, method = _PATH.match(request.path).groups()
        body = request.json()
        if method == "countTokens":
            inner = body.get("generateContentRequest") or body
            total = token_count(inner)
            payload = {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
            return Reply(status=200, headers=dict(HEADERS), chunks=[json.dumps(payload, indent=2).encode() + b"\n"],
                         content_type=JSON_TYPE)
        config = body.get("generationConfig") or {}
        usage = Usage(prompt=self.prompt_tokens, candidates=int(config.get("maxOutputTokens") or 16))
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        declarations = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
        if calling.get("mode") == "ANY" and declarations:
            self._calls += 1
            name = (calling.get("allowedFunctionNames") or [declarations[0]["name"]])[0]
            # A signature is opaque bytes in standard base64, padding included, as Google sends it.
            signature = base64.b64encode(f"FakeSignature{self._calls:04d}".encode()).decode()
            parts = [function_call(name, {}, signature=signature)]
        elif (config.get("thinkingConfig") or {}).get("includeThoughts"):
            parts = [thought("Thinking it over.", signature="VGhvdWdodFNpZ25hdHVyZQ=="), text(self.reply_text)]
        else:
            parts = [text(self.reply_text)]
        answer = Answer(parts=parts, usage=usage, model=model)
        if method == "generateContent":
            return generate_json(answer)
        if request.query != "alt=sse":  # without SSE Google streams one JSON array
            array = b"[" + b",\r\n".join(json.dumps(c, indent=2).encode() for c in stream_chunks(answer)) + b"]"
            return Reply(status=200, headers=dict(HEADERS), chunks=[array], content_type=JSON_TYPE)
        return generate_stream(answer)
