"""Checks an AWS Signature Version 4 the way an AWS service does, written from AWS's public
description of the algorithm ("Create a signed AWS API request", IAM user guide), independently of
any AWS library: the request's canonical form is rebuilt from what arrived on the wire, signed
with the known secret, and compared with the signature sent.
"""
from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
                   r"\s*Signature=(?P<sig>[0-9a-f]{64})$")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
MAX_SKEW = 300  # seconds between the request's x-amz-date and the service's clock

MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")


@dataclass
class Refusal:
    status: int
    error: str  # AWS's error type name, as `x-amzn-ErrorType` carries it
    message: str


def uri_encode(text: str, *, keep_slash: bool) -> str:
    """AWS's UriEncode: every byte but the unreserved characters as %XY, upper-case hex."""
    out = []
    for byte in text.encode():
        if byte in _UNRESERVED or (keep_slash and byte == 0x2F):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def canonical_query(raw_query: str) -> str:
    pairs = []
    for part in filter(None, raw_query.split("&")):
        name, _, value = part.partition("=")
        pairs.append((uri_encode(unquote(name), keep_slash=False), uri_encode(unquote(value), keep_slash=False)))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def verify(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes, *,
           keys: Mapping[str, tuple[str, str | None]], region: str, service: str,
           now: float | None = None) -> Refusal | None:
    """None when the request is signed by one of `keys` (key id → (secret, session token or None)),
    else what AWS answers. `headers` are the request's, names lower-cased."""
    authorization = headers.get("authorization")
    if not authorization:
        return Refusal(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTH.match(authorization.strip())
    if match is None:
        return Refusal(403, "IncompleteSignatureException",
                       "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.")
    cred = match["cred"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        return Refusal(403, "IncompleteSignatureException", "Credential must have exactly 5 slash-delimited elements.")
    key_id, day, cred_region, cred_service, _ = cred
    if key_id not in keys:
        return Refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    secret, token = keys[key_id]
    if token is not None and headers.get("x-amz-security-token") != token:
        return Refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    if cred_region != region:
        return Refusal(403, "InvalidSignatureException", "Credential should be scoped to a valid region. ")
    if cred_service != service:
        return Refusal(403, "InvalidSignatureException",
                       f"Credential should be scoped to correct service: '{service}'. ")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return Refusal(403, "IncompleteSignatureException", "Authorization header requires existence of "
                                                            "either a 'X-Amz-Date' or a 'Date' header.")
    now = time.time() if now is None else now
    if abs(now - signed_at) > MAX_SKEW or amz_date[:8] != day:
        return Refusal(403, "InvalidSignatureException", f"Signature expired: {amz_date} is now earlier than "
                                                         f"the allowed window.")
    signed_names = match["signed"].split(";")
    if "host" not in signed_names or signed_names != sorted(signed_names):
        return Refusal(403, "InvalidSignatureException", MISMATCH)
    if any(name not in headers for name in signed_names):
        return Refusal(403, "InvalidSignatureException", MISMATCH)
    canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed_names)
    # Services other than S3 take the path as it arrived, encoded once more.
    canonical_uri = uri_encode(raw_path or "/", keep_slash=True)
    canonical_request = "\n".join((method.upper(), canonical_uri, canonical_query(raw_query), canonical_headers,
                                   ";".join(signed_names), hashlib.sha256(body).hexdigest()))
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(("AWS4-HMAC-SHA256", amz_date, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()))
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["sig"]):
        return Refusal(403, "InvalidSignatureException", MISMATCH)
    return None
