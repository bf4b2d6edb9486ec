"""A loopback webhook receiver for budget alerts: records every delivery and checks its
`x-gateway-signature` (HMAC-SHA256 of the raw body under the shared secret) on its own."""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer


class WebhookReceiver(ScriptedServer):
    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret

    def auto_reply(self, request: RecordedRequest) -> Reply:
        return Reply(status=204)

    def signed_correctly(self, request: RecordedRequest) -> bool:
        expected = "sha256=" + hmac.new(self.secret.encode(), request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(request.headers.get("x-gateway-signature", ""), expected)

    def alerts(self) -> list[dict[str, Any]]:
        """The bodies received, each checked against its signature first."""
        bodies = []
        for request in list(self.requests):
            assert request.method == "POST", request
            if self.secret is not None:
                assert self.signed_correctly(request), f"bad signature on {request.body!r}"
            bodies.append(json.loads(request.body))
        return bodies
