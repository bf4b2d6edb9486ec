"""The `plugins` request field, with OpenRouter's semantics: `web` and `response-healing`.

`{"id": "web", "max_results", "search_prompt", "engine", "include_domains", "exclude_domains"}`
runs one search on the conversation (its last user message) before the model is called, and adds
the results as a system message with the date and an instruction to cite them as markdown links;
the answer's links to those results come back as text `citations`. The `:online` model suffix is
shorthand for `{"id": "web"}`. `{"id": "response-healing"}` repairs a JSON answer to a request for
structured output (see `healing`). An unknown id is a 400 naming it; `"enabled": false` turns a
plugin off.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest
from gateway.search.base import SearchOutcome, SearchQuery, SearchResult
from gateway.search.blocks import cite_text_blocks, domain_list, sum_usage

WEB = "web"
RESPONSE_HEALING = "response-healing"
KNOWN = (WEB, RESPONSE_HEALING)
# `native` asks for the model vendor's own search; the others name a gateway backend.
ENGINES = ("native", "searxng", "brave", "tavily", "exa")
ONLINE_SUFFIX = ":online"
QUERY_CHARS = 400  # what every backend takes as a query
DEFAULT_MAX_RESULTS = 5

DEFAULT_SEARCH_PROMPT = (
    "A web search was conducted on {date}. Incorporate the following web search results into your response.\n\n"
    "IMPORTANT: Cite them using markdown links named using the domain of the source.\n"
    "Example: [nytimes.com](https://nytimes.com/some-page).")


@dataclass(frozen=True)
class WebPlugin:
    max_results: int = DEFAULT_MAX_RESULTS
    search_prompt: str | None = None
    engine: str | None = None
    include_domains: tuple[str, ...] = ()
    exclude_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plugins:
    web: WebPlugin | None = None
    response_healing: bool = False


def parse_plugins(value: object) -> Plugins:
    """Read and check `plugins`; InvalidRequest names the member at fault."""
    if value is None:
        return Plugins()
    if not isinstance(value, list):
        raise InvalidRequest("plugins: must be an array")
    web, healing = None, False
    for i, item in enumerate(value):
        where = f"plugins[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidRequest(f"{where}: must be an object with an id")
        plugin_id = item.get("id")
        if not isinstance(plugin_id, str):
            raise InvalidRequest(f"{where}.id: must be a string")
        if plugin_id not in KNOWN:
            raise InvalidRequest(f"{where}.id: unknown plugin {plugin_id!r} (this gateway offers: {', '.join(KNOWN)})")
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidRequest(f"{where}.enabled: must be a boolean")
        if plugin_id == WEB:
            parsed = _web(item, where)
            if enabled:
                web = parsed
        else:
            _no_options(item, where)
            healing = healing or enabled
    return Plugins(web=web, response_healing=healing)


def _no_options(item: Mapping[str, Any], where: str) -> None:
    unknown = set(item) - {"id", "enabled"}
    if unknown:
        raise InvalidRequest(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")


def _web(item: Mapping[str, Any], where: str) -> WebPlugin:
    unknown = set(item) - {"id", "enabled", "max_results", "search_prompt", "engine", "include_domains",
                           "exclude_domains"}
    if unknown:
        raise InvalidRequest(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    max_results = item.get("max_results", DEFAULT_MAX_RESULTS)
    if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= 20:
        raise InvalidRequest(f"{where}.max_results: must be an integer from 1 to 20")
    prompt = item.get("search_prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 4000):
        raise InvalidRequest(f"{where}.search_prompt: must be a string of at most 4000 characters")
    engine = item.get("engine")
    if engine is not None and engine not in ENGINES:
        raise InvalidRequest(f"{where}.engine: unknown engine {engine!r} (one of: {', '.join(ENGINES)})")
    domains = {name: domain_list(item.get(name) or [], f"{where}.{name}")
               for name in ("include_domains", "exclude_domains")}
    return WebPlugin(max_results=max_results, search_prompt=prompt, engine=engine, **domains)


def strip_online(model: str) -> tuple[str, WebPlugin | None]:
    """`openai/gpt-5.4:online` → (`openai/gpt-5.4`, the default web plugin); other ids unchanged.
    `:online` combines with the other suffixes in any order (`x:online:floor`, `x:floor:online`)."""
    head, sep, suffixes = model.partition(":")
    if not sep:
        return model, None
    parts = suffixes.split(":")
    kept = [p for p in parts if p.lower() != ONLINE_SUFFIX[1:]]
    if len(kept) == len(parts):
        return model, None
    return ":".join([head, *kept]), WebPlugin()


def merged_web(plugins: Plugins, online: WebPlugin | None) -> WebPlugin | None:
    """The web plugin a request asks for: its own settings win over the `:online` default."""
    return plugins.web or online


# -- the search -------------------------------------------------------------------------------
def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text") or "") for b in content
                         if isinstance(b, Mapping) and b.get("type") == "text")
    return ""


def search_query(body: Mapping[str, Any], plugin: WebPlugin) -> SearchQuery | None:
    """The search the plugin runs: the conversation's last user text (cut at a word boundary to
    what backends take). None when there is no user text to search for."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = " ".join(_text_of(message.get("content")).split())
            if text:
                if len(text) > QUERY_CHARS:
                    text = text[:QUERY_CHARS].rsplit(" ", 1)[0] or text[:QUERY_CHARS]
                return SearchQuery(query=text, max_results=plugin.max_results,
                                   allowed_domains=plugin.include_domains, blocked_domains=plugin.exclude_domains)
            break
    return None


def system_text(results: Sequence[SearchResult], *, today: _dt.date, search_prompt: str | None = None) -> str:
    prompt = (search_prompt or DEFAULT_SEARCH_PROMPT).replace("{date}", today.isoformat())
    lines = [prompt, ""]
    for i, r in enumerate(results, 1):
        age = f" ({r.page_age})" if r.page_age else ""
        lines.append(f"[{i}] {r.title}{age}\nURL: {r.url}\n{r.snippet}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip()


def with_results(body: Mapping[str, Any], outcome: SearchOutcome, plugin: WebPlugin, *,
                 today: _dt.date) -> dict[str, Any]:
    """The request with the results added to its system prompt (after the client's own). A failed
    or empty search adds nothing: the model answers as it would without the plugin."""
    if not outcome.ok or not outcome.results:
        return dict(body)
    text = system_text(outcome.results, today=today, search_prompt=plugin.search_prompt)
    system = body.get("system")
    if system is None or system == "":
        new_system: Any = text
    elif isinstance(system, str):
        new_system = [{"type": "text", "text": system}, {"type": "text", "text": text}]
    else:
        new_system = [*system, {"type": "text", "text": text}]
    return {**body, "system": new_system}


def cite_answer(message: Mapping[str, Any], outcome: SearchOutcome, secret: bytes) -> dict[str, Any]:
    """The answer with its links to the results as `citations`, and the search in its usage."""
    usage = dict(message.get("usage") or {})
    searched = 1 if outcome.ok else 0
    usage["server_tool_use"] = sum_usage([], searched)["server_tool_use"]
    content = cite_text_blocks(message.get("content") or [], outcome.results if outcome.ok else [], secret)
    return {**message, "content": content, "usage": usage}
