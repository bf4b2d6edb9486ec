"""Reading an inbound Messages request: the headers the gateway needs and the body fields routing needs.

The body is parsed once; only the fields the gateway acts on are validated, everything else is the
upstream's business and travels untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from gateway.errors import InvalidRequest, RequestTooLarge
from gateway.settings import InputLimits
from policies.body_shape import BodyShape, read_members_shape, read_shape, shape_problem
from providers.base import ROUTER_FIELDS
from providers.jsonedit import EditError, top_level_spans, top_level_values

DEFAULT_LIMITS = InputLimits()
MAX_ID_CHARS = DEFAULT_LIMITS.id_chars
_INT64 = 2**63  # integers the usage record's encoder can write: [-2**63, 2**63)
# From this size on the census reads a body member by member (`MessagesRequest.shape`); a smaller
# one decodes whole in less time than its members are located.
MEMBER_CENSUS_BYTES = 8192


@dataclass(slots=True)
class InboundHeaders:
    api_keys: list[str]
    version: str | None
    beta: str | None
    session_id: str | None
    content_length: int | None


def read_headers(raw_headers: list[tuple[bytes, bytes]]) -> InboundHeaders:
    keys: list[str] = []
    version = session = None
    betas: list[str] = []
    length = None
    for name, value in raw_headers:
        if name == b"x-api-key":
            keys.append(value.decode("latin-1").strip())
        elif name == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                keys.append(text[7:].strip())
        elif name == b"anthropic-version":
            version = value.decode("latin-1").strip()
        elif name == b"anthropic-beta":
            betas.extend(b.strip() for b in value.decode("latin-1").split(",") if b.strip())
        elif name == b"x-session-id":
            session = value.decode("utf-8", "replace")
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
    return InboundHeaders(keys, version, ",".join(betas) if betas else None, session, length)


async def read_body(receive, limit: int, declared: int | None) -> bytes:
    if declared is not None and declared > limit:
        raise RequestTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client went away while sending its request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


@dataclass(slots=True)
class MessagesRequest:
    raw: bytes
    model: str
    fallbacks: list[str]
    stream: bool
    max_tokens: int
    session_id: str | None
    user: str | None
    trace: dict[str, Any] | None
    preferences: dict[str, Any] | None
    router_fields: tuple[str, ...]  # router-only members present in the body
    # Every top-level member's value as raw bytes (see upstream_body); None for a body built as objects.
    values: dict[str, msgspec.Raw] | None
    _body: dict[str, Any] | None = None
    _shape: BodyShape | None | bool = False  # False: not read yet
    _spans: dict[str, tuple[int, int, int]] | None | bool = False  # False: not located yet

    @property
    def spans(self) -> dict[str, tuple[int, int, int]] | None:
        """Where each top-level member lies in `raw` (`jsonedit.top_level_spans`), located once for
        the census and the upstream body's splice; None when a key repeats, or for a body built as
        objects."""
        if self._spans is False:
            try:
                self._spans = None if self.values is None else top_level_spans(self.raw, self.values)
            except EditError:
                self._spans = None
        return self._spans  # type: ignore[return-value]

    @property
    def shape(self) -> BodyShape | None:
        """The content census of the body, read once by a typed decode (reservations and the search
        check both read it); None when the body is not shaped as the API's. A large body whose
        top-level values are all of its members (no key repeats) has only the members the census
        reads decoded, from those values; any other body is decoded whole."""
        if self._shape is False:
            values = self.values
            if values is not None and len(self.raw) >= MEMBER_CENSUS_BYTES and self.spans is not None:
                self._shape = read_members_shape(values)
            else:
                self._shape = read_shape(self.raw)
        return self._shape  # type: ignore[return-value]

    @property
    def shape_problem(self) -> str | None:
        """Where the body is of another shape than the API's (see `body_shape.shape_problem`), or None."""
        return None if self.shape is not None else shape_problem(self.raw)

    def has_member(self, name: str) -> bool:
        """Whether the body has the top-level member `name`."""
        return name in (self.values if self.values is not None else self.body)

    @property
    def body(self) -> dict[str, Any]:
        """The whole body as objects, decoded on first use (translating protocols need it; the
        Anthropic passthrough does not)."""
        if self._body is None:
            try:
                self._body = orjson.loads(self.raw)
            except orjson.JSONDecodeError as exc:  # deeper than orjson's limit, or bad UTF-8 inside
                raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        return self._body


def _decode_values(raw: bytes) -> dict[str, msgspec.Raw]:
    """The top-level members with their values as raw bytes. Nested values are stepped over by the
    decoder without building Python objects, so a 31 KB Claude Code turn costs about what a
    one-line prompt does; only the members the gateway acts on are decoded further."""
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        return top_level_values(raw)
    except msgspec.ValidationError:
        raise InvalidRequest("request body must be a JSON object") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        # The decoder's own guard: stepping over a value nested deeper than the interpreter's
        # recursion limit (about a thousand levels) is refused rather than crashing the request.
        raise InvalidRequest("request body is nested too deeply") from None


def _member(values: dict[str, msgspec.Raw], name: str, default: Any = None) -> Any:
    """A member decoded to objects. The top-level pass only stepped over its value, so this is
    where its strings meet UTF-8 validation and its numbers their range."""
    value = values.get(name)
    if value is None:
        return default
    try:
        return msgspec.json.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        reason = str(exc)
        raise InvalidRequest(f"{name}: {reason[:1].lower()}{reason[1:]}") from None
    except RecursionError:
        raise InvalidRequest(f"{name}: nested too deeply") from None


