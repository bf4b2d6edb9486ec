"""Credentials as provider data: one module per `auth:` kind behind one interface (`base.Credentials`).

`for_providers` builds the credentials of a serving config's providers (`credentials_from` one
provider's, from its settings) when the config is built; the gateway starts them (`await c.start()`)
before it serves that config, the executor adds them to each upstream request its protocol built
(`base.authorize`: `c.headers_for(method, url, headers, body)`), and the gateway closes them when a
reload no longer uses them and at shutdown.
"""
from gateway.credentials.base import Credentials, CredentialsUnavailable
from gateway.credentials.config import KINDS, auth_kind, credentials_from

__all__ = ["KINDS", "Credentials", "CredentialsUnavailable", "auth_kind", "credentials_from"]
