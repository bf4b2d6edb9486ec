"""Chat completions inbound: an OpenAI chat completions request → the canonical Anthropic Messages
request, and the Anthropic answer (a Message, or its stream) → a chat completion (or its chunks).

The reverse of `openai_chat_request` / `openai_chat_response`, and built from the same facts
(tool_choice names, image sources, tool arguments, finish reasons, usage, effort levels). Pure: the
caller passes the completion id and the `created` time.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from providers.openai_chat_request import arguments_text
from providers.openai_chat_response import FINISH_BY_STOP_REASON, chat_usage, tool_input
from providers.openai_content import image_source_for_url
from providers.openai_inbound import (Refused, StreamWriter, apply_tools, common_fields, error_of_event,
                                      function_tool, reasoning, require_list, require_object, stream_error,
                                      structured_output, text_of_parts, tool_choice)

_TEXT_PARTS = ("text",)
# Fields with no Anthropic meaning that change nothing a client reads back: accepted, not sent.
_IGNORED = frozenset({"seed", "presence_penalty", "frequency_penalty", "logit_bias", "metadata", "service_tier",
                      "store", "prediction", "web_search_options", "verbosity", "prompt_cache_key"})


@dataclass(frozen=True)
class ChatShape:
    """What the answer must look like, beyond what the canonical request says."""
    stream: bool
    include_usage: bool
    format_tool: str | None


def to_canonical(body: Mapping[str, Any]) -> tuple[dict[str, Any], ChatShape]:
    """The canonical request for a chat completions body; raises Refused for what cannot be served."""
    if body.get("n") not in (None, 1):
        raise Refused("n: only one choice per request is supported (n must be 1)", "n")
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        raise Refused("logprobs: log probabilities are not available through this gateway", "logprobs")
    if "audio" in body or "audio" in (body.get("modalities") or ()):
        raise Refused("audio: audio output is not supported", "modalities")
    if "functions" in body or "function_call" in body:
        raise Refused("functions: the deprecated functions API is not supported; use tools", "functions")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Refused("model: field required", "model")
    system, messages = _messages(require_list(body.get("messages"), "messages"))
    canonical: dict[str, Any] = {"model": model}
    if system:
        canonical["system"] = system
    canonical["messages"] = messages
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    reasoning(canonical, body.get("reasoning_effort"), max_tokens, "max_completion_tokens")
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else require_list(stop, "stop")
        if not all(isinstance(s, str) for s in stops):
            raise Refused("stop: must be a string or an array of strings", "stop")
        if stops:
            canonical["stop_sequences"] = stops
    common_fields(body, canonical)
    tools = []
    for index, tool in enumerate(require_list(body.get("tools") or [], "tools")):
        tool = require_object(tool, f"tools[{index}]")
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, Mapping):
            raise Refused(f"tools[{index}]: only function tools are supported", "tools")
        tools.append(function_tool(function.get("name"), function.get("description"), function.get("parameters"),
                                   function.get("strict"), f"tools[{index}].function"))
    apply_tools(canonical, tools, tool_choice(body.get("tool_choice"), "tool_choice"), body.get("parallel_tool_calls"))
    format_tool = structured_output(canonical, body.get("response_format"), "response_format")
    options = body.get("stream_options") if isinstance(body.get("stream_options"), Mapping) else {}
    return canonical, ChatShape(stream=body.get("stream") is True, include_usage=options.get("include_usage") is True,
                                format_tool=format_tool)


# -- messages ------------------------------------------------------------------------------------

def _messages(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        message = require_object(message, where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(text_of_parts(content, f"{where}.content", _TEXT_PARTS))
            continue
        if role == "user":
            blocks = _user_blocks(content, where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise Refused(f"{where}.tool_call_id: required", "messages")
            blocks = [{"type": "tool_result", "tool_use_id": call_id,
                       "content": text_of_parts(content or "", f"{where}.content", _TEXT_PARTS)}]
            role = "user"
        else:
            raise Refused(f"{where}.role: must be system, developer, user, assistant or tool", "messages")
        if not blocks:
            continue
        # Anthropic alternates turns: tool results and the user text after them are one user turn.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise Refused("messages: at least one user or assistant message is required", "messages")
    return "\n\n".join(s for s in system if s), turns


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []  # Anthropic refuses empty text
    blocks = []
    for index, part in enumerate(require_list(content, f"{where}.content")):
        part = require_object(part, f"{where}.content[{index}]")
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str) or not url:
                raise Refused(f"{where}.content[{index}].image_url.url: required", "messages")
            blocks.append({"type": "image", "source": image_source_for_url(url)})
        elif kind == "file" and isinstance(part.get("file"), Mapping) \
                and str(part["file"].get("file_data", "")).startswith("data:application/pdf;base64,"):
            data = part["file"]["file_data"].split(",", 1)[1]
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                          "data": data}})
        else:
            raise Refused(f"{where}.content[{index}]: content parts of type {kind!r} are not supported", "messages")
    return blocks


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if content:
        text = text_of_parts(content, f"{where}.content", ("text", "refusal")) if not isinstance(content, str) \
            else content
        if text:
            blocks.append({"type": "text", "text": text})
    for index, call in enumerate(require_list(message.get("tool_calls") or [], f"{where}.tool_calls")):
        call = require_object(call, f"{where}.tool_calls[{index}]")
        function = require_object(call.get("function"), f"{where}.tool_calls[{index}].function")
        blocks.append({"type": "tool_use", "id": str(call.get("id") or f"call_{index}"),
                       "name": str(function.get("name", "")), "input": tool_input(function.get("arguments"))})
    return blocks


# -- the answer ----------------------------------------------------------------------------------

def finish_reason(stop_reason: Any, format_tool: str | None) -> str:
    if stop_reason == "tool_use" and format_tool:
        return "stop"  # the forced answer tool is how the JSON answer arrived, not a call to run
    return FINISH_BY_STOP_REASON.get(stop_reason, "stop")


def from_message(message: Mapping[str, Any], *, answer_id: str, created: int, shape: ChatShape) -> dict[str, Any]:
    """The chat completion for an Anthropic Message."""
    format_tool = shape.format_tool
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use" and block.get("name") == format_tool:
            texts.append(arguments_text(block.get("input")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id", "")), "type": "function",
                          "function": {"name": str(block.get("name", "")),
                                       "arguments": arguments_text(block.get("input"))}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = "\n\n".join(thinking)
    completion = {"id": answer_id, "object": "chat.completion", "created": created,
                  "model": message.get("model"),
                  "choices": [{"index": 0, "message": reply, "logprobs": None,
                               "finish_reason": finish_reason(message.get("stop_reason"), format_tool)}],
                  "usage": chat_usage(message.get("usage") if isinstance(message.get("usage"), Mapping) else None)}
    if message.get("provider"):
        completion["provider"] = message["provider"]
    return completion


class ChunkWriter(StreamWriter):
    """Feed it the Anthropic stream's bytes; it returns chat.completion.chunk events as SSE bytes,
    ending with `data: [DONE]` (the usage chunk before it only when the client asked for usage)."""

    def __init__(self, *, answer_id: str, created: int, shape: ChatShape) -> None:
        super().__init__(answer_id=answer_id, created=created, shape=shape)
        self._blocks: dict[int, tuple[str, int | None]] = {}  # Anthropic index → (kind, tool call index)
        self._calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        payload = {"id": self.answer_id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def event(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            provider = self.started(event).get("provider")
            out.append(self._chunk({"role": "assistant", "content": ""}, **({"provider": provider} if provider else {})))
        elif kind == "content_block_start":
            self._start(event, out)
        elif kind == "content_block_delta":
            self._delta(event, out)
        elif kind == "message_delta":
            out.append(self._chunk({}, finish_reason(self.ending(event), self.shape.format_tool)))
        elif kind == "message_stop":
            self._end(out)
        elif kind == "error":
            out.append(stream_error(*error_of_event(event)))
            self.done = True

    def _start(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        block = event.get("content_block") if isinstance(event.get("content_block"), Mapping) else {}
        index = event.get("index")
        kind = block.get("type")
        if kind == "tool_use" and block.get("name") == self.shape.format_tool:
            self._blocks[index] = ("answer", None)
        elif kind == "tool_use":
            call = self._calls
            self._calls += 1
            self._blocks[index] = ("tool", call)
            out.append(self._chunk({"tool_calls": [{"index": call, "id": block.get("id"), "type": "function",
                                                    "function": {"name": block.get("name"), "arguments": ""}}]}))
        else:
            self._blocks[index] = (str(kind), None)
            if kind == "text" and block.get("text"):
                out.append(self._chunk({"content": block["text"]}))

    def _delta(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        delta = event.get("delta") if isinstance(event.get("delta"), Mapping) else {}
        kind, call = self._blocks.get(event.get("index"), ("", None))
        change = delta.get("type")
        if change == "text_delta":
            out.append(self._chunk({"content": delta.get("text", "")}))
        elif change == "thinking_delta":
            out.append(self._chunk({"reasoning_content": delta.get("thinking", "")}))
        elif change == "input_json_delta" and kind == "answer":
            out.append(self._chunk({"content": delta.get("partial_json", "")}))
        elif change == "input_json_delta" and kind == "tool":
            out.append(self._chunk({"tool_calls": [{"index": call,
                                                    "function": {"arguments": delta.get("partial_json", "")}}]}))

    def _end(self, out: list[bytes]) -> None:
        if self.shape.include_usage:
            payload = {"id": self.answer_id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.model, "choices": [], "usage": chat_usage(self.usage)}
            out.append(b"data: " + orjson.dumps(payload) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        self.done = True
