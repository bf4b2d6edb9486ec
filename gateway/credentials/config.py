"""A provider's settings → its `Credentials`: the `auth:` kind and the fields that go with it.

`auth` defaults by protocol (`x-api-key` for anthropic, `sigv4` for bedrock, or `bearer` when it
has an `api_key`, a Bedrock API key; `google` for vertex, `bearer` otherwise). Fields that belong to another kind are refused, so that a misplaced
`aws_profile` is an error at startup rather than silently unused. Messages name the provider and
the field, never a value.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.credentials import azure, static
from gateway.credentials.base import Credentials
from gateway.credentials.google import GoogleToken
from gateway.credentials.sigv4 import SigV4Credentials
from gateway.settings import ConfigError
from policies.catalog import AUTH_FIELDS, ProviderInfo

KINDS = ("x-api-key", "bearer", "sigv4", "google", "azure")
_FIELDS = {
    "x-api-key": {"api_key"},
    "bearer": {"api_key"},
    "sigv4": {"region", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_profile"},
    "google": {"credentials_file", "project", "region"},
    "azure": {"api_key", "tenant_id", "client_id", "client_secret", "api_version", "authority_host", "scope"},
}
_ALL_FIELDS = set().union(*_FIELDS.values())
assert _ALL_FIELDS - {"api_key"} == AUTH_FIELDS, "policies.catalog.AUTH_FIELDS must list every kind's fields"
_DEFAULT_BY_PROTOCOL = {"anthropic": "x-api-key", "bedrock": "sigv4", "vertex": "google", "azure": "azure"}
# Protocols whose requests are always authenticated by the executor; others only with an `auth:`
# (without one, the protocol places `api_key` as its wire wants).
_AUTHENTICATED_PROTOCOLS = frozenset({"bedrock", "vertex", "azure"})
_KIND_LIKE = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")
_BEDROCK_HOST = re.compile(r"^https?://bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:[:/]|$)")


def auth_kind(provider: str, settings: Mapping[str, Any]) -> str:
    """The provider's `auth:` (or the `options.auth` the catalog uses), else its protocol's default."""
    kind = settings.get("auth")
    if kind is None and isinstance(settings.get("options"), Mapping):
        kind = settings["options"].get("auth")
    if kind is None:
        protocol = str(settings.get("protocol", ""))
        if protocol == "bedrock" and settings.get("api_key"):
            return "bearer"  # a Bedrock API key
        return _DEFAULT_BY_PROTOCOL.get(protocol, "bearer")
    if kind not in KINDS:
        # Echo only what looks like a kind's name: a secret pasted into the wrong field must not be printed.
        shown = f"'{kind}'" if isinstance(kind, str) and _KIND_LIKE.match(kind) else "another value"
        raise ConfigError(f"provider '{provider}': field 'auth' must be one of {', '.join(KINDS)}, got {shown}")
    return kind


def credentials_from(provider: str, settings: Mapping[str, Any]) -> Credentials:
    """The credentials of one provider, from its settings mapping (`auth` and its fields; other
    provider fields such as `base_url` are read where they help and otherwise left alone).
    Raises ConfigError naming the provider and the field."""
    kind = auth_kind(provider, settings)
    misplaced = sorted(name for name in settings if name in _ALL_FIELDS - _FIELDS[kind])
    if misplaced:
        raise ConfigError(f"provider '{provider}': field '{misplaced[0]}' does not apply to auth '{kind}' "
                          f"(its fields: {', '.join(sorted(_FIELDS[kind]))})")
    value = _Reader(provider, kind, settings)
    if kind == "x-api-key":
        return static.x_api_key(provider, value.string("api_key"))
    if kind == "bearer":
        return static.bearer(provider, value.string("api_key"))
    if kind == "sigv4":
        return _sigv4(provider, settings, value)
    if kind == "google":
        return _google(provider, value)
    return _azure(provider, value)


def _sigv4(provider: str, settings: Mapping[str, Any], value: "_Reader") -> SigV4Credentials:
    key_id, secret = value.string("aws_access_key_id"), value.string("aws_secret_access_key")
    token, profile = value.string("aws_session_token"), value.string("aws_profile")
    if bool(key_id) != bool(secret):
        missing = "aws_secret_access_key" if key_id else "aws_access_key_id"
        raise ConfigError(f"provider '{provider}': field '{missing}' is required with "
                          f"'{'aws_access_key_id' if key_id else 'aws_secret_access_key'}'")
    if token and not key_id:
        raise ConfigError(f"provider '{provider}': field 'aws_session_token' needs 'aws_access_key_id' "
                          f"and 'aws_secret_access_key'")
    if profile and key_id:
        raise ConfigError(f"provider '{provider}': field 'aws_profile' and 'aws_access_key_id' exclude each "
                          f"other (keys in the settings, or a profile of the shared files)")
    region = value.string("region")
    if region is None:
        match = _BEDROCK_HOST.match(str(settings.get("base_url", "")))
        if match is None:
            raise ConfigError(f"provider '{provider}': field 'region' is required for auth 'sigv4' "
                              f"(unless base_url is https://bedrock-runtime.REGION.amazonaws.com)")
        region = match.group(1)
    return SigV4Credentials(provider, region=region, access_key_id=key_id, secret_access_key=secret,
                            session_token=token, profile=profile)


def _google(provider: str, value: "_Reader") -> GoogleToken:
    path = value.string("credentials_file")
    if path is not None:
        try:
            with open(path, "rb") as f:
                info = json.load(f)
        except OSError as exc:
            raise ConfigError(f"provider '{provider}': field 'credentials_file': cannot read {path}: "
                              f"{exc.strerror or type(exc).__name__}") from None
        except ValueError:
            raise ConfigError(f"provider '{provider}': field 'credentials_file': {path} is not JSON") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise ConfigError(f"provider '{provider}': field 'credentials_file': {path} is not a service "
                              f"account key file (\"type\": \"service_account\")")
        missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
        if missing:
            raise ConfigError(f"provider '{provider}': field 'credentials_file': {path} lacks '{missing[0]}'")
        project = value.string("project") or info.get("project_id") or None
    else:
        project = value.string("project")
    return GoogleToken(provider, credentials_file=path, project=project, region=value.string("region"))


def _azure(provider: str, value: "_Reader"):
    key = value.string("api_key")
    entra = {name: value.string(name) for name in ("tenant_id", "client_id", "client_secret")}
    value.string("api_version")  # checked here; the URL builder reads it
    if key and any(entra.values()):
        raise ConfigError(f"provider '{provider}': field 'api_key' and 'tenant_id'/'client_id'/'client_secret' "
                          f"exclude each other")
    if key:
        return azure.api_key(provider, key)
    missing = [name for name, v in entra.items() if not v]
    if missing:
        raise ConfigError(f"provider '{provider}': auth 'azure' needs 'api_key', or 'tenant_id', 'client_id' "
                          f"and 'client_secret' (missing '{missing[0]}')")
    extra = {name: value.string(name) for name in ("authority_host", "scope") if value.string(name)}
    return azure.EntraToken(provider, **entra, **extra)


class _Reader:
    """Typed reads of one provider's settings, with errors naming the field, never its value."""

    def __init__(self, provider: str, kind: str, settings: Mapping[str, Any]) -> None:
        self.provider, self.kind, self.settings = provider, kind, settings

    def string(self, name: str) -> str | None:
        raw = self.settings.get(name)
        if hasattr(raw, "get_secret_value"):  # pydantic SecretStr
            raw = raw.get_secret_value()
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise ConfigError(f"provider '{self.provider}': field '{name}' must be a string, "
                              f"got {type(raw).__name__}")
        return raw


