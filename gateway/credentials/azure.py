"""`auth: azure`: Azure OpenAI / AI Foundry, with an `api-key` or an Entra ID token.

The Entra ID client-credentials grant is one form POST to the tenant's token endpoint, written
here with httpx (already a dependency) rather than `azure-identity`, which would bring MSAL and
its own HTTP stack for that one call. The token is fetched at start and refreshed before expiry by
the shared background task.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import orjson

from gateway.credentials.base import REFRESH_MARGIN, RefreshingToken
from gateway.credentials.static import StaticHeader
from providers import azure as azure_protocol

AUTHORITY_HOST = "https://login.microsoftonline.com"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def api_key(provider: str, key: str) -> StaticHeader:
    name, value = next(iter(azure_protocol.api_key_headers(key).items()))
    return StaticHeader(provider, "azure", name, value)


class EntraToken(RefreshingToken):
    kind = "azure"

    def __init__(self, provider: str, *, tenant_id: str, client_id: str, client_secret: str,
                 authority_host: str = AUTHORITY_HOST, scope: str = COGNITIVE_SERVICES_SCOPE,
                 margin: float = REFRESH_MARGIN, clock: Callable[[], float] = time.time) -> None:
        super().__init__(provider, f"Entra ID client credentials (tenant {tenant_id}, client {client_id})",
                         margin=margin, clock=clock)
        self.token_url = f"{authority_host.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
        self.scope = scope
        self._client_id = client_id
        self._client_secret = client_secret
        self._http: httpx.AsyncClient | None = None

    def _secrets(self) -> tuple[str | None, ...]:
        return (self._client_secret,)

    async def _fetch(self) -> tuple[dict[str, str], float]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30.0)
        started = self._clock()
        response = await self._http.post(self.token_url, data={
            "grant_type": "client_credentials", "client_id": self._client_id,
            "client_secret": self._client_secret, "scope": self.scope})
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
            error = answer.get("error") if isinstance(answer, dict) else None
            description = answer.get("error_description") if isinstance(answer, dict) else None
            raise PermissionError(f"the token endpoint answered {response.status_code}"
                                  + (f" {error}" if error else "") + (f": {description}" if description else ""))
        lifetime = float(answer.get("expires_in") or 3600)
        return azure_protocol.bearer_headers(answer["access_token"]), started + lifetime

    async def close(self) -> None:
        await super().close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
