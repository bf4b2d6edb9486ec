"""Keys that never change while the gateway runs: `x-api-key`, `bearer`, and Azure's `api-key`."""
from __future__ import annotations

from collections.abc import Mapping

from gateway.credentials.base import Credentials


class StaticHeader(Credentials):
    """One constant header (or none, for an upstream without a key, e.g. a local vLLM)."""

    def __init__(self, provider: str, kind: str, header: str | None, value: str | None,
                 secret: str | None = None) -> None:
        super().__init__(provider, "the api_key in the provider's settings" if value else "no key")
        self.kind = kind
        self._headers = {header: value} if header and value else {}
        secret = secret or value
        self._secrets = (secret,) if self._headers and secret else ()

    def headers_for(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        return self._headers

    def secret_values(self) -> tuple[str, ...]:
        return self._secrets


def x_api_key(provider: str, api_key: str | None) -> StaticHeader:
    return StaticHeader(provider, "x-api-key", "x-api-key", api_key)


def bearer(provider: str, api_key: str | None) -> StaticHeader:
    return StaticHeader(provider, "bearer", "authorization", f"Bearer {api_key}" if api_key else None, api_key)
