"""Admission: the team's and key's limits, checked and reserved in one store round trip.

The reservation is the worst case over the whole plan (the dearest endpoint the `models` list may
reach, a sound upper bound of the input, at the cache-write price when the request caches, all of
`max_tokens` at the output price), so concurrent requests can never spend past a budget; settlement
replaces it by the actual cost. An answer that still costs more (an upstream over-reporting) is cut
at its reservation by the relay when a budget applies (`Exchange.allowance_usd`). When the store is unreachable the configured policy decides: fail-open admits and settles
later (the usage recorder replays), fail-closed answers 529.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from gateway import errors, logs
from gateway.exchange import Exchange
from gateway.request import MessagesRequest
from gateway.store.base import Admission, AdmissionRequest, Invalid, Store, StoreUnavailable
from gateway.usage import Ticket
from policies.limits import (
    ContentCensus,
    InputCeilings,
    census,
    has_unbounded_content,
    input_bound,
    reservation_usd,
)
from policies.plan import Plan

log = logging.getLogger("gateway.admission")
DEFAULT_CEILINGS = InputCeilings()
# Counts a request's input tokens upstream (count_tokens), or None when no upstream can.
Counter = Callable[[Exchange, Plan], Awaitable[int | None]]


def reservation(raw: bytes, max_tokens: int, plan: Plan, *, tools: bool, cache_write: bool,
                found: ContentCensus | None = None, ceilings: InputCeilings = DEFAULT_CEILINGS,
                counted: int | None = None) -> tuple[int, float]:
    """(tokens, USD) to reserve for a request: a sound upper bound of its input (see
    `limits.input_bound`) and all of `max_tokens`, at the dearest prices of the plan (input at the
    cache-write price when `cache_write`)."""
    input_tokens = input_bound(len(raw), tools=tools, found=found, ceilings=ceilings, counted=counted)
    cost = reservation_usd(input_tokens, max_tokens, [a.endpoint.pricing for a in plan.attempts],
                           cache_write=cache_write)
    return input_tokens + max_tokens, cost


def content_of(request: MessagesRequest, ceilings: InputCeilings) -> tuple[ContentCensus | None, bool]:
    """(what the body holds beyond its text, whether it caches). Its byte length bounds a body of
    text; what it may hold beyond (images, documents, content by URL or file id, server tools) is
    found by its typed census (`MessagesRequest.shape`), or for a body of another shape than the
    API's by a walk of its objects when a search of its bytes says it may hold any (None: it holds
    none)."""
    shape = request.shape
    if shape is not None:
        return shape.census(ceilings), shape.caches
    raw = request.raw
    caches = b'"cache_control"' in raw
    if not has_unbounded_content(raw, mcp_servers=request.has_member("mcp_servers")):
        return None, caches
    return census(request.body, ceilings), caches


def worst_case(request: MessagesRequest, plan: Plan, ceilings: InputCeilings = DEFAULT_CEILINGS) -> float:
    """What `request` may cost at most on `plan` (USD), content only the upstream can size taken
    at its ceilings: what a request must have left of its reservation to be sent."""
    found, caches = content_of(request, ceilings)
    return reservation(request.raw, request.max_tokens, plan, tools=request.has_member("tools"),
                       cache_write=caches, found=found, ceilings=ceilings)[1]


@functools.lru_cache(maxsize=256)
def _rfc3339(second: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()


# (limit, remaining, reset) header names of each kind of limit.
_RATELIMIT_NAMES = {kind: tuple(f"anthropic-ratelimit-{kind}-{part}".encode() for part in ("limit", "remaining", "reset"))
                    for kind in ("requests", "tokens")}


def ratelimit_headers(adm: Admission) -> list[tuple[bytes, bytes]]:
    """Anthropic's anthropic-ratelimit-* headers, for the gateway's own limits on this key."""
    headers = []
    for kind, limit, remaining, reset in (("requests", adm.requests_limit, adm.requests_remaining, adm.requests_reset),
                                          ("tokens", adm.tokens_limit, adm.tokens_remaining, adm.tokens_reset)):
        if limit is None:
            continue
        limit_name, remaining_name, reset_name = _RATELIMIT_NAMES[kind]
        headers.append((limit_name, str(limit).encode()))
        headers.append((remaining_name, str(max(remaining or 0, 0)).encode()))
        if reset is not None:
            headers.append((reset_name, _rfc3339(int(reset))))
    return headers


_REFUSALS = {
    "revoked": (errors.AuthenticationFailed, "this API key has been revoked"),
    "expired": (errors.AuthenticationFailed, "this API key has expired"),
    "model_not_allowed": (errors.PermissionDenied, "this key may not use {models}"),
    "rpm": (errors.RateLimited, "request rate limit reached for team {team!r}: {limit} requests per minute"),
    "tpm": (errors.RateLimited, "token rate limit reached for team {team!r}: {limit} tokens per minute"),
    "concurrency": (errors.RateLimited, "too many concurrent requests for team {team!r}"),
    "budget_daily": (errors.RateLimited, "the daily budget of this key (team {team!r}) is spent (or held by "
                                         "requests still running); it renews at 00:00 UTC"),
    "budget_monthly": (errors.RateLimited, "the monthly budget of this key (team {team!r}) is spent (or held by "
                                           "requests still running); it renews on the 1st at 00:00 UTC"),
}
_BUDGET_TOO_SMALL = ("this request's worst case ({cost} USD: all of max_tokens at the output price) exceeds "
                     "the {left} USD left of the {period} budget of this key (team {team!r}); lower max_tokens, "
                     "or wait until the budget renews {renews}")
_RENEWS = {"budget_daily": ("daily", "at 00:00 UTC"), "budget_monthly": ("monthly", "on the 1st at 00:00 UTC")}
# Budget refusals are not cured by a retry within the request's life: `x-should-retry: false` keeps
# SDKs from waiting for hours (the retry-after runs to the next UTC day or month). Revoked, expired
# and disallowed-model refusals say so by their kind (`errors.GatewayError.final`).
_BUDGETS = frozenset({"budget_daily", "budget_monthly"})


def _usd(amount: float) -> str:
    if amount >= 1:
        return f"{amount:.2f}"
    return f"{amount:.6f}".rstrip("0").rstrip(".")


def refusal(adm: Admission, *, team: str, models: str, cost_usd: float) -> errors.GatewayError:
    """The error a refused admission answers with: its kind, a message saying what to change, and
    the headers saying whether and when to retry."""
    kind, template = _REFUSALS.get(adm.reason or "", (errors.RateLimited, "limit reached"))
    limit = adm.tokens_limit if adm.reason == "tpm" else adm.requests_limit
    # Less than a millionth of a dollar left reads as spent: "exceeds the 0 USD left" would puzzle.
    if adm.reason in _RENEWS and adm.budget_left_usd is not None and adm.budget_left_usd >= 5e-7:
        period, renews = _RENEWS[adm.reason]
        message = _BUDGET_TOO_SMALL.format(cost=_usd(cost_usd), left=_usd(adm.budget_left_usd), period=period,
                                           team=team, renews=renews)
    else:
        message = template.format(team=team, models=models, limit=limit)
    headers = {}
    if kind is errors.RateLimited and adm.retry_after is not None:
        headers["retry-after"] = str(max(1, int(adm.retry_after + 0.999)))
    if adm.reason in _BUDGETS or (kind is errors.RateLimited and adm.retry_after is None):
        headers.update(errors.NO_RETRY)
    return kind(message, headers=headers)


RENEW_EVERY_S = 10.0


class Admitter:
    def __init__(self, store: Store, outage_policy: str, *, ceilings: InputCeilings = DEFAULT_CEILINGS,
                 count: Counter | None = None, renew_every: float = RENEW_EVERY_S) -> None:
        self.store = store
        self.renew_every = renew_every
        self.ceilings = ceilings
        self.count = count
        self.fail_open = outage_policy == "fail_open"
        self.open: dict[str, Ticket] = {}  # admitted requests still running, whose leases need renewing
        effect = "admitting without limits (fail_open)" if self.fail_open else "answering 529 (fail_closed)"
        self.outage = logs.RepeatedFailure(log, f"admission: the store is unreachable; {effect}",
                                           expected=(StoreUnavailable,))

    def done(self, ticket: Ticket) -> None:
        self.open.pop(ticket.request_id, None)

    async def renew_forever(self) -> None:
        """Renew the concurrency leases of long requests (leases expire unless renewed: `lease_ttl`)."""
        while True:
            await asyncio.sleep(self.renew_every)
            now = time.time()
            for ticket in list(self.open.values()):
                if ticket.local or now - ticket.admitted_at < self.renew_every:
                    continue
                try:
                    await self.store.renew(ticket.team, ticket.request_id, now)
                except StoreUnavailable:
                    break

    async def reserve(self, ex: Exchange, plan: Plan) -> tuple[int, float]:
        """The reservation of a request (see `worst_case`), with content only the upstream can
        size counted upstream when every endpoint of the plan can count."""
        request = ex.request
        found, caches = content_of(request, self.ceilings)
        counted = None
        if found is not None and found.needs_upstream and self.count is not None \
                and all(a.protocol == "anthropic" for a in plan.attempts):
            counted = await self.count(ex, plan)
        output = ex.output_bound(plan.attempts)
        tokens, cost = reservation(request.raw, output, plan, tools=request.has_member("tools"), cache_write=caches,
                                   found=found, ceilings=self.ceilings, counted=counted)
        ex.input_bound = tokens - output
        return tokens, cost

    async def admit(self, ex: Exchange, plan: Plan, *, rate_only: bool = False, extra_usd: float = 0.0) -> Ticket:
        """`rate_only` (token counting): RPM, key validity and allowed models only; nothing is
        reserved, so the ticket needs no settlement. `extra_usd`: what the request may cost beyond
        its tokens (the web searches it may run), reserved too."""
        principal = ex.principal
        max_tokens, model = ex.request.max_tokens, plan.primary
        if not rate_only and model.max_output is not None and max_tokens > model.max_output:
            raise errors.InvalidRequest(f"max_tokens: {max_tokens} > {model.max_output}, which is the maximum "
                                        f"allowed number of output tokens for {model.id}")
        tokens, cost = (0, 0.0) if rate_only else await self.reserve(ex, plan)
        cost += 0.0 if rate_only else extra_usd
        request = AdmissionRequest(team=principal.team, key_id=principal.key_id, request_id=ex.request_id,
                                   tokens=tokens, cost_usd=cost, model=model.id, now=time.time(),
                                   fallback_models=tuple(m.id for m in plan.models[1:]), rate_only=rate_only)
        try:
            adm = await self.store.admit(request)
        except Invalid as exc:  # checked before the store changed anything
            raise errors.InvalidRequest(f"this request cannot be admitted: {exc}") from None
        except StoreUnavailable as exc:
            self.outage.failed(exc)
            if not self.fail_open:
                raise errors.Overloaded("the gateway's store is unavailable; try again shortly") from None
            return Ticket(principal.team, principal.key_id, ex.request_id, local=True)
        if self.outage.failing:
            self.outage.recovered()
        headers = ratelimit_headers(adm)
        ex.response_headers.extend(headers)
        if adm.admitted:
            ticket = Ticket(principal.team, principal.key_id, ex.request_id, admitted_at=request.now)
            if not rate_only:
                self.open[ex.request_id] = ticket
                if adm.budgeted:
                    ex.allowance_usd = cost
            return ticket
        models = " or ".join(repr(m.id) for m in plan.models)
        error = refusal(adm, team=principal.team, cost_usd=cost,
                        models=f"model {models}" if len(plan.models) == 1 else f"every model of {models}")
        if isinstance(error, errors.RateLimited):
            ex.limited_by = adm.reason
        raise error
