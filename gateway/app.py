"""The ASGI application: a lean hand-written path for `POST /v1/messages`, Starlette for the rest.

`POST /v1/messages` carries nearly all traffic, so it is served by plain calls on the raw ASGI
interface (no routing table, no request objects); every other endpoint is an ordinary Starlette
route. Both render errors through `gateway.errors`.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import random
import signal
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

import orjson
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors, logs, metrics
from gateway.admin import admin_routes
from gateway.admission import Admitter
from gateway.alerts import AlertChecker
from gateway.audit import Auditor
from gateway.auth import Authenticator, key_id_for, secret_hash
from gateway.discovery import Discovery
from gateway.console import Console, console_routes
from gateway.credentials import Credentials
from gateway.errors import GatewayError
from gateway.exchange import Exchange, Principal, new_request_id
from gateway.execute import Executor
from gateway.inbound import INBOUND, OpenAIInbound
from gateway.model_listing import list_page, model_info, openai_list, openai_model
from gateway.reload import RELOAD_ERRORS, Serving, build_serving, describe_change, refused, reread_settings
from gateway.request import MessagesRequest, parse_count_tokens_request, parse_messages_request, read_body, read_headers
from gateway.records.service import UsageRecords
from gateway.routing import RoutingState
from gateway.search.plugins import strip_online
from gateway.search.run import Job, WebSearch
from gateway.serving import served_models
from gateway.settings import ConfigError, Settings
from gateway.store.base import (LIMIT_FIELDS, Conflict, KeyRecord, Limits, NotFound, Store, StoreUnavailable, Team,
                                create_store, limits_from)
from gateway.tracing import create_tracer
from gateway.upstream import Client
from gateway.usage import UsageRecorder
from policies.catalog import Catalog
from policies.limits import InputCeilings
from policies.plan import Plan, build_plan
from policies.preference import (DEFAULT_PREFERENCES, InvalidPreferences, NoEndpoint, parse_preferences,
                                 request_parameters)
from policies.resolve import UnknownModel, resolve, resolve_all
from policies.tokens import estimate_input_tokens
from providers.base import ROUTER_FIELDS
from providers.openai_inbound import openai_error

log = logging.getLogger("gateway")
WATCH_AFTER_S = 0.25
DISCOVERY_TIMEOUT_S = 10.0
GC_YOUNG_OBJECTS = 5000


def store_options(settings: Settings) -> dict:
    options: dict = {"usage_buffer_max_records": settings.usage_buffer_max_records, "lease_ttl_s": settings.lease_ttl,
                     "usage_dedupe_s": settings.usage_dedupe_window}
    if settings.redis_url:
        options.update(socket_timeout=settings.store_timeout, connect_timeout=settings.store_timeout,
                       operation_timeout=settings.store_timeout)
    return options


async def _start_credentials(credentials: Iterable[Credentials]) -> None:
    """Each fetches or resolves its credentials once (a failure is logged and retried in the
    background: the provider's requests fail with its reason meanwhile)."""
    await asyncio.gather(*(c.start() for c in credentials))


async def _close_credentials(credentials: Iterable[Credentials]) -> None:
    await asyncio.gather(*(c.close() for c in credentials))


class Gateway:
    """Everything a request needs, built once at startup and shared by every request."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self._fixed_catalog = catalog
        # Shared with the Authenticator, and changed in place (without an await) by a reload.
        self.static_keys: dict[str, Principal] = {}
        self.demo_key: str | None = None
        self.demo_admin_key: str | None = None
        self._use(build_serving(settings, catalog=catalog))
        admin = settings.admin_key.get_secret_value() if settings.admin_key else None
        self.store: Store = create_store(settings.redis_url, **store_options(settings))
        self.auth = Authenticator(static_keys=self.static_keys, admin_key=admin, store=self.store,
                                  cache_ttl=settings.key_cache_ttl, grace=settings.key_cache_grace,
                                  fail_open=settings.store_outage == "fail_open")
        self.client: Client | None = None
        self.executor: Executor | None = None
        self.search: WebSearch | None = None
        ceilings = settings.reservation
        self.admitter = Admitter(self.store, settings.store_outage, count=self._count_for_reservation,
                                 renew_every=settings.lease_ttl / 3,
                                 ceilings=InputCeilings(image=ceilings.image_tokens, item=ceilings.item_tokens,
                                                        server_tool_use=ceilings.server_tool_use_tokens,
                                                        server_tool_uses=ceilings.server_tool_uses))
        self.routing = RoutingState(self.store, settings.cooldowns)
        self.tracer = create_tracer(settings.otlp_endpoint)
        self.records = UsageRecords(settings, self.store)
        self.usage = UsageRecorder(self.store, settings.usage_spill_path, tracer=self.tracer,
                                   **self.records.recorder_options())
        self.auditor = Auditor(self.store, settings.audit_retention_days)
        self.alerts = AlertChecker(self.store, settings.alerts)
        self.usage.on_settled = self.alerts.settled
        self.console = Console(self)
        self._background: list[asyncio.Task] = []
        self.discovery: Discovery | None = None
        self._reloading = asyncio.Lock()

    # -- the config file's serving part, swapped whole ----------------------------------------------
    def _use(self, serving: Serving) -> None:
        """Swap in a new serving config: plain assignments, no await, so every request sees the
        old one or the new one; a request already planned keeps the objects its plan holds."""
        previous = getattr(self, "serving", None)
        if previous is not None and serving.egress == previous.egress:
            # Same proxies and TLS files: keep the contexts, and so the pools and their connections.
            serving = dataclasses.replace(serving, egress=previous.egress)
        self.serving = serving
        self.settings = serving.settings
        self.catalog, self.demo = serving.catalog, serving.demo
        keys = dict(serving.static_keys)
        if self.demo:
            if self.demo_key is None:
                self.demo_key = (self.settings.demo_key.get_secret_value() if self.settings.demo_key
                                 else "sk-gw-demo-" + secrets.token_hex(12))
            digest = secret_hash(self.demo_key)
            keys[digest] = Principal(key_id=key_id_for(digest), team="demo", from_config=True)
        if self.demo and self.demo_admin_key is None and not self.settings.redis_url \
                and not (self.settings.admin_key and self.settings.admin_key.get_secret_value()):
            # The offline demo opens its console on sample data: it needs an admin key to sign in with.
            self.demo_admin_key = "sk-gw-demo-admin-" + secrets.token_urlsafe(24)
        if self.demo_admin_key is not None and not self.settings.admin_key:
            self.settings.admin_key = SecretStr(self.demo_admin_key)
        self.static_keys.clear()
        self.static_keys.update(keys)
        if getattr(self, "executor", None) is not None:
            self.executor.credentials = serving.credentials
        if getattr(self, "client", None) is not None and (previous is None or serving.egress is not previous.egress):
            self.client.configure(serving.egress)

    async def _serve(self, serving: Serving) -> None:
        """Swap in `serving` once its new credentials hold what they fetch at start (a token), and
        close the ones it no longer uses: no request goes out without credentials."""
        previous = list(self.serving.credentials.values())
        await _start_credentials(c for c in serving.credentials.values() if c not in previous)
        self._use(serving)
        await _close_credentials(c for c in previous if c not in serving.credentials.values())

    async def reload(self) -> dict:
        """Read the config file again and serve it; raises ConfigError with the reason when it is
        refused (the old config keeps serving)."""
        async with self._reloading:
            try:
                settings, ignored = reread_settings(self.settings)
                serving = build_serving(settings, self.discovery.entries() if self.discovery else (),
                                        catalog=self._fixed_catalog, credentials=self.serving.credentials)
            except RELOAD_ERRORS as exc:
                log.error("reload refused, the previous config keeps serving: %s", refused(exc))
                raise ConfigError(refused(exc)) from None
            old, removed = self.serving, set(self.static_keys)
            await self._serve(serving)
            removed -= set(self.static_keys)
            if self.discovery is not None and await self.discovery.refresh(self.catalog.providers):
                await self._rediscovered()
            summary = {**describe_change(old, self.serving), "restart_needed": ignored}
            log.info("config reloaded: %d models served%s%s%s", summary["models"],
                     f", added {', '.join(summary['added'])}" if summary["added"] else "",
                     f", removed {', '.join(summary['removed'])}" if summary["removed"] else "",
                     f"; needs a restart to apply: {', '.join(ignored)}" if ignored else "")
            self.warn_unpriced()
            try:
                await self._sync_store(old, removed)
            except StoreUnavailable:
                log.warning("store unreachable during reload: the config file's teams and keys reach it "
                            "once it answers")
                retry = asyncio.get_running_loop().create_task(
                    self._when_reachable(lambda: self._sync_store(old, removed)))
                self._background.append(retry)
            return summary

    async def _sync_store(self, old: Serving, removed: set[str]) -> None:
        """The store's copy of the config file's keys and teams, brought in line with the new file."""
        await self._retire_keys(old, removed)
        await self._release_teams(old)
        await self.register_static_principals()

    async def _retire_keys(self, old: Serving, removed: set[str]) -> None:
        """A key taken out of the config file stops working: its store copy is revoked too."""
        for digest in removed:
            principal = old.static_keys.get(digest)
            if principal is None:
                continue
            try:
                await self.store.revoke_key(principal.key_id)
            except NotFound:  # never registered (the store was down since startup): nothing to revoke
                pass
            self.auth.invalidate(digest)

    async def _release_teams(self, old: Serving) -> None:
        """A team taken out of the config file's `teams:` keeps its keys but loses the file's limits."""
        kept = {t.name for t in self.settings.teams}
        for team in old.settings.teams:
            if team.name not in kept:
                with contextlib.suppress(NotFound):
                    await self.store.update_team(team.name, {name: None for name in LIMIT_FIELDS})

    async def _rediscovered(self) -> None:
        """Discovery's lists changed: the same config, with the new lists."""
        try:
            await self._serve(build_serving(self.settings, self.discovery.entries(), catalog=self._fixed_catalog,
                                            credentials=self.serving.credentials))
        except RELOAD_ERRORS as exc:
            log.warning("discovery: the new model lists cannot be served, keeping the previous ones: %s",
                        refused(exc))

    def warn_unpriced(self) -> None:
        unpriced = self.serving.unpriced_models()
        if unpriced:
            log.warning("unpriced models (cost 0 in usage; budgets.unpriced: %s): %s",
                        self.settings.budgets.unpriced, ", ".join(unpriced))

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload()
        except ConfigError as exc:  # logged with its reason; the audit log keeps it too
            await self.auditor.record(action="config.reload", principal=None, address=None, via="signal",
                                      actor="operator", outcome="refused", details={"reason": str(exc)[:500]})
            return
        except Exception:
            log.exception("reload failed unexpectedly; the previous config keeps serving")
            return
        await self.auditor.record(action="config.reload", principal=None, address=None, via="signal",
                                  actor="operator")

    async def register_static_principals(self) -> None:
        """Teams and keys from the config file exist in the store too, so admission treats all keys alike."""
        now = time.time()
        static_teams = {t.name: t for t in self.settings.teams}
        teams = set(static_teams) | {p.team for p in self.static_keys.values()}
        for name in sorted(teams):
            spec = static_teams.get(name)
            limits = limits_from(spec.model_dump(exclude={"name", "model_map", "search"})) if spec else Limits()
            existing = await self.store.get_team(name)
            if existing is None:
                try:
                    await self.store.create_team(Team(name=name, limits=limits, created_at=now))
                except Conflict:
                    pass
            elif spec is not None and existing.limits != limits:
                await self.store.update_team(name, spec.model_dump(exclude={"name", "model_map", "search"}))
        for digest, principal in self.static_keys.items():
            if await self.store.find_key(digest) is None:
                try:
                    await self.store.create_key(KeyRecord(id=principal.key_id, team=principal.team,
                                                          prefix=principal.key_id, secret_hash=digest,
                                                          name="config", created_at=now))
                except Conflict:
                    pass

    async def start(self) -> None:
        upstream = self.settings.upstream
        self.client = Client(connect_timeout=self.settings.timeouts.connect,
                             max_connections_per_origin=upstream.max_connections_per_origin,
                             pool_wait=upstream.pool_wait, max_answer_bytes=upstream.max_answer_bytes,
                             egress=self.serving.egress)
        self.executor = Executor(self.client, self.settings.timeouts, self.settings.retries, self.routing)
        await _start_credentials(self.serving.credentials.values())
        self.executor.credentials = self.serving.credentials
        self.search = WebSearch(self.client, self.store, ceilings=self.admitter.ceilings)
        loop = asyncio.get_running_loop()
        if not self.demo and any(p.discover for p in self.catalog.providers.values()):
            # A listing is small: a server that takes longer is not worth holding startup for.
            self.discovery = Discovery(self.client, self._rediscovered, timeout=min(self.settings.timeouts.first_byte,
                                                                                     DISCOVERY_TIMEOUT_S))
            if await self.discovery.refresh(self.catalog.providers):
                await self._rediscovered()
            self._background.append(loop.create_task(
                self.discovery.run_forever(lambda: self.catalog.providers)))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._reload_on_signal()))
            if self.settings.workers > 1:
                log.info("worker %d serving (SIGHUP reloads its config)", os.getpid())
        try:
            await self.store.ping()  # also loads the store's scripts, so the first admission is one call
            await self.register_static_principals()
        except StoreUnavailable:
            log.warning("store unreachable at startup: keys from the config file are registered later")
            self._background.append(asyncio.get_running_loop().create_task(
                self._when_reachable(self.register_static_principals)))
        await self.records.start()
        self.usage.start()
        self.alerts.start()
        if self.demo and not self.settings.redis_url:
            from gateway.console.sample import load_sample_data
            await load_sample_data(self.store, self.records.db, self.catalog)
            self.console.sample_data = True
        # Everything built so far lives as long as the process: keep it out of the collector's scans.
        gc.collect()
        gc.freeze()
        # The young generation is collected once this many container objects are net allocated.
        # At the default 700, fewer than the requests in flight at 64 connections hold, most
        # collections find only live objects and promote them, to be scanned again in older
        # generations. At 5,000 it collected a hundred times less often, and the gateway carried
        # 8 % more large streams at 64 connections in the bench. Larger costs latency instead: a
        # 20,000-object collection is a ~2 ms pause.
        gc.set_threshold(GC_YOUNG_OBJECTS, 10, 10)
        self._background.append(asyncio.get_running_loop().create_task(self.admitter.renew_forever()))
        self._background.append(asyncio.get_running_loop().create_task(self.routing.refresh_forever()))

    @staticmethod
    async def _when_reachable(operation: Callable[[], Awaitable[None]]) -> None:
        """Run `operation` once the store answers again: tried every second until it goes through."""
        while True:
            await asyncio.sleep(1)
            try:
                await operation()
                return
            except StoreUnavailable:
                continue

    async def stop(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._background:
            task.cancel()
        await self.records.stop()
        await self.usage.stop()
        await self.alerts.stop()
        await self.records.close()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)
        if self.client is not None:
            await self.client.close()
        await _close_credentials(self.serving.credentials.values())
        await self.store.close()

    # -- planning -------------------------------------------------------------------------------
    def plan(self, model: str, fallbacks: list[str], principal: Principal, preferences: dict | None = None,
             request: MessagesRequest | None = None) -> Plan:
        serving = self.serving
        try:
            resolved = resolve_all(serving.catalog, model, fallbacks, serving.map_for(principal.team))
        except UnknownModel as exc:
            raise errors.NotFound(str(exc)) from None
        if serving.unpriced_deny and principal.budgeted:
            resolved = _priced_only(resolved, principal.team)
        allowed = principal.allowed_models
        if allowed is not None:
            denied = [r.model.id for r in resolved if r.model.id not in allowed]
            if denied:
                raise errors.PermissionDenied(f"this key may not use model {denied[0]!r}")
        try:
            prefs = parse_preferences(preferences) if preferences else DEFAULT_PREFERENCES
        except InvalidPreferences as exc:
            raise errors.InvalidRequest(str(exc)) from None
        # Which parameters a request uses is only needed to honour require_parameters, and
        # finding out means decoding the whole body.
        used = request_parameters(request.body) if prefs.require_parameters and request is not None else frozenset()
        try:
            return build_plan(serving.catalog, resolved, prefs, used_parameters=used, view=self.routing.view,
                              now=time.time(), rand=random.random())
        except NoEndpoint as exc:
            # A request using parameters no endpoint can honour is the client's to change: 400.
            kind = errors.InvalidRequest if exc.filter == "provider.require_parameters" else errors.NotFound
            raise kind(str(exc)) from None

    # -- POST /v1/messages ------------------------------------------------------------------------
    async def messages(self, scope, receive, send, inbound: OpenAIInbound | None = None) -> None:
        """`inbound`: the client speaks another protocol; it translates the body to a Messages
        request and every answer back (see `gateway.inbound`)."""
        ex = Exchange(new_request_id(), read_headers(scope["headers"]), scope["query_string"].decode("latin-1"))
        if inbound is not None:
            ex.inbound, inbound.exchange, send = inbound.name, ex, inbound.send
        ticket = None
        metrics.INFLIGHT.inc()
        try:
            # Admission checks the key again in its one round trip: the cache may answer here.
            ex.principal = await self.auth.authenticate(ex.headers.api_keys, verify=False)
            raw = await read_body(receive, self.settings.max_body_bytes, ex.headers.content_length)
            if inbound is not None:
                raw = inbound.canonical(raw)
            ex.request = parse_messages_request(raw, ex.headers, self.settings.input_limits)
            job = self.search.prepare(ex.request, ex.principal.team, self.settings)
            plan = self.plan(job.model if job else ex.request.model, ex.request.fallbacks, ex.principal,
                             ex.request.preferences, ex.request)
            ex.plan_model = plan.primary.id
            ticket = await self._admit(ex, plan, extra_usd=job.reservation_usd(plan) if job else 0.0)
            await self._run_watched(ex, plan, receive, send, job)
        except GatewayError as exc:
            await self._fail(ex, exc, send)
        except ConnectionAbortedError:
            ex.status, ex.client_gone = 499, True
        except StoreUnavailable:  # a store call outside admission's own outage policy
            await self._fail(ex, errors.Overloaded("the gateway's store is unavailable; try again shortly"), send)
        except Exception:  # a bug: one log line with the request id, and still Anthropic's envelope
            log.exception("request %s: unexpected error on POST %s", ex.request_id, scope["path"])
            await self._fail(ex, internal_error(ex.request_id), send)
        finally:
            metrics.INFLIGHT.dec()
            if ticket is not None:
                self.admitter.done(ticket)
            if ex.principal is not None:
                self.usage.finish(ex, ticket)
            else:
                self.usage.finish_unrecorded(ex)

    async def _fail(self, ex: Exchange, exc: GatewayError, send) -> None:
        ex.status, ex.error_type = exc.status, exc.error_type
        if ex.first_byte_at is None:
            await send_error(send, exc, ex.request_id, ex.response_headers)
        elif not ex.finished:
            # The answer has begun: end it, a stream with an error event.
            tail = errors.sse_error_event(exc.error_type, exc.message) if ex.request and ex.request.stream else b""
            ex.finished = True
            await send({"type": "http.response.body", "body": tail})

    async def _admit(self, ex: Exchange, plan: Plan, *, rate_only: bool = False, extra_usd: float = 0.0):
        try:
            return await self.admitter.admit(ex, plan, rate_only=rate_only, extra_usd=extra_usd)
        except errors.AuthenticationFailed:
            if not ex.principal.from_config:
                raise
        # The store lost the config file's keys (a Redis without persistence restarted): restore them.
        await self.register_static_principals()
        return await self.admitter.admit(ex, plan, rate_only=rate_only, extra_usd=extra_usd)

    async def _run_watched(self, ex: Exchange, plan: Plan, receive, send, job: Job | None = None) -> None:
        """Run the plan, cancelling it (and so the upstream call) if the client goes away.

        Watching costs a task, and an answer that is complete within `WATCH_AFTER_S` has little
        upstream work left to save, so a request is watched only once it has run that long: a
        client that leaves earlier is noticed then, when model answers have barely started.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        watcher: asyncio.Task | None = None

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not ex.finished:
                ex.client_gone = True
                task.cancel()

        def start_watching() -> None:
            nonlocal watcher
            if not ex.finished:
                watcher = loop.create_task(watch())

        timer = loop.call_later(WATCH_AFTER_S, start_watching)
        try:
            if job is None:
                await self.executor.run(ex, plan, send)
            else:  # web search or plugins: their driver runs the executor, a round at a time
                await job.serve(self.executor, ex, plan, send)
        except asyncio.CancelledError:
            if not ex.client_gone:
                raise
            task.uncancel()
            ex.status = 499
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()

    # -- the other endpoints ----------------------------------------------------------------------
    async def principal_of(self, request: Request) -> Principal:
        """The caller, checked against the store on every request (a revoked key stops at once)."""
        return await self.auth.authenticate(read_headers(request.headers.raw).api_keys, verify=True)

    def visible_models(self, principal: Principal):
        models = served_models(self.catalog)
        if principal.allowed_models is not None:
            models = [m for m in models if m.id in principal.allowed_models]
        return models

    async def list_models(self, request: Request) -> Response:
        """Anthropic's paginated list, or OpenAI's list for an OpenAI client: one that sends no
        `anthropic-version` header and its key as `Authorization: Bearer` (Anthropic's SDKs always
        send the version; OpenAI's never)."""
        principal = await self.principal_of(request)
        if is_openai_client(request):
            return json_response(openai_list(self.visible_models(principal)))
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            raise errors.InvalidRequest("limit: must be an integer") from None
        try:
            page = list_page(self.visible_models(principal), limit=limit,
                             before_id=params.get("before_id"), after_id=params.get("after_id"))
        except ValueError as exc:
            raise errors.InvalidRequest(str(exc)) from None
        return json_response(page)

    async def get_model(self, request: Request) -> Response:
        principal = await self.principal_of(request)
        model_id = request.path_params["model_id"]
        try:
            model = resolve(self.catalog, model_id).model
        except UnknownModel as exc:
            raise errors.NotFound(str(exc)) from None
        if model not in self.visible_models(principal):
            raise errors.NotFound(f"model {model_id!r} is not available to this key")
        return json_response(openai_model(model) if is_openai_client(request) else model_info(model))

    async def count_tokens(self, request: Request) -> Response:
        """Admitted like a message (key validity, allowed models, RPM; not TPM, concurrency or
        budget, since counting costs nothing) and recorded in usage at zero cost."""
        headers = read_headers(request.headers.raw)
        ex = Exchange(request_id_of(request), headers, request.url.query)
        try:
            # Admission checks the key again in its one round trip: the cache may answer here.
            ex.principal = await self.auth.authenticate(headers.api_keys, verify=False)
            raw = await read_body(request.receive, self.settings.max_body_bytes, headers.content_length)
            body, model_id = parse_count_tokens_request(raw)
            ex.request = MessagesRequest(raw=raw, model=model_id, fallbacks=[], stream=False, max_tokens=0,
                                         session_id=None, user=None, trace=None, preferences=None,
                                         router_fields=tuple(f for f in ROUTER_FIELDS if f in body),
                                         values=None, _body=body)
            plan = self.plan(strip_online(model_id)[0], [], ex.principal)
            ex.plan_model = plan.primary.id
            await self._admit(ex, plan, rate_only=True)
            counted = await self._count(plan, ex, body)
            ex.status = 200
            return json_response(counted, headers={"request-id": ex.request_id, **_str_headers(ex.response_headers)})
        except GatewayError as exc:
            ex.status, ex.error_type = exc.status, exc.error_type
            exc.headers = {**_str_headers(ex.response_headers), **exc.headers}
            raise
        except ConnectionAbortedError:  # the client left while sending its body: nobody to answer
            ex.status, ex.client_gone = 499, True
            return Response(status_code=499)
        finally:
            if ex.principal is not None:
                self.usage.finish(ex, None)  # nothing was reserved: nothing to settle

    async def _count(self, plan: Plan, ex: Exchange, body: dict) -> dict:
        """The first count an upstream gives, by the plan's order; else the local estimate."""
        for attempt in plan.attempts:
            counted = await self.executor.count(attempt, ex)
            if counted is not None:
                return counted
        return {"input_tokens": estimate_input_tokens(body, plan.primary)}

    async def _count_for_reservation(self, ex: Exchange, plan: Plan) -> int | None:
        """The input tokens of a message, counted by the first endpoint of its plan through its
        protocol (Anthropic's count_tokens is free): for a reservation that content only the
        upstream can size would otherwise fill with ceilings. None when it cannot or does not answer."""
        request = ex.request
        counted_only = dataclasses.replace(request, router_fields=tuple(
            name for name in request.values if name not in COUNTED_FIELDS))
        for attempt in plan.attempts[:1]:
            try:
                counted = await self.executor.count(attempt, ex, request=counted_only)
            except GatewayError:  # the upstream refused to count: the ceilings stand
                return None
            tokens = counted.get("input_tokens") if isinstance(counted, dict) else None
            return tokens if type(tokens) is int and tokens >= 0 else None
        return None

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        backend = "redis" if self.settings.redis_url else "memory"
        usage = self.records.report()
        waiting = self.usage.spill.count() if self.usage.spill.pending() else 0
        spilled = {"spilled_records": waiting} if waiting else {}
        try:
            await self.store.ping()
        except StoreUnavailable:
            if self.admitter.fail_open:
                return json_response({"status": "degraded", "store": backend, "reachable": False,
                                      "policy": "fail_open", "usage": usage, **spilled})
            return json_response({"status": "unavailable", "store": backend, "reachable": False,
                                  "policy": "fail_closed", "usage": usage, **spilled}, status=503)
        # The record store falling behind degrades, never fails: requests are still counted; so do
        # spilled lines, whose spend the budgets have not seen yet.
        status = "ready" if usage["ok"] and not spilled else "degraded"
        return json_response({"status": status, "store": backend, "reachable": True, "demo": self.demo,
                              "usage": usage, **spilled})

    async def metrics(self, request: Request) -> Response:
        token = self.settings.metrics_token
        if token is not None and not metrics.authorized(request.headers.get("authorization"),
                                                        token.get_secret_value()):
            raise errors.AuthenticationFailed("/metrics needs the metrics token as Authorization: Bearer")
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)


