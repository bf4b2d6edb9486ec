"""The one interface every `auth:` kind implements, and the refresh loop the token kinds share.

A `Credentials` object is built once per provider at startup (`credentials_from`), started with the
application and closed with it. On the request path the executor only calls `headers_for`: for a
key it returns a constant header, for a token kind the cached header the background task keeps
fresh, for SigV4 the signature of that one request from credentials resolved in the background.
Nothing on the request path waits for a credential source.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping

from gateway.tasks import cancel_and_wait
from providers.protocol import UpstreamRequest
from providers.openai_chat_errors import redact_secrets

log = logging.getLogger("gateway.credentials")

# A token is refreshed this long before it expires, or half-way through its life if that is shorter.
REFRESH_MARGIN = 300.0
RETRY_MIN = 1.0
# Never refresh more often than this, even when a source hands out tokens already (nearly) expired.
REFRESH_FLOOR = 0.5
RETRY_MAX = 60.0
_MAX_REASON = 300
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.S)


class CredentialsUnavailable(Exception):
    """No usable credential right now: the message names the provider and the credential source, and
    why, never a secret. The executor answers it as a 502 naming the provider, and moves on to the
    next endpoint."""

    def __init__(self, provider: str, source: str, reason: str) -> None:
        self.provider = provider
        self.source = source
        self.reason = reason
        super().__init__(f"provider {provider}: no usable credentials from {source}: {reason}")


class Credentials:
    """What a provider's requests are authenticated with.

    `headers_for(method, url, headers, body)` returns the headers to add to that request (a dict
    the caller must not change: token kinds hand out their cached one); it is synchronous and
    cheap, and raises `CredentialsUnavailable` when there is nothing valid to add.
    `start()` resolves the credentials for the first time (a failure there is not fatal: the
    background refresh keeps trying and `headers_for` says why meanwhile); `close()` stops it.
    """

    kind = "none"
    _task: asyncio.Task | None = None  # the background task keeping the credentials fresh, if any

    def __init__(self, provider: str, source: str) -> None:
        self.provider = provider
        self.source = source  # a description for messages, e.g. "shared credentials file ~/.aws/credentials"
        self.settings: Mapping[str, object] | None = None  # what they were built from (a reload compares)

    async def start(self) -> None:
        return None

    async def _run(self) -> None:
        """The background refresh of the kinds that have one; runs until `close`."""
        raise NotImplementedError

    def _start_refresh_task(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"credentials-{self.provider}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def headers_for(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        raise NotImplementedError

    def secret_values(self) -> tuple[str, ...]:
        """The secrets these credentials send (a key, a token), which an upstream may quote back in
        an error: redacted from whatever reaches the client."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, source={self.source!r})"


def authorize(upstream: UpstreamRequest, credentials: Credentials) -> UpstreamRequest:
    """The request as the protocol built it, with the credentials' headers added; SigV4 signs it
    as it stands (method, URL, headers, body), so nothing may change it afterwards. Raises
    CredentialsUnavailable."""
    added = credentials.headers_for(upstream.method, upstream.url, upstream.headers, upstream.body)
    return dataclasses.replace(upstream, headers={**upstream.headers, **added})


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` safe to show: every known secret value removed, anything that looks like a credential
    redacted, and bounded in length."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return redact_secrets(_PEM.sub("[redacted key]", text))[:_MAX_REASON]


def refresh_delay(now: float, fetched_at: float, expires_at: float, margin: float = REFRESH_MARGIN,
                  floor: float = REFRESH_FLOOR) -> float:
    """Seconds from `now` until a token fetched at `fetched_at` and valid until `expires_at` should be
    refreshed: `margin` before expiry, or half-way through its life when that comes later (a token
    that lives two minutes is not refreshed at once and then every second), and at least `floor`
    (a source answering with expired tokens is not hammered)."""
    lifetime = max(0.0, expires_at - fetched_at)
    return max(floor, expires_at - min(margin, lifetime / 2) - now)


def retry_delay(failures: int, now: float, expires_at: float | None,
                low: float = RETRY_MIN, high: float = RETRY_MAX) -> float:
    """Seconds before the next try after `failures` failed refreshes in a row: doubling from `low` up
    to `high`, and never past the expiry of the token still held (so it is retried while valid)."""
    delay = min(high, low * 2 ** max(0, failures - 1))
    if expires_at is not None and expires_at > now:
        delay = min(delay, max(low, (expires_at - now) / 2))
    return delay


class RefreshingToken(Credentials):
    """A header built from a token that expires, fetched and refreshed by one background task and
    shared by every request. Subclasses implement `_fetch`: (headers, expiry as a Unix time).

    A refresh that fails while the held token is still valid keeps it and retries with backoff; once
    no valid token is left, `headers_for` raises `CredentialsUnavailable` with the last failure.
    """

    def __init__(self, provider: str, source: str, *, margin: float = REFRESH_MARGIN,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(provider, source)
        self.margin = margin
        self._clock = clock
        self._headers: dict[str, str] | None = None
        self._expires_at = 0.0
        self._fetched_at = 0.0
        self._failures = 0
        self._last_error = "not fetched yet"
        self._secret_values: tuple[str, ...] = ()
        self.refreshes = 0  # successful fetches, for tests and metrics

    def _secrets(self) -> tuple[str | None, ...]:
        """Secret values of this source, scrubbed from any failure message."""
        return ()

    async def _fetch(self) -> tuple[dict[str, str], float]:
        raise NotImplementedError

    async def start(self) -> None:
        await self.refresh()
        self._start_refresh_task()

    async def refresh(self) -> bool:
        """Fetch a new token now; False (and the reason kept for `headers_for`) when that failed."""
        try:
            headers, expires_at = await self._fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the source: its message is scrubbed below
            self._failures += 1
            reason = str(exc) or type(exc).__name__
            self._last_error = scrub(f"{type(exc).__name__}: {reason}", self._secrets())
            log.warning("provider %s: refreshing credentials from %s failed: %s",
                        self.provider, self.source, self._last_error)
            return False
        self._headers, self._expires_at, self._fetched_at = headers, expires_at, self._clock()
        self._secret_values = tuple(value.removeprefix("Bearer ") for value in headers.values())
        self._failures = 0
        self.refreshes += 1
        return True

    async def _run(self) -> None:
        while True:
            now = self._clock()
            if self._failures:
                delay = retry_delay(self._failures, now, self._expires_at if self._headers else None)
            else:
                delay = refresh_delay(now, self._fetched_at, self._expires_at, self.margin)
            await asyncio.sleep(delay)
            await self.refresh()

    def headers_for(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        if self._headers is not None and self._clock() < self._expires_at:
            return self._headers
        reason = self._last_error if self._failures or self._headers is None else "the token expired"
        raise CredentialsUnavailable(self.provider, self.source, reason)

    def secret_values(self) -> tuple[str, ...]:
        return self._secret_values

    @property
    def expires_at(self) -> float:
        return self._expires_at
