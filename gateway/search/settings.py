"""The `search:` block of the config file, and a team's override of it.

```yaml
search: {backend: searxng, searxng_url: http://searxng:8080, max_uses: 5, price_per_search: 0.0, cache_ttl: 300}
```

`backend` defaults to `searxng` when `searxng_url` is set; brave, tavily and exa need `api_key`.
A team's `search:` (same keys, all optional) replaces the gateway's values field by field, except
`blocked_domains`, which add to the gateway's: what the operator blocks stays blocked for everyone.
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.search.domains import BadDomain, parse_rules

Backend = Literal["searxng", "brave", "tavily", "exa"]
KEYED_BACKENDS = ("brave", "tavily", "exa")
# Anthropic's list price for a web search ($10 per 1,000): what a search costs a team unless set.
DEFAULT_PRICE_PER_SEARCH = 0.01
# Signs tokens when no token_secret is configured: they then read back only in this process.
_PROCESS_SECRET = secrets.token_bytes(32)


def _domains(value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError("must be a list of domains")
    try:
        parse_rules(value)
    except BadDomain as exc:
        raise ValueError(str(exc)) from None
    return value


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    backend: Backend | None = Field(default=None, description="searxng (default when searxng_url is set), "
                                    "brave, tavily or exa")
    searxng_url: str | None = None
    api_key: SecretStr | None = Field(default=None, description="the keyed backend's API key (SearXNG: an "
                                      "optional bearer token for an instance behind a proxy)")
    base_url: str | None = Field(default=None, description="another endpoint for brave, tavily or exa "
                                 "(a proxy, or a compatible service)")
    max_uses: int = Field(default=5, ge=1, le=100, description="searches per request at most; a request's "
                          "own max_uses may only lower it")
    max_results: int = Field(default=5, ge=1, le=20, description="results asked of the backend per search")
    price_per_search: float = Field(default=DEFAULT_PRICE_PER_SEARCH, ge=0, le=100,
                                    description="USD per search, counted in usage and against budgets")
    cache_ttl: float = Field(default=300.0, ge=0, le=86400, description="seconds a search's results are "
                             "reused for the same query and filters; 0 turns the cache off")
    timeout: float = Field(default=10.0, gt=0, le=120, description="seconds a backend has to answer")
    allowed_domains: list[str] = Field(default_factory=list)
    blocked_domains: list[str] = Field(default_factory=list)
    token_secret: SecretStr | None = Field(default=None, description="signs the encrypted_content and "
                                           "encrypted_index tokens the gateway makes; without it they last "
                                           "as long as the process")

    _check_domains = field_validator("allowed_domains", "blocked_domains", mode="before")(_domains)

    @field_validator("searxng_url", "base_url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> Any:
        if value in ("", None):
            return None
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("api_key", "token_secret", mode="before")
    @classmethod
    def _empty_key(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @field_validator("token_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _usable(self) -> SearchSettings:
        if not self.enabled:
            return self
        backend = self.resolved_backend
        if backend == "searxng" and not self.searxng_url:
            raise ValueError("backend searxng needs searxng_url")
        if backend in KEYED_BACKENDS and self.api_key is None:
            raise ValueError(f"backend {backend} needs api_key")
        return self

    def secret(self) -> bytes:
        """The key the gateway's encrypted_content / encrypted_index tokens are signed with. Set
        `token_secret` with several workers or replicas, so that any of them reads any token."""
        if self.token_secret is None:
            return _PROCESS_SECRET
        return self.token_secret.get_secret_value().encode()

    @property
    def resolved_backend(self) -> str | None:
        """The backend searches go to; None when search is off or nothing is configured."""
        if not self.enabled:
            return None
        if self.backend is not None:
            return self.backend
        return "searxng" if self.searxng_url else None


class SearchOverride(BaseModel):
    """A team's `search:`: any field of SearchSettings, each replacing the gateway's."""
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    backend: Backend | None = None
    searxng_url: str | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None
    max_uses: int | None = Field(default=None, ge=1, le=100)
    max_results: int | None = Field(default=None, ge=1, le=20)
    price_per_search: float | None = Field(default=None, ge=0, le=100)
    cache_ttl: float | None = Field(default=None, ge=0, le=86400)
    timeout: float | None = Field(default=None, gt=0, le=120)
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None

    _check_domains = field_validator("allowed_domains", "blocked_domains", mode="before")(_domains)


def merge_search(base: SearchSettings, override: SearchOverride | Mapping[str, Any] | None) -> SearchSettings:
    """The settings a team's requests search with. Raises pydantic's ValidationError when the
    result is unusable (a team switching to brave without a key, say)."""
    if override is None:
        return base
    if not isinstance(override, SearchOverride):
        override = SearchOverride.model_validate(override)
    merged = base.model_dump()
    merged["api_key"] = base.api_key
    merged["token_secret"] = base.token_secret
    for name, value in override.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        if name == "api_key":
            value = override.api_key
        if name == "blocked_domains":
            value = list(dict.fromkeys([*base.blocked_domains, *value]))
        merged[name] = value
    return SearchSettings.model_validate(merged)
