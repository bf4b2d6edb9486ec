"""Credentials out of upstream error text: the one redaction every upstream error path applies.

An upstream that rejects a key often quotes it back ("Incorrect API key provided: sk-..."); its
message reaches the client (JSON errors, stream `error` events, 4xx bodies passed through), so
anything resembling a credential, and the provider keys the gateway itself sends, are replaced
by `[redacted]` first.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
_CREDENTIALS = (
    (re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*]{6,}"), REDACTED),  # OpenAI, Anthropic, DeepSeek, Moonshot...
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), REDACTED),  # Google
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), REDACTED),  # JWTs (MiniMax)
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/=*]{8,}"), "Bearer " + REDACTED),
    (re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|secret|password)(\"?\s*[:=]\s*\"?)[^\s\"',;&]{6,}"),
     r"\1\2" + REDACTED),
)
# A configured key shorter than this is not searched for literally: it would match ordinary text.
MIN_KNOWN_SECRET = 8


def redact_secrets(text: str, known: Iterable[str | None] = ()) -> str:
    """`text` with the `known` secrets (the provider keys in use) and anything shaped like an API key,
    bearer token or similar credential replaced by [redacted]."""
    for secret in known:
        if secret and len(secret) >= MIN_KNOWN_SECRET and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def redact_bytes(raw: bytes, known: Iterable[str | None] = ()) -> bytes:
    """`redact_secrets` for an upstream body as bytes; bytes that are not UTF-8 pass unchanged."""
    text = raw.decode("utf-8", "surrogateescape")
    redacted = redact_secrets(text, known)
    return raw if redacted == text else redacted.encode("utf-8", "surrogateescape")
