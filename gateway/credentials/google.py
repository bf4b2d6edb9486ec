"""`auth: google`: OAuth2 access tokens for Vertex AI, through google-auth.

From a service-account JSON file (`credentials_file`) or, without one, Application Default
Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud user's file, the metadata server of
GCE, GKE or Cloud Run). google-auth's refresh blocks, so it runs in a thread; its HTTP goes
through httpx (already a dependency) instead of pulling in `requests`. A service-account file is
read again when it changes, so a rotated key is used from the next refresh on.
"""
from __future__ import annotations

import asyncio
import calendar
import os
import time
from collections.abc import Callable, Mapping

import httpx
from google.auth import exceptions as google_exceptions
from google.auth import transport

from gateway.credentials.base import REFRESH_MARGIN, RefreshingToken

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_DEFAULT_LIFETIME = 3600.0  # when a credential reports no expiry


class _Response(transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxTransport(transport.Request):
    """google-auth's transport interface over a synchronous httpx client."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        try:
            response = self._client.request(method, url, content=body, headers=headers,
                                            timeout=timeout if timeout is not None else 30.0)
        except httpx.HTTPError as exc:
            raise google_exceptions.TransportError(f"{type(exc).__name__}: {exc}") from None
        return _Response(response)


class GoogleToken(RefreshingToken):
    kind = "google"

    def __init__(self, provider: str, *, credentials_file: str | None = None, project: str | None = None,
                 region: str | None = None, scopes: tuple[str, ...] = (CLOUD_PLATFORM,),
                 margin: float = REFRESH_MARGIN, clock: Callable[[], float] = time.time) -> None:
        source = (f"the service account file {credentials_file}" if credentials_file
                  else "Google Application Default Credentials")
        super().__init__(provider, source, margin=margin, clock=clock)
        self.credentials_file = credentials_file
        self.scopes = scopes
        self.region = region
        self._project = project
        self._credentials = None
        self._file_mtime: int | None = None
        self._http: httpx.Client | None = None

    @property
    def project(self) -> str | None:
        """The configured project, else the service account's or ADC's own."""
        return self._project

    def _load_blocking(self):
        if self.credentials_file:
            from google.oauth2 import service_account

            mtime = os.stat(self.credentials_file).st_mtime_ns
            if self._credentials is None or mtime != self._file_mtime:
                self._credentials = service_account.Credentials.from_service_account_file(
                    self.credentials_file, scopes=list(self.scopes))
                self._file_mtime = mtime
                self._project = self._project or self._credentials.project_id
        elif self._credentials is None:
            import google.auth

            self._credentials, project = google.auth.default(scopes=list(self.scopes))
            self._project = self._project or project
        return self._credentials

    def _refresh_blocking(self) -> tuple[dict[str, str], float]:
        credentials = self._load_blocking()
        if self._http is None:
            self._http = httpx.Client(timeout=30.0)
        credentials.refresh(HttpxTransport(self._http))
        expiry = getattr(credentials, "expiry", None)
        # google-auth keeps expiry as a naive UTC datetime.
        expires_at = calendar.timegm(expiry.utctimetuple()) if expiry else self._clock() + _DEFAULT_LIFETIME
        return {"authorization": f"Bearer {credentials.token}"}, float(expires_at)

    async def _fetch(self) -> tuple[dict[str, str], float]:
        return await asyncio.to_thread(self._refresh_blocking)

    async def close(self) -> None:
        await super().close()
        if self._http is not None:
            self._http.close()
            self._http = None

    def __repr__(self) -> str:
        return f"GoogleToken(provider={self.provider!r}, source={self.source!r}, project={self._project!r})"