def _priced_only(resolved, team: str):
    """`budgets.unpriced: deny`: a budgeted team is served only by endpoints with a price."""
    kept = []
    for one in resolved:
        priced = tuple(e for e in one.model.endpoints if not e.pricing.unpriced)
        if not priced:
            raise errors.PermissionDenied(f"model {one.model.id!r} has no price, and team {team!r} has a budget: "
                                          f"unpriced models are refused (budgets.unpriced: deny)")
        kept.append(one if len(priced) == len(one.model.endpoints)
                    else dataclasses.replace(one, model=dataclasses.replace(one.model, endpoints=priced)))
    return tuple(kept)


def is_openai_client(request: Request) -> bool:
    return "anthropic-version" not in request.headers \
        and request.headers.get("authorization", "")[:7].lower() == "bearer "


# The members of a message that count_tokens accepts: the rest (max_tokens, stream, sampling...) go.
COUNTED_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"})


def json_response(payload, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


async def send_error(send, exc: GatewayError, request_id: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"request-id", request_id.encode())]
    headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    headers += list(extra)
    body = exc.body()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def internal_error(request_id: str) -> GatewayError:
    return errors.InternalError(f"internal error; the gateway's log has the details under request-id {request_id}")


def request_id_of(request: Request) -> str:
    """The id `GatewayApp` gave this request (one of its own when called without it)."""
    return request.scope.get("state", {}).get("request_id") or new_request_id()


def _str_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}


def _starlette_error(request: Request, exc: Exception) -> Response:
    """Every answer of the Starlette routes in Anthropic's envelope. An unexpected exception is
    logged once by `GatewayApp`, after Starlette has sent this answer and raised it again."""
    request_id = request_id_of(request)
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, HTTPException):
        kind = {404: errors.NotFound, 405: errors.InvalidRequest}.get(exc.status_code, errors.InvalidRequest)
        error = kind(f"{request.method} {request.url.path}: {exc.detail}", status=exc.status_code)
    elif isinstance(exc, StoreUnavailable):
        error = errors.Overloaded("the gateway's store is unavailable; try again shortly")
    else:
        error = internal_error(request_id)
    status, body = error.status, error.body()
    if request.url.path.startswith("/v1/models") and is_openai_client(request):
        status, body = openai_error(status, body)
    return Response(body, status_code=status, media_type="application/json",
                    headers={"request-id": request_id, **error.headers})


class GatewayApp:
    """The ASGI entry point."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        routes = [
            Route("/v1/messages/count_tokens", gateway.count_tokens, methods=["POST"]),
            Route("/v1/models", gateway.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", gateway.get_model, methods=["GET"]),
            Route("/healthz", gateway.healthz, methods=["GET"]),
            Route("/readyz", gateway.readyz, methods=["GET"]),
            Route("/metrics", gateway.metrics, methods=["GET"]),
        ]
        routes += admin_routes(gateway)
        routes += console_routes(gateway.console)
        self.router = Starlette(routes=routes, lifespan=self._lifespan,
                                exception_handlers={Exception: _starlette_error, HTTPException: _starlette_error,
                                                    GatewayError: _starlette_error})
        self.logged_route = logs.AccessLogged(self._route)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        await self.gateway.start()
        try:
            yield
        finally:
            await self.gateway.stop()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/messages" and scope["method"] == "POST":
            await self.gateway.messages(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] in INBOUND and scope["method"] == "POST":
            await self.gateway.messages(scope, receive, send, OpenAIInbound(INBOUND[scope["path"]], send))
        elif scope["type"] == "http":
            await self.logged_route(scope, receive, send)
        else:
            await self.router(scope, receive, send)

    async def _route(self, scope, receive, send) -> None:
        """A Starlette route, with its request id on the answer, and the one catch-all for what no
        handler expected: Starlette answers it through `_starlette_error` and raises it again;
        here it is logged, once."""
        request_id = new_request_id()
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        started = False

        async def tracked(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"request-id" for name, _ in headers):
                    headers.append((b"request-id", request_id.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.router(scope, receive, tracked)
        except Exception:
            log.exception("request %s: unexpected error on %s %s", request_id, scope["method"], scope["path"])
            if not started:
                await send_error(send, internal_error(request_id), request_id)
