"""Chat completions clients on an `azure` endpoint, passed through: the chat completions passthrough
(`providers.openai_chat_passthrough`) at the deployment's URL with its API version."""
from __future__ import annotations

from providers.azure import Deployments
from providers.openai_chat_passthrough import ChatPassthrough


class DeploymentsPassthrough(Deployments, ChatPassthrough):
    """`Deployments` places the request the passthrough builds (its options and URL); the body, the
    answer and the stream are the passthrough's."""


PROTOCOL = DeploymentsPassthrough()
