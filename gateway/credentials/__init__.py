"""Credentials as provider data: one module per `auth:` kind behind one interface (`base.Credentials`).

`credentials_from(provider_name, settings)` builds a provider's credentials from its settings; the
application starts them (`await c.start()`), the executor adds `c.headers_for(method, url, headers,
body)` to each upstream request, and shutdown closes them.
"""
from gateway.credentials.base import Credentials, CredentialsUnavailable
from gateway.credentials.config import KINDS, auth_kind, credentials_from

__all__ = ["KINDS", "Credentials", "CredentialsUnavailable", "auth_kind", "credentials_from"]
