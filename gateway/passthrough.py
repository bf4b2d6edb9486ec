"""Chat completions to an OpenAI-compatible upstream, passed through instead of translated twice.

The executor serves every attempt of a plan; this one attempt kind is added beside its own: a
chat completions client (`Exchange.client_body` holds its bytes) routed to a `protocol: openai`
endpoint gets the upstream's answer as the upstream sent it, streams forwarded as they arrive.
Every other attempt (an Anthropic endpoint, a fallback after this one failed) goes the executor's
way, through the canonical request, and `gateway.inbound` translates its answer. The answer's start
carries `passthrough: True` so that `gateway.inbound` forwards it unchanged.
"""
from __future__ import annotations

import time

import orjson

from gateway import errors
from gateway.exchange import Exchange
from gateway.execute import AttemptFailed, Executor, Send, broken_off, classify_openai_status
from gateway.upstream import UpstreamError
from policies.plan import Attempt
from policies.pricing import cost_usd
from providers import openai_chat, openai_chat_passthrough
from providers.openai_inbound import stream_error
from providers.redaction import redact_bytes

_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_JSON = [(b"content-type", b"application/json")]


def _object(raw: bytes) -> dict | None:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


class PassthroughExecutor(Executor):
    async def _try(self, attempt: Attempt, ex: Exchange, send: Send) -> None:
        if ex.client_body is not None and attempt.provider.protocol == "openai":
            await self._chat_passthrough(attempt, ex, send)
        else:
            await super()._try(attempt, ex, send)

    async def _chat_passthrough(self, attempt: Attempt, ex: Exchange, send: Send) -> None:
        provider = attempt.provider
        stream = ex.request.stream
        body, usage_added = openai_chat_passthrough.upstream_body(ex.client_body, ex.client_values,
                                                                  attempt.upstream_model, stream=stream)
        headers = openai_chat.upstream_headers(api_key=provider.api_key, stream=stream, extra=provider.headers)
        response = await self._post(provider.name, self.target(openai_chat.chat_completions_url(provider.base_url)),
                                    body, headers, ex.deadline)
        self.routing.saw_headers(provider.name, response.headers, time.time())
        # An error answer is never a stream: it is read as JSON, and classified as the translated path does.
        streamed = response.status < 400 and response.headers.get("content-type", "").startswith("text/event-stream")
        whole = False  # the answer was read to its end: the connection can serve another request
        try:
            if stream and streamed:
                await self._forward_stream(attempt, ex, response, send, hide_usage=usage_added)
            else:
                await self._forward_json(attempt, ex, response, send)
            whole = True
        finally:
            response.release() if whole else response.close()

    async def _forward_json(self, attempt: Attempt, ex: Exchange, response, send: Send) -> None:
        provider = attempt.provider
        raw = await self._read(provider.name, response, ex.deadline)
        status, completion = response.status, _object(raw)
        embedded = openai_chat.error_in_response(completion) if completion is not None and status < 400 else None
        if embedded is not None:
            status, raw = embedded[0], orjson.dumps({"error": {"message": embedded[2], "type": embedded[1]}})
        if status >= 400:
            raise classify_openai_status(provider.name, status, raw, response.headers if embedded is None else None,
                                         (provider.api_key,))
        if completion is None:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {provider.name} answered with malformed JSON"),
                                "bad_response")
        ex.usage = openai_chat_passthrough.usage_of_completion(completion)
        ex.cost_usd = cost_usd(ex.usage, attempt.endpoint.pricing)
        self._served(attempt, ex)
        ex.status = 200
        headers = self._headers(ex, _JSON, attempt) + [(b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers, "passthrough": True})
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        ex.finished = True
        await send({"type": "http.response.body", "body": raw})

    async def _forward_stream(self, attempt: Attempt, ex: Exchange, response, send: Send, *,
                              hide_usage: bool) -> None:
        name = attempt.provider.name
        usage = openai_chat_passthrough.UsageFilter(hide=hide_usage)
        chunks = aiter(response)
        block = b""
        try:  # until the first event has arrived, a failure may still fall back
            async for chunk in chunks:
                block = usage.feed(chunk)
                if block:
                    break
        except UpstreamError as exc:
            raise broken_off(name, exc, "failed before its first event", "stream_error") from None
        if not block:
            raise AttemptFailed(errors.UpstreamFailed(f"provider {name} closed the stream before its first event"),
                                "empty_stream")
        self._served(attempt, ex)
        ex.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": self._headers(ex, _SSE, attempt),
                    "passthrough": True})
        ex.first_byte_at = ex.first_token_at = time.perf_counter()
        tail = b""
        try:
            await send({"type": "http.response.body", "body": block, "more_body": True})
            async for chunk in chunks:
                block = usage.feed(chunk)
                if block:
                    await send({"type": "http.response.body", "body": block, "more_body": True})
        except UpstreamError as exc:
            kind = "timeout_error" if isinstance(exc, TimeoutError) else "api_error"
            ex.status, ex.error_type = (504 if kind == "timeout_error" else 502), kind
            ex.attempts[-1].outcome = "stream_error"
            tail = redact_bytes(stream_error(kind, f"provider {name} broke off the stream: {type(exc).__name__}"),
                                (attempt.provider.api_key,))
        finally:
            ex.usage = usage.usage()
            ex.cost_usd = cost_usd(ex.usage, attempt.endpoint.pricing)
        ex.finished = True
        await send({"type": "http.response.body", "body": tail})
