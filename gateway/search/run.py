"""Web search and plugins on the request path of `POST /v1/messages`.

`WebSearch.prepare` reads what a request asks of this package (nothing, for nearly every request:
a scan of its bytes) and `Job.serve` answers it in place of the executor's own `run`:

- a `web_search_*` server tool on a plan whose every endpoint runs it itself (catalog option
  `web_search: native`, Anthropic's own API) goes to the executor untouched;
- on any other plan the gateway runs the search loop (`loop.SearchLoop`): each round is one
  ordinary JSON request through the executor over the same plan (its retries and fallbacks
  included), the searches between rounds go to the team's backend, and the client gets the
  assembled message, as JSON or as Anthropic's event sequence;
- the `web` plugin (or `:online`) searches once before the model is called, and
  `response-healing` repairs the JSON answer of a request for structured output.

Usage is summed over the rounds, and each search the client sees in
`usage.server_tool_use.web_search_requests` costs the team's `price_per_search`, in `usage.cost`,
the usage record and so the budgets.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway import errors
from gateway.admission import DEFAULT_CEILINGS, worst_case
from gateway.exchange import Exchange
from gateway.request import MessagesRequest
from gateway.search import history
from gateway.search.base import SearchOutcome
from gateway.search.blocks import (block_events, cite_text_blocks, message_end_events, message_events,
                                   message_start_event)
from gateway.search.cache import StoreCache
from gateway.search.healing import heal_message, wants_json
from gateway.search.intent import SearchIntent, might_search, read_intent
from gateway.search.loop import SearchLoop
from gateway.search.plugins import search_query, with_results
from gateway.search.runner import run_loop
from gateway.search.service import Searcher, SearchService
from gateway.search.settings import SearchSettings, merge_search
from gateway.search.tokens import PREFIX as TOKEN_PREFIX
from gateway.settings import Settings
from gateway.store.base import Store
from gateway.upstream import Client
from policies.limits import InputCeilings, reservation_usd
from policies.plan import Plan
from providers.base import ROUTER_FIELDS, Usage

if TYPE_CHECKING:
    from gateway.execute import Executor, Send

_GATEWAY_MADE = (b"srvtoolu_gw", TOKEN_PREFIX.encode())
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class WebSearch:
    """The gateway's searches: one service (a backend per distinct team configuration, the store's
    cache shared by replicas) and each team's settings, merged once per config."""

    def __init__(self, client: Client, store: Store, *, ceilings: InputCeilings = DEFAULT_CEILINGS) -> None:
        self.service = SearchService(SearchSettings(), client, StoreCache(store))
        self.ceilings = ceilings  # the reservation's, for each round's worst case
        self._settings: Settings | None = None
        self._teams: dict[str, SearchSettings] = {}
        self._base = SearchSettings()

    def settings_for(self, settings: Settings, team: str) -> SearchSettings:
        if settings is not self._settings:  # a reload swapped the config: merge the teams' again
            self._base = settings.search or SearchSettings()
            self._teams = {t.name: merge_search(self._base, t.search) for t in settings.teams if t.search}
            self._settings = settings
        return self._teams.get(team, self._base)

    def prepare(self, request: MessagesRequest, team: str, settings: Settings) -> Job | None:
        """What the request asks of web search and plugins, checked (InvalidRequest naming the
        member); None when it asks nothing and the executor serves it as it is."""
        raw = request.raw
        shape = request.shape
        if not might_search(raw, request.model, request.values or (), None if shape is None else shape.kinds):
            return None
        if shape is None:  # what follows reads the content itself
            raise errors.InvalidRequest(request.shape_problem or "request body is not of the Messages API's shape")
        body = request.body
        intent = read_intent(body, request.model)
        healing = intent.healing and not request.stream and wants_json(body)
        gateway_history = any(marker in raw for marker in _GATEWAY_MADE)
        if not (intent.searches or healing or gateway_history):
            return None
        search = self.settings_for(settings, team)
        searcher = self.service.searcher(team, search) if intent.searches else None
        if intent.web is not None:
            where = "the :online model suffix" if "web" not in _plugin_ids(body) else "plugins: web"
            if searcher is None:
                raise errors.InvalidRequest(f"{where}: web search is not configured for team {team!r} "
                                            f"(search: in the gateway's config)")
            engine = intent.web.engine
            if engine not in (None, "native", search.resolved_backend):
                raise errors.InvalidRequest(f"plugins: web: engine {engine!r} is not available here; this "
                                            f"gateway searches with {search.resolved_backend!r}")
        return Job(request=request, intent=intent, settings=search, searcher=searcher, healing=healing,
                   gateway_history=gateway_history, ceilings=self.ceilings)


