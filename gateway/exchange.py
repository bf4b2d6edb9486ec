"""One request's journey through the gateway: what it asked for, who served it, what it used."""
from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.request import InboundHeaders, MessagesRequest
from policies.plan import Attempt
from providers.base import Usage
from providers.protocol import ClientRequest, passes_through


# Request ids must be unique (they name leases across replicas), not secret: 96 random bits from a
# generator seeded by the OS, reseeded in a forked child, without a system call per request.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    return f"req_{_ids.getrandbits(96):024x}"


@dataclass(slots=True)
class Principal:
    """Who is calling: a team's key, or the admin."""
    key_id: str
    team: str
    is_admin: bool = False
    allowed_models: tuple[str, ...] | None = None
    from_config: bool = False  # a key of the config file: the store's copy can be re-created from it
    budgeted: bool = False  # its team or key has a daily or monthly budget (`budgets.unpriced` applies)


@dataclass(slots=True)
class AttemptRecord:
    provider: str
    model: str
    outcome: str  # "ok", an HTTP status, "timeout", "connect_error", "stream_error", ...

    def header_value(self) -> str:
        return f"{self.provider}/{self.model}={self.outcome}"


@dataclass(slots=True)
class Exchange:
    request_id: str
    headers: InboundHeaders
    query: str
    principal: Principal | None = None
    request: MessagesRequest | None = None
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    attempts: list[AttemptRecord] = field(default_factory=list)
    served_by: Attempt | None = None
    usage: Usage | None = None
    cost_usd: float = 0.0
    status: int = 0
    error_type: str | None = None
    first_byte_at: float | None = None  # perf_counter when the first byte went to the client
    first_token_at: float | None = None
    finished: bool = False  # the last byte was handed to the server
    client_gone: bool = False
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    plan_model: str | None = None  # the primary model of the plan, once resolved
    limited_by: str | None = None  # which of the gateway's own limits refused the request
    inbound: str = "messages"  # the API the client spoke: messages, openai_chat, openai_responses
    # Its own request, when that API is not Messages and `request` is that request made canonical (a
    # passthrough sends it instead; whatever rewrites `request` drops it).
    client: ClientRequest | None = None
    answered_in: str = "messages"  # the API of the answer that began (a passthrough's is the client's)
    allowance_usd: float | None = None  # what admission reserved, when a budget applies: a stream stops there
    input_bound: int = 0  # the input tokens the reservation counted (a bound of the actual)

    def output_limit(self, attempt: Attempt) -> int | None:
        """The most output `attempt` may produce: `max_tokens`, except where it gets a client's own
        request that limits nothing, which the model's maximum output bounds (None: the catalog
        does not know it)."""
        client = self.client
        if client is None or client.limits_output or not passes_through(client, attempt.protocol):
            return self.request.max_tokens
        return attempt.endpoint.max_output or attempt.model.max_output

    def output_bound(self, attempts: Iterable[Attempt]) -> int:
        """The most output any of `attempts` may produce, as a reservation counts it (`max_tokens`
        where the catalog does not know a model's maximum)."""
        if self.client is None or self.client.limits_output:
            return self.request.max_tokens
        return max((self.output_limit(a) or self.request.max_tokens for a in attempts),
                   default=self.request.max_tokens)

    def attempts_header(self) -> bytes:
        return ",".join(a.header_value() for a in self.attempts).encode()
