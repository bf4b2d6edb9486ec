"""The admin HTTP API under `/admin/` (teams, keys, usage, sessions, the request log) and `GET /v1/usage`.

Teams and keys live in the store; usage, sessions and the request log are read from the record
store (gateway/records), so they answer for the whole retention, and while Redis is down.

Every `/admin/` route needs the admin key (`x-api-key` or `Authorization: Bearer`): without an
admin key configured the whole API answers 403 "admin API disabled", a team's key gets 403, a
missing or unknown key 401. `GET /v1/usage` is the usage query for a team's own key.

Key secrets are made here (`sk-gw-` + 40 URL-safe random characters), returned once in the
creating answer and never again: the store keeps only their SHA-256 and a 12-character prefix that
identifies them in listings. Store refusals map onto Anthropic's error envelope in one place
(`store_errors`). Times in bodies and queries are epoch seconds, RFC 3339, or (queries only)
`YYYY-MM-DD` in UTC, where a date given as `to` includes that whole day.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors
from gateway.audit import DEFAULT_ENTRIES, MAX_ENTRIES
from gateway.auth import secret_hash
from gateway.reload import RELOAD_ERRORS, build_serving, refused, reread_settings
from gateway.exchange import Principal
from gateway.request import MAX_ID_CHARS, parse_json_object, read_headers
from gateway.settings import ConfigError
from gateway.store.base import (
    LIMIT_FIELDS, Conflict, Invalid, KeyRecord, Limits, NotFound, Store, StoreUnavailable, Team,
    key_to_json, limits_from, team_to_json, validate_alerts, validate_team_name,
)
from gateway.records.base import GROUP_FIELDS, MAX_PAGE, RecordStore, RequestFilter

if TYPE_CHECKING:
    from gateway.app import Gateway

SECRET_PREFIX = "sk-gw-"
SECRET_RANDOM_BYTES = 30      # 30 random bytes are 40 URL-safe base64 characters
PREFIX_CHARS = 12             # "sk-gw-" and 6 random characters: enough to tell keys apart
MAX_KEY_NAME_CHARS = 128
DEFAULT_USAGE_DAYS = 30
DEFAULT_GROUP_BY = ("team", "model")
MAX_SESSION_RECORDS = 1000

TEAM_FIELDS = frozenset({"name", "metadata", "limits", "admin", "alerts", *LIMIT_FIELDS})
TEAM_CHANGE_FIELDS = frozenset({"metadata", "limits", "admin", "alerts", *LIMIT_FIELDS})
AUDIT_PARAMS = frozenset({"from", "to", "limit"})
DEFAULT_AUDIT_DAYS = 30
RECENT_ERRORS_S = 900         # the health view's error rates cover the last 15 minutes
RECENT_RECORDS = 2000         # ... read from at most this many of the newest usage records

# Who may call a route: the admin only; a team's key (or its console session) reading its own
# team; or managing its own team's keys, when the team's admin flag allows it.
ADMIN_ONLY, TEAM_READ, TEAM_MANAGE = "admin", "team_read", "team_manage"
# What each write is called in the audit log.
AUDITED = {"create_team": "team.create", "update_team": "team.update", "delete_team": "team.delete",
           "create_key": "key.create", "update_key": "key.update", "revoke_key": "key.revoke",
           "rotate_key": "key.rotate", "reload": "config.reload"}
KEY_FIELDS = frozenset({"name", "expires_at", "expires_in_days", "metadata", "limits", *LIMIT_FIELDS})
ROTATE_FIELDS = frozenset({"grace_seconds", "expires_at", "expires_in_days"})
USAGE_PARAMS = frozenset({"from", "to", "group_by", "team"})
REQUEST_PARAMS = frozenset({"from", "to", "team", "model", "status", "cursor", "limit"})
_STATUS = re.compile(r"([1-5])(?:xx|XX)|([1-5]\d\d)")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
Handler = Callable[[Request], Awaitable[Response]]


# -- answers and errors -------------------------------------------------------------------------
def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """The store's refusals as the envelope's error types."""
    try:
        yield
    except Invalid as exc:
        raise errors.InvalidRequest(str(exc)) from None
    except NotFound as exc:
        raise errors.NotFound(str(exc)) from None
    except Conflict as exc:
        raise errors.InvalidRequest(str(exc), status=409) from None
    except StoreUnavailable:
        raise errors.InternalError("store unavailable", status=503) from None


def team_json(team: Team, *, for_admin: bool = True) -> dict[str, Any]:
    """A team as the API shows it: an alert webhook's secret is never shown, only whether one is
    set; to the team's own keys, not the webhook's path either (a Slack URL holds its secret there)."""
    data = team_to_json(team)
    if team.alerts is not None:
        alerts = dict(team.alerts)
        if "secret" in alerts:
            alerts["secret"] = None
            alerts["secret_set"] = True
        if not for_admin and alerts.get("webhook_url"):
            parts = urlsplit(alerts["webhook_url"])
            alerts["webhook_url"] = f"{parts.scheme}://{parts.netloc}"
        data["alerts"] = alerts
    return data


def key_status(key: KeyRecord, now: float) -> str:
    if key.revoked:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def key_json(key: KeyRecord, now: float) -> dict[str, Any]:
    """A key as the API shows it: never its secret, never its hash."""
    data = key_to_json(key)
    del data["secret_hash"]
    data["status"] = key_status(key, now)
    return data


# -- reading input ------------------------------------------------------------------------------
def parse_time(name: str, value: object, *, end_of_day: bool = False) -> float:
    """Epoch seconds (a number or its text), RFC 3339 (UTC when no offset is given) or, as text,
    YYYY-MM-DD: that UTC midnight, or the next one when `end_of_day`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            return number
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            if _DATE.fullmatch(text) and end_of_day:
                moment += timedelta(days=1)
            return moment.timestamp()
    raise errors.InvalidRequest(f"{name}: expected epoch seconds, an RFC 3339 time or YYYY-MM-DD, "
                                f"not {value!r}")


