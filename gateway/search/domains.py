"""Domain filters as Anthropic documents them for `allowed_domains` / `blocked_domains`.

A rule is a host with an optional path: `example.com` matches `example.com` and every subdomain
(`docs.example.com`), `example.com/blog` only URLs under that path, `*.example.com` subdomains
only. No scheme; a leading `www.` is not special (it is a subdomain like any other). Results are
filtered here whatever the backend did with the filters, so a backend that ignores them (SearXNG)
or applies them loosely still never lets a blocked domain through.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.search.base import SearchResult

MAX_RULES = 100


class BadDomain(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DomainRule:
    host: str
    path: str = ""            # "" or a path starting with "/", without a trailing "/"
    subdomains_only: bool = False

    def matches(self, host: str, path: str) -> bool:
        if self.subdomains_only:
            hit = host.endswith("." + self.host)
        else:
            hit = host == self.host or host.endswith("." + self.host)
        if not hit:
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")

    @property
    def text(self) -> str:
        return ("*." if self.subdomains_only else "") + self.host + self.path


def parse_rule(text: str) -> DomainRule:
    if not isinstance(text, str) or not text.strip():
        raise BadDomain("a domain must be a non-empty string")
    value = text.strip().lower()
    if "://" in value:
        raise BadDomain(f"domain {text!r} must not carry a scheme (write example.com, not https://example.com)")
    host, slash, path = value.partition("/")
    subdomains_only = host.startswith("*.")
    if subdomains_only:
        host = host[2:]
    host = host.rstrip(".")
    if not host or "*" in host or " " in host or ":" in host or "." not in host and host != "localhost":
        raise BadDomain(f"domain {text!r} is not a host name (e.g. example.com or docs.example.com/guide)")
    path = ("/" + path).rstrip("/") if slash else ""
    return DomainRule(host=host, path=path if path != "/" else "", subdomains_only=subdomains_only)


def parse_rules(values: Iterable[str] | None) -> tuple[DomainRule, ...]:
    rules = tuple(parse_rule(v) for v in (values or ()))
    if len(rules) > MAX_RULES:
        raise BadDomain(f"at most {MAX_RULES} domains")
    return rules


def _host_and_path(url: str) -> tuple[str, str] | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.rstrip(".").lower(), parts.path.rstrip("/")


def url_allowed(url: str, allowed: Sequence[DomainRule], blocked: Sequence[DomainRule]) -> bool:
    """Whether a result URL passes the filters; a URL that is not http(s) never does."""
    found = _host_and_path(url)
    if found is None:
        return False
    host, path = found
    if any(rule.matches(host, path) for rule in blocked):
        return False
    return not allowed or any(rule.matches(host, path) for rule in allowed)


def filter_results(results: Iterable[SearchResult], allowed: Sequence[str] | Sequence[DomainRule] = (),
                   blocked: Sequence[str] | Sequence[DomainRule] = ()) -> list[SearchResult]:
    """The results that pass, in order, each URL once."""
    allow = tuple(r if isinstance(r, DomainRule) else parse_rule(r) for r in allowed)
    block = tuple(r if isinstance(r, DomainRule) else parse_rule(r) for r in blocked)
    seen: set[str] = set()
    kept = []
    for result in results:
        if result.url in seen or not url_allowed(result.url, allow, block):
            continue
        seen.add(result.url)
        kept.append(result)
    return kept


def bare_hosts(values: Sequence[str]) -> list[str]:
    """The hosts of rules, for backends that take plain domain lists (paths and `*.` are then
    enforced by `filter_results` afterwards)."""
    hosts = []
    for value in values:
        host = parse_rule(value).host
        if host not in hosts:
            hosts.append(host)
    return hosts
