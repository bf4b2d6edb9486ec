"""The opaque tokens the gateway puts in `encrypted_content` and `encrypted_index`.

`gws1.<payload>.<mac>`: a versioned prefix, the payload as base64url JSON, and an HMAC-SHA256 of
prefix and payload under the gateway's secret. The gateway reads its own tokens back on a later
turn (to give a non-Anthropic model the results again); a token it did not make, or one altered,
reads as None. They are signed, not encrypted: they hold only what the client already saw (URL,
title, snippet), and are never sent to Anthropic as if Anthropic had made them (see `history`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

PREFIX = "gws1."
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest()[:_MAC_BYTES])


def make_token(secret: bytes, payload: dict[str, Any]) -> str:
    signed = PREFIX + _b64(orjson.dumps(payload))
    return f"{signed}.{_mac(secret, signed)}"


def is_gateway_token(value: object) -> bool:
    """Made by a gateway (any gateway: whether by this one's secret is `read_token`'s question)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def read_token(secret: bytes, token: object) -> dict[str, Any] | None:
    if not is_gateway_token(token):
        return None
    signed, dot, mac = token.rpartition(".")  # type: ignore[union-attr]
    if not dot or not hmac.compare_digest(mac, _mac(secret, signed)):
        return None
    try:
        payload = orjson.loads(_unb64(signed[len(PREFIX):]))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