def _plugin_ids(body: Mapping[str, Any]) -> set[str]:
    plugins = body.get("plugins")
    return {p.get("id") for p in plugins if isinstance(p, Mapping)} if isinstance(plugins, list) else set()


@dataclass
class Job:
    """One request's search work, and what its rounds used."""
    request: MessagesRequest
    intent: SearchIntent
    settings: SearchSettings
    searcher: Searcher | None
    healing: bool
    gateway_history: bool
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    searches: int = 0
    dropped: list[str] = field(default_factory=list)
    ceilings: InputCeilings = DEFAULT_CEILINGS
    _started: bool = False  # the stream's head went out (after the first searches)
    _sent: int = 0          # content blocks streamed so far

    @property
    def model(self) -> str:
        """The model to plan for (`:online` removed)."""
        return self.intent.model

    def reservation_usd(self, plan: Plan) -> float:
        """What the searches this request may run can cost at most, the gateway's or an upstream's
        own at the dearest price the plan may pay, and the web plugin's results as input (the
        server tool's are in the body's census): added to the budget reservation."""
        searches = self.intent.max_searches(self.settings) * self._search_price(plan)
        if self.intent.web is None:
            return searches
        results = reservation_usd(self.ceilings.server_tool_use, 0, [a.endpoint.pricing for a in plan.attempts])
        return searches + results

    def _search_price(self, plan: Plan) -> float:
        prices = [a.endpoint.pricing.web_search for a in plan.attempts]
        if self.searcher is not None:
            prices.append(self.settings.price_per_search)
        return max(prices, default=0.0)

    def _check_round_budget(self, ex: Exchange, plan: Plan, request: MessagesRequest) -> None:
        """A round after the first (whose worst case admission reserved) is sent only while its
        worst case fits in what is left of the reservation, beside the searches not run yet: the
        rounds of one request never spend past its budget. Otherwise the request ends with the
        budget's refusal (an error event once the stream began); what the rounds used is recorded."""
        allowance = ex.allowance_usd
        if allowance is None:
            return
        spent = self.cost_usd + self.searches * self.settings.price_per_search
        searches_left = max(0, self.intent.max_searches(self.settings) - self.searches) * self._search_price(plan)
        worst = worst_case(request, plan, self.ceilings)
        if spent + searches_left + worst <= allowance:
            return
        ex.limited_by = "budget"
        team = ex.principal.team if ex.principal else ""
        raise errors.RateLimited(
            f"the budget of this key (team {team!r}) is reached: the next round of this request's search "
            f"may cost {worst:.6f} USD, more than the {max(0.0, allowance - spent - searches_left):.6f} USD left "
            f"of the {allowance:.6f} USD reserved for it", headers=dict(errors.NO_RETRY))

    async def serve(self, executor: Executor, ex: Exchange, plan: Plan, send: Send) -> None:
        """Answer the request (in place of `executor.run`); raises the final error when no round is
        answered. What every round used reaches the Exchange, also when a later round fails."""
        # Upstreams that run Anthropic's tool themselves say so in their catalog options.
        native = all(a.endpoint.options.web_search == "native" for a in plan.attempts)
        loops = self.intent.tool is not None and self.searcher is not None and not native
        body = self.request.body
        if self.gateway_history and not loops:
            # Anthropic must not get the gateway's blocks as its own; text reads the same to any model.
            body = {**body, "messages": history.for_anthropic(body.get("messages") or [], self.settings.secret())}
        if not (loops or self.intent.web is not None or self.healing):
            if body is not self.request.body:
                ex.request = round_request(self.request, body, stream=self.request.stream)
                ex.client = None  # no longer the client's own request: never passed through
            await executor.run(ex, plan, send)
            return
        total = executor.timeouts.total
        try:
            # The request's deadline bounds all of its rounds and searches, not each round alone.
            async with asyncio.timeout(total):
                answer = await self._answer(executor, ex, plan, body, loops, send)
        except TimeoutError:
            raise errors.UpstreamTimeout(f"the request took longer than its deadline of {total:g} s") from None
        finally:
            # The upstreams' own searches are priced in their rounds' cost already, the gateway's here.
            ex.usage = dataclasses.replace(self.usage,
                                           web_search_requests=self.usage.web_search_requests + self.searches)
            ex.cost_usd = self.cost_usd + self.searches * self.settings.price_per_search
        answer["usage"] = {**answer.get("usage", {}), "cost": ex.cost_usd}
        if self.healing:
            answer, _ = heal_message(answer)
        await self._send(ex, answer, send)

    async def _answer(self, executor: Executor, ex: Exchange, plan: Plan, body: dict[str, Any],
                      loops: bool, send: Send) -> dict[str, Any]:
        secret = self.settings.secret()
        web = self.intent.web
        found: SearchOutcome | None = None
        if web is not None:
            query = search_query(body, web)
            if query is not None:
                found = await self.searcher.run(query)
                body = with_results(body, found, web, today=_dt.datetime.now(_dt.timezone.utc).date())
                self.searches += 1 if found.ok else 0

        first: dict[str, Any] = {}

        async def call_model(round_body: dict[str, Any]) -> dict[str, Any]:
            message = await self._round(executor, ex, plan, round_body, later=bool(first))
            if not first:
                first.update(message)
            return message

        async def searched(loop: SearchLoop) -> None:
            # A stream begins once the first round has asked for searches: each round's blocks then
            # go out as they are made, and a later failure ends the stream with an error event.
            events = []
            if not self._started:
                await send(self._head(ex, stream=True))
                ex.first_byte_at = ex.first_token_at = time.perf_counter()
                self._started = True
                events.append(message_start_event(_opening(first)))
            events.extend(self._block_events(loop.blocks_so_far()))
            await send({"type": "http.response.body", "body": b"".join(events), "more_body": True})

        if loops:
            loop = SearchLoop(body, tool=self.intent.tool, max_uses=self.settings.max_uses, secret=secret,
                              max_results=self.settings.max_results)
            try:
                answer = await run_loop(loop, self.searcher, call_model,
                                        searched if self.request.stream else None)
            finally:
                self.searches += loop.web_search_requests
        else:
            answer = await call_model(body)
        answer["provider"] = ex.served_by.provider.name if ex.served_by is not None else None
        if found is not None and found.ok and found.results:
            answer["content"] = cite_text_blocks(answer.get("content") or [], found.results, secret)
        if self.intent.searches:
            usage = dict(answer.get("usage") or {})
            server = dict(usage.get("server_tool_use") or {})
            # Anthropic's own searches (the tool passed through) are in its answer already.
            server["web_search_requests"] = self.searches + (0 if loops else server.get("web_search_requests", 0))
            server.setdefault("web_fetch_requests", 0)
            answer["usage"] = {**usage, "server_tool_use": server}
        return answer

    async def _round(self, executor: Executor, ex: Exchange, plan: Plan, body: dict[str, Any], *,
                     later: bool) -> dict[str, Any]:
        """One upstream round as an ordinary JSON request through the executor, its answer kept;
        `later`: not the first round, so checked against the budget first."""
        request = round_request(self.request, body, stream=False)
        if later:
            self._check_round_budget(ex, plan, request)
        one = Exchange(ex.request_id, ex.headers, ex.query, principal=ex.principal, request=request)
        captured = _Captured()
        try:
            await executor.run(one, plan, captured.send)
        finally:
            ex.attempts.extend(one.attempts)
            if one.usage is not None:
                _add(self.usage, one.usage)
            self.cost_usd += one.cost_usd
            if one.served_by is not None:
                ex.served_by = one.served_by
        for name in captured.dropped:
            if name not in self.dropped:
                self.dropped.append(name)
        return orjson.loads(captured.body)

    def _block_events(self, content: list[dict[str, Any]]) -> list[bytes]:
        """The events of the blocks of `content` not yet streamed."""
        events = []
        for index in range(self._sent, len(content)):
            events.extend(block_events(index, content[index]))
        self._sent = max(self._sent, len(content))
        return events

    def _head(self, ex: Exchange, *, stream: bool, length: int | None = None) -> dict:
        provider = ex.served_by.provider.name if ex.served_by is not None else ""
        headers = list(_SSE_HEADERS if stream else _JSON_HEADERS)
        headers += [(b"request-id", ex.request_id.encode()), (b"x-gateway-provider", provider.encode()),
                    (b"x-gateway-attempts", ex.attempts_header())]
        if self.dropped:
            headers.append((b"x-gateway-dropped-params", ",".join(self.dropped).encode()))
        headers.extend(ex.response_headers)
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        return {"type": "http.response.start", "status": 200, "headers": headers}

    async def _send(self, ex: Exchange, answer: dict[str, Any], send: Send) -> None:
        """The answer, whole; or the end of the stream begun after the first searches."""
        if self._started:
            body = b"".join(self._block_events(answer.get("content") or []) + message_end_events(answer))
        elif self.request.stream:
            body = b"".join(message_events(answer))
            await send(self._head(ex, stream=True))
        else:
            body = orjson.dumps(answer)
            await send(self._head(ex, stream=False, length=len(body)))
        ex.status, ex.finished = 200, True
        if ex.first_byte_at is None:
            ex.first_byte_at = ex.first_token_at = time.perf_counter()
        await send({"type": "http.response.body", "body": body})


