"""The Anthropic request body as the clouds' native Claude APIs take it (Bedrock `InvokeModel`,
Vertex AI `rawPredict`): the model is in the URL, so `model` leaves the body, and the API version
goes in the body as `anthropic_version`.

The body is rebuilt from the top-level values the request decoder already read (raw bytes each),
so nested content is copied, never re-encoded. A body that repeats a member keeps its last value,
as routing read it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec
import orjson

from providers.base import ROUTER_FIELDS
from providers.jsonedit import top_level_values


def betas(header: str | None) -> list[str]:
    """The `anthropic-beta` header's comma-separated flags, as a list."""
    if not header:
        return []
    return [flag.strip() for flag in header.split(",") if flag.strip()]


def cloud_body(raw: bytes, *, version: str, drop: Iterable[str] = ("model",), beta: list[str] | None = None,
               values: Mapping[str, msgspec.Raw] | None = None) -> bytes:
    """`raw` without `drop` and the router fields, with `anthropic_version: version` and, when `beta`
    is given, `anthropic_beta: beta` (the client's own `anthropic_beta` member is kept otherwise).
    Raises msgspec.DecodeError / ValidationError when `raw` is not a JSON object."""
    if values is None:
        values = top_level_values(raw)
    skip = {*drop, *ROUTER_FIELDS, "anthropic_version"}
    if beta:
        skip.add("anthropic_beta")
    members = [orjson.dumps(key) + b":" + bytes(value) for key, value in values.items() if key not in skip]
    members.append(b'"anthropic_version":' + orjson.dumps(version))
    if beta:
        members.append(b'"anthropic_beta":' + orjson.dumps(beta))
    return b"{" + b",".join(members) + b"}"
