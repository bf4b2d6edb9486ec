"""Gateway-made web search blocks in a conversation's history, made fit for the next upstream.

A client sends back the `server_tool_use` / `web_search_tool_result` blocks and citations the
gateway made. Anthropic must never receive them as if it had made them (it would refuse tokens it
cannot decrypt, and they are not its own): `for_anthropic` turns each gateway-made search into a
plain text block and drops gateway-made citations, leaving Anthropic's own blocks untouched.
`for_other_upstream` turns every web search in history (Anthropic's too) into the `tool_use` /
`tool_result` pair a function-calling model understands, the results read back from the gateway's
tokens (Anthropic's encrypted content cannot be read: its URL and title remain).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.search.base import SearchOutcome, SearchResult
from gateway.search.blocks import GATEWAY_ID_PREFIX, TOOL_NAME, results_text
from gateway.search.tokens import is_gateway_token, read_token


def _is_gateway_result(block: Mapping[str, Any]) -> bool:
    content = block.get("content")
    if str(block.get("tool_use_id", "")).startswith(GATEWAY_ID_PREFIX):
        return True
    return isinstance(content, list) and any(
        isinstance(item, Mapping) and is_gateway_token(item.get("encrypted_content")) for item in content)


def _outcome(block: Mapping[str, Any] | None, query: str, secret: bytes) -> SearchOutcome:
    if block is None:
        return SearchOutcome(query=query, error="unavailable")
    content = block.get("content")
    if isinstance(content, Mapping):
        return SearchOutcome(query=query, error=str(content.get("error_code") or "unavailable"))
    results = []
    for item in content if isinstance(content, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
            continue
        payload = read_token(secret, item.get("encrypted_content")) or {}
        results.append(SearchResult(url=item["url"], title=str(item.get("title") or payload.get("t") or ""),
                                    snippet=str(payload.get("s") or ""), page_age=item.get("page_age")))
    return SearchOutcome(query=query, results=results)


def _strip_gateway_citations(block: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(block)
    citations = [c for c in block.get("citations") or []
                 if not (isinstance(c, Mapping) and is_gateway_token(c.get("encrypted_index")))]
    if citations:
        out["citations"] = citations
    else:
        out.pop("citations", None)
    return out


def _results_by_id(content: Sequence[Any]) -> dict[str, Mapping[str, Any]]:
    return {b["tool_use_id"]: b for b in content
            if isinstance(b, Mapping) and b.get("type") == "web_search_tool_result" and "tool_use_id" in b}


def for_anthropic(messages: Sequence[Any], secret: bytes) -> list[Any]:
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list) or message.get("role") != "assistant":
            out.append(message)
            continue
        results = _results_by_id(content)
        gateway_ids = {i for i, b in results.items() if _is_gateway_result(b)}
        blocks = []
        for block in content:
            if not isinstance(block, Mapping):
                blocks.append(block)
                continue
            kind = block.get("type")
            if kind == "server_tool_use" and (block.get("id") in gateway_ids
                                              or str(block.get("id", "")).startswith(GATEWAY_ID_PREFIX)):
                query = str((block.get("input") or {}).get("query") or "")
                outcome = _outcome(results.get(block.get("id")), query, secret)
                blocks.append({"type": "text", "text": f"(Web search for {query!r})\n{results_text(outcome)}"})
            elif kind == "web_search_tool_result" and block.get("tool_use_id") in gateway_ids:
                continue
            elif kind == "text" and block.get("citations"):
                blocks.append(_strip_gateway_citations(block))
            else:
                blocks.append(block)
        out.append({**message, "content": blocks})
    return out


def for_other_upstream(messages: Sequence[Any], secret: bytes) -> list[Any]:
    out: list[dict[str, Any]] = []

    def emit(role: str, blocks: list[Any]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            previous = out[-1]["content"]
            out[-1] = {**out[-1], "content": (previous if isinstance(previous, list)
                                              else [{"type": "text", "text": previous}]) + blocks}
        else:
            out.append({"role": role, "content": blocks})

    for message in messages:
        if not isinstance(message, Mapping):
            out.append(message)  # type: ignore[arg-type]
            continue
        content = message.get("content")
        role = message.get("role")
        if isinstance(content, str):
            emit(str(role), [{"type": "text", "text": content}])
            continue
        if not isinstance(content, list):
            out.append(dict(message))
            continue
        if role != "assistant":
            emit(str(role), list(content))
            continue
        results = _results_by_id(content)
        pending: list[Any] = []
        for block in content:
            kind = block.get("type") if isinstance(block, Mapping) else None
            if kind == "server_tool_use" and block.get("name") == TOOL_NAME:
                query = str((block.get("input") or {}).get("query") or "")
                pending.append({"type": "tool_use", "id": block["id"], "name": TOOL_NAME, "input": {"query": query}})
                emit("assistant", pending)
                pending = []
                outcome = _outcome(results.get(block["id"]), query, secret)
                emit("user", [{"type": "tool_result", "tool_use_id": block["id"], "content": results_text(outcome),
                               **({"is_error": True} if not outcome.ok else {})}])
            elif kind == "web_search_tool_result":
                continue
            elif kind == "text" and block.get("citations"):
                pending.append({k: v for k, v in block.items() if k != "citations"})
            else:
                pending.append(block)
        emit("assistant", pending)
    return out
