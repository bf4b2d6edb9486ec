"""The executor: tries a Plan's attempts in order and relays the one that answers.

Failures before the first byte reaches the client may move on to the next attempt when their kind
allows it (connection errors, timeouts, 408, 429, 5xx, 529, a provider rejecting our credentials,
context length exceeded, moderation); after the first byte, never: a failure then becomes an SSE
`error` event. Each protocol has one attempt function here; the translation itself lives in
`providers/`.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import orjson

from gateway import errors
from gateway.exchange import AttemptRecord, Exchange
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
from providers import anthropic, mock, openai_chat
from providers.base import Usage
from providers.redaction import redact_bytes

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


def _upstream_side_failure(provider: str, status: int, client_status: int, detail: str,
                           headers) -> AttemptFailed | None:
    """The failures that are the upstream's, whatever its protocol: rate limited, our credentials
    refused, overloaded, timed out, broken. None when the error is about the request itself."""
    if status == 429:
        retry_after = _retry_after(headers)
        extra = {"retry-after": str(int(retry_after + 0.999))} if retry_after is not None else {}
        return AttemptFailed(errors.RateLimited(detail, headers=extra), "429", retry_after=retry_after)
    if status in (401, 403):
        return AttemptFailed(errors.UpstreamFailed(f"provider {provider} rejected the gateway's credentials"),
                             str(status))
    if client_status == 529:
        return AttemptFailed(errors.Overloaded(detail), str(status))
    if client_status == 504 or status == 408:
        return AttemptFailed(errors.UpstreamTimeout(detail), str(status))
    if status >= 500:
        return AttemptFailed(errors.UpstreamFailed(detail), str(status))
    return None


def broken_off(provider: str, exc: BaseException, what: str, outcome: str) -> AttemptFailed:
    """An upstream that failed while its answer arrived, before anything reached the client, on any
    protocol: silence past a timeout is 504 timeout_error (outcome `timeout`), anything else 502."""
    if isinstance(exc, TimeoutError):
        return AttemptFailed(errors.UpstreamTimeout(f"provider {provider} {what}: it timed out"), "timeout")
    return AttemptFailed(errors.UpstreamFailed(f"provider {provider} {what}: {type(exc).__name__}"), outcome)


def classify_upstream_status(provider: str, status: int, raw: bytes, headers,
                             secrets: tuple[str | None, ...] = ()) -> AttemptFailed:
    """An Anthropic error answer → what the client would see; any other 4xx passes through.
    Credentials the upstream quotes back (`secrets`: the provider's key) are redacted first."""
    raw = redact_bytes(raw, secrets)
    error_type, message = anthropic.error_of(raw)
    detail = f"provider {provider}: {message}" if message else f"provider {provider} answered {status}"
    failure = _upstream_side_failure(provider, status, status, detail, headers)
    if failure is not None:
        return failure
    for outcome, check in (("context_length", anthropic.is_context_length_error),
                           ("moderation", anthropic.is_moderation_error)):
        if check(status, message):
            return AttemptFailed(errors.PassThrough(status, raw, error_type or "invalid_request_error", detail),
                                 outcome)
    return AttemptFailed(errors.PassThrough(status, raw, error_type or errors.error_type_for(status), detail),
                         str(status))


def classify_openai_status(provider: str, status: int, raw: bytes, headers,
                           secrets: tuple[str | None, ...] = ()) -> AttemptFailed:
    """An OpenAI-style error answer → the Anthropic error the client would see."""
    client_status, error_type, message = openai_chat.map_error(status, redact_bytes(raw, secrets))
    failure = _upstream_side_failure(provider, status, client_status, f"provider {provider}: {message}", headers)
    if failure is not None:
        return failure
    error = errors.GatewayError(message, status=client_status)
    error.error_type = error_type
    if openai_chat.is_context_length_error(status, raw):
        return AttemptFailed(error, "context_length")
    if openai_chat.is_moderation_error(status, raw):
        return AttemptFailed(error, "moderation")
    return AttemptFailed(error, str(status))


# Catalog parameter names → the names the chat translator reports and honours.
_IMPLIED_CHAT_PARAMETERS = {"tools": ("parallel_tool_calls",), "metadata": ("user",),
                            "thinking": ("effort",), "output_config": ("output_format",)}


def chat_options(attempt: Attempt, require_parameters: bool) -> openai_chat.ChatOptions:
    supported = set(attempt.endpoint.supported_parameters)
    for name, implied in _IMPLIED_CHAT_PARAMETERS.items():
        if name in supported:
            supported.update(implied)
    options = attempt.endpoint.options
    return openai_chat.ChatOptions(
        supported=frozenset(supported & openai_chat.DEFAULT_SUPPORTED | supported & {"top_k"}),
        require_parameters=require_parameters, max_tokens_field=options.max_tokens_field,
        reasoning=options.reasoning)


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _health_of(attempt: Attempt) -> str:
    return attempt.health


class Executor:
    def __init__(self, client: Client, timeouts: Timeouts, retries: Retries, routing: RoutingState) -> None:
        self.client = client
        self.timeouts = timeouts
        self.retries = retries
        self.routing = routing
        self.budget = RetryBudget(ratio=retries.budget_ratio)
        self._targets: dict[tuple[str, str, str], Target] = {}

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
                            await self._try(attempt, ex, send)
                    else:
                        # A JSON answer is bounded by the deadline on the upstream connection's own
                        # timer (first-byte and idle waits, and the whole read): one timer less.
                        ex.deadline = deadline
                        await self._try(attempt, ex, send)
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

    async def _try(self, attempt: Attempt, ex: Exchange, send: Send) -> None:
        protocol = attempt.provider.protocol
        if protocol == "anthropic":
            await self._anthropic(attempt, ex, send)
        elif protocol == "openai":
            await self._openai(attempt, ex, send)
        elif protocol == "mock":
            await self._mock(attempt, ex, send)
        else:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {attempt.provider.name}: protocol "
                                                      f"{protocol!r} is not supported"), "unsupported")

    # -- shared relaying ------------------------------------------------------------------------
    def _served(self, attempt: Attempt, ex: Exchange) -> None:
        ex.served_by = attempt
        ex.attempts.append(AttemptRecord(attempt.provider.name, attempt.model.id, "ok"))

    def _headers(self, ex: Exchange, base: list[tuple[bytes, bytes]], attempt: Attempt) -> list[tuple[bytes, bytes]]:
        headers = base + [(b"request-id", ex.request_id.encode()),
                          (b"x-gateway-provider", attempt.provider.name.encode()),
                          (b"x-gateway-attempts", ex.attempts_header())]
        if ex.dropped_params:
            headers.append((b"x-gateway-dropped-params", ",".join(ex.dropped_params).encode()))
        headers.extend(ex.response_headers)
        return headers

    async def _send_json(self, ex: Exchange, attempt: Attempt, body: bytes, send: Send) -> None:
        self._served(attempt, ex)
        ex.status = 200
        headers = self._headers(ex, _JSON_HEADERS, attempt)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        ex.finished = True
        await send({"type": "http.response.body", "body": body})

    async def _start_stream(self, ex: Exchange, attempt: Attempt, send: Send) -> None:
        self._served(attempt, ex)
        ex.status = 200
        await send({"type": "http.response.start", "status": 200,
                    "headers": self._headers(ex, _SSE_HEADERS, attempt)})

    def _price(self, attempt: Attempt) -> Callable[[Usage], float]:
        pricing = attempt.endpoint.pricing
        return lambda usage: cost_usd(usage, pricing)

    # -- anthropic ------------------------------------------------------------------------------
    async def _anthropic(self, attempt: Attempt, ex: Exchange, send: Send) -> None:
        provider = attempt.provider
        request = ex.request
        target = self.target(provider.base_url, "/v1/messages", ex.query)
        try:
            body = anthropic.upstream_body(request.raw, attempt.upstream_model, client_model=request.model,
                                           router_fields=request.router_fields, values=request.values)
        except anthropic.UnreadableBody as exc:
            raise errors.InvalidRequest(str(exc)) from None
        headers = anthropic.upstream_headers(api_key=provider.api_key, version=ex.headers.version,
                                             beta=ex.headers.beta, extra=provider.headers,
                                             bearer=provider.options.auth == "bearer")
        response = await self._post(provider.name, target, body, headers, ex.deadline)
        self.routing.saw_headers(provider.name, response.headers, time.time())
        try:
            if response.status >= 400:
                raw = await self._read(provider.name, response, ex.deadline)
                raise classify_upstream_status(provider.name, response.status, raw, response.headers,
                                               (provider.api_key,))
            upstream_id = response.headers.get("request-id")
            if upstream_id:
                ex.response_headers.append((b"upstream-request-id", upstream_id.encode()))
            if request.stream and response.headers.get("content-type", "").startswith("text/event-stream"):
                await self._relay_anthropic_stream(attempt, ex, response, send)
            else:
                await self._relay_anthropic_json(attempt, ex, response, send)
        except BaseException:
            response.close()
            raise
        response.release()

    def target(self, base: str, path: str = "", query: str = "") -> Target:
        """Upstream URLs parsed once: parsing a URL string costs every request microseconds."""
        key = (base, path, query)
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) > 1024:
                self._targets.clear()
            target = self._targets[key] = Target(base.rstrip("/") + path + (f"?{query}" if query else ""))
        return target

    async def _post(self, provider: str, target: Target, body: bytes, headers: dict[str, str],
                    deadline: float | None = None) -> Response:
        wait = self.timeouts.first_byte
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        try:
            return await self.client.request("POST", target, headers, body, first_byte_timeout=wait,
                                             idle_timeout=self.timeouts.idle)
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

    async def _relay_anthropic_json(self, attempt: Attempt, ex: Exchange, response, send: Send) -> None:
        raw = await self._read(attempt.provider.name, response, ex.deadline)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {attempt.provider.name} answered with "
                                                      f"malformed JSON"), "bad_response") from None
        if not isinstance(message, dict):
            raise AttemptFailed(errors.UpstreamFailed(f"provider {attempt.provider.name} answered with "
                                                      f"an unexpected body"), "bad_response")
        ex.usage = anthropic.usage_of(message)
        ex.cost_usd = cost_usd(ex.usage, attempt.endpoint.pricing)
        body = anthropic.edit_response(raw, message, model=attempt.model.id, provider=attempt.provider.name,
                                       cost=ex.cost_usd)
        await self._send_json(ex, attempt, body, send)

    async def _relay_anthropic_stream(self, attempt: Attempt, ex: Exchange, response: Response,
                                      send: Send) -> None:
        name = attempt.provider.name
        price = self._price(attempt)
        scanner = anthropic.StreamScanner(model=attempt.model.id, provider=name, price=price,
                                          secrets=(attempt.provider.api_key,))
        meter = stream_meter(ex, chars_per_token=chars_per_token(attempt.model.tokenizer), price=price)
        chunks = aiter(response)
        # Wait for the first event: until it has arrived, a failure may still fall back.
        block = b""
        try:
            while not block:
                block = scanner.feed(await chunks.__anext__())
        except StopAsyncIteration:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {name} closed the stream before its first "
                                                      f"event"), "empty_stream") from None
        except UpstreamError as exc:
            raise broken_off(name, exc, "failed before its first event", "stream_error") from None
        if scanner.error is not None:
            error_type, message = scanner.error
            status = {"overloaded_error": 529, "rate_limit_error": 429}.get(error_type or "", 502)
            raise classify_upstream_status(name, status, orjson.dumps(
                {"type": "error", "error": {"type": error_type or "api_error", "message": message}}), None)
        if not scanner.started:
            # Not Anthropic's stream (garbage, an HTML page sent as SSE...): unreadable, so another
            # endpoint may serve, as for an unreadable JSON answer.
            raise AttemptFailed(errors.UpstreamFailed(f"provider {name} answered with a stream that does not "
                                                      f"begin with message_start"), "bad_response")
        await self._start_stream(ex, attempt, send)
        ex.usage = scanner.usage
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        failure: str | None = None
        failure_type = "api_error"
        last = b""
        try:
            # The block that completes the stream leaves with the response's end in one write.
            if scanner.finished and response.exhausted:
                last = block
            else:
                await send({"type": "http.response.body", "body": block, "more_body": True})
                meter.sent(block)
                # A budget applies: the stream stops once its cost so far passes its reservation,
                # unless the upstream's final usage has come (then its cost is incurred already).
                if meter.budgeted and meter.over_budget(scanner.usage):
                    failure, failure_type = meter.cut_message(ex), "rate_limit_error"
                else:
                    async for chunk in chunks:
                        block = scanner.feed(chunk)
                        if scanner.finished and response.exhausted:
                            last = block
                            break
                        if block:
                            await send({"type": "http.response.body", "body": block, "more_body": True})
                            meter.sent(block)
                            if meter.budgeted and scanner.stop_reason is None and meter.over_budget(scanner.usage):
                                failure, failure_type = meter.cut_message(ex), "rate_limit_error"
                                break
        except UpstreamError as exc:
            failure = f"provider {name} broke off the stream: {type(exc).__name__}"
            if isinstance(exc, TimeoutError):
                failure_type = "timeout_error"
        finally:
            # Also when the client went away (cancellation): what was streamed so far is accounted for.
            ex.usage = meter.settle(scanner.close_usage())
            ex.cost_usd = scanner.cost()
        if failure is None and not scanner.finished and scanner.error is None:
            failure = f"provider {name} ended the stream before message_stop"
        if failure is not None:
            ex.status = {"timeout_error": 504, "rate_limit_error": 429}.get(failure_type, 502)
            ex.error_type = failure_type
            ex.attempts[-1].outcome = "budget_cut" if ex.status == 429 else "stream_error"
            ex.finished = True
            await send({"type": "http.response.body", "body": errors.sse_error_event(failure_type, failure)})
            return
        ex.finished = True
        await send({"type": "http.response.body", "body": last})

    # -- openai ---------------------------------------------------------------------------------
    async def _openai(self, attempt: Attempt, ex: Exchange, send: Send) -> None:
        provider = attempt.provider
        request = ex.request
        require = bool(request.preferences and request.preferences.get("require_parameters") is True)
        try:
            chat, dropped = openai_chat.to_chat_request(request.body, upstream_model=attempt.upstream_model,
                                                        options=chat_options(attempt, require),
                                                        stream=request.stream)
        except openai_chat.UnsupportedParameters as exc:
            names = ", ".join(exc.parameters)
            raise AttemptFailed(errors.InvalidRequest(
                f"provider {provider.name} cannot honour {names} and provider.require_parameters is true"),
                "unsupported") from None
        ex.dropped_params = dropped
        headers = openai_chat.upstream_headers(api_key=provider.api_key, stream=request.stream, extra=provider.headers)
        response = await self._post(provider.name, self.target(openai_chat.chat_completions_url(provider.base_url)),
                                    orjson.dumps(chat), headers, ex.deadline)
        self.routing.saw_headers(provider.name, response.headers, time.time())
        try:
            if response.status >= 400:
                raw = await self._read(provider.name, response, ex.deadline)
                raise classify_openai_status(provider.name, response.status, raw, response.headers,
                                             (provider.api_key,))
            if request.stream and response.headers.get("content-type", "").startswith("text/event-stream"):
                await self._relay_openai_stream(attempt, ex, response, send)
            else:
                await self._relay_openai_json(attempt, ex, response, send)
        except BaseException:
            response.close()
            raise
        response.release()

    async def _relay_openai_json(self, attempt: Attempt, ex: Exchange, response, send: Send) -> None:
        name = attempt.provider.name
        raw = await self._read(name, response, ex.deadline)
        try:
            completion = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {name} answered with malformed JSON"),
                                "bad_response") from None
        if not isinstance(completion, dict):
            raise AttemptFailed(errors.UpstreamFailed(f"provider {name} answered with an unexpected body"),
                                "bad_response")
        embedded = openai_chat.error_in_response(completion)
        if embedded is not None:
            raise classify_openai_status(name, embedded[0], orjson.dumps({"error": {"message": embedded[2],
                                                                                    "type": embedded[1]}}), None,
                                         (attempt.provider.api_key,))
        message = openai_chat.from_chat_response(completion, model=attempt.model.id, provider=name,
                                                 stop_sequences=ex.request.body.get("stop_sequences") or (),
                                                 message_id="msg_" + ex.request_id[4:])
        ex.usage = anthropic.usage_of(message)
        ex.cost_usd = cost_usd(ex.usage, attempt.endpoint.pricing)
        message["usage"]["cost"] = ex.cost_usd
        await self._send_json(ex, attempt, orjson.dumps(message), send)

    async def _relay_openai_stream(self, attempt: Attempt, ex: Exchange, response, send: Send) -> None:
        name = attempt.provider.name
        translator = openai_chat.ChatStreamTranslator(
            model=attempt.model.id, provider=name, message_id="msg_" + ex.request_id[4:],
            stop_sequences=ex.request.body.get("stop_sequences") or ())
        # No budget cut: a chat stream reports its input only at its end, and its output counted
        # here never passes max_tokens, which the reservation holds. The meter counts it for a cut stream.
        meter = stream_meter(ex, chars_per_token=chars_per_token(attempt.model.tokenizer), price=self._price(attempt))
        chunks = aiter(response)
        pending: list[bytes] = []
        received = reported = False  # any bytes before the first event; an error object among them
        try:
            while not pending:
                chunk = await chunks.__anext__()
                received = received or bool(chunk)
                reported = reported or b'"error"' in chunk
                pending = translator.feed(chunk)
        except StopAsyncIteration:
            pending = translator.finish()
        except UpstreamError as exc:
            raise broken_off(name, exc, "failed before its first event", "stream_error") from None
        if translator.failure is not None and len(pending) == 1:
            # Classified as on the Anthropic path: nothing at all, nothing readable, or the upstream's error.
            if not received:
                raise AttemptFailed(errors.UpstreamFailed(f"provider {name} closed the stream before its first "
                                                          f"event"), "empty_stream")
            if not reported:
                raise AttemptFailed(errors.UpstreamFailed(f"provider {name} answered with a stream that holds no "
                                                          f"readable chunk"), "bad_response")
            error_type, message = translator.failure
            status = {"overloaded_error": 529, "rate_limit_error": 429}.get(error_type, 502)
            raise classify_openai_status(name, status, orjson.dumps({"error": {"message": message,
                                                                               "type": error_type}}), None,
                                         (attempt.provider.api_key,))
        secrets = (attempt.provider.api_key,)

        def joined(events: list[bytes]) -> bytes:
            block = b"".join(events)
            # The upstream's own error event ends the stream: no key of ours may be in it.
            return redact_bytes(block, secrets) if translator.failure is not None else block

        await self._start_stream(ex, attempt, send)
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        block = joined(pending)
        await send({"type": "http.response.body", "body": block, "more_body": True})
        meter.sent(block)
        try:
            async for chunk in chunks:
                events = translator.feed(chunk)
                if events:
                    block = joined(events)
                    await send({"type": "http.response.body", "body": block, "more_body": True})
                    meter.sent(block)
            tail = translator.finish()
        except UpstreamError as exc:
            tail = translator.error(f"provider {name} broke off the stream: {type(exc).__name__}",
                                    "timeout_error" if isinstance(exc, TimeoutError) else "api_error")
        finally:
            ex.usage = meter.settle(translator.close_usage())
            ex.cost_usd = cost_usd(ex.usage, attempt.endpoint.pricing)
        if translator.failure is not None:
            ex.status = 504 if translator.failure[0] == "timeout_error" else 502
            ex.error_type = translator.failure[0]
            ex.attempts[-1].outcome = "stream_error"
        ex.finished = True
        await send({"type": "http.response.body", "body": joined(tail)})

    # -- mock -----------------------------------------------------------------------------------
    async def _mock(self, attempt: Attempt, ex: Exchange, send: Send) -> None:
        options = attempt.provider.options
        ttft = options.ttft_ms / 1000
        rate = options.tokens_per_second
        request = ex.request
        message_id = "msg_" + ex.request_id[4:]
        if ttft:
            await asyncio.sleep(ttft)
        fail_status = options.fail_status
        if fail_status:  # a mock provider that is down, to show retries and fallbacks offline
            raise classify_upstream_status(attempt.provider.name, fail_status, mock.error_body(fail_status), {})
        ex.usage = mock.usage_of(request.body)
        ex.cost_usd = cost_usd(ex.usage, attempt.endpoint.pricing)
        if not request.stream:
            message = mock.message(request.body, message_id=message_id, model=attempt.model.id,
                                   provider=attempt.provider.name)
            message["usage"]["cost"] = ex.cost_usd
            await self._send_json(ex, attempt, orjson.dumps(message), send)
            return
        events = mock.stream_events(request.body, message_id=message_id, model=attempt.model.id,
                                    provider=attempt.provider.name, cost=ex.cost_usd)
        await self._start_stream(ex, attempt, send)
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        if not rate:
            ex.finished = True
            await send({"type": "http.response.body", "body": b"".join(events)})
            return
        for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if event.startswith(b"event: content_block_delta"):
                await asyncio.sleep(1 / rate)
        ex.finished = True
        await send({"type": "http.response.body", "body": b""})
