"""Budget alerts: a signed webhook when spend passes a threshold of a daily or monthly budget.

After each usage flush the recorder names the teams it settled; the `AlertChecker` reads each
one's budget state off the request path and, for every threshold passed (by the team, or by a key
against its own budget), asks the store to claim that alert (a SET NX per team, scope, budget,
period and threshold): exactly one replica wins and sends it, so each threshold fires once per
period however many replicas serve the team. Deliveries are retried with exponential backoff;
each outcome is logged when it fails and kept in the store for the console.

The body is JSON (`format: json`) or a Slack-compatible `{"text": ...}` (`format: slack`), signed
as `x-gateway-signature: sha256=<hex>`, the HMAC-SHA256 of the raw body under `secret`.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from gateway.settings import Alerts
from gateway.store.base import BudgetState, KeyRecord, Limits, Store, StoreUnavailable, Team

log = logging.getLogger("gateway.alerts")
SIGNATURE_HEADER = "x-gateway-signature"
DELIVERIES_KEPT = 200
CHECK_EVERY_S = 0.5       # a team settled many times within this is checked once
ALERT_TEAMS_EVERY_S = 10.0  # without a gateway-wide webhook: how often the teams with their own are read
DAY_CLAIM_TTL_S = 2 * 86400
MONTH_CLAIM_TTL_S = 33 * 86400


@dataclass(frozen=True)
class AlertConfig:
    webhook_url: str
    secret: str | None
    thresholds: tuple[float, ...]
    format: str


@dataclass(frozen=True)
class Crossing:
    """A threshold of one budget that spend has reached."""
    team: str
    key_id: str | None      # None: the team's budget; else the key's own
    budget: str             # daily | monthly
    period: str             # YYYY-MM-DD | YYYY-MM
    budget_usd: float
    spent_usd: float
    threshold: float

    @property
    def claim(self) -> str:
        scope = "team" if self.key_id is None else f"k:{self.key_id}"
        return f"{scope}:{self.budget}:{self.period}:{self.threshold:g}"


def config_for(settings: Alerts, team_alerts: Mapping[str, Any] | None) -> AlertConfig | None:
    """The team's own alert settings over the top-level ones; None without a webhook."""
    own = team_alerts or {}
    url = own.get("webhook_url") or settings.webhook_url
    if not url:
        return None
    secret = own.get("secret") or (settings.secret.get_secret_value() if settings.secret else None)
    return AlertConfig(webhook_url=url, secret=secret,
                       thresholds=tuple(own.get("thresholds") or settings.thresholds),
                       format=own.get("format") or settings.format)


def _period(day: str, month: str, budget: str) -> str:
    if budget == "daily":
        return f"{day[:4]}-{day[4:6]}-{day[6:8]}"
    return f"{month[:4]}-{month[4:6]}"


def crossings(team: str, limits: Limits, key_limits: Mapping[str, Limits], state: BudgetState,
              thresholds: Iterable[float]) -> list[Crossing]:
    """Every threshold reached by the team's spend against its budgets, and by each key's spend
    against the key's own budgets. A budget of 0 is reached by nothing: it refuses all spend."""
    found: list[Crossing] = []
    levels = sorted(set(thresholds))

    def check(key_id: str | None, budget: str, limit: float | None, spent: float) -> None:
        if not limit or limit <= 0:
            return
        for level in levels:
            # A cent's millionth of slack: settlement is in nano-USD, budgets in USD.
            if spent + 1e-9 >= level * limit:
                found.append(Crossing(team, key_id, budget, _period(state.day, state.month, budget),
                                      limit, round(spent, 9), level))

    check(None, "daily", limits.budget_daily_usd, state.team_spent_day)
    check(None, "monthly", limits.budget_monthly_usd, state.team_spent_month)
    for key_id, own in sorted(key_limits.items()):
        check(key_id, "daily", own.budget_daily_usd, state.keys_spent_day.get(key_id, 0.0))
        check(key_id, "monthly", own.budget_monthly_usd, state.keys_spent_month.get(key_id, 0.0))
    return found


