"""A fake Azure OpenAI resource with its own Entra ID token endpoint, checking what Azure checks.

Chat completions on the deployment path (`/openai/deployments/{deployment}/chat/completions`) need
`api-version` (without it Azure answers 404 "Resource not found") and either the resource's
`api-key` or a live Entra token this fake's token endpoint issued (401 otherwise, with Azure's
message). The v1 path (`/openai/v1/chat/completions`) takes the deployment in the body's `model`
and needs no `api-version`. The token endpoint (`POST /{tenant}/oauth2/v2.0/token`) takes the
client-credentials grant and refuses a wrong secret with AADSTS7000215, as Entra does. Answers are
the OpenAI fake's, byte for byte as OpenAI's.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from urllib.parse import parse_qs

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer
from tests.fakes.openai import OpenAIFake, chat_request_errors

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
SUPPORTED_VERSIONS = frozenset({"2024-10-21", "2024-06-01", "2025-04-01-preview"})
_DEPLOYMENT = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
_TOKEN = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")


def _azure_error(status: int, code: str, message: str) -> Reply:
    """Azure OpenAI's own error shape (its gateway's, not OpenAI's: a string code, no type)."""
    return Reply(status=status, chunks=[json.dumps({"error": {"code": code, "message": message}}).encode()])


class AzureFake(OpenAIFake):
    def __init__(self, *, api_key: str = "azure-key-0123456789abcdef", tenant_id: str = "fake-tenant",
                 client_id: str = "fake-client", client_secret: str = "fake-client-secret-value",
                 token_lifetime: int = 3599, **kwargs) -> None:
        super().__init__(**kwargs)
        self.resource_key = api_key
        self.tenant_id, self.client_id, self.client_secret = tenant_id, client_id, client_secret
        self.token_lifetime = token_lifetime
        self.tokens: dict[str, float] = {}
        self.deployments: list[str] = []  # the deployment each accepted request named

    def next_reply(self, request: RecordedRequest) -> Reply:
        token_path = _TOKEN.match(request.path)
        if token_path is not None:
            return self._grant(token_path["tenant"], request)
        query = {k: v[0] for k, v in parse_qs(request.query).items()}
        deployment = _DEPLOYMENT.match(request.path)
        if deployment is not None:
            version = query.get("api-version")
            if version is None:
                return _azure_error(404, "404", "Resource not found")
            if version not in SUPPORTED_VERSIONS:
                return _azure_error(400, "BadRequest", "API version not supported")
        elif request.path != "/openai/v1/chat/completions":
            return _azure_error(404, "404", "Resource not found")
        if not self._authorized(request):
            return _azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                                "Make sure to provide a valid key for an active subscription and use a correct "
                                "regional API endpoint for your resource.")
        try:
            body = request.json()
        except ValueError:
            return _azure_error(400, "BadRequest", "We could not parse the JSON body of your request.")
        if deployment is not None:
            body.setdefault("model", deployment["deployment"])  # the deployment path names it in the URL
        problems = chat_request_errors(body)
        if problems:
            return _azure_error(400, "BadRequest", "Invalid request: " + "; ".join(problems[:3]))
        self.deployments.append(body["model"])
        return ScriptedServer.next_reply(self, request)

    def _authorized(self, request: RecordedRequest) -> bool:
        if "api-key" in request.headers:
            return secrets.compare_digest(request.headers["api-key"], self.resource_key)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return self.tokens.get(token, 0) > time.time()

    def _grant(self, tenant: str, request: RecordedRequest) -> Reply:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if tenant != self.tenant_id:
            return self._aad_error(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return self._aad_error(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported "
                                                                  "grant type.")
        if form.get("client_id") != self.client_id:
            return self._aad_error(400, "unauthorized_client", f"AADSTS700016: Application with identifier "
                                                               f"'{form.get('client_id')}' was not found.")
        if not secrets.compare_digest(form.get("client_secret", ""), self.client_secret):
            return self._aad_error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure "
                                   "the secret being sent in the request is the client secret value, not the "
                                   "client secret ID.")
        if form.get("scope") != COGNITIVE_SCOPE:
            return self._aad_error(400, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(32) + "." + secrets.token_urlsafe(16)
        self.tokens[token] = time.time() + self.token_lifetime
        return Reply(chunks=[(b'{"token_type":"Bearer","expires_in":%d,"ext_expires_in":%d,"access_token":"%s"}'
                              % (self.token_lifetime, self.token_lifetime, token.encode()))])

    @staticmethod
    def _aad_error(status: int, error: str, description: str) -> Reply:
        return Reply(status=status, chunks=[json.dumps({"error": error, "error_description": description,
                                                        "error_codes": [int(description[6:description.index(':')])],
                                                        "trace_id": "fake-trace"}).encode()])
