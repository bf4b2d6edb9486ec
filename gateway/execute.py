"""The executor: tries a Plan's attempts in order and relays the one that answers.

Failures before the first byte reaches the client may move on to the next attempt when their kind
allows it (connection errors, timeouts, 408, 429, 5xx, 529, a provider rejecting our credentials,
context length exceeded, moderation); after the first byte, never: a failure then becomes an SSE
`error` event. One attempt is the same for every wire protocol: the protocol (`providers.protocol`)
builds the upstream request, reads a failure, and translates the answer; this module does the I/O,
with one relay for JSON answers and one for streams, and never names a protocol. Which protocol an
attempt takes is the registry's answer for the upstream's protocol and the client's own request
(`Exchange.client`: a client of another API than Messages may be passed through); the answer's API is noted in `Exchange.answered_in`.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway import errors
from gateway.credentials import Credentials, CredentialsUnavailable
from gateway.credentials.base import authorize
from gateway.exchange import AttemptRecord, Exchange
from gateway.local import LocalResponse
from gateway.routing import RoutingState
from gateway.settings import Retries, Timeouts
from gateway.stream_meter import stream_meter
from gateway.upstream import (AnswerTooLarge, Client, ConnectFailed, PoolExhausted, ProxyFailed, Response, Target,
                              UpstreamError, UpstreamTimeout)
from policies.health import PROBE
from policies.plan import Attempt, Plan
from policies.preference import try_order
from policies.pricing import cost_usd
from policies.retry import NEXT_MODEL, RETRY, STOP, RetryBudget, backoff_delay, next_step
from policies.tokens import chars_per_token
from providers.base import Usage
from providers.protocol import (Call, Failure, Refused, StreamTranslator, UpstreamRequest, WireProtocol,
                                protocol_for, stream_failure)

Send = Callable[[dict], Awaitable[None]]

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class AttemptFailed(Exception):
    """One attempt's failure; `outcome` names it for `policies.retry.next_step` and the attempts header."""

    def __init__(self, error: errors.GatewayError, outcome: str, *, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome
        self.retry_after = retry_after


def error_of(failure: Failure) -> errors.GatewayError:
    """The error a protocol's Failure shows the client."""
    if failure.body is not None:
        return errors.PassThrough(failure.status, failure.body, failure.error_type, failure.message)
    headers = {}
    if failure.status == 429 and failure.retry_after is not None:
        headers["retry-after"] = str(int(failure.retry_after + 0.999))
    error = errors.GatewayError(failure.message, status=failure.status, headers=headers)
    error.error_type = failure.error_type
    return error


def failed(failure: Failure) -> AttemptFailed:
    return AttemptFailed(error_of(failure), failure.outcome, retry_after=failure.retry_after)


def broken_off(provider: str, exc: BaseException, what: str, outcome: str) -> AttemptFailed:
    """An upstream that failed while its answer arrived, before anything reached the client, on any
    protocol: silence past a timeout is 504 timeout_error (outcome `timeout`), anything else 502."""
    if isinstance(exc, TimeoutError):
        return AttemptFailed(errors.UpstreamTimeout(f"provider {provider} {what}: it timed out"), "timeout")
    return AttemptFailed(errors.UpstreamFailed(f"provider {provider} {what}: {type(exc).__name__}"), outcome)


@dataclass(slots=True)
class Served:
    """What the attempt that answered leaves for the usage record: folded into the Exchange in one place
    (`Executor._fold`), also when the client went away mid-answer."""
    usage: Usage | None = None
    cost: float = 0.0
    broke_off: tuple[str, str] | None = None  # (error type, message) the answer ended with, once begun
    budget_cut: bool = False  # the gateway ended it: the team's budget was reached


def call_for(protocol: WireProtocol, attempt: Attempt, ex: Exchange, credentials: Credentials | None = None) -> Call:
    """One attempt as its protocol sees it. With `credentials` (the provider's `auth:`), the
    executor authenticates the request, so the protocol gets no `api_key` to place."""
    request, provider, pricing = ex.request, attempt.provider, attempt.endpoint.pricing
    require = bool(request.preferences and request.preferences.get("require_parameters") is True)
    return Call(request, attempt.model.id, attempt.upstream_model, provider.name, provider.base_url,
                provider.api_key if credentials is None else None, protocol.options(attempt, require),
                "msg_" + ex.request_id[4:], lambda usage: cost_usd(usage, pricing), provider.headers,
                ex.headers.version, ex.headers.beta, ex.query,
                credentials.secret_values() if credentials is not None else (), ex.client)


def authorized(upstream: UpstreamRequest, credentials: Credentials | None) -> UpstreamRequest:
    """The one authentication step: the provider's credentials added to the request its protocol
    built (and SigV4 signing it as it stands); no credential available is a 502 naming the provider
    and the credential source, and the next endpoint may serve."""
    if credentials is None:
        return upstream
    try:
        return authorize(upstream, credentials)
    except CredentialsUnavailable as exc:
        raise AttemptFailed(errors.UpstreamFailed(str(exc)), "credentials") from None


def _health_of(attempt: Attempt) -> str:
    return attempt.health


class Executor:
    def __init__(self, client: Client, timeouts: Timeouts, retries: Retries, routing: RoutingState) -> None:
        self.client = client
        self.timeouts = timeouts
        self.retries = retries
        self.routing = routing
        self.budget = RetryBudget(ratio=retries.budget_ratio)
        self._targets: dict[str, Target] = {}
        self.credentials: Mapping[str, Credentials] = {}  # provider name → its `auth:`, set by the gateway

    async def run(self, ex: Exchange, plan: Plan, send: Send) -> None:
        """Serve `ex` from the plan's attempts; raise the final error when none answers.

        Within the request's deadline and the attempt limit: a transient failure is retried on the
        same endpoint with backoff while the retry budget allows, then the next endpoint is tried;
        a failure that is the model's (context length, moderation) skips to the next model; a
        client error stops. Endpoints in cooldown are tried last, after every other attempt of
        every model (`policies.preference.try_order`).
        """
        now = time.time()
        self.budget.record_request(now)
        deadline = time.monotonic() + self.timeouts.total
        attempts = try_order(plan.attempts, _health_of)
        last: AttemptFailed | None = None
        skip_model = None
        for index, attempt in enumerate(attempts):
            if attempt.model is skip_model:
                continue
            # A half-open endpoint takes one trial request; the last attempt goes anyway.
            if attempt.health == PROBE and not self.routing.claim_probe(attempt.endpoint_key, now) \
                    and index < len(attempts) - 1:
                continue
            tries = 0
            while True:
                if len(ex.attempts) >= self.retries.max_attempts or time.monotonic() >= deadline:
                    step = STOP
                    break
                started = time.perf_counter()
                try:
                    if ex.request.stream:
                        async with asyncio.timeout_at(asyncio.get_running_loop().time()
                                                      + (deadline - time.monotonic())):
                            await self._try(attempt, ex, send, None)
                    else:
                        # A JSON answer is bounded by the deadline on the upstream connection's own
                        # timer (first-byte and idle waits, and the whole read): one timer less.
                        await self._try(attempt, ex, send, deadline)
                except AttemptFailed as failure:
                    last = failure
                    ex.attempts.append(AttemptRecord(attempt.provider.name, attempt.model.id, failure.outcome))
                    now = time.time()
                    self.routing.failed(attempt, failure.outcome, failure.retry_after, now)
                    step = next_step(failure.outcome, failure.retry_after)
                    tries += 1
                    if step == RETRY and tries < self.retries.per_endpoint and self.budget.try_retry(now):
                        delay = backoff_delay(tries, base=self.retries.backoff_base, cap=self.retries.backoff_max,
                                              rand=random.random(), retry_after=failure.retry_after)
                        if time.monotonic() + delay < deadline:
                            await asyncio.sleep(delay)
                            continue
                    break
                except TimeoutError:
                    if ex.first_byte_at is not None:
                        # Mid-stream: the client already has the first bytes; end the stream properly.
                        ex.status, ex.error_type, ex.finished = 504, "timeout_error", True
                        await send({"type": "http.response.body", "body": errors.sse_error_event(
                            "timeout_error", f"the request took longer than its deadline of "
                                             f"{self.timeouts.total:g} s")})
                        return
                    last = AttemptFailed(errors.UpstreamTimeout("the request took longer than its deadline of "
                                                                f"{self.timeouts.total:g} s"), "timeout")
                    ex.attempts.append(AttemptRecord(attempt.provider.name, attempt.model.id, "timeout"))
                    step = STOP
                    break
                self._report_success(attempt, ex, started)
                return
            if step == STOP:
                break
            if step == NEXT_MODEL:
                skip_model = attempt.model
        if last is None:
            raise errors.NotFound("no provider is available to serve this model right now")
        error = last.error
        # The same debugging headers as a success: what was tried, and who answered last.
        error.headers = {**error.headers, "x-gateway-provider": ex.attempts[-1].provider,
                         "x-gateway-attempts": ex.attempts_header().decode()}
        if len(ex.attempts) > 1:
            error.headers["x-should-retry"] = "false"
        raise error

    def _report_success(self, attempt: Attempt, ex: Exchange, started: float) -> None:
        ttft = ex.first_token_at - started if ex.first_token_at is not None else None
        tps = None
        if ex.usage is not None and ex.usage.output_tokens and ex.first_token_at is not None:
            generation = time.perf_counter() - ex.first_token_at
            if generation > 0.005:
                tps = ex.usage.output_tokens / generation
        self.routing.succeeded(attempt, ttft, tps)

    async def _try(self, attempt: Attempt, ex: Exchange, send: Send, deadline: float | None) -> None:
        """One attempt on any protocol: its request, the upstream's answer, and the relay of it."""
        protocol: WireProtocol = protocol_for(attempt.protocol, ex.client)
        request = ex.request
        provider = attempt.provider
        credentials = self.credentials.get(provider.name)
        call = call_for(protocol, attempt, ex, credentials)
        try:
            if protocol.local:
                answer = protocol.local_answer(call)
                if answer.first_byte:
                    await asyncio.sleep(answer.first_byte)
                response = LocalResponse(answer)
                upstream = None
            else:
                upstream = authorized(protocol.request(call), credentials)
                response = await self._post(provider.name, upstream, deadline)
                self.routing.saw_headers(provider.name, response.headers, time.time())
        except Refused as exc:
            raise failed(exc.failure) from None
        try:
            if response.status >= 400:
                raw = await self._read(provider.name, response, deadline)
                raise failed(protocol.failure(call, response.status, response.headers, raw))
            extra = [(b"x-gateway-dropped-params", ",".join(upstream.dropped).encode())] \
                if upstream is not None and upstream.dropped else []
            upstream_id = response.headers.get("request-id")
            if upstream_id:
                extra.append((b"upstream-request-id", upstream_id.encode()))
            stream_type = upstream.stream_type if upstream is not None else "text/event-stream"
            if request.stream and response.headers.get("content-type", "").startswith(stream_type):
                await self._relay_stream(attempt, ex, protocol.answers, protocol.stream(call), response, extra, send)
            else:
                await self._relay_json(attempt, ex, protocol, call, response, extra, send, deadline)
        except BaseException:
            response.close()
            raise
        response.release()

    async def count(self, attempt: Attempt, ex: Exchange, request=None) -> dict | None:
        """count_tokens by the attempt's upstream, when its protocol can count: the count, or None
        when it cannot or the upstream fails (the caller estimates instead). An error that is the
        request's own (a 4xx other than those about our key, the model or the rate) is the answer."""
        protocol = protocol_for(attempt.protocol)
        if protocol.local:
            return None
        credentials = self.credentials.get(attempt.provider.name)
        call = call_for(protocol, attempt, ex, credentials)
        if request is not None:  # another body than the exchange's own (a reservation's count)
            call.request = request
        try:
            upstream = protocol.count_request(call)
        except Refused as exc:
            raise error_of(exc.failure) from None
        if upstream is None:
            return None
        try:
            upstream = authorized(upstream, credentials)
        except AttemptFailed:
            return None  # no credentials now: the caller estimates
        first_byte, response = self.timeouts.first_byte, None
        try:
            async with asyncio.timeout(first_byte):
                response = await self.client.request(upstream.method, self.target(upstream.url), upstream.headers,
                                                     upstream.body, first_byte_timeout=first_byte,
                                                     idle_timeout=self.timeouts.idle)
                answer = await response.read()
        except (TimeoutError, UpstreamError):  # TimeoutError: the asyncio.timeout above
            if response is not None:
                response.close()
            return None
        response.release()
        if response.status == 200:
            return protocol.counted(answer)
        if 400 <= response.status < 500 and response.status not in (401, 403, 404, 408, 429):
            raise error_of(protocol.failure(call, response.status, response.headers, answer))
        return None

    def target(self, url: str) -> Target:
        """Upstream URLs parsed once: parsing a URL string costs every request microseconds."""
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 1024:
                self._targets.clear()
            target = self._targets[url] = Target(url)
        return target

    async def _post(self, provider: str, upstream: UpstreamRequest, deadline: float | None = None) -> Response:
        wait = self.timeouts.first_byte
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        try:
            return await self.client.request(upstream.method, self.target(upstream.url), upstream.headers,
                                             upstream.body, first_byte_timeout=wait, idle_timeout=self.timeouts.idle)
        except UpstreamTimeout:
            raise AttemptFailed(errors.UpstreamTimeout(f"provider {provider} did not answer within "
                                                       f"{self.timeouts.first_byte:g} s"), "timeout") from None
        except ProxyFailed as exc:  # names the egress proxy (never its credentials): the fix is there
            raise AttemptFailed(errors.UpstreamFailed(f"provider {provider} could not be reached: {exc}"),
                                "connect_error") from None
        except ConnectFailed:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {provider} could not be reached"),
                                "connect_error") from None
        except PoolExhausted as exc:
            raise AttemptFailed(errors.Overloaded(f"provider {provider}: {exc}"), "pool_exhausted") from None
        except UpstreamError as exc:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {provider} failed: {type(exc).__name__}"),
                                "error") from None

    async def _read(self, provider: str, response: Response, deadline: float | None = None) -> bytes:
        """The whole answer, within the client's size limit and by `deadline` (monotonic) if given."""
        try:
            return await response.read(timeout=None if deadline is None else deadline - time.monotonic())
        except AnswerTooLarge:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {provider} answered with more than "
                                                      f"{self.client.max_answer_bytes} bytes"),
                                "bad_response") from None
        except UpstreamError as exc:
            raise broken_off(provider, exc, "broke off its answer", "read_error") from None

    # -- relaying -------------------------------------------------------------------------------
    def _start(self, attempt: Attempt, ex: Exchange, answers: str, base: list[tuple[bytes, bytes]],
               extra: list[tuple[bytes, bytes]]) -> dict:
        """The answer's head; from here on this attempt is the one that serves, in API `answers`."""
        ex.served_by, ex.answered_in = attempt, answers
        ex.attempts.append(AttemptRecord(attempt.provider.name, attempt.model.id, "ok"))
        headers = base + [(b"request-id", ex.request_id.encode()),
                          (b"x-gateway-provider", attempt.provider.name.encode()),
                          (b"x-gateway-attempts", ex.attempts_header())]
        headers += extra
        headers.extend(ex.response_headers)
        return {"type": "http.response.start", "status": 200, "headers": headers}

    @staticmethod
    def _fold(ex: Exchange, served: Served) -> None:
        """The one place an answer's outcome enters the Exchange, and so the usage record."""
        ex.usage, ex.cost_usd = served.usage, served.cost
        if served.broke_off is None:
            ex.status = 200
            return
        error_type = served.broke_off[0]
        ex.status = {"timeout_error": 504, "rate_limit_error": 429}.get(error_type, 502)
        ex.error_type = error_type
        ex.attempts[-1].outcome = "budget_cut" if served.budget_cut else "stream_error"

    async def _relay_json(self, attempt: Attempt, ex: Exchange, protocol: WireProtocol, call: Call,
                          response, extra: list[tuple[bytes, bytes]], send: Send, deadline: float | None) -> None:
        raw = await self._read(attempt.provider.name, response, deadline)
        try:
            answer = protocol.message(call, raw)
        except Refused as exc:
            raise failed(exc.failure) from None
        start = self._start(attempt, ex, protocol.answers, _JSON_HEADERS, extra)
        start["headers"].append((b"content-length", str(len(answer.body)).encode()))
        self._fold(ex, Served(answer.usage, answer.cost))
        await send(start)
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        ex.finished = True
        await send({"type": "http.response.body", "body": answer.body})

    @staticmethod
    def _over_budget(meter, translator: StreamTranslator, ex: Exchange) -> bool:
        """A stream is cut once its cost so far passes its reservation, while it has not ended (its
        cost is then incurred already): its input as the stream reports it, or at the reservation's
        bound where the stream reports it only at its end."""
        usage = translator.usage_so_far(ex.input_bound)
        return usage is not None and meter.over_budget(usage)

    async def _relay_stream(self, attempt: Attempt, ex: Exchange, answers: str, translator: StreamTranslator,
                            response, extra: list[tuple[bytes, bytes]], send: Send) -> None:
        name = attempt.provider.name
        chunks = aiter(response)
        # Wait for the first events: until they have gone out, a failure may still fall back.
        block = b""
        received = False
        try:
            while not block:
                chunk = await chunks.__anext__()
                received = received or bool(chunk)
                block = translator.feed(chunk)
        except StopAsyncIteration:
            block = translator.finish()
        except UpstreamError as exc:
            raise broken_off(name, exc, "failed before its first event", "stream_error") from None
        if translator.error is not None:
            raise failed(stream_failure(name, translator.error))
        if not translator.started:
            if not received:
                raise AttemptFailed(errors.UpstreamFailed(f"provider {name} closed the stream before its first "
                                                          f"event"), "empty_stream")
            # Not a stream of this protocol (garbage, an HTML page sent as SSE...): unreadable, so
            # another endpoint may serve, as for an unreadable JSON answer.
            raise AttemptFailed(errors.UpstreamFailed(f"provider {name} answered with a stream that holds no "
                                                      f"readable event"), "bad_response")
        await send(self._start(attempt, ex, answers, _SSE_HEADERS, extra))
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        pricing = attempt.endpoint.pricing
        # Counts the output the client was sent (a cut stream's estimate) and, under a budget,
        # says when the stream's cost so far passes what admission reserved.
        meter = stream_meter(ex, attempt, answers, chars_per_token=chars_per_token(attempt.model.tokenizer),
                             price=lambda usage: cost_usd(usage, pricing))
        last, cut = b"", False
        try:
            # The block that completes the stream leaves with the response's end in one write.
            if translator.finished and response.exhausted:
                last = block
            else:
                await send({"type": "http.response.body", "body": block, "more_body": True})
                meter.sent(block)
                cut = meter.budgeted and self._over_budget(meter, translator, ex)
                if not cut:
                    async for chunk in chunks:
                        block = translator.feed(chunk)
                        if translator.finished and response.exhausted:
                            last = block
                            break
                        if block:
                            await send({"type": "http.response.body", "body": block, "more_body": True})
                            meter.sent(block)
                            if meter.budgeted and self._over_budget(meter, translator, ex):
                                cut = True
                                break
            tail = translator.fail(meter.cut_message(ex), "rate_limit_error") if cut else translator.finish()
        except UpstreamError as exc:
            tail = translator.fail(f"provider {name} broke off the stream: {type(exc).__name__}",
                                   "timeout_error" if isinstance(exc, TimeoutError) else "api_error")
        finally:
            # Also when the client went away (cancellation): what was streamed so far is accounted for.
            usage = meter.settle(translator.close_usage())
            self._fold(ex, Served(usage, cost_usd(usage, pricing), translator.failure, cut))
        ex.finished = True
        await send({"type": "http.response.body", "body": last + tail if tail else last})
