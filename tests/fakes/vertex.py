"""A fake Vertex AI with its own OAuth2 token endpoint, checking what Google checks.

`service_account_file(path, fake)` writes a real service-account key file (a fresh RSA key) whose
`token_uri` points at the fake. The token endpoint (`POST /token`) takes the JWT-bearer grant,
verifies the assertion's RS256 signature with that service account's public key and its claims
(issuer, audience `https://oauth2.googleapis.com/token`, scope, expiry), and issues an access
token that lives `token_lifetime` seconds.
`rawPredict` / `streamRawPredict` accept only a live token it issued (401 UNAUTHENTICATED
otherwise, as Google answers), check the body (`anthropic_version: vertex-2023-10-16`, no
`model`) and answer as Anthropic does; unscripted, with the Anthropic fake's automatic answer.
Gemini's methods under `publishers/google/models/{model}` take the same token and are answered by
a Gemini fake (`self.gemini`, its own script), which checks the request as it checks Google AI's.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import anthropic as anthropic_fake
from tests.fakes.base import RecordedRequest, Reply, ScriptedServer
from tests.fakes.gemini import GeminiFake

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# The audience Google's token endpoint requires in the assertion, wherever the request is sent.
TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_GEMINI = re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/publishers/google/models/(?P<method>[^/]+)$")
_PREDICT = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/publishers/anthropic/"
                      r"models/(?P<model>[^/:]+):(?P<op>rawPredict|streamRawPredict)$")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def google_error(status: int, code: str, message: str) -> Reply:
    return anthropic_fake.json_reply({"error": {"code": status, "message": message, "status": code}}, status)


class VertexFake(ScriptedServer):
    def __init__(self, *, token_lifetime: int = 3600, project: str = "fake-project", **kwargs) -> None:
        super().__init__(**kwargs)
        self.token_lifetime = token_lifetime
        self.project = project
        self.client_email = f"gateway@{project}.iam.gserviceaccount.com"
        self._keys: dict[str, rsa.RSAPrivateKey] = {}  # the service account's keys by key id
        self.key_id = self.add_key()
        self.tokens: dict[str, float] = {}  # issued access token → expiry (Unix time)
        self.refuse_grants = False  # the token endpoint answers invalid_grant (a revoked key)
        self.grant_errors: list[str] = []
        self.grant_key_ids: list[str] = []  # the key that signed each accepted assertion
        self.gemini = GeminiFake(api_key=None)  # answers Gemini's methods; never started on a port of its own

    def add_key(self) -> str:
        """A new key of the service account (as `gcloud iam service-accounts keys create` makes); its id."""
        key_id = secrets.token_hex(20)
        self._keys[key_id] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key_id

    def delete_key(self, key_id: str) -> None:
        del self._keys[key_id]
        if key_id == self.key_id:
            self.key_id = next(iter(self._keys))  # key files written from now on use a key that exists

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account_info(self, key_id: str | None = None) -> dict:
        key_id = key_id or self.key_id
        pem = self._keys[key_id].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": self.project, "private_key_id": key_id,
                "private_key": pem, "client_email": self.client_email, "client_id": "1234567890",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.token_uri}

    def write_service_account(self, path: Path, key_id: str | None = None) -> Path:
        path.write_text(json.dumps(self.service_account_info(key_id)))
        return path

    def live_tokens(self) -> list[str]:
        now = time.time()
        return [token for token, expiry in self.tokens.items() if expiry > now]

    def next_reply(self, request: RecordedRequest) -> Reply:
        if request.path == "/token":
            return self._grant(request)
        match = _PREDICT.match(request.path)
        gemini = _GEMINI.match(request.path)
        if match is None and gemini is None:
            return google_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found.")
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.tokens.get(token, 0) <= time.time():
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected "
                                "OAuth 2 access token, login cookie or other valid authentication credential.")
        if gemini is not None:
            as_google_ai = dataclasses.replace(request, path="/v1/models/" + gemini["method"])
            self.gemini.requests.append(as_google_ai)
            return self.gemini.next_reply(as_google_ai)
        try:
            body = request.json()
        except ValueError:
            return anthropic_fake.error_reply(400, "invalid_request_error", "invalid JSON body")
        if "model" in body:
            return anthropic_fake.error_reply(400, "invalid_request_error", "model: Extra inputs are not permitted")
        if body.get("anthropic_version") != "vertex-2023-10-16":
            return anthropic_fake.error_reply(400, "invalid_request_error",
                                              "anthropic_version: Input should be 'vertex-2023-10-16'")
        if bool(body.get("stream")) != (match["op"] == "streamRawPredict"):
            return anthropic_fake.error_reply(400, "invalid_request_error",
                                              "stream must be true exactly on streamRawPredict")
        return super().next_reply(request)

    def auto_reply(self, request: RecordedRequest) -> Reply:
        return anthropic_fake.AnthropicFake.auto_reply(self, request)

    def _grant(self, request: RecordedRequest) -> Reply:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        problem = self._check_assertion(form)
        if problem is None and self.refuse_grants:
            problem = "Invalid grant: account not found"
        if problem is not None:
            self.grant_errors.append(problem)
            return anthropic_fake.json_reply({"error": "invalid_grant", "error_description": problem}, 400)
        token = f"ya29.fake-{secrets.token_urlsafe(24)}"
        self.tokens[token] = time.time() + self.token_lifetime
        return anthropic_fake.json_reply({"access_token": token, "expires_in": self.token_lifetime,
                                          "token_type": "Bearer"})

    def _check_assertion(self, form: dict[str, str]) -> str | None:
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return "Invalid grant_type"
        try:
            header_b64, claims_b64, signature_b64 = form.get("assertion", "").split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            signature = _b64url_decode(signature_b64)
        except ValueError:
            return "Invalid JWT: malformed"
        if header.get("alg") != "RS256":
            return "Invalid JWT: alg must be RS256"
        key = self._keys.get(header.get("kid")) or next(iter(self._keys.values()))
        try:
            key.public_key().verify(signature, f"{header_b64}.{claims_b64}".encode(),
                                          padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        now = time.time()
        if claims.get("iss") != self.client_email:
            return "Invalid JWT: unknown issuer"
        if claims.get("aud") != TOKEN_AUDIENCE:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe (aud)"
        if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            return "Invalid JWT: missing the cloud-platform scope"
        if not (claims.get("iat", 0) - 60 <= now < claims.get("exp", 0)) or claims["exp"] - claims["iat"] > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        self.grant_key_ids.append(header.get("kid"))
        return None
