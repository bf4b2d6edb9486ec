"""Anthropic's web search shapes, as pure functions: the server tool in a request, the function
offered to other models instead, the blocks of an answer, their SSE events, and usage.

Shapes follow Anthropic's Messages API: `server_tool_use` (`srvtoolu_...` id, `input.query`),
`web_search_tool_result` holding `web_search_result` items (`url`, `title`, `page_age`,
`encrypted_content`) or a `web_search_tool_result_error` (`error_code`), text `citations` of type
`web_search_result_location` (`url`, `title`, `encrypted_index`, `cited_text`), and
`usage.server_tool_use.web_search_requests`.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.search.base import SearchOutcome, SearchResult, UserLocation
from gateway.search.domains import BadDomain, parse_rules
from gateway.search.tokens import make_token
from providers.sse import encode_event

TOOL_NAME = "web_search"
# web_search_20250305, web_search_20260209, web_search_20260318 and later dated versions.
_SERVER_TOOL_TYPE = re.compile(r"web_search_\d{8}")
CITED_TEXT_CHARS = 150  # Anthropic's cited_text is at most this long

FUNCTION_DESCRIPTION = (
    "Search the web. Use it for current information: recent events, news, prices, releases, "
    "documentation that may have changed, or anything after your training data or that you are unsure of. "
    "Write a focused search query. Each result is numbered with its URL and title; cite the results you "
    "use as markdown links to their URLs, e.g. [example.com](https://example.com/page).")

WEB_SEARCH_FUNCTION: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": FUNCTION_DESCRIPTION,
    "input_schema": {"type": "object",
                     "properties": {"query": {"type": "string", "description": "The search query"}},
                     "required": ["query"]},
}


@dataclass(frozen=True)
class WebSearchTool:
    """A request's `web_search_*` server tool, read and checked."""
    type: str
    max_uses: int | None = None
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    user_location: UserLocation | None = None
    index: int = 0  # its position in `tools`


def is_server_web_search(tool: object) -> bool:
    return isinstance(tool, Mapping) and isinstance(tool.get("type"), str) \
        and _SERVER_TOOL_TYPE.fullmatch(tool["type"]) is not None


def find_web_search_tool(tools: object) -> WebSearchTool | None:
    """The request's web search server tool, or None. Raises InvalidRequest (naming the member)
    for one the gateway could not honour as Anthropic would not: bad `max_uses`, both domain
    lists, a malformed domain or location."""
    if not isinstance(tools, list):
        return None
    found = None
    for i, tool in enumerate(tools):
        if not is_server_web_search(tool):
            continue
        where = f"tools[{i}]"
        if found is not None:
            raise InvalidRequest(f"{where}: only one web search tool may be given")
        if tool.get("name", TOOL_NAME) != TOOL_NAME:
            raise InvalidRequest(f"{where}.name: must be {TOOL_NAME!r}")
        max_uses = tool.get("max_uses")
        if max_uses is not None and (isinstance(max_uses, bool) or not isinstance(max_uses, int) or max_uses < 1):
            raise InvalidRequest(f"{where}.max_uses: must be a positive integer")
        allowed, blocked = tool.get("allowed_domains"), tool.get("blocked_domains")
        if allowed and blocked:
            raise InvalidRequest(f"{where}: allowed_domains and blocked_domains cannot be used together")
        found = WebSearchTool(type=tool["type"], max_uses=max_uses,
                              allowed_domains=domain_list(allowed, f"{where}.allowed_domains"),
                              blocked_domains=domain_list(blocked, f"{where}.blocked_domains"),
                              user_location=_location(tool.get("user_location"), f"{where}.user_location"),
                              index=i)
    return found