def _check_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise errors.InvalidRequest(f"unknown field(s): {', '.join(unknown)} "
                                    f"(expected some of: {', '.join(sorted(allowed))})")


async def _read_object(request: Request, *, empty_ok: bool) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip() and empty_ok:
        return {}
    return parse_json_object(raw)


def _limits(body: Mapping[str, Any]) -> Limits:
    """Limits given flat (`{"rpm": 10}`), or nested under `limits`; flat ones win."""
    nested = body.get("limits")
    if nested is not None and not isinstance(nested, Mapping):
        raise errors.InvalidRequest("limits: must be an object")
    merged = dict(nested or {})
    merged.update({k: v for k, v in body.items() if k in LIMIT_FIELDS})
    with store_errors():
        return limits_from(merged)


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise errors.InvalidRequest("metadata: must be an object")
    return dict(value)


def _key_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_KEY_NAME_CHARS:
        raise errors.InvalidRequest(f"name: must be a string of at most {MAX_KEY_NAME_CHARS} "
                                    "characters, or null")
    return value


def _positive(name: str, value: object, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok):
        kind = "a non-negative" if zero_ok else "a positive"
        raise errors.InvalidRequest(f"{name}: must be {kind} number, not {value!r}")
    return float(value)


def _expiry(body: Mapping[str, Any], now: float) -> tuple[bool, float | None]:
    """(given, epoch or None) from `expires_at` or `expires_in_days`."""
    if "expires_at" in body and "expires_in_days" in body:
        raise errors.InvalidRequest("expires_at, expires_in_days: give one of them, not both")
    if "expires_in_days" in body:
        return True, now + _positive("expires_in_days", body["expires_in_days"]) * 86400
    if "expires_at" in body:
        value = body["expires_at"]
        return True, None if value is None else parse_time("expires_at", value)
    return False, None


def _team_name(name: str) -> str:
    """A team named in a path: a name no team can have is simply not found."""
    try:
        return validate_team_name(name)
    except Invalid:
        raise errors.NotFound(f"no team {name!r}") from None


