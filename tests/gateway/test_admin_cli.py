"""`gateway teams|keys|usage` against a running gateway: tables, JSON, secrets shown once, exit codes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from gateway.cli import main
from tests.conftest import ADMIN_KEY
from tests.gateway.test_admin import MARCH_1, append_usage, settings_for, usage_record
from tests.gateway_server import GatewayThread

SECRET = re.compile(r"sk-gw-[A-Za-z0-9_-]{40}")


@pytest.fixture(scope="module")
def cli_gateway(anthropic_upstream, tmp_path_factory) -> Iterator[GatewayThread]:
    """Serves no messages, so usage can be written straight to its in-memory store."""
    with GatewayThread(**settings_for(anthropic_upstream.url, tmp_path_factory.mktemp("cli"))) as running:
        yield running


@pytest.fixture
def gateway_cli(cli_gateway, capsys, monkeypatch):
    """Runs `gateway <argv>` against the test gateway; returns (exit code, stdout, stderr)."""
    monkeypatch.delenv("GATEWAY_URL", raising=False)
    monkeypatch.delenv("GATEWAY_ADMIN_KEY", raising=False)

    def run(*argv: str, connect: bool = True) -> tuple[int, str, str]:
        flags = ["--url", cli_gateway.url, "--admin-key", ADMIN_KEY] if connect else []
        try:
            code = main([*argv, *flags])
        except SystemExit as exc:  # argparse refuses bad flags this way
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


def unique(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def models_status(gateway: GatewayThread, key: str) -> int:
    return httpx.get(gateway.url + "/v1/models", headers={"x-api-key": key}).status_code


# -- teams --------------------------------------------------------------------------------------
def test_teams_create_then_list_shows_a_table_with_the_limits(gateway_cli):
    name = unique()
    code, out, err = gateway_cli("teams", "create", name, "--rpm", "60", "--budget-daily", "2.5",
                                 "--allowed-models", "anthropic/claude-sonnet-4.5,openai/gpt-5")
    assert (code, err) == (0, "")
    assert f"Created team {name}." in out
    assert re.search(r"^rpm\s+60$", out, re.MULTILINE) and re.search(r"^tpm\s+-$", out, re.MULTILINE)

    code, out, _ = gateway_cli("teams", "list")
    assert code == 0
    header, rule, *rows = out.splitlines()
    assert header.split() == ["NAME", "RPM", "TPM", "CONCURRENT", "DAILY", "USD", "MONTHLY", "USD", "MODELS",
                              "CREATED"]
    assert set(rule) <= {"-", " "}
    row = next(r for r in rows if r.startswith(name + " "))
    assert row.split()[:7] == [name, "60", "-", "-", "2.5", "-", "anthropic/claude-sonnet-4.5,openai/gpt-5"]


def test_teams_list_json_is_the_apis_answer(cli_gateway, gateway_cli):
    name = unique()
    gateway_cli("teams", "create", name, "--tpm", "1000")
    code, out, _ = gateway_cli("teams", "list", "--json")
    assert code == 0
    answer = json.loads(out)
    listed = httpx.get(cli_gateway.url + "/admin/teams", headers={"x-api-key": ADMIN_KEY}).json()
    assert answer == listed
    assert [t["limits"]["tpm"] for t in answer["data"] if t["name"] == name] == [1000]


def test_teams_update_changes_the_given_limits_and_none_clears(gateway_cli):
    name = unique()
    gateway_cli("teams", "create", name, "--rpm", "10", "--tpm", "500")
    code, out, _ = gateway_cli("teams", "update", name, "--rpm", "none", "--max-concurrent", "3")
    assert code == 0 and f"Updated team {name}." in out
    code, out, _ = gateway_cli("teams", "get", name, "--json")
    assert json.loads(out)["limits"] == {"rpm": None, "tpm": 500, "max_concurrent": 3, "budget_daily_usd": None,
                                              "budget_monthly_usd": None, "allowed_models": None}


def test_teams_delete_revokes_the_teams_keys(cli_gateway, gateway_cli):
    name = unique()
    gateway_cli("teams", "create", name)
    _, out, _ = gateway_cli("keys", "create", "--team", name)
    secret = SECRET.search(out).group(0)
    code, out, _ = gateway_cli("teams", "delete", name)
    assert code == 0 and out.strip() == f"Deleted team {name}; revoked 1 key(s)."
    assert models_status(cli_gateway, secret) == 401


@pytest.mark.parametrize("argv", [("teams", "create", "x", "--rpm", "-5"), ("teams", "create", "x", "--tpm", "lots"),
                                  ("teams", "create", "x", "--budget-daily", "nan"), ("teams", "frobnicate"),
                                  ("keys", "create"), ("keys", "create", "--team", "t", "--expires-in-days", "1",
                                                       "--expires-at", "2099-01-01T00:00:00Z")])
def test_a_bad_command_line_is_a_usage_error_exit_2(gateway_cli, argv):
    code, out, err = gateway_cli(*argv)
    assert code == 2
    assert out == "" and "usage:" in err


def test_an_update_with_nothing_to_change_is_a_usage_error(gateway_cli):
    code, _, err = gateway_cli("teams", "update", "anyone")
    assert code == 2 and "nothing to update" in err


def test_an_api_refusal_prints_its_message_and_exits_1(gateway_cli):
    name = unique()
    assert gateway_cli("teams", "create", name)[0] == 0
    code, out, err = gateway_cli("teams", "create", name)
    assert (code, out) == (1, "")
    assert f"team '{name}' already exists" in err and "409" in err
    code, out, err = gateway_cli("teams", "get", unique("missing"))
    assert code == 1 and "no team" in err and "not_found_error" in err
    code, _, err = gateway_cli("teams", "create", "bad name")
    assert code == 1 and "name" in err and "400" in err


# -- keys ---------------------------------------------------------------------------------------
def test_keys_create_prints_the_secret_once_and_it_works(cli_gateway, gateway_cli):
    team = unique()
    gateway_cli("teams", "create", team)
    code, out, _ = gateway_cli("keys", "create", "--team", team, "--name", "ci", "--expires-in-days", "30",
                               "--rpm", "5")
    assert code == 0
    assert len(SECRET.findall(out)) == 1
    secret = SECRET.search(out).group(0)
    assert re.search(rf"^    {re.escape(secret)}$", out, re.MULTILINE)  # alone on its line, easy to copy
    assert "shown only once" in out and f"for team {team}" in out and "expires at" in out
    assert models_status(cli_gateway, secret) == 200

    code, out, _ = gateway_cli("keys", "list", "--team", team)
    assert code == 0 and secret not in out
    header, _, row = out.splitlines()
    assert header.split() == ["ID", "PREFIX", "TEAM", "NAME", "STATUS", "EXPIRES", "CREATED"]
    assert row.split()[1:5] == [secret[:12], team, "ci", "active"]

    code, out, _ = gateway_cli("keys", "get", row.split()[0])
    assert code == 0 and secret not in out
    assert re.search(r"^rpm\s+5$", out, re.MULTILINE) and re.search(r"^status\s+active$", out, re.MULTILINE)


def test_keys_create_json_carries_the_secret_and_the_key_record(gateway_cli):
    team = unique()
    gateway_cli("teams", "create", team)
    code, out, _ = gateway_cli("keys", "create", "--team", team, "--allowed-models", "m1", "--json")
    key = json.loads(out)
    assert code == 0 and SECRET.fullmatch(key["key"])
    assert (key["team"], key["prefix"], key["limits"]["allowed_models"]) == (team, key["key"][:12], ["m1"])
    code, out, _ = gateway_cli("keys", "list", "--json", "--team", team)
    assert [k["id"] for k in json.loads(out)["data"]] == [key["id"]] and key["key"] not in out


def test_keys_revoke_stops_the_key_at_once(cli_gateway, gateway_cli):
    team = unique()
    gateway_cli("teams", "create", team)
    key = json.loads(gateway_cli("keys", "create", "--team", team, "--json")[1])
    assert models_status(cli_gateway, key["key"]) == 200
    code, out, _ = gateway_cli("keys", "revoke", key["id"])
    assert code == 0 and out.strip() == f"Revoked key {key['id']} ({key['prefix']}) of team {team}."
    assert models_status(cli_gateway, key["key"]) == 401
    assert gateway_cli("keys", "list", "--team", team)[1].splitlines()[2].split()[4] == "revoked"
    code, _, err = gateway_cli("keys", "revoke", "key_nonexistent")
    assert code == 1 and "no key 'key_nonexistent'" in err


def test_keys_rotate_prints_a_new_secret_and_retires_the_old_one(cli_gateway, gateway_cli):
    team = unique()
    gateway_cli("teams", "create", team)
    old = json.loads(gateway_cli("keys", "create", "--team", team, "--name", "svc", "--json")[1])
    assert models_status(cli_gateway, old["key"]) == 200  # now remembered as valid
    code, out, _ = gateway_cli("keys", "rotate", old["id"])
    assert code == 0 and "the old key is revoked" in out
    new_id = re.search(rf"Rotated key {old['id']} to (key_\w+) ", out).group(1)
    new_secret = SECRET.search(out).group(0)
    assert new_secret != old["key"]
    assert models_status(cli_gateway, new_secret) == 200 and models_status(cli_gateway, old["key"]) == 401

    code, out, _ = gateway_cli("keys", "rotate", new_id, "--grace-seconds", "600")
    assert code == 0 and "stays valid until" in out
    assert models_status(cli_gateway, new_secret) == 200


# -- usage --------------------------------------------------------------------------------------
def test_usage_prints_a_table_with_a_total(cli_gateway, gateway_cli):
    team = unique("spend")
    append_usage(cli_gateway, [usage_record(team, "anthropic/claude-sonnet-4.5", ts=MARCH_1 + 60, cost=0.25),
                               usage_record(team, "anthropic/claude-sonnet-4.5", ts=MARCH_1 + 120, cost=0.5),
                               usage_record(team, "openai/gpt-5", ts=MARCH_1 + 180, cost=0.125)])
    code, out, _ = gateway_cli("usage", "--from", "2025-03-01", "--to", "2025-03-01", "--group-by", "team,model",
                               "--team", team)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Usage from 2025-03-01 00:00:00Z to 2025-03-02 00:00:00Z"
    assert lines[2].split() == ["TEAM", "MODEL", "REQUESTS", "INPUT", "OUTPUT", "CACHE", "WRITE", "CACHE", "READ",
                                "COST", "USD"]
    assert [line.split() for line in lines[4:]] == [
        [team, "anthropic/claude-sonnet-4.5", "2", "200", "20", "10", "40", "0.750000"],
        [team, "openai/gpt-5", "1", "100", "10", "5", "20", "0.125000"],
        ["TOTAL", "3", "300", "30", "15", "60", "0.875000"],
    ]


def test_usage_json_and_an_empty_period(cli_gateway, gateway_cli):
    team = unique("spend")
    append_usage(cli_gateway, [usage_record(team, "m", ts=MARCH_1 + 60, cost=0.5)])
    code, out, _ = gateway_cli("usage", "--from", "2025-03-01", "--to", "2025-03-02", "--group-by", "day",
                               "--team", team, "--json")
    assert code == 0
    assert [(r["day"], r["requests"], r["cost_usd"]) for r in json.loads(out)["data"]] == [("2025-03-01", 1, 0.5)]
    code, out, _ = gateway_cli("usage", "--from", "2024-01-01", "--to", "2024-01-02", "--team", team)
    assert code == 0 and out.startswith("no usage from 2024-01-01")


def test_usage_with_a_bad_group_is_an_error_naming_it(gateway_cli):
    code, _, err = gateway_cli("usage", "--group-by", "team,planet")
    assert code == 1 and "planet" in err and "group_by" in err


# -- reaching the gateway -----------------------------------------------------------------------
def test_without_an_admin_key_the_commands_refuse_to_start(gateway_cli):
    code, out, err = gateway_cli("teams", "list", connect=False)
    assert (code, out) == (2, "") and "GATEWAY_ADMIN_KEY" in err


def test_a_wrong_admin_key_prints_the_gateways_refusal(cli_gateway, gateway_cli):
    code, _, err = gateway_cli("teams", "list", "--url", cli_gateway.url, "--admin-key", "sk-wrong-admin",
                               connect=False)
    assert code == 1 and "invalid API key" in err and "401" in err


def test_an_unreachable_gateway_is_an_error_naming_the_url(gateway_cli):
    url = "http://127.0.0.1:9"  # discard port: nothing listens there
    code, _, err = gateway_cli("teams", "list", "--url", url, "--admin-key", ADMIN_KEY, connect=False)
    assert code == 1 and f"cannot reach the gateway at {url}" in err


def test_the_url_and_admin_key_come_from_the_environment(cli_gateway, gateway_cli, monkeypatch):
    monkeypatch.setenv("GATEWAY_URL", cli_gateway.url)
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", ADMIN_KEY)
    code, out, _ = gateway_cli("teams", "list", "--json", connect=False)
    assert code == 0 and "data" in json.loads(out)


def test_the_installed_command_runs_as_a_process(cli_gateway):
    env = {**os.environ, "GATEWAY_URL": cli_gateway.url, "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    name = unique()
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "teams", "create", name, "--json"],
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and json.loads(done.stdout)["name"] == name
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "teams", "create", name],
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "already exists" in done.stderr and done.stdout == ""
