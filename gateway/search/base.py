"""The search backend interface: a query in, results or a `SearchFailed` with Anthropic's error code out.

Every backend maps its own failures onto the codes of Anthropic's `web_search_tool_result_error`,
so that the loop turns any failure into that block and never into an exception for the client.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

# Anthropic's web_search_tool_result_error codes.
TOO_MANY_REQUESTS = "too_many_requests"
INVALID_INPUT = "invalid_tool_input"
MAX_USES_EXCEEDED = "max_uses_exceeded"
QUERY_TOO_LONG = "query_too_long"
UNAVAILABLE = "unavailable"
ERROR_CODES = frozenset({TOO_MANY_REQUESTS, INVALID_INPUT, MAX_USES_EXCEEDED, QUERY_TOO_LONG, UNAVAILABLE,
                         "request_too_large"})

# Longer queries are refused before any backend sees them (Anthropic answers query_too_long too).
MAX_QUERY_CHARS = 2000
MAX_RESULTS_CAP = 20


@dataclass(frozen=True, slots=True)
class SearchResult:
    url: str
    title: str
    snippet: str = ""
    page_age: str | None = None  # as the backend reports it: a date, or "3 days ago"

    def as_dict(self) -> dict:
        return {"url": self.url, "title": self.title, "snippet": self.snippet, "page_age": self.page_age}

    @classmethod
    def from_dict(cls, data: dict) -> SearchResult:
        return cls(url=str(data["url"]), title=str(data.get("title") or ""), snippet=str(data.get("snippet") or ""),
                   page_age=data.get("page_age"))


@dataclass(frozen=True, slots=True)
class UserLocation:
    """Anthropic's `user_location` (type approximate); backends use what they can of it."""
    city: str | None = None
    region: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    query: str
    max_results: int = 5
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    user_location: UserLocation | None = None

    def cache_key(self, backend: str) -> str:
        """Everything that changes the answer: the backend, the query and the filters."""
        loc = self.user_location
        parts = [backend, self.query, str(self.max_results), ",".join(sorted(self.allowed_domains)),
                 ",".join(sorted(self.blocked_domains)),
                 "" if loc is None else f"{loc.country}|{loc.region}|{loc.city}|{loc.timezone}"]
        return "\x1f".join(parts)


class SearchFailed(Exception):
    """A search that produced no results: `code` is one of Anthropic's web search error codes."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"not a web search error code: {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SearchOutcome:
    """What one search produced: results, or the error code the client sees in its block."""
    query: str
    results: list[SearchResult] = field(default_factory=list)
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class SearchBackend(ABC):
    """One search provider. `search` raises SearchFailed for every failure, never anything else."""

    name: str

    @abstractmethod
    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]: ...

    async def close(self) -> None:
        return None