def _team_param(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return validate_team_name(value)
    except Invalid as exc:
        raise errors.InvalidRequest(f"team: {exc}") from None


def parse_group_by(value: str | None) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_GROUP_BY
    wanted = [g.strip() for g in value.split(",") if g.strip()]
    unknown = [g for g in wanted if g not in GROUP_FIELDS]
    if unknown:
        raise errors.InvalidRequest(f"group_by: cannot group by {', '.join(unknown)}; "
                                    f"choose from {', '.join(GROUP_FIELDS)}")
    return tuple(dict.fromkeys(wanted))


def usage_query(params: Mapping[str, str], now: float) -> tuple[float, float, tuple[str, ...], str | None]:
    """(from, to, group_by, team) of a usage query; by default the last 30 days by team and model."""
    unknown = sorted(set(params) - USAGE_PARAMS)
    if unknown:
        raise errors.InvalidRequest(f"unknown parameter(s): {', '.join(unknown)} "
                                    f"(expected some of: {', '.join(sorted(USAGE_PARAMS))})")
    start = parse_time("from", params["from"]) if params.get("from") else now - DEFAULT_USAGE_DAYS * 86400
    end = parse_time("to", params["to"], end_of_day=True) if params.get("to") else now
    if start >= end:
        raise errors.InvalidRequest("from: must be earlier than to")
    return start, end, parse_group_by(params.get("group_by")), _team_param(params.get("team"))


def _limit(params: Mapping[str, str], default: int, most: int) -> int:
    try:
        limit = int(params.get("limit", str(default)))
    except ValueError:
        limit = -1
    if not 1 <= limit <= most:
        raise errors.InvalidRequest(f"limit: must be an integer from 1 to {most}")
    return limit


def request_query(params: Mapping[str, str]) -> tuple[RequestFilter, str | None, int]:
    """(filter, cursor, limit) of a request log page; `status` is a code (429) or a class (5xx)."""
    unknown = sorted(set(params) - REQUEST_PARAMS)
    if unknown:
        raise errors.InvalidRequest(f"unknown parameter(s): {', '.join(unknown)} "
                                    f"(expected some of: {', '.join(sorted(REQUEST_PARAMS))})")
    start = parse_time("from", params["from"]) if params.get("from") else None
    end = parse_time("to", params["to"], end_of_day=True) if params.get("to") else None
    if start is not None and end is not None and start >= end:
        raise errors.InvalidRequest("from: must be earlier than to")
    status, status_class = None, False
    if params.get("status"):
        m = _STATUS.fullmatch(params["status"].strip())
        if m is None:
            raise errors.InvalidRequest(f"status: expected an HTTP status (429) or a class (5xx), "
                                        f"not {params['status']!r}")
        status, status_class = (int(m.group(1)) * 100, True) if m.group(1) else (int(m.group(2)), False)
    model = params.get("model") or None
    if model is not None and len(model) > MAX_ID_CHARS:
        raise errors.InvalidRequest(f"model: must be at most {MAX_ID_CHARS} characters")
    where = RequestFilter(team=_team_param(params.get("team")), start=start, end=end, model=model,
                          status=status, status_class=status_class)
    return where, params.get("cursor") or None, _limit(params, 100, MAX_PAGE)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_RANDOM_BYTES)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


