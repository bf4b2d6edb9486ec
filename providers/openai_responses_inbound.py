"""Responses inbound, stateless: an OpenAI Responses request → the canonical Anthropic Messages
request, and the Anthropic answer (a Message, or its stream) → a Response (or its event sequence).

The gateway keeps no responses: `store: true`, `previous_response_id` and item references are
refused with a 400 saying so; a client sends its whole conversation as `input` items each turn, as
Codex CLI does with `store: false`. An Anthropic thinking block leaves as a `reasoning` item whose
`encrypted_content` is the block's signature, and comes back as that thinking block, so a tool loop
with thinking keeps the signed blocks Anthropic wants returned. Pure: the caller passes ids and times.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from providers.openai_chat_request import arguments_text
from providers.openai_chat_response import chat_usage, tool_input
from providers.openai_content import image_source_for_url
from providers.openai_inbound import (Refused, StreamWriter, apply_tools, common_fields, error_of_event,
                                      function_tool, reasoning, require_list, require_object, structured_output,
                                      text_of_parts, tool_choice)
from providers.openai_responses_response import STOP_REASON_BY_INCOMPLETE

STATELESS = ("this gateway is stateless: it keeps no responses, so {what} cannot be used; send the whole "
             "conversation as input items with store: false")
_INCOMPLETE_BY_STOP_REASON = {stop: reason for reason, stop in STOP_REASON_BY_INCOMPLETE.items()}
_TEXT_KINDS = ("input_text", "output_text", "text")


@dataclass(frozen=True)
class ResponseShape:
    """What the answer echoes of the request, and how its JSON answer arrives."""
    stream: bool
    format_tool: str | None
    echo: dict[str, Any]


def to_canonical(body: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseShape]:
    """The canonical request for a Responses body; raises Refused for what cannot be served."""
    if body.get("store") is True:
        raise Refused(STATELESS.format(what="store: true"), "store")
    for name in ("previous_response_id", "conversation"):
        if body.get(name):
            raise Refused(STATELESS.format(what=name), name)
    if body.get("background"):
        raise Refused("background: background responses are not supported", "background")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Refused("model: field required", "model")
    raw_input = body.get("input")
    items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else require_list(raw_input, "input")
    system, messages = _items(items)
    instructions = body.get("instructions")
    if instructions is not None:
        system = "\n\n".join(s for s in (text_of_parts(instructions, "instructions", _TEXT_KINDS), system) if s)
    canonical: dict[str, Any] = {"model": model}
    if system:
        canonical["system"] = system
    canonical["messages"] = messages
    effort = body.get("reasoning").get("effort") if isinstance(body.get("reasoning"), Mapping) else None
    reasoning(canonical, effort, body.get("max_output_tokens"), "max_output_tokens")
    common_fields(body, canonical)
    tools = []
    for index, tool in enumerate(require_list(body.get("tools") or [], "tools")):
        tool = require_object(tool, f"tools[{index}]")
        if tool.get("type") != "function":
            raise Refused(f"tools[{index}]: only function tools are supported (not {tool.get('type')!r})", "tools")
        tools.append(function_tool(tool.get("name"), tool.get("description"), tool.get("parameters"),
                                   tool.get("strict"), f"tools[{index}]"))
    apply_tools(canonical, tools, tool_choice(body.get("tool_choice"), "tool_choice"), body.get("parallel_tool_calls"))
    text = body.get("text") if isinstance(body.get("text"), Mapping) else {}
    format_tool = structured_output(canonical, text.get("format"), "text.format")
    echo = {"instructions": instructions, "max_output_tokens": body.get("max_output_tokens"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True), "temperature": body.get("temperature"),
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p"), "metadata": body.get("metadata") or {},
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "text": {"format": text.get("format") or {"type": "text"}}}
    if isinstance(body.get("user"), str):
        echo["user"] = body["user"]
    return canonical, ResponseShape(stream=body.get("stream") is True, format_tool=format_tool, echo=echo)


# -- input items ---------------------------------------------------------------------------------

def _items(items: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        elif blocks:
            turns.append({"role": role, "content": blocks})

    for index, item in enumerate(items):
        where = f"input[{index}]"
        item = require_object(item, where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                system.append(text_of_parts(item.get("content"), f"{where}.content", _TEXT_KINDS))
            elif role in ("user", "assistant"):
                add(role, _content(item.get("content"), where))
            else:
                raise Refused(f"{where}.role: must be system, developer, user or assistant", "input")
        elif kind == "function_call":
            add("assistant", [{"type": "tool_use", "id": str(item.get("call_id", "")),
                               "name": str(item.get("name", "")), "input": tool_input(item.get("arguments"))}])
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else text_of_parts(output or "", f"{where}.output", _TEXT_KINDS)
            add("user", [{"type": "tool_result", "tool_use_id": str(item.get("call_id", "")), "content": text}])
        elif kind == "reasoning":
            add("assistant", _thinking(item))
        elif kind == "item_reference":
            raise Refused(STATELESS.format(what="item references"), "input")
        else:
            raise Refused(f"{where}.type: input items of type {kind!r} are not supported", "input")
    if not turns:
        raise Refused("input: at least one user or assistant message is required", "input")
    return "\n\n".join(s for s in system if s), turns


def _content(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for index, part in enumerate(require_list(content, f"{where}.content")):
        part = require_object(part, f"{where}.content[{index}]")
        kind = part.get("type")
        if kind in _TEXT_KINDS or kind == "refusal":
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            blocks.append({"type": "image", "source": image_source_for_url(part["image_url"])})
        elif kind == "input_file" and str(part.get("file_data", "")).startswith("data:application/pdf;base64,"):
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                          "data": part["file_data"].split(",", 1)[1]}})
        else:
            raise Refused(f"{where}.content[{index}]: content parts of type {kind!r} are not supported", "input")
    return blocks


def _thinking(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A reasoning item this gateway handed out, back as the signed thinking block it was; one
    without a signature is dropped (Anthropic accepts no unsigned thinking)."""
    signature = item.get("encrypted_content")
    if not isinstance(signature, str) or not signature:
        return []
    summary = "\n\n".join(p.get("text", "") for p in item.get("summary") or () if isinstance(p, Mapping))
    return [{"type": "thinking", "thinking": summary, "signature": signature}]