def _check_model(model: Any, limit: int = DEFAULT_LIMITS.model_chars) -> str:
    if model is None:
        raise InvalidRequest("model: field required")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: must be a non-empty string")
    if len(model) > limit:
        raise InvalidRequest(f"model: must be at most {limit} characters (got {len(model)})")
    return model


def _check_messages(messages: msgspec.Raw | None) -> None:
    first = bytes(memoryview(messages)[:1]) if messages is not None else b""
    if not first or first == b"n":
        raise InvalidRequest("messages: field required")
    if first != b"[":
        raise InvalidRequest("messages: must be an array of messages")


def _optional_id(value: Any, field: str, limit: int = MAX_ID_CHARS) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: must be a string")
    if len(value) > limit:
        raise InvalidRequest(f"{field}: must be at most {limit} characters (got {len(value)})")
    return value


def _check_max_tokens(max_tokens: Any, ceiling: int) -> int:
    if max_tokens is None:
        raise InvalidRequest("max_tokens: field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: must be a positive integer")
    if max_tokens > ceiling:
        raise InvalidRequest(f"max_tokens: must be at most {ceiling}")
    return max_tokens


def _check_fallbacks(models: Any, limits: InputLimits) -> list[str]:
    if models is None:
        return []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise InvalidRequest("models: must be an array of model ids")
    if len(models) > limits.fallback_models:
        raise InvalidRequest(f"models: must list at most {limits.fallback_models} model ids (got {len(models)})")
    for m in models:
        if len(m) > limits.model_chars:
            raise InvalidRequest(f"models: each id must be at most {limits.model_chars} characters")
    return models


def _check_trace(raw: msgspec.Raw | None, trace: Any, limits: InputLimits) -> dict[str, Any] | None:
    """`trace` is stored with the request's usage record, so it is bounded in size, depth and
    number of entries, and may hold only what the record's encoder can write."""
    if trace is None:
        return None
    if not isinstance(trace, dict):
        raise InvalidRequest("trace: must be an object")
    size = len(raw)  # type: ignore[arg-type]  # present: trace was decoded from it
    if size > limits.trace_bytes:
        raise InvalidRequest(f"trace: must be at most {limits.trace_bytes} bytes of JSON (got {size})")
    entries = 0
    level: list[Any] = [trace]
    depth = 0
    while level:  # breadth first, one level of containers at a time
        depth += 1
        if depth > limits.trace_depth:
            raise InvalidRequest(f"trace: must be nested at most {limits.trace_depth} levels deep")
        inner: list[Any] = []
        for container in level:
            items = container.values() if type(container) is dict else container
            entries += len(container)
            for item in items:
                if type(item) is dict or type(item) is list:
                    inner.append(item)
                elif type(item) is int and not -_INT64 <= item < _INT64:
                    raise InvalidRequest("trace: integers must fit in 64 bits")
        if entries > limits.trace_keys:
            raise InvalidRequest(f"trace: must hold at most {limits.trace_keys} keys and array items")
        level = inner
    return trace


def _check_metadata(metadata: Any, limits: InputLimits) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata: must be an object")
    _optional_id(metadata.get("user_id"), "metadata.user_id", limits.metadata_user_id_chars)


def parse_messages_request(raw: bytes, headers: InboundHeaders,
                           limits: InputLimits = DEFAULT_LIMITS) -> MessagesRequest:
    """Every member the gateway acts on or keeps is checked here, so that what reaches the store
    is bounded by `limits`; the rest travels to the upstream untouched."""
    values = _decode_values(raw)
    present = tuple(filter(values.__contains__, ROUTER_FIELDS))
    model = _check_model(_member(values, "model"), limits.model_chars)
    _check_messages(values.get("messages"))
    max_tokens = _check_max_tokens(_member(values, "max_tokens"), limits.max_tokens)
    stream = _member(values, "stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean")
    provider = models = session_id = trace = user = plugins = None
    if present:  # most bodies have none of the router's members
        provider, models, session_id, trace, user, plugins = (
            _member(values, name) for name in ("provider", "models", "session_id", "trace", "user", "plugins"))
    fallbacks = _check_fallbacks(models, limits)
    trace = _check_trace(values.get("trace"), trace, limits)
    if provider is not None and not isinstance(provider, dict):
        raise InvalidRequest("provider: must be an object")
    if plugins is not None and not isinstance(plugins, list):
        raise InvalidRequest("plugins: must be an array")
    if "metadata" in values:
        _check_metadata(_member(values, "metadata"), limits)
    if session_id is not None:
        session = _optional_id(session_id, "session_id", limits.id_chars)
    else:
        session = _optional_id(headers.session_id, "session_id (header x-session-id)", limits.id_chars)
    return MessagesRequest(raw, model, fallbacks, stream, max_tokens, session,
                           _optional_id(user, "user", limits.id_chars), trace, provider, present, values)


def parse_count_tokens_request(raw: bytes) -> tuple[dict[str, Any], str]:
    body = parse_json_object(raw)
    model = _check_model(body.get("model"))
    if "messages" not in body or body["messages"] is None:
        raise InvalidRequest("messages: field required")
    if not isinstance(body["messages"], list):
        raise InvalidRequest("messages: must be an array of messages")
    return body, model
