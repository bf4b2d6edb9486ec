"""Driving the pure search machinery with I/O: the loop's rounds through a model-calling function
the executor supplies, the searches of one round run together, and the web plugin's single search.

`call_model(body) -> message` sends one Anthropic-format request to the chosen upstream and returns
its answer as an Anthropic message (the protocol's translators do that already); everything about
retries, fallbacks and the first byte stays the executor's.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.search.base import SearchOutcome
from gateway.search.loop import SearchLoop
from gateway.search.plugins import WebPlugin, cite_answer, search_query, with_results
from gateway.search.service import Searcher

CallModel = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]


async def run_loop(loop: SearchLoop, searcher: Searcher, call_model: CallModel,
                   searched: Callable[[SearchLoop], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Run the loop to its end; the client's answer (Anthropic message, usage summed).
    `searched` is called after each round's searches (a stream sends their blocks then)."""
    while True:
        answer = await call_model(loop.next_request())
        calls = loop.on_answer(answer)
        if calls is None:
            break
        outcomes = await asyncio.gather(*(searcher.run(loop.search_query(c)) if c.runs else _refused(c)
                                          for c in calls))
        loop.on_results(outcomes)
        if searched is not None:
            await searched(loop)
        if loop.done:
            break
    return loop.answer()


async def _refused(call) -> SearchOutcome:
    return call.refused()


async def web_plugin_request(body: Mapping[str, Any], plugin: WebPlugin, searcher: Searcher, *,
                             today: _dt.date) -> tuple[dict[str, Any], SearchOutcome]:
    """The request with the plugin's results in its system prompt, and the search's outcome (for
    `plugins.cite_answer` once the model has answered). No user text: no search, nothing added."""
    query = search_query(body, plugin)
    if query is None:
        return dict(body), SearchOutcome(query="", error="invalid_tool_input")
    outcome = await searcher.run(query)
    return with_results(body, outcome, plugin, today=today), outcome


async def run_web_plugin(body: Mapping[str, Any], plugin: WebPlugin, searcher: Searcher, call_model: CallModel, *,
                         today: _dt.date, secret: bytes) -> dict[str, Any]:
    request, outcome = await web_plugin_request(body, plugin, searcher, today=today)
    return cite_answer(await call_model(request), outcome, secret)