# -- the handlers -------------------------------------------------------------------------------
class AdminAPI:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def store(self) -> Store:
        return self.gateway.store

    @property
    def records(self) -> RecordStore:
        return self.gateway.records.db

    def admin_enabled(self) -> bool:
        admin_key = self.gateway.settings.admin_key
        return bool(admin_key and admin_key.get_secret_value())

    async def caller(self, request: Request) -> Principal:
        """Who calls: the key the request presents, else the console session of its cookie (whose
        writes must carry the session's CSRF token). 401 for neither."""
        if not self.admin_enabled():
            raise errors.PermissionDenied("admin API disabled: no admin key is configured "
                                          "(admin_key, GATEWAY_ADMIN_KEY)")
        keys = read_headers(request.headers.raw).api_keys
        if not keys:
            principal = await self.gateway.console.principal_of(request)
            if principal is not None:
                return principal
        if self.gateway.auth.is_admin(keys):
            return ADMIN_PRINCIPAL
        return await self.gateway.auth.authenticate(keys)  # 401 when missing or unknown

    async def _target_team(self, request: Request) -> str | None:
        """The team a request reads or changes: its path's team, its key's team, or its `team` query."""
        params = request.path_params
        if "name" in params:
            return _team_name(params["name"])
        if "key_id" in params:
            key = await self.store.get_key(params["key_id"])
            if key is None:
                raise errors.NotFound(f"no key {params['key_id']!r}")
            return key.team
        return _team_param(request.query_params.get("team"))

    async def authorize(self, principal: Principal, request: Request, access: str) -> None:
        if principal.is_admin:
            return
        if access == ADMIN_ONLY:
            raise errors.PermissionDenied("the admin API needs the admin key, not a team's key")
        if access == TEAM_MANAGE:
            team = await self.store.get_team(principal.team)
            if team is None or not team.admin:
                raise errors.PermissionDenied(f"the keys of team {principal.team!r} may not manage keys "
                                              "(the team's admin flag is off)")
        target = await self._target_team(request)
        if target is None:
            raise errors.PermissionDenied(f"a team's key reads only its own team: add team={principal.team}")
        if target != principal.team:
            raise errors.PermissionDenied(f"this key belongs to team {principal.team!r} and may not "
                                          f"{'read' if access == TEAM_READ else 'change'} team {target!r}")

    def guarded(self, handler: Handler, access: str = ADMIN_ONLY) -> Handler:
        async def run(request: Request) -> Response:
            with store_errors():
                principal = await self.caller(request)
                await self.authorize(principal, request, access)
                request.state.principal = principal
                response = await handler(request)
            action = AUDITED.get(handler.__name__)
            if action is not None and response.status_code < 300:
                await self._audit(action, principal, request, response)
            return response
        run.__name__ = handler.__name__
        return run

    # reload -----------------------------------------------------------------------------------
    async def reload(self, request: Request) -> Response:
        """Read the config file again: 200 with what changed, or 400 with why it was refused (the
        old config keeps serving). With several workers, every worker reloads: this one checks the
        file, then the parent process passes SIGHUP on to each."""
        settings = self.gateway.settings
        try:
            if settings.workers > 1:
                try:
                    fresh, ignored = reread_settings(settings)
                    build_serving(fresh)
                except RELOAD_ERRORS as exc:
                    raise ConfigError(refused(exc)) from None
                os.kill(os.getppid(), signal.SIGHUP)
                return json_response({"status": "reloading", "workers": settings.workers, "restart_needed": ignored})
            summary = await self.gateway.reload()
        except ConfigError as exc:
            raise errors.InvalidRequest(f"the new config was refused, the previous one keeps serving: {exc}") from None
        return json_response({"status": "reloaded", **summary})
    async def _audit(self, action: str, principal: Principal, request: Request, response: Response) -> None:
        answer = orjson.loads(response.body)
        params = request.path_params
        target = params.get("name") or params.get("key_id") or answer.get("id") or answer.get("name")
        details: dict[str, Any] = {}
        if action.startswith("key."):
            details["team"] = answer.get("team")
        if action == "key.create":
            target = answer.get("id")
        elif action == "key.rotate":
            details["new_key"] = answer.get("id")
        elif action.endswith(".update"):
            # Which fields changed, never their values: an alert webhook's secret may be one.
            with contextlib.suppress(errors.GatewayError):
                details["fields"] = sorted(parse_json_object(await request.body()))
        await self.gateway.auditor.record(action=action, principal=principal, address=client_address(request),
                                          target=target, via=via_of(request), details=details)

    # teams ------------------------------------------------------------------------------------
    async def create_team(self, request: Request) -> Response:
        body = await _read_object(request, empty_ok=False)
        _check_fields(body, TEAM_FIELDS)
        if "name" not in body:
            raise errors.InvalidRequest("name: field required")
        try:
            name = validate_team_name(body["name"])
        except Invalid as exc:
            raise errors.InvalidRequest(f"name: {exc}") from None
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise errors.InvalidRequest("admin: must be true or false")
        with store_errors():
            alerts = validate_alerts(body.get("alerts"))
        team = Team(name=name, limits=_limits(body), created_at=time.time(), metadata=_metadata(body),
                    admin=admin, alerts=alerts)
        created = await self.store.create_team(team)
        if created.alerts is not None:
            await self.store.mark_team_alerts(name, True)
            self.gateway.alerts.team_alerts_changed()
        return json_response(team_json(created), 201)

    async def list_teams(self, request: Request) -> Response:
        return json_response({"data": [team_json(t) for t in await self.store.list_teams()]})

    async def get_team(self, request: Request) -> Response:
        name = _team_name(request.path_params["name"])
        team = await self.store.get_team(name)
        if team is None:
            raise errors.NotFound(f"no team {name!r}")
        return json_response(team_json(team, for_admin=request.state.principal.is_admin))

    async def update_team(self, request: Request) -> Response:
        name = _team_name(request.path_params["name"])
        body = await _read_object(request, empty_ok=False)
        _check_fields(body, TEAM_CHANGE_FIELDS)
        if "metadata" in body and not isinstance(body["metadata"], Mapping):
            raise errors.InvalidRequest("metadata: must be an object")
        changes = dict(body)
        alerts = changes.get("alerts")
        if isinstance(alerts, Mapping) and "secret" not in alerts:
            # The secret is never shown, so a change that leaves it out keeps the one set.
            current = await self.store.get_team(name)
            if current is not None and current.alerts and "secret" in current.alerts:
                changes["alerts"] = {**alerts, "secret": current.alerts["secret"]}
        team = await self.store.update_team(name, changes)
        if "alerts" in changes:
            await self.store.mark_team_alerts(name, team.alerts is not None)
            self.gateway.alerts.team_alerts_changed()
        return json_response(team_json(team))

    async def delete_team(self, request: Request) -> Response:
        name = _team_name(request.path_params["name"])
        keys = await self.store.list_keys(name)
        await self.store.delete_team(name)
        await self.store.mark_team_alerts(name, False)
        for key in keys:
            self.gateway.auth.invalidate(key.secret_hash)
        revoked = [k.id for k in keys if not k.revoked]
        return json_response({"name": name, "deleted": True, "revoked_keys": revoked})

    # keys -------------------------------------------------------------------------------------
    async def _issue_key(self, team: str, *, name: str | None, expires_at: float | None, limits: Limits,
                         metadata: dict[str, Any], now: float) -> tuple[KeyRecord, str]:
        secret = new_secret()
        record = KeyRecord(id=new_key_id(), team=team, prefix=secret[:PREFIX_CHARS],
                           secret_hash=secret_hash(secret), name=name, created_at=now,
                           expires_at=expires_at, limits=limits, metadata=metadata)
        await self.store.create_key(record)
        return record, secret

    async def create_key(self, request: Request) -> Response:
        team = _team_name(request.path_params["name"])
        body = await _read_object(request, empty_ok=True)
        _check_fields(body, KEY_FIELDS)
        now = time.time()
        _, expires_at = _expiry(body, now)
        if expires_at is not None and expires_at <= now:
            raise errors.InvalidRequest("expires_at: is in the past")
        record, secret = await self._issue_key(team, name=_key_name(body.get("name")), expires_at=expires_at,
                                               limits=_limits(body), metadata=_metadata(body), now=now)
        return json_response({**key_json(record, now), "key": secret}, 201)

    async def list_keys(self, request: Request) -> Response:
        params = request.query_params
        team = _team_param(params.get("team"))
        now = time.time()
        return json_response({"data": [key_json(k, now) for k in await self.store.list_keys(team)]})

    async def _existing_key(self, request: Request) -> KeyRecord:
        key_id = request.path_params["key_id"]
        key = await self.store.get_key(key_id)
        if key is None:
            raise errors.NotFound(f"no key {key_id!r}")
        return key

    async def get_key(self, request: Request) -> Response:
        return json_response(key_json(await self._existing_key(request), time.time()))

    async def update_key(self, request: Request) -> Response:
        key = await self._existing_key(request)
        body = await _read_object(request, empty_ok=False)
        _check_fields(body, KEY_FIELDS)
        now = time.time()
        changes: dict[str, Any] = {k: v for k, v in body.items() if k in LIMIT_FIELDS or k == "limits"}
        if "name" in body:
            changes["name"] = _key_name(body["name"])
        if "metadata" in body:
            changes["metadata"] = _metadata(body)
        given, expires_at = _expiry(body, now)
        if given:
            changes["expires_at"] = expires_at  # a time already past expires the key now
        updated = await self.store.update_key(key.id, changes)
        self.gateway.auth.invalidate(key.secret_hash)
        return json_response(key_json(updated, now))

    async def revoke_key(self, request: Request) -> Response:
        key = await self._existing_key(request)
        await self.store.revoke_key(key.id)
        self.gateway.auth.invalidate(key.secret_hash)  # this replica forgets it at once
        revoked = await self.store.get_key(key.id) or key
        return json_response(key_json(revoked, time.time()))

    async def rotate_key(self, request: Request) -> Response:
        """A new key with the old one's team, name, limits, metadata and (unless the body gives
        another) expiry; the old one revoked, or expiring after `grace_seconds`."""
        old = await self._existing_key(request)
        body = await _read_object(request, empty_ok=True)
        _check_fields(body, ROTATE_FIELDS)
        now = time.time()
        grace = _positive("grace_seconds", body.get("grace_seconds", 0), zero_ok=True)
        if old.revoked:
            raise errors.InvalidRequest(f"key {old.id!r} is revoked; create a new key instead")
        given, expires_at = _expiry(body, now)
        if not given:
            expires_at = old.expires_at
        if expires_at is not None and expires_at <= now:
            raise errors.InvalidRequest(f"expires_at: is in the past (key {old.id!r} has expired: "
                                        "give expires_at or expires_in_days for its replacement)")
        new, secret = await self._issue_key(old.team, name=old.name, expires_at=expires_at, limits=old.limits,
                                            metadata=old.metadata, now=now)
        if grace > 0:
            until = now + grace if old.expires_at is None else min(old.expires_at, now + grace)
            previous = await self.store.update_key(old.id, {"expires_at": until})
        else:
            await self.store.revoke_key(old.id)
            previous = await self.store.get_key(old.id) or old
        self.gateway.auth.invalidate(old.secret_hash)
        answer = {**key_json(new, now), "key": secret, "rotated_from": old.id,
                  "previous": key_json(previous, now)}
        return json_response(answer, 201)

    # usage ------------------------------------------------------------------------------------
    async def _usage(self, start: float, end: float, group_by: tuple[str, ...],
                     team: str | None) -> Response:
        rows = await self.records.summary(start, end, list(group_by), team)
        return json_response({"data": rows, "from": start, "to": end, "group_by": list(group_by),
                              "team": team})

    async def admin_usage(self, request: Request) -> Response:
        start, end, group_by, team = usage_query(request.query_params, time.time())
        return await self._usage(start, end, group_by, team)

    async def team_usage(self, request: Request) -> Response:
        """GET /v1/usage: a team's key reads its own team's usage only (the admin key, any)."""
        with store_errors():
            principal = await self.gateway.auth.authenticate(read_headers(request.headers.raw).api_keys)
            start, end, group_by, team = usage_query(request.query_params, time.time())
            if not principal.is_admin:
                if team is not None and team != principal.team:
                    raise errors.PermissionDenied(f"this key belongs to team {principal.team!r} and "
                                                  f"may not read the usage of team {team!r}")
                team = principal.team
            return await self._usage(start, end, group_by, team)

    async def session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if len(session_id) > MAX_ID_CHARS:
            raise errors.InvalidRequest(f"session_id: must be at most {MAX_ID_CHARS} characters")
        params = request.query_params
        team = _team_param(params.get("team"))
        limit = _limit(params, 100, MAX_SESSION_RECORDS)
        records = await self.records.session(session_id, team=team, limit=limit)
        return json_response({"session_id": session_id, "data": records})

    async def request_log(self, request: Request) -> Response:
        """GET /admin/requests: usage records newest first, filtered, a page at a time."""
        where, cursor, limit = request_query(request.query_params)
        records, following = await self.records.requests(where, cursor=cursor, limit=limit)
        return json_response({"data": records, "next_cursor": following})


    # budgets, routing state, audit log, alert deliveries --------------------------------------
    async def team_budget(self, request: Request) -> Response:
        """The team's and each of its keys' budgets now: spent, reserved by requests in flight, and
        remaining, for the UTC day and month."""
        name = _team_name(request.path_params["name"])
        team = await self.store.get_team(name)
        if team is None:
            raise errors.NotFound(f"no team {name!r}")
        now = time.time()
        state = await self.store.budget_state(name, now)
        keys = [k for k in await self.store.list_keys(name) if key_status(k, now) == "active"]
        return json_response({
            "team": name, "day": state.day, "month": state.month,
            "daily": budget_bar(team.limits.budget_daily_usd, state.team_spent_day, state.team_reserved),
            "monthly": budget_bar(team.limits.budget_monthly_usd, state.team_spent_month, state.team_reserved),
            "keys": [{"id": k.id, "name": k.name, "prefix": k.prefix,
                      "daily": budget_bar(k.limits.budget_daily_usd, state.keys_spent_day.get(k.id, 0.0),
                                          state.keys_reserved.get(k.id, 0.0)),
                      "monthly": budget_bar(k.limits.budget_monthly_usd, state.keys_spent_month.get(k.id, 0.0),
                                            state.keys_reserved.get(k.id, 0.0))} for k in keys],
        })

    async def routing(self, request: Request) -> Response:
        """What routing knows: each served endpoint's cooldown, measured latency and throughput
        (as shared through the store), each provider's last seen rate limits, and error rates
        over the newest usage records."""
        now = time.time()
        view = self.gateway.routing.view
        records, _ = await self.records.requests(RequestFilter(start=now - RECENT_ERRORS_S), limit=RECENT_RECORDS)
        outcomes = attempt_outcomes(records)
        endpoints = []
        for model in self.gateway.catalog.models.values():
            for endpoint in model.endpoints:
                health = view.health(f"{endpoint.provider}/{endpoint.upstream_model}")
                attempts, failures = outcomes.get(f"{endpoint.provider}/{model.id}", (0, 0))
                cooling = health.cooldown_until is not None and health.cooldown_until > now
                endpoints.append({
                    "endpoint": f"{endpoint.provider}/{endpoint.upstream_model}", "provider": endpoint.provider,
                    "model": model.id,
                    "state": "cooldown" if cooling else ("half_open" if health.cooldown_until else "healthy"),
                    "cooldown_until": health.cooldown_until if cooling else None,
                    "cooldown_reason": health.cooldown_reason if cooling else None,
                    "consecutive_failures": health.failures, "ttft_ms": _ms(health.ttft_s),
                    "output_tps": health.output_tps, "samples": health.samples,
                    "recent_attempts": attempts, "recent_failures": failures,
                    "recent_error_rate": round(failures / attempts, 4) if attempts else None})
        providers = {name: {"requests_remaining": limits.requests_remaining, "requests_limit": limits.requests_limit,
                            "tokens_remaining": limits.tokens_remaining, "tokens_limit": limits.tokens_limit}
                     for name, limits in view.providers.items()}
        return json_response({"endpoints": endpoints, "providers": providers, "window_s": RECENT_ERRORS_S,
                              "records_read": len(records)})

    async def audit(self, request: Request) -> Response:
        params = request.query_params
        unknown = sorted(set(params) - AUDIT_PARAMS)
        if unknown:
            raise errors.InvalidRequest(f"unknown parameter(s): {', '.join(unknown)} "
                                        f"(expected some of: {', '.join(sorted(AUDIT_PARAMS))})")
        now = time.time()
        start = parse_time("from", params["from"]) if params.get("from") else now - DEFAULT_AUDIT_DAYS * 86400
        end = parse_time("to", params["to"], end_of_day=True) if params.get("to") else now + 1
        try:
            limit = int(params.get("limit", str(DEFAULT_ENTRIES)))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_ENTRIES:
            raise errors.InvalidRequest(f"limit: must be an integer from 1 to {MAX_ENTRIES}")
        return json_response({"data": await self.gateway.auditor.entries(start, end, limit), "from": start,
                              "to": end})

    async def alert_deliveries(self, request: Request) -> Response:
        return json_response({"data": await self.store.alert_deliveries(200)})