def alert_body(crossing: Crossing, fmt: str, now: float) -> bytes:
    payload: dict[str, Any] = {
        "type": "budget_alert", "team": crossing.team, "key_id": crossing.key_id, "budget": crossing.budget,
        "period": crossing.period, "budget_usd": crossing.budget_usd, "spent": crossing.spent_usd,
        "threshold": crossing.threshold, "ts": now}
    if fmt == "slack":
        who = f"key {crossing.key_id} of team {crossing.team}" if crossing.key_id else f"team {crossing.team}"
        payload = {"text": f"Budget alert: {who} has spent ${crossing.spent_usd:,.2f} of its {crossing.budget} "
                           f"budget of ${crossing.budget_usd:,.2f} for {crossing.period} "
                           f"({crossing.threshold:.0%} threshold)."}
    return orjson.dumps(payload)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _where(url: str) -> str:
    """A webhook's scheme, host and port only: Slack-style URLs carry their secret in the path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class AlertChecker:
    def __init__(self, store: Store, settings: Alerts) -> None:
        self.store = store
        self.settings = settings
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sends: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None
        self._alert_teams: set[str] = set()
        self._alert_teams_read_at = float("-inf")

    def settled(self, teams: Iterable[str]) -> None:
        """Called by the usage recorder after a flush: costs a set update."""
        self._pending.update(teams)
        self._wake.set()

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.settings.timeout, trust_env=False)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._sends:
            await asyncio.wait(self._sends, timeout=self.settings.timeout)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            teams, self._pending = self._pending, set()
            try:
                teams = await self._checked(teams)
            except StoreUnavailable:
                self._pending.update(teams)
                teams = set()
            for team in sorted(teams):
                try:
                    await self.check(team)
                except StoreUnavailable:
                    self._pending.add(team)  # checked again once the store answers
                except Exception:
                    log.exception("alerts: checking team %s failed", team)
            await asyncio.sleep(CHECK_EVERY_S)
            if self._pending:
                self._wake.set()

    def team_alerts_changed(self) -> None:
        """A team's alert settings changed through this replica: read which teams have some anew."""
        self._alert_teams_read_at = float("-inf")

    async def _checked(self, teams: set[str]) -> set[str]:
        """The settled teams that may have alerts: all of them with a gateway-wide webhook, else
        those with alert settings of their own (known from one set read every few seconds)."""
        if self.settings.webhook_url:
            return teams
        now = time.monotonic()
        if now - self._alert_teams_read_at >= ALERT_TEAMS_EVERY_S:
            self._alert_teams = await self.store.teams_with_alerts()
            self._alert_teams_read_at = now
        return teams & self._alert_teams

    async def check(self, name: str, now: float | None = None) -> list[Crossing]:
        """Claim and send the alerts the team's spend has reached; returns those this replica sends."""
        team: Team | None = await self.store.get_team(name)
        if team is None:
            return []
        config = config_for(self.settings, team.alerts)
        if config is None:
            return []
        now = time.time() if now is None else now
        keys: list[KeyRecord] = await self.store.list_keys(name)
        key_limits = {k.id: k.limits for k in keys if not k.revoked
                      and (k.limits.budget_daily_usd or k.limits.budget_monthly_usd)}
        if not (team.limits.budget_daily_usd or team.limits.budget_monthly_usd or key_limits):
            return []
        state = await self.store.budget_state(name, now)
        mine = []
        for crossing in crossings(name, team.limits, key_limits, state, config.thresholds):
            ttl = DAY_CLAIM_TTL_S if crossing.budget == "daily" else MONTH_CLAIM_TTL_S
            if await self.store.claim_alert(name, crossing.claim, ttl):
                mine.append(crossing)
                task = asyncio.get_running_loop().create_task(self.deliver(crossing, config, now))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
        return mine

    async def deliver(self, crossing: Crossing, config: AlertConfig, now: float) -> bool:
        body = alert_body(crossing, config.format, now)
        headers = {"content-type": "application/json", "user-agent": "llm-gateway-alerts"}
        if config.secret:
            headers[SIGNATURE_HEADER] = signature(config.secret, body)
        error, status, attempt = None, None, 0
        for attempt in range(1, self.settings.attempts + 1):
            try:
                response = await self._client.post(config.webhook_url, content=body, headers=headers)
                status = response.status_code
                if 200 <= status < 300:
                    error = None
                    break
                error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < self.settings.attempts:
                await asyncio.sleep(self.settings.backoff * 2 ** (attempt - 1))
        outcome = {"ts": time.time(), "team": crossing.team, "key_id": crossing.key_id, "budget": crossing.budget,
                   "period": crossing.period, "threshold": crossing.threshold, "spent": crossing.spent_usd,
                   "webhook": _where(config.webhook_url), "attempts": attempt, "status": status,
                   "delivered": error is None, "error": error}
        if error is not None:
            log.warning("alerts: webhook %s for team %s (%s %s, %g) failed after %d attempts: %s",
                        outcome["webhook"], crossing.team, crossing.budget, crossing.period, crossing.threshold,
                        attempt, error)
        try:
            await self.store.record_alert_delivery(outcome, DELIVERIES_KEPT)
        except StoreUnavailable:
            pass
        return error is None
