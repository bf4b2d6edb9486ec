"""One JSON call to a search provider through the gateway's own upstream client, every failure
mapped once onto Anthropic's web search error codes: the backends never see an HTTP exception."""
from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson

from gateway.search.base import (
    INVALID_INPUT,
    MAX_RESULTS_CAP,
    QUERY_TOO_LONG,
    TOO_MANY_REQUESTS,
    UNAVAILABLE,
    SearchBackend,
    SearchFailed,
    SearchResult,
)
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


def with_urls(items: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """(url, item) for each result of a provider's list that has a URL: one without cannot be cited."""
    for item in items:
        url = item.get("url")
        if isinstance(url, str) and url:
            yield url, item


def result_count(max_results: int) -> int:
    """How many results to ask a provider for: what the search wants, within what providers serve."""
    return max(1, min(max_results, MAX_RESULTS_CAP))


class HttpBackend(SearchBackend):
    """A provider searched with one JSON call to its HTTP API; subclasses build the request and
    read the answer (`parse_answer`), this sends it and maps every failure."""

    default_url = ""

    def __init__(self, client: Client, api_key: str, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        self.client = client
        self.api_key = api_key
        self.base_url = (base_url or self.default_url).rstrip("/")
        self.timeout = timeout

    @staticmethod
    @abstractmethod
    def parse_answer(data: Any) -> list[SearchResult]:
        """The results in the provider's decoded answer; may raise on a shape it does not expect."""

    async def get(self, path: str, params: Mapping[str, str], headers: Mapping[str, str]) -> list[SearchResult]:
        return await call_json(self.client, self.name, "GET", f"{self.base_url}{path}?{urlencode(params)}",
                               {"accept": "application/json", **headers}, b"", timeout=self.timeout,
                               parse=self.parse_answer)

    async def post(self, path: str, body: Any, headers: Mapping[str, str]) -> list[SearchResult]:
        return await call_json(self.client, self.name, "POST", f"{self.base_url}{path}",
                               {"content-type": "application/json", "accept": "application/json", **headers},
                               orjson.dumps(body), timeout=self.timeout, parse=self.parse_answer)