def _opening(message: dict[str, Any]) -> dict[str, Any]:
    """The first round's answer as the stream's message_start holds it: who answers, and the input
    it counted (the whole usage comes in the message_delta at the end)."""
    usage = message.get("usage") or {}
    return {"id": message.get("id"), "type": "message", "role": "assistant", "model": message.get("model"),
            "provider": message.get("provider"),
            "usage": {name: usage.get(name, 0) for name in ("input_tokens", "cache_creation_input_tokens",
                                                           "cache_read_input_tokens")}}


def round_request(request: MessagesRequest, body: dict[str, Any], *, stream: bool) -> MessagesRequest:
    """The client's request with another body: what the executor sends for one round."""
    clean = {k: v for k, v in body.items() if k not in ROUTER_FIELDS}
    clean["model"] = request.model
    if stream:
        clean["stream"] = True
    else:
        clean.pop("stream", None)
    return MessagesRequest(raw=orjson.dumps(clean), model=request.model, fallbacks=request.fallbacks, stream=stream,
                           max_tokens=request.max_tokens, session_id=request.session_id, user=request.user,
                           trace=request.trace, preferences=request.preferences, router_fields=(), values=None,
                           _body=clean)


class _Captured:
    """The answer a round's executor run would have sent the client."""

    def __init__(self) -> None:
        self.body = b""
        self.dropped: list[str] = []

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            for name, value in message.get("headers", ()):
                if name == b"x-gateway-dropped-params":
                    self.dropped = value.decode().split(",")
        else:
            self.body += message.get("body", b"")


def _add(total: Usage, usage: Usage) -> None:
    total.input_tokens += usage.input_tokens
    total.output_tokens += usage.output_tokens
    total.cache_creation_input_tokens += usage.cache_creation_input_tokens
    total.cache_read_input_tokens += usage.cache_read_input_tokens
    total.cache_creation_1h_input_tokens += usage.cache_creation_1h_input_tokens
    total.web_search_requests += usage.web_search_requests
    total.estimated = total.estimated or usage.estimated
