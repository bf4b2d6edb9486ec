"""One JSON call to a search provider through the gateway's own upstream client, every failure
mapped once onto Anthropic's web search error codes: the backends never see an HTTP exception."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson

from gateway.search.base import INVALID_INPUT, QUERY_TOO_LONG, TOO_MANY_REQUESTS, UNAVAILABLE, SearchFailed
from gateway.upstream import Client, Target, UpstreamError

T = TypeVar("T")

# A search answer is a page of snippets; anything far larger is not one.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_TOO_LONG = re.compile(rb"too long|too_long|maximum length|max(imum)? (query )?length", re.IGNORECASE)


def failure_for_status(backend: str, status: int, body: bytes) -> SearchFailed:
    """What an HTTP error status of a search provider means for the model's search."""
    if status == 429:
        return SearchFailed(TOO_MANY_REQUESTS, f"search backend {backend} is rate limiting the gateway")
    if status in (400, 413, 414, 422):
        if status == 414 or _TOO_LONG.search(body[:2000]):
            return SearchFailed(QUERY_TOO_LONG, f"search backend {backend} refused the query as too long")
        return SearchFailed(INVALID_INPUT, f"search backend {backend} refused the query ({status})")
    if status in (401, 403):
        return SearchFailed(UNAVAILABLE, f"search backend {backend} refused the gateway's credentials ({status})")
    if status in (402, 432, 433):  # out of credits, or over the plan's limits (Tavily's 432/433)
        return SearchFailed(TOO_MANY_REQUESTS, f"search backend {backend} is over its plan's limits ({status})")
    return SearchFailed(UNAVAILABLE, f"search backend {backend} answered {status}")


async def call_json(client: Client, backend: str, method: str, url: str, headers: Mapping[str, str],
                    body: bytes, *, timeout: float, parse: Callable[[Any], T]) -> T:
    """Send the request, read the answer whole within `timeout`, decode it and `parse` it.

    `parse` may raise KeyError, TypeError or ValueError on an unexpected shape: that is the
    provider's failure, reported as `unavailable` like a broken connection."""
    try:
        target = Target(url)
    except ValueError:
        raise SearchFailed(UNAVAILABLE, f"search backend {backend} has no usable URL") from None
    try:
        response = await client.request(method, target, headers, body, first_byte_timeout=timeout,
                                        idle_timeout=timeout)
    except UpstreamError as exc:
        raise SearchFailed(UNAVAILABLE, f"search backend {backend} could not be reached: {type(exc).__name__}") \
            from None
    try:
        raw = await response.read(max_bytes=MAX_ANSWER_BYTES, timeout=timeout)
    except UpstreamError as exc:
        response.close()
        raise SearchFailed(UNAVAILABLE, f"search backend {backend} broke off its answer: {type(exc).__name__}") \
            from None
    response.release()
    if response.status >= 400:
        raise failure_for_status(backend, response.status, raw)
    try:
        return parse(orjson.loads(raw))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise SearchFailed(UNAVAILABLE, f"search backend {backend} answered with an unexpected body") from None


def strip_tags(text: str) -> str:
    """Snippets of some providers carry highlight markup (`<strong>`): plain text for the model."""
    return re.sub(r"<[^>]{0,200}>", "", text).strip()
