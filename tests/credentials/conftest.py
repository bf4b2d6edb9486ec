"""What the credential tests share: requests sent with the headers a `Credentials` object adds, one
after starting it, a stream of them through its refreshes, and the reason it gives when it has none."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gateway.credentials import Credentials, CredentialsUnavailable

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def post_with(client: httpx.AsyncClient, creds: Credentials, url: str, headers: dict[str, str],
                    body: bytes) -> httpx.Response:
    """POST `body` to `url` with `headers` and what `creds` adds for exactly that request."""
    return await client.post(url, content=body, headers={**headers, **creds.headers_for("POST", url, headers, body)})


async def sent_once(creds: Credentials, send: Send) -> httpx.Response:
    """The answer to one request `send` makes with `creds` started (and closed after it)."""
    await creds.start()
    try:
        async with httpx.AsyncClient() as client:
            return await send(client)
    finally:
        await creds.close()


async def statuses_for(seconds: float, send: Send) -> list[int]:
    """The status of a request every 50 ms for `seconds`: long enough to span token refreshes."""
    statuses = []
    async with httpx.AsyncClient() as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            statuses.append((await send(client)).status_code)
            await asyncio.sleep(0.05)
    return statuses


async def refusal(creds: Credentials) -> str:
    """The message of `creds` that has nothing to add to a request once its first fetch is done."""
    await creds.start()
    await creds.close()
    with pytest.raises(CredentialsUnavailable) as caught:
        creds.headers_for("POST", "https://x", {}, b"")
    return str(caught.value)