def authenticated(provider: ProviderInfo) -> bool:
    """The executor adds this provider's credentials to its requests."""
    return provider.auth is not None or provider.protocol in _AUTHENTICATED_PROTOCOLS


def provider_settings(provider: ProviderInfo) -> dict[str, Any]:
    """A catalog provider as the settings mapping `credentials_from` reads."""
    settings: dict[str, Any] = {"protocol": provider.protocol, "base_url": provider.base_url,
                                **provider.auth_settings}
    if provider.auth is not None:
        settings["auth"] = provider.auth
    if provider.api_key:
        settings["api_key"] = provider.api_key
    return settings


def for_providers(providers: Mapping[str, ProviderInfo], previous: Mapping[str, Credentials] | None = None
                  ) -> tuple[dict[str, Credentials], dict[str, ProviderInfo]]:
    """The credentials of every authenticated provider (those of `previous` kept where the settings
    are the same, so a reload does not fetch tokens anew), and the providers with what their
    credentials tell (the Vertex project a service-account file names). Raises ConfigError."""
    credentials: dict[str, Credentials] = {}
    updated = dict(providers)
    for name, provider in providers.items():
        if not authenticated(provider):
            continue
        settings = provider_settings(provider)
        kept = (previous or {}).get(name)
        credentials[name] = kept if kept is not None and kept.settings == settings else credentials_from(name, settings)
        credentials[name].settings = settings
        if provider.protocol == "vertex" and not provider.auth_settings.get("project"):
            project = getattr(credentials[name], "project", None)
            if not project:
                raise ConfigError(f"provider '{name}': field 'project' is required (the credentials name none)")
            updated[name] = dataclasses.replace(provider, auth_settings={**provider.auth_settings, "project": project})
    return credentials, updated
