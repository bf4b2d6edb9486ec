"""The answer of a protocol that answers in-process (`providers.protocol.LocalAnswer`), read as an
upstream Response is: the executor relays it on the same path, paced as the answer says."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from providers.protocol import LocalAnswer


class LocalResponse:
    __slots__ = ("status", "headers", "_answer", "_sent")

    def __init__(self, answer: LocalAnswer) -> None:
        self.status = answer.status
        self.headers = dict(answer.headers)
        self._answer = answer
        self._sent = 0

    @property
    def exhausted(self) -> bool:
        return self._sent == len(self._answer.chunks)

    async def read(self, timeout: float | None = None) -> bytes:
        self._sent = len(self._answer.chunks)
        return b"".join(chunk for chunk, _pause in self._answer.chunks)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        for chunk, pause in self._answer.chunks:
            self._sent += 1
            yield chunk
            if pause:
                await asyncio.sleep(pause)

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass
