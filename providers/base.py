"""What every protocol module shares: the token counts of one answer, in Anthropic's terms."""
from __future__ import annotations

from dataclasses import dataclass

# Fields the router reads from an Anthropic request body and never forwards upstream.
ROUTER_FIELDS = ("provider", "models", "session_id", "trace", "user", "plugins")


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0  # the part of cache_creation written with a 1-hour TTL
    web_search_requests: int = 0  # searches the upstream ran itself (Anthropic's web search tool)
    estimated: bool = False  # output counted from the deltas seen, the final count never arrived

    def update_from(self, usage: dict) -> None:
        """Take the counts an Anthropic `usage` object reports; later reports supersede earlier ones."""
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            value = usage.get(name)
            if isinstance(value, int):
                setattr(self, name, value)
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            hour = creation.get("ephemeral_1h_input_tokens")
            if isinstance(hour, int):
                self.cache_creation_1h_input_tokens = hour
        server = usage.get("server_tool_use")
        if isinstance(server, dict):
            searches = server.get("web_search_requests")
            if isinstance(searches, int) and not isinstance(searches, bool) and searches >= 0:
                self.web_search_requests = searches

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_creation_input_tokens": self.cache_creation_input_tokens,
                "cache_read_input_tokens": self.cache_read_input_tokens}
