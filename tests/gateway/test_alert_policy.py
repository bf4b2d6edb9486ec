"""Which budget thresholds spend has reached, what the webhook body says, and how it is signed:
the pure half of budget alerts."""
from __future__ import annotations

import hashlib
import hmac

import orjson

from gateway.alerts import Crossing, alert_body, config_for, crossings, signature
from gateway.settings import Alerts
from gateway.store.base import BudgetState, Limits

STATE = BudgetState(day="20261201", month="202612", team_spent_day=8.0, team_spent_month=8.0,
                    keys_spent_day={"k1": 2.0}, keys_spent_month={"k1": 2.0})


def test_each_threshold_reached_by_team_spend_is_a_crossing_of_its_period():
    found = crossings("t", Limits(budget_daily_usd=10.0, budget_monthly_usd=100.0), {}, STATE, [0.5, 0.8, 1.0])
    assert [(c.budget, c.period, c.threshold) for c in found] == [("daily", "2026-12-01", 0.5),
                                                                  ("daily", "2026-12-01", 0.8)]
    assert found[1].claim == "team:daily:2026-12-01:0.8"


def test_a_keys_own_budget_is_checked_against_the_keys_spend_only():
    found = crossings("t", Limits(), {"k1": Limits(budget_monthly_usd=2.0)}, STATE, [0.5, 1.0])
    assert [(c.key_id, c.budget, c.period, c.threshold) for c in found] == [("k1", "monthly", "2026-12", 0.5),
                                                                            ("k1", "monthly", "2026-12", 1.0)]
    assert found[0].claim == "k:k1:monthly:2026-12:0.5"


def test_no_budget_or_a_zero_budget_reaches_no_threshold():
    assert crossings("t", Limits(budget_daily_usd=0.0), {"k1": Limits()}, STATE, [0.5]) == []


def test_the_signature_is_the_hmac_sha256_of_the_raw_body():
    body = alert_body(Crossing("t", None, "daily", "2026-12-01", 10.0, 8.0, 0.8), "json", 1.0)
    assert orjson.loads(body) == {"type": "budget_alert", "team": "t", "key_id": None, "budget": "daily",
                                  "period": "2026-12-01", "budget_usd": 10.0, "spent": 8.0, "threshold": 0.8, "ts": 1.0}
    assert signature("s", body) == "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()


def test_the_slack_format_is_one_text_member():
    body = orjson.loads(alert_body(Crossing("t", "k1", "monthly", "2026-12", 2.0, 1.6, 0.8), "slack", 1.0))
    assert body == {"text": "Budget alert: key k1 of team t has spent $1.60 of its monthly budget of $2.00 "
                            "for 2026-12 (80% threshold)."}


def test_a_teams_alert_settings_override_the_gateways():
    settings = Alerts(webhook_url="http://hooks.example/a", secret="g", thresholds=[0.5])
    assert config_for(Alerts(), None) is None
    own = config_for(settings, {"thresholds": [0.9], "format": "slack"})
    assert (own.webhook_url, own.secret, own.thresholds, own.format) == ("http://hooks.example/a", "g", (0.9,), "slack")
    assert config_for(settings, {"webhook_url": "http://other/b", "secret": "t"}).secret == "t"
