"""Fake search providers on loopback, each answering in its provider's wire format.

`SearxngFake` speaks SearXNG's JSON API (`GET /search?q=...&format=json`, 403 without
`format=json` as an instance with JSON disabled would). `BraveFake`, `TavilyFake` and `ExaFake`
check their provider's auth header (`X-Subscription-Token`, `Authorization: Bearer`, `x-api-key`)
and answer 401 in the provider's error shape when it is missing or wrong. Unscripted, each answers
with `results` (a list of `FakeResult`), at most as many as the request asks for; `queries` lists
what each search asked for. `enqueue` a `Reply` (e.g. `error_reply(429)`) to script a failure.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer


@dataclass
class FakeResult:
    url: str
    title: str
    snippet: str = ""
    page_age: str | None = None


DEFAULT_RESULTS = [
    FakeResult("https://www.example.com/news/1", "Example news one", "The first result's snippet.", "2026-11-30"),
    FakeResult("https://docs.example.org/guide", "Example guide", "A guide to the example.", None),
    FakeResult("https://blog.sample.net/post", "Sample blog post", "A <strong>sample</strong> post.", "2 days ago"),
]


def json_reply(payload: object, status: int = 200) -> Reply:
    return Reply(status=status, chunks=[json.dumps(payload).encode()])


class _SearchFake(ScriptedServer):
    auth_header = ""
    api_key = "fake-search-key"

    def __init__(self, results: list[FakeResult] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.results = list(DEFAULT_RESULTS if results is None else results)

    def reset(self) -> None:
        super().reset()
        self.results = list(DEFAULT_RESULTS)

    @property
    def queries(self) -> list[str]:
        return [self.query_of(r) for r in self.requests]

    def query_of(self, request: RecordedRequest) -> str:
        raise NotImplementedError

    def authorized(self, request: RecordedRequest) -> bool:
        return request.headers.get(self.auth_header) == self.expected_auth()

    def expected_auth(self) -> str:
        return self.api_key

    def auto_reply(self, request: RecordedRequest) -> Reply:
        if self.auth_header and not self.authorized(request):
            return self.unauthorized()
        return json_reply(self.answer(request))

    def unauthorized(self) -> Reply:
        return json_reply({"error": "unauthorized"}, 401)

    def answer(self, request: RecordedRequest) -> object:
        raise NotImplementedError


class SearxngFake(_SearchFake):
    def query_of(self, request: RecordedRequest) -> str:
        return parse_qs(request.query).get("q", [""])[0]

    def auto_reply(self, request: RecordedRequest) -> Reply:
        params = parse_qs(request.query)
        if request.path != "/search" or params.get("format") != ["json"]:
            return Reply(status=403, content_type="text/html", chunks=[b"<h1>403 Forbidden</h1>"])
        return json_reply(self.answer(request))

    def answer(self, request: RecordedRequest) -> object:
        query = self.query_of(request)
        return {"query": query, "number_of_results": len(self.results),
                "results": [{"url": r.url, "title": r.title, "content": r.snippet, "engine": "fake",
                             "parsed_url": [], "template": "default.html", "engines": ["fake"], "positions": [i + 1],
                             "publishedDate": r.page_age, "score": 1.0, "category": "general"}
                            for i, r in enumerate(self.results)],
                "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": []}


class BraveFake(_SearchFake):
    auth_header = "x-subscription-token"

    def query_of(self, request: RecordedRequest) -> str:
        return parse_qs(request.query).get("q", [""])[0]

    def unauthorized(self) -> Reply:
        return json_reply({"type": "ErrorResponse",
                           "error": {"id": "fake", "status": 422, "code": "SUBSCRIPTION_TOKEN_INVALID",
                                     "detail": "The provided subscription token is invalid."}}, 401)

    def answer(self, request: RecordedRequest) -> object:
        count = int(parse_qs(request.query).get("count", ["20"])[0])
        return {"type": "search", "query": {"original": self.query_of(request)},
                "web": {"type": "search", "results": [
                    {"type": "search_result", "title": r.title, "url": r.url, "description": r.snippet,
                     "page_age": r.page_age, "language": "en", "family_friendly": True}
                    for r in self.results[:count]]}}


class TavilyFake(_SearchFake):
    auth_header = "authorization"

    def expected_auth(self) -> str:
        return f"Bearer {self.api_key}"

    def query_of(self, request: RecordedRequest) -> str:
        return request.json().get("query", "")

    def unauthorized(self) -> Reply:
        return json_reply({"detail": {"error": "Unauthorized: missing or invalid API key."}}, 401)

    def answer(self, request: RecordedRequest) -> object:
        body = request.json()
        return {"query": body.get("query"), "answer": None, "images": [], "response_time": 0.5,
                "results": [{"title": r.title, "url": r.url, "content": r.snippet, "score": 0.9, "raw_content": None,
                             **({"published_date": r.page_age} if r.page_age else {})}
                            for r in self.results[:body.get("max_results", 5)]]}


class ExaFake(_SearchFake):
    auth_header = "x-api-key"

    def query_of(self, request: RecordedRequest) -> str:
        return request.json().get("query", "")

    def unauthorized(self) -> Reply:
        return json_reply({"requestId": "fake", "error": "Invalid API key", "tag": "INVALID_API_KEY"}, 401)

    def answer(self, request: RecordedRequest) -> object:
        body = request.json()
        return {"requestId": "fake-request", "resolvedSearchType": "neural",
                "results": [{"id": r.url, "title": r.title, "url": r.url, "publishedDate": r.page_age,
                             "author": None, "highlights": [r.snippet] if r.snippet else [], "highlightScores": [0.5]}
                            for r in self.results[:body.get("numResults", 10)]],
                "costDollars": {"total": 0.005}}