def domain_list(value: object, where: str) -> tuple[str, ...]:
    """A client's list of domain rules (None: no list), checked: `InvalidRequest` naming `where` when
    it is not one."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}: must be a list of domains")
    try:
        parse_rules(value)
    except BadDomain as exc:
        raise InvalidRequest(f"{where}: {exc}") from None
    return tuple(value)


def _location(value: object, where: str) -> UserLocation | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or value.get("type", "approximate") != "approximate":
        raise InvalidRequest(f"{where}: must be an object of type approximate")
    fields = {}
    for name in ("city", "region", "country", "timezone"):
        item = value.get(name)
        if item is not None and not isinstance(item, str):
            raise InvalidRequest(f"{where}.{name}: must be a string")
        fields[name] = item
    return UserLocation(**fields)


def with_function_tool(body: Mapping[str, Any], tool: WebSearchTool | None = None) -> dict[str, Any]:
    """The request for a model without Anthropic's server tool: the server tool replaced by the
    `web_search` function (or the function added, for a request that had none)."""
    tools = [t for t in body.get("tools") or [] if not is_server_web_search(t)]
    if any(isinstance(t, Mapping) and t.get("name") == TOOL_NAME for t in tools):
        raise InvalidRequest(f"tools: a tool named {TOOL_NAME!r} is already defined; the gateway's web search "
                             f"uses that name")
    position = tool.index if tool is not None else len(tools)
    tools.insert(min(position, len(tools)), dict(WEB_SEARCH_FUNCTION))
    return {**body, "tools": tools}


def searches_used_up(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request once searches are used up. The function stays defined (the history holds calls
    of it, which some upstreams refuse for an undefined tool); with no other tool to call, the
    model is told to call none, so it answers with what it has. With the client's tools present a
    further search gets the `max_uses_exceeded` error instead."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    if all(t.get("name") == TOOL_NAME for t in tools):
        return {**body, "tool_choice": {"type": "none"}}
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("name") == TOOL_NAME:
        return {**body, "tool_choice": {"type": "auto"}}
    return dict(body)


# -- blocks -----------------------------------------------------------------------------------
# Ids of the searches the gateway ran: Anthropic's own start `srvtoolu_01`.
GATEWAY_ID_PREFIX = "srvtoolu_gw"


def new_server_tool_id(token: Callable[[int], str] = secrets.token_hex) -> str:
    return GATEWAY_ID_PREFIX + token(12)


def server_tool_use(tool_use_id: str, query: str) -> dict[str, Any]:
    return {"type": "server_tool_use", "id": tool_use_id, "name": TOOL_NAME, "input": {"query": query}}


def result_payload(result: SearchResult) -> dict[str, Any]:
    payload: dict[str, Any] = {"u": result.url, "t": result.title, "s": result.snippet}
    if result.page_age:
        payload["a"] = result.page_age
    return payload


def web_search_tool_result(tool_use_id: str, outcome: SearchOutcome, secret: bytes) -> dict[str, Any]:
    if outcome.error is not None:
        return tool_result_error(tool_use_id, outcome.error)
    return {"type": "web_search_tool_result", "tool_use_id": tool_use_id,
            "content": [{"type": "web_search_result", "url": r.url, "title": r.title, "page_age": r.page_age,
                         "encrypted_content": make_token(secret, result_payload(r))} for r in outcome.results]}


def tool_result_error(tool_use_id: str, error_code: str) -> dict[str, Any]:
    return {"type": "web_search_tool_result", "tool_use_id": tool_use_id,
            "content": {"type": "web_search_tool_result_error", "error_code": error_code}}


def results_text(outcome: SearchOutcome) -> str:
    """What a non-Anthropic model reads as the function's result: numbered results, or the error."""
    if outcome.error is not None:
        # No "Error:" prefix: the tool result carries is_error, which translators render as one.
        return (f"{outcome.error}: the search did not run"
                + ("; no more searches are allowed in this request, answer with what you have."
                   if outcome.error == "max_uses_exceeded" else "."))
    if not outcome.results:
        return f"No results for {outcome.query!r}."
    lines = []
    for i, r in enumerate(outcome.results, 1):
        age = f" ({r.page_age})" if r.page_age else ""
        lines.append(f"[{i}] {r.title}{age}\nURL: {r.url}\n{r.snippet}".rstrip())
    return "\n\n".join(lines)


