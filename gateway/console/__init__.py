"""The built-in console at `/console`: static pages (plain ES modules, no build step, no CDN)
and the sign-in that lets them call the admin API.

Signing in with the admin key or a team's key makes a session kept in the store (so every replica
knows it) for `console.session_ttl`, named by an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
when served over TLS). The admin API takes that cookie in place of a key: a session signed in with
a team's key has exactly that key's rights, checked against the store on every call (a revoked key
ends its sessions at once), and every write must carry the session's CSRF token in
`x-csrf-token`, which only the console's own pages can read.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors
from gateway.admin import ADMIN_PRINCIPAL, client_address, json_response
from gateway.exchange import Principal
from gateway.request import parse_json_object
from gateway.store.base import StoreUnavailable

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.console")
COOKIE = "gw_console"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SIGN_IN_BYTES = 4096
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# Everything the pages load comes from this gateway; nothing inline, nothing from elsewhere.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def over_tls(request: Request) -> bool:
    """Served over TLS: by uvicorn itself, or by a TLS proxy in front that says so. Believing the
    header can only make a cookie `Secure` where it need not be, never the reverse."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def _assets() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("gateway.console").joinpath("static")
    found = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in CONTENT_TYPES:
            found[item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    return found


class Console:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.assets = _assets()
        self.sample_data = False  # set when `--demo` loaded sample traffic

    @property
    def ttl(self) -> float:
        return self.gateway.settings.console.session_ttl

    def _admin_hash(self) -> str | None:
        key = self.gateway.settings.admin_key
        return _digest(key.get_secret_value()) if key and key.get_secret_value() else None

    # -- sessions as principals ------------------------------------------------------------------
    async def principal_of(self, request: Request) -> Principal | None:
        """The signed-in principal of the request's console cookie, None without one."""
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return None
        session = await self.gateway.store.get_console_session(_digest(session_id))
        if session is None:
            raise errors.AuthenticationFailed("the console session has expired or was ended: sign in again")
        if request.method not in SAFE_METHODS:
            token = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(token.encode(), session["csrf"].encode()):
                raise errors.PermissionDenied(f"a console write needs this session's {CSRF_HEADER} header")
        request.state.console = True
        return await self._principal(session)

    async def _principal(self, session: dict) -> Principal:
        if session["kind"] == "admin":
            admin = self._admin_hash()
            if admin is None or not hmac.compare_digest(admin, session["admin_key_hash"]):
                raise errors.AuthenticationFailed("the admin key has changed since this console sign-in: "
                                                  "sign in again")
            return ADMIN_PRINCIPAL
        key, team = await self.gateway.store.key_and_team(session["team"], session["key_id"])
        if key is None or team is None or key.revoked:
            raise errors.AuthenticationFailed("the key of this console session has been revoked")
        if key.expires_at is not None and key.expires_at <= time.time():
            raise errors.AuthenticationFailed("the key of this console session has expired")
        limits = key.limits.narrowed_by(team.limits)
        return Principal(key_id=key.id, team=key.team, allowed_models=limits.allowed_models)

    # -- the console's own routes ----------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return self._asset("index.html")

    async def static(self, request: Request) -> Response:
        return self._asset(request.path_params["name"])

    def _asset(self, name: str) -> Response:
        found = self.assets.get(name)
        if found is None:
            raise errors.NotFound(f"no console file {name!r}")
        body, content_type = found
        return Response(body, media_type=content_type, headers=SECURITY_HEADERS)

    async def sign_in(self, request: Request) -> Response:
        if not self._admin_hash():
            raise errors.PermissionDenied("admin API disabled: no admin key is configured "
                                          "(admin_key, GATEWAY_ADMIN_KEY), so the console is off")
        raw = await request.body()
        if len(raw) > MAX_SIGN_IN_BYTES:
            raise errors.InvalidRequest("sign-in body too large")
        if "application/json" not in request.headers.get("content-type", ""):
            # A cross-site form cannot send JSON, so a page elsewhere cannot sign a browser in.
            raise errors.InvalidRequest("sign-in needs a JSON body: {\"key\": ...}")
        body = parse_json_object(raw)
        key = body.get("key")
        if not isinstance(key, str) or not key.strip():
            raise errors.InvalidRequest("key: field required (the admin key or a team's key)")
        key = key.strip()
        address = client_address(request)
        auditor = self.gateway.auditor
        try:
            if self.gateway.auth.is_admin([key]):
                principal = ADMIN_PRINCIPAL
                data = {"kind": "admin", "admin_key_hash": self._admin_hash()}
            else:
                principal = await self.gateway.auth.authenticate([key])
                data = {"kind": "team", "team": principal.team, "key_id": principal.key_id}
        except errors.AuthenticationFailed as exc:
            await auditor.record(action="console.sign_in_failed", principal=None, address=address, via="console",
                                 outcome="failed", details={"reason": exc.message})
            raise errors.AuthenticationFailed("sign-in failed: that key is not valid here") from None
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()
        data.update(csrf=csrf, created_at=now, expires_at=now + self.ttl, address=address)
        try:
            await self.gateway.store.create_console_session(_digest(session_id), data, self.ttl)
        except StoreUnavailable:
            raise errors.Overloaded("the gateway's store is unavailable; try again shortly") from None
        await auditor.record(action="console.sign_in", principal=principal, address=address, via="console")
        response = json_response(await self._describe(data, principal))
        response.set_cookie(COOKIE, session_id, max_age=int(self.ttl), path="/", httponly=True, samesite="strict",
                            secure=over_tls(request))
        return response

    async def _describe(self, data: dict, principal: Principal) -> dict:
        team_admin = False
        if not principal.is_admin:
            team = await self.gateway.store.get_team(principal.team)
            team_admin = bool(team and team.admin)
        return {"kind": data["kind"], "team": None if principal.is_admin else principal.team,
                "key_id": None if principal.is_admin else principal.key_id, "team_admin": team_admin,
                "csrf": data["csrf"], "expires_at": data["expires_at"], "sample_data": self.sample_data}

    async def whoami(self, request: Request) -> Response:
        session_id = request.cookies.get(COOKIE)
        session = await self.gateway.store.get_console_session(_digest(session_id)) if session_id else None
        if session is None:
            raise errors.AuthenticationFailed("not signed in to the console")
        principal = await self._principal(session)
        return json_response(await self._describe(session, principal))

    async def sign_out(self, request: Request) -> Response:
        principal = await self.principal_of(request)  # checks the CSRF token
        if principal is None:
            raise errors.AuthenticationFailed("not signed in to the console")
        await self.gateway.store.delete_console_session(_digest(request.cookies[COOKIE]))
        await self.gateway.auditor.record(action="console.sign_out", principal=principal,
                                          address=client_address(request), via="console")
        response = json_response({"signed_in": False})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=over_tls(request))
        return response


def console_routes(console: Console) -> list[Route]:
    return [
        Route("/console", console.page, methods=["GET"]),
        Route("/console/", console.page, methods=["GET"]),
        Route("/console/static/{name}", console.static, methods=["GET"]),
        Route("/console/api/session", console.sign_in, methods=["POST"]),
        Route("/console/api/session", console.whoami, methods=["GET"]),
        Route("/console/api/session", console.sign_out, methods=["DELETE"]),
    ]