ADMIN_PRINCIPAL = Principal(key_id="admin", team="", is_admin=True)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def via_of(request: Request) -> str:
    return "console" if getattr(request.state, "console", False) else "api"


def budget_bar(limit: float | None, spent: float, reserved: float) -> dict[str, Any]:
    remaining = None if limit is None else max(0.0, round(limit - spent - reserved, 9))
    return {"limit_usd": limit, "spent_usd": round(spent, 9), "reserved_usd": round(reserved, 9),
            "remaining_usd": remaining}


def attempt_outcomes(records: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(attempts, failed attempts) per endpoint `provider/model` in these usage records."""
    counts: dict[str, list[int]] = {}
    for record in records:
        for attempt in record.get("attempts") or ():
            slot = counts.setdefault(f"{attempt.get('provider')}/{attempt.get('model')}", [0, 0])
            slot[0] += 1
            if attempt.get("outcome") != "ok":
                slot[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def admin_routes(gateway: Gateway) -> list[Route]:
    """Every route of the admin API, plus `GET /v1/usage` for team keys."""
    api = AdminAPI(gateway)

    def admin(handler: Handler) -> Handler:
        return api.guarded(handler, ADMIN_ONLY)

    def team_read(handler: Handler) -> Handler:
        return api.guarded(handler, TEAM_READ)

    def team_manage(handler: Handler) -> Handler:
        return api.guarded(handler, TEAM_MANAGE)

    return [
        Route("/admin/teams", admin(api.create_team), methods=["POST"]),
        Route("/admin/teams", admin(api.list_teams), methods=["GET"]),
        Route("/admin/teams/{name}", team_read(api.get_team), methods=["GET"]),
        Route("/admin/teams/{name}", admin(api.update_team), methods=["PATCH"]),
        Route("/admin/teams/{name}", admin(api.delete_team), methods=["DELETE"]),
        Route("/admin/teams/{name}/keys", team_manage(api.create_key), methods=["POST"]),
        Route("/admin/teams/{name}/budget", team_read(api.team_budget), methods=["GET"]),
        Route("/admin/keys", team_read(api.list_keys), methods=["GET"]),
        Route("/admin/keys/{key_id}", team_read(api.get_key), methods=["GET"]),
        Route("/admin/keys/{key_id}", team_manage(api.update_key), methods=["PATCH"]),
        Route("/admin/keys/{key_id}", team_manage(api.revoke_key), methods=["DELETE"]),
        Route("/admin/keys/{key_id}/rotate", team_manage(api.rotate_key), methods=["POST"]),
        Route("/admin/usage", team_read(api.admin_usage), methods=["GET"]),
        Route("/admin/reload", admin(api.reload), methods=["POST"]),
        Route("/admin/sessions/{session_id}", team_read(api.session), methods=["GET"]),
        Route("/admin/requests", team_read(api.request_log), methods=["GET"]),
        Route("/admin/routing", admin(api.routing), methods=["GET"]),
        Route("/admin/audit", admin(api.audit), methods=["GET"]),
        Route("/admin/alerts", admin(api.alert_deliveries), methods=["GET"]),
        Route("/v1/usage", api.team_usage, methods=["GET"]),
    ]
