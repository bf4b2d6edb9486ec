"""Azure OpenAI / AI Foundry deployments: their URLs and their two ways of authenticating. Pure.

Two URL shapes serve chat completions: the deployment path, where the deployment name is in the
URL and `api-version` is required, and the v1 path (`/openai/v1/chat/completions`), where the
deployment name goes in the body's `model` as with OpenAI and no `api-version` is needed. Both take
the OpenAI chat completions protocol (`providers/openai_chat*`); the deployment name is the
endpoint's `upstream_model`. A key goes in `api-key`; an Entra ID token in `Authorization: Bearer`.
Claude on Foundry speaks Anthropic's protocol instead (`foundry_anthropic_base_url`).

The v1 path is the `openai` protocol under `{resource}/openai/v1`. `PROTOCOL` is the `azure`
protocol: the same chat completions on the deployment path, with the provider's `api_version`.
The executor adds the `api-key` or the Entra token (`auth: azure`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from providers import openai_chat, protocol
from providers.openai_chat_request import ChatOptions

DEFAULT_API_VERSION = "2024-10-21"  # the latest generally available data-plane version of the deployment path


def resource_base_url(resource: str) -> str:
    return f"https://{resource}.openai.azure.com"


def foundry_anthropic_base_url(resource: str) -> str:
    """Claude on Microsoft Foundry: Anthropic's own protocol under the resource's `/anthropic` path
    (`.../anthropic/v1/messages`), the deployment name as `model`, the key in `x-api-key` or an
    Entra token as a bearer: a provider with `protocol: anthropic` and this base URL."""
    return f"https://{resource}.services.ai.azure.com/anthropic"


def deployment_url(base_url: str, deployment: str, api_version: str | None = None) -> str:
    """`{base}/openai/deployments/{deployment}/chat/completions?api-version=...`."""
    query = urlencode({"api-version": api_version or DEFAULT_API_VERSION})
    return f"{_resource_root(base_url)}/openai/deployments/{quote(deployment, safe='')}/chat/completions?{query}"


def v1_url(base_url: str, api_version: str | None = None) -> str:
    """`{base}/openai/v1/chat/completions` (an `api-version` only when one is asked for, e.g. `preview`)."""
    url = f"{_resource_root(base_url)}/openai/v1/chat/completions"
    return f"{url}?{urlencode({'api-version': api_version})}" if api_version else url


def _resource_root(base_url: str) -> str:
    # Accept the resource's root or a base already ending in /openai or /openai/v1.
    base = base_url.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def api_key_headers(key: str) -> dict[str, str]:
    return {"api-key": key}


def bearer_headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True)
class DeploymentOptions:
    chat: ChatOptions
    api_version: str | None


class Deployments(openai_chat.ChatCompletions):
    """The `azure` protocol: chat completions at `/openai/deployments/{upstream_model}/chat/completions`."""

    def options(self, attempt, require_parameters: bool) -> DeploymentOptions:
        return DeploymentOptions(super().options(attempt, require_parameters),
                                 attempt.provider.auth_settings.get("api_version"))

    def request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        options = call.options
        upstream = super().request(dataclasses.replace(call, options=options.chat))
        return dataclasses.replace(upstream, url=deployment_url(call.base_url, call.upstream_model,
                                                                options.api_version))


PROTOCOL = Deployments()