# -- citations --------------------------------------------------------------------------------
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]{1,300})\]\((https?://[^\s)]{1,2000})\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def _canonical(url: str) -> str:
    return url.rstrip("/").split("#", 1)[0].lower()


def _sentence_around(text: str, start: int, end: int) -> str:
    """The sentence holding text[start:end], links reduced to their labels, at most 150 chars."""
    left = 0
    for m in _SENTENCE_END.finditer(text, 0, start):
        left = m.end()
    right_match = _SENTENCE_END.search(text, end)
    right = right_match.start() if right_match else len(text)
    sentence = _MARKDOWN_LINK.sub(lambda m: m.group(1), text[left:right]).strip()
    return sentence[:CITED_TEXT_CHARS]


def citations_from_links(text: str, results: Sequence[SearchResult], secret: bytes) -> list[dict[str, Any]]:
    """`web_search_result_location` citations for the markdown links of `text` that point at
    search results (each result cited once per text, in order of first mention)."""
    by_url = {}
    for index, result in enumerate(results):
        by_url.setdefault(_canonical(result.url), (index, result))
    citations, seen = [], set()
    for m in _MARKDOWN_LINK.finditer(text):
        hit = by_url.get(_canonical(m.group(2)))
        if hit is None or hit[0] in seen:
            continue
        seen.add(hit[0])
        index, result = hit
        cited = _sentence_around(text, m.start(), m.end())
        citations.append({"type": "web_search_result_location", "url": result.url, "title": result.title,
                          "encrypted_index": make_token(secret, {"u": result.url, "t": result.title, "c": cited}),
                          "cited_text": cited})
    return citations


def cite_text_blocks(content: Sequence[Mapping[str, Any]], results: Sequence[SearchResult],
                     secret: bytes) -> list[dict[str, Any]]:
    """The content with citations attached to the text blocks that link to results."""
    out = []
    for block in content:
        block = dict(block)
        if block.get("type") == "text" and results:
            citations = citations_from_links(str(block.get("text") or ""), results, secret)
            if citations:
                block["citations"] = [*(block.get("citations") or []), *citations]
        out.append(block)
    return out


# -- usage ------------------------------------------------------------------------------------
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def sum_usage(rounds: Sequence[Mapping[str, Any]], web_search_requests: int) -> dict[str, Any]:
    """Anthropic's usage over every upstream round of one answer, with the searches run."""
    total: dict[str, Any] = {name: 0 for name in _TOKEN_FIELDS}
    for usage in rounds:
        for name in _TOKEN_FIELDS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] += value
    total["server_tool_use"] = {"web_search_requests": web_search_requests, "web_fetch_requests": 0}
    return total


def search_cost(web_search_requests: int, price_per_search: float) -> float:
    return web_search_requests * price_per_search


# -- SSE --------------------------------------------------------------------------------------
def block_events(index: int, block: Mapping[str, Any]) -> list[bytes]:
    """The content_block events of one whole block, as Anthropic streams it: a server_tool_use
    starts with an empty input that one input_json_delta fills; a web_search_tool_result comes
    whole in its start; a text block's citations arrive as citations_delta before its text."""
    kind = block.get("type")
    events = []
    if kind == "server_tool_use":
        start = {**block, "input": {}}
        events.append(encode_event("content_block_start", {"type": "content_block_start", "index": index,
                                                           "content_block": start}))
        events.append(encode_event("content_block_delta", {
            "type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()}}))
    elif kind == "text":
        citations = block.get("citations") or []
        start = {"type": "text", "text": ""}
        if citations:
            start["citations"] = []
        events.append(encode_event("content_block_start", {"type": "content_block_start", "index": index,
                                                           "content_block": start}))
        for citation in citations:
            events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                               "delta": {"type": "citations_delta",
                                                                         "citation": citation}}))
        if block.get("text"):
            events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                               "delta": {"type": "text_delta",
                                                                         "text": block["text"]}}))
    elif kind == "tool_use":
        events.append(encode_event("content_block_start", {"type": "content_block_start", "index": index,
                                                           "content_block": {**block, "input": {}}}))
        events.append(encode_event("content_block_delta", {
            "type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()}}))
    elif kind == "thinking":
        events.append(encode_event("content_block_start", {"type": "content_block_start", "index": index,
                                                           "content_block": {"type": "thinking", "thinking": "",
                                                                             "signature": ""}}))
        if block.get("thinking"):
            events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                               "delta": {"type": "thinking_delta",
                                                                         "thinking": block["thinking"]}}))
        if block.get("signature"):
            events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                               "delta": {"type": "signature_delta",
                                                                         "signature": block["signature"]}}))
    else:  # web_search_tool_result and anything else: whole in its start
        events.append(encode_event("content_block_start", {"type": "content_block_start", "index": index,
                                                           "content_block": dict(block)}))
    events.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def message_events(message: Mapping[str, Any]) -> list[bytes]:
    """A whole assembled message as Anthropic's event sequence (message_start, each block, message_delta
    with the stop reason and usage, message_stop)."""
    events = [message_start_event(message)]
    for index, block in enumerate(message.get("content") or []):
        events.extend(block_events(index, block))
    events.extend(message_end_events(message))
    return events


def message_start_event(message: Mapping[str, Any]) -> bytes:
    """The message_start of `message` (its content and stop reason come later)."""
    usage = dict(message.get("usage") or {})
    start = {**{k: v for k, v in message.items() if k != "content"}, "content": [], "stop_reason": None,
             "stop_sequence": None, "usage": {**usage, "output_tokens": 0}}
    return encode_event("message_start", {"type": "message_start", "message": start})


def message_end_events(message: Mapping[str, Any]) -> list[bytes]:
    """message_delta with the stop reason and the whole usage, and message_stop."""
    return [encode_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": message.get("stop_reason"),
                                                     "stop_sequence": message.get("stop_sequence")},
                                           "usage": dict(message.get("usage") or {})}),
            encode_event("message_stop", {"type": "message_stop"})]
