"""The search loop as a state machine without I/O: model asks → gateway searches → the results go
back as tool results → the model continues, until it answers without asking.

The executor drives it:

    loop = SearchLoop(body, tool=tool, max_uses=settings.max_uses, secret=secret)
    while True:
        answer = <the upstream's answer (an Anthropic message) to loop.next_request()>
        calls = loop.on_answer(answer)
        if calls is None:
            break
        loop.on_results([await searcher.run(loop.search_query(c)) if c.runs else c.refused()
                         for c in calls])
        if loop.done:
            break
    message = loop.answer()          # or blocks.message_events(loop.answer()) for a stream

`max_uses` (the lower of the request's and the settings') caps the searches run; a call past it
gets a `max_uses_exceeded` error block, and the next request tells the model to answer (a model
that keeps asking is stopped after `max_uses + 2` rounds). An
answer that also calls the client's own tools ends the loop there (`stop_reason: tool_use`): the
client runs its tools, and the next turn carries the search blocks back in its history.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.search import blocks, history
from gateway.search.base import INVALID_INPUT, MAX_USES_EXCEEDED, SearchOutcome, SearchQuery, SearchResult
from gateway.search.blocks import TOOL_NAME, WebSearchTool


@dataclass(frozen=True)
class SearchCall:
    """One search the model asked for: `model_id` is its tool_use id upstream, `server_id` the
    `srvtoolu_` id the client sees. `error` is set when the loop refuses it without searching."""
    model_id: str
    server_id: str
    query: str
    error: str | None = None

    @property
    def runs(self) -> bool:
        return self.error is None

    def refused(self) -> SearchOutcome:
        return SearchOutcome(query=self.query, error=self.error)


class SearchLoop:
    def __init__(self, body: Mapping[str, Any], *, tool: WebSearchTool | None, max_uses: int, secret: bytes,
                 max_results: int = 5, new_id: Callable[[], str] = blocks.new_server_tool_id) -> None:
        self.tool = tool
        self.max_uses = min(max_uses, tool.max_uses) if tool is not None and tool.max_uses else max_uses
        self.max_results = max_results
        self.secret = secret
        self._new_id = new_id
        self._base = blocks.with_function_tool(body, tool)
        self.messages: list[Any] = history.for_other_upstream(list(body.get("messages") or []), secret)
        self.used = 0                  # searches run (or tried) against max_uses
        self.web_search_requests = 0   # searches that produced results: what usage reports
        self.rounds = 0
        self.done = False
        self._max_rounds = self.max_uses + 2
        self._client_content: list[dict[str, Any]] = []
        self._usages: list[Mapping[str, Any]] = []
        self._results: list[SearchResult] = []
        self._pending: tuple[Mapping[str, Any], list[SearchCall]] | None = None
        self._last: Mapping[str, Any] | None = None
        self._meta: Mapping[str, Any] = {}
        self._stop_reason: str | None = None

    # -- driving --------------------------------------------------------------------------------
    def next_request(self) -> dict[str, Any]:
        """The body of the next upstream round (Anthropic format, for the protocol's translator)."""
        body = {**self._base, "messages": list(self.messages)}
        choice = body.get("tool_choice")
        if self.rounds and isinstance(choice, Mapping) and choice.get("type") == "tool" \
                and choice.get("name") == TOOL_NAME:
            # A search forced on the first round only: forced on every round, the model could never answer.
            body["tool_choice"] = {**choice, "type": "auto"}
            body["tool_choice"].pop("name", None)
        if self.used >= self.max_uses:
            body = blocks.searches_used_up(body)
        return body

    def on_answer(self, message: Mapping[str, Any]) -> list[SearchCall] | None:
        """Take one round's answer: the searches it asks for, or None when it is the final answer."""
        if self.done or self._pending is not None:
            raise RuntimeError("the loop is not waiting for an answer")
        self.rounds += 1
        self._usages.append(message.get("usage") or {})
        self._last = self._meta = message
        content = [b for b in message.get("content") or [] if isinstance(b, Mapping)]
        asks = [b for b in content if b.get("type") == "tool_use" and b.get("name") == TOOL_NAME]
        if not asks:
            self.done = True
            return None
        calls = []
        for block in asks:
            query = (block.get("input") or {}).get("query") if isinstance(block.get("input"), Mapping) else None
            error = None
            if not isinstance(query, str) or not query.strip():
                error, query = INVALID_INPUT, str(query or "")
            elif self.used >= self.max_uses or self.rounds > self._max_rounds:
                error = MAX_USES_EXCEEDED
            else:
                self.used += 1
            calls.append(SearchCall(model_id=str(block.get("id")), server_id=self._new_id(), query=query,
                                    error=error))
        self._pending = (message, calls)
        return calls

    def search_query(self, call: SearchCall) -> SearchQuery:
        tool = self.tool
        return SearchQuery(query=call.query, max_results=self.max_results,
                           allowed_domains=tool.allowed_domains if tool else (),
                           blocked_domains=tool.blocked_domains if tool else (),
                           user_location=tool.user_location if tool else None)

    def on_results(self, outcomes: Sequence[SearchOutcome]) -> None:
        """The outcomes of the calls `on_answer` returned, in the same order."""
        if self._pending is None:
            raise RuntimeError("no searches are pending")
        message, calls = self._pending
        if len(outcomes) != len(calls):
            raise ValueError(f"{len(calls)} searches were asked for, {len(outcomes)} outcomes given")
        self._pending = None
        by_model_id = {c.model_id: (c, o) for c, o in zip(calls, outcomes)}
        client_tools = False
        for block in message.get("content") or []:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "tool_use" and block.get("name") == TOOL_NAME:
                call, outcome = by_model_id[str(block.get("id"))]
                self._client_content.append(blocks.server_tool_use(call.server_id, call.query))
                self._client_content.append(blocks.web_search_tool_result(call.server_id, outcome, self.secret))
                if outcome.ok:
                    self.web_search_requests += 1
                    self._results.extend(outcome.results)
            else:
                client_tools = client_tools or block.get("type") == "tool_use"
                self._client_content.append(dict(block))
        self.messages.append({"role": "assistant", "content": [dict(b) for b in message.get("content") or []]})
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": c.model_id, "content": blocks.results_text(o),
             **({"is_error": True} if not o.ok else {})} for c, o in zip(calls, outcomes)]})
        if self.rounds > self._max_rounds:
            self.done = True  # a model that keeps asking past its uses: what it said so far is the answer
            self._last = None
        if client_tools:
            self.done = True
            self._stop_reason = "tool_use"
            self._last = None  # its content is already in the client's

    # -- the answer -----------------------------------------------------------------------------
    def blocks_so_far(self) -> list[dict[str, Any]]:
        """The client's blocks of the rounds done (the searches and what came with them), cited
        with the results so far: what a stream can send before the loop ends. `answer()` begins
        with the same blocks."""
        return blocks.cite_text_blocks(self._client_content, self._results, self.secret)

    def answer(self) -> dict[str, Any]:
        """The client's message: every round's blocks in order (searches as server_tool_use and
        web_search_tool_result), links to results cited, usage summed over the rounds."""
        if not self.done:
            raise RuntimeError("the loop has not finished")
        last = self._last or {}
        content = self._client_content + [dict(b) for b in last.get("content") or [] if isinstance(b, Mapping)]
        content = blocks.cite_text_blocks(content, self._results, self.secret)
        meta = self._meta
        return {"id": meta.get("id"), "type": "message", "role": "assistant", "model": meta.get("model"),
                "content": content,
                "stop_reason": self._stop_reason or last.get("stop_reason") or "end_turn",
                "stop_sequence": last.get("stop_sequence"),
                "usage": blocks.sum_usage(self._usages, self.web_search_requests)}