# -- the answer ----------------------------------------------------------------------------------

def response_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage in the Responses API's names (the same counts as chat completions')."""
    chat = chat_usage(usage)
    return {"input_tokens": chat["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": chat["prompt_tokens_details"]["cached_tokens"],
                                     "cache_write_tokens": _count(usage, "cache_creation_input_tokens")},
            "output_tokens": chat["completion_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": chat["total_tokens"]}


def _count(usage: Mapping[str, Any] | None, name: str) -> int:
    value = (usage or {}).get(name)
    return value if type(value) is int and value > 0 else 0


class _Items:
    """Output items with the ids of one response."""

    def __init__(self, response_id: str, format_tool: str | None) -> None:
        self.response_id = response_id
        self.format_tool = format_tool
        self.count = 0

    def new(self, block: Mapping[str, Any]) -> dict[str, Any]:
        """The output item an Anthropic content block starts (text empty, arguments empty)."""
        kind = block.get("type")
        base = self.response_id.removeprefix("resp_")
        self.count += 1
        if kind == "tool_use" and block.get("name") != self.format_tool:
            return {"type": "function_call", "id": f"fc_{base}_{self.count}", "call_id": str(block.get("id", "")),
                    "name": str(block.get("name", "")), "arguments": "", "status": "in_progress"}
        if kind == "thinking":
            return {"type": "reasoning", "id": f"rs_{base}_{self.count}", "summary": [],
                    "encrypted_content": block.get("signature") or None}
        return {"type": "message", "id": f"msg_{base}_{self.count}", "status": "in_progress", "role": "assistant",
                "content": []}


def _response(shape: ResponseShape, *, response_id: str, created: int, model: Any, status: str,
              output: list[dict[str, Any]], usage: dict[str, Any] | None, stop_reason: Any = None) -> dict[str, Any]:
    incomplete = _INCOMPLETE_BY_STOP_REASON.get(stop_reason)
    if incomplete and status == "completed":
        status = "incomplete"
    response = {"id": response_id, "object": "response", "created_at": created, "status": status, "model": model,
                "output": output, "error": None,
                "incomplete_details": {"reason": incomplete} if incomplete else None, "previous_response_id": None,
                "store": False, "truncation": "disabled", **shape.echo}
    if usage is not None:  # counted once the answer is whole
        response["usage"] = usage
    return response


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def from_message(message: Mapping[str, Any], *, answer_id: str, created: int, shape: ResponseShape) -> dict[str, Any]:
    """The Response for an Anthropic Message."""
    items = _Items(answer_id, shape.format_tool)
    output: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text" or (kind == "tool_use" and block.get("name") == shape.format_tool):
            text = block.get("text", "") if kind == "text" else arguments_text(block.get("input"))
            if output and output[-1]["type"] == "message":  # text blocks of one answer are one text
                output[-1]["content"][0]["text"] += text
                continue
            item = items.new(block)
            item.update(status="completed", content=[_text_part(str(text))])
        elif kind == "tool_use":
            item = items.new(block)
            item.update(status="completed", arguments=arguments_text(block.get("input")))
        elif kind == "thinking":
            item = items.new(block)
            item["summary"] = [{"type": "summary_text", "text": str(block.get("thinking", ""))}]
        else:
            continue
        output.append(item)
    usage = response_usage(message.get("usage") if isinstance(message.get("usage"), Mapping) else None)
    return _response(shape, response_id=answer_id, created=created, model=message.get("model"),
                     status="completed", output=output, usage=usage, stop_reason=message.get("stop_reason"))


def error_event(error_type: str, message: str, *, sequence: int) -> bytes:
    """The event that ends a Responses stream which failed midway (`sequence`: its sequence_number)."""
    payload = {"type": "error", "sequence_number": sequence, "code": error_type, "message": message, "param": None}
    return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


class EventWriter(StreamWriter):
    """Feed it the Anthropic stream's bytes; it returns the Responses API's stream events as SSE bytes:
    response.created, response.in_progress, per item output_item.added … output_item.done (with
    content_part / output_text, function_call_arguments or reasoning_summary events between), and
    response.completed (or response.incomplete)."""

    def __init__(self, *, answer_id: str, created: int, shape: ResponseShape) -> None:
        super().__init__(answer_id=answer_id, created=created, shape=shape)
        self._items = _Items(answer_id, shape.format_tool)
        self._sequence = 0
        self._stop_reason: Any = None
        self._output: list[dict[str, Any]] = []
        self._open: dict[int, int] = {}  # Anthropic block index → output index

    def _emit(self, out: list[bytes], kind: str, **payload: Any) -> None:
        payload = {"type": kind, "sequence_number": self._sequence, **payload}
        self._sequence += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n")

    def _snapshot(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return _response(self.shape, response_id=self.answer_id, created=self.created, model=self.model,
                         status=status, output=self._output, usage=usage, stop_reason=self._stop_reason)

    def event(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self.started(event)
            self._emit(out, "response.created", response=self._snapshot("in_progress"))
            self._emit(out, "response.in_progress", response=self._snapshot("in_progress"))
        elif kind == "content_block_start":
            self._start(event, out)
        elif kind == "content_block_delta":
            self._delta(event, out)
        elif kind == "content_block_stop":
            self._stop(event, out)
        elif kind == "message_delta":
            self._stop_reason = self.ending(event)
        elif kind == "message_stop":
            snapshot = self._snapshot("completed", response_usage(self.usage))
            name = "response.incomplete" if snapshot["status"] == "incomplete" else "response.completed"
            self._emit(out, name, response=snapshot)
            self.done = True
        elif kind == "error":
            out.append(error_event(*error_of_event(event), sequence=self._sequence))
            self._sequence += 1
            self.done = True

    def _start(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        block = event.get("content_block") if isinstance(event.get("content_block"), Mapping) else {}
        if block.get("type") not in ("text", "tool_use", "thinking"):
            return
        index = len(self._output)
        item = self._items.new(block)
        self._output.append(item)
        self._open[event.get("index")] = index
        self._emit(out, "response.output_item.added", output_index=index, item=item)
        if item["type"] == "message":
            item["content"].append(_text_part(""))
            self._emit(out, "response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                       part=_text_part(""))
            if block.get("text"):
                self._text(item, index, str(block["text"]), out)
        elif item["type"] == "reasoning":
            item["summary"].append({"type": "summary_text", "text": ""})
            self._emit(out, "response.reasoning_summary_part.added", item_id=item["id"], output_index=index,
                       summary_index=0, part={"type": "summary_text", "text": ""})

    def _text(self, item: dict[str, Any], index: int, text: str, out: list[bytes]) -> None:
        item["content"][0]["text"] += text
        self._emit(out, "response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                   delta=text, logprobs=[])

    def _delta(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        index = self._open.get(event.get("index"))
        if index is None:
            return
        item = self._output[index]
        delta = event.get("delta") if isinstance(event.get("delta"), Mapping) else {}
        change = delta.get("type")
        if change == "text_delta" or (change == "input_json_delta" and item["type"] == "message"):
            self._text(item, index, str(delta.get("text", delta.get("partial_json", ""))), out)
        elif change == "input_json_delta":
            fragment = str(delta.get("partial_json", ""))
            item["arguments"] += fragment
            self._emit(out, "response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                       delta=fragment)
        elif change == "thinking_delta" and item["type"] == "reasoning":
            text = str(delta.get("thinking", ""))
            item["summary"][0]["text"] += text
            self._emit(out, "response.reasoning_summary_text.delta", item_id=item["id"], output_index=index,
                       summary_index=0, delta=text)
        elif change == "signature_delta" and item["type"] == "reasoning":
            item["encrypted_content"] = (item.get("encrypted_content") or "") + str(delta.get("signature", ""))

    def _stop(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        index = self._open.pop(event.get("index"), None)
        if index is None:
            return
        item = self._output[index]
        common = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            self._emit(out, "response.output_text.done", **common, content_index=0, text=part["text"], logprobs=[])
            self._emit(out, "response.content_part.done", **common, content_index=0, part=part)
            item["status"] = "completed"
        elif item["type"] == "function_call":
            self._emit(out, "response.function_call_arguments.done", **common, name=item["name"],
                       arguments=item["arguments"])
            item["status"] = "completed"
        else:
            part = item["summary"][0]
            self._emit(out, "response.reasoning_summary_text.done", **common, summary_index=0, text=part["text"])
            self._emit(out, "response.reasoning_summary_part.done", **common, summary_index=0, part=part)
        self._emit(out, "response.output_item.done", output_index=index, item=item)
