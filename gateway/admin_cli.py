"""`gateway teams|keys|usage`: thin commands over a running gateway's admin API.

They speak HTTP to `--url` (default `$GATEWAY_URL`, else http://127.0.0.1:8080) with the admin key
from `--admin-key` or `$GATEWAY_ADMIN_KEY`, so they work with either store. Output is a readable
table by default and the API's own JSON with `--json`. An error answer prints the API's message on
stderr and exits 1; a usage error (a bad flag, no admin key) exits 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from gateway.records.commands import add_export_command

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_ERROR = 1
EXIT_USAGE = 2
CLEAR_WORDS = ("none", "null", "unlimited")


class CommandFailed(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Output:
    payload: Any  # printed as JSON with --json
    text: str     # printed otherwise


# -- talking to the gateway ---------------------------------------------------------------------
class AdminClient:
    def __init__(self, url: str, admin_key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self.timeout = timeout

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminClient:
        url = args.url or os.environ.get("GATEWAY_URL") or DEFAULT_URL
        admin_key = args.admin_key or os.environ.get("GATEWAY_ADMIN_KEY")
        if not admin_key:
            raise CommandFailed("no admin key: set GATEWAY_ADMIN_KEY or pass --admin-key", EXIT_USAGE)
        return cls(url, admin_key)

    def call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
             params: dict[str, str] | None = None) -> Any:
        try:
            response = httpx.request(method, self.url + path, json=body, params=params,
                                     headers={"x-api-key": self.admin_key}, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise CommandFailed(f"cannot reach the gateway at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise CommandFailed(error_message(response))
        try:
            return response.json()
        except ValueError:
            raise CommandFailed(f"{method} {path}: the gateway answered {response.status_code} "
                                "with a body that is not JSON") from None


def error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['message']} (HTTP {response.status_code} {error['type']})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:500]}"


# -- formatting ---------------------------------------------------------------------------------
def show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def show_time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def show_usd(value: float) -> str:
    return f"{value:.6f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell; the columns in `right` (numbers) right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


TEAM_HEADERS = ("NAME", "RPM", "TPM", "CONCURRENT", "DAILY USD", "MONTHLY USD", "MODELS", "CREATED")


def teams_table(teams: list[dict[str, Any]]) -> str:
    if not teams:
        return "no teams"
    rows = []
    for team in teams:
        limits = team["limits"]
        rows.append([team["name"], show(limits["rpm"]), show(limits["tpm"]), show(limits["max_concurrent"]),
                     show(limits["budget_daily_usd"]), show(limits["budget_monthly_usd"]),
                     show(limits["allowed_models"]), show_time(team["created_at"])])
    return table(TEAM_HEADERS, rows, frozenset({1, 2, 3, 4, 5}))


def details(record: dict[str, Any]) -> str:
    """One team or key, a field per line, limits flattened."""
    fields: list[tuple[str, str]] = []
    for name, value in record.items():
        if name == "limits":
            fields += [(limit, show(v)) for limit, v in value.items()]
        elif name in ("created_at", "expires_at"):
            fields.append((name, show_time(value)))
        elif name == "metadata":
            fields.append((name, json.dumps(value) if value else "-"))
        elif name != "previous":
            fields.append((name, show(value)))
    width = max(len(n) for n, _ in fields)
    return "\n".join(f"{n.ljust(width)}  {v}" for n, v in fields)


KEY_HEADERS = ("ID", "PREFIX", "TEAM", "NAME", "STATUS", "EXPIRES", "CREATED")


def keys_table(keys: list[dict[str, Any]]) -> str:
    if not keys:
        return "no keys"
    rows = [[k["id"], k["prefix"], k["team"], show(k["name"]), k["status"], show_time(k["expires_at"]),
             show_time(k["created_at"])] for k in keys]
    return table(KEY_HEADERS, rows)


def secret_text(headline: str, key: dict[str, Any]) -> str:
    return (f"{headline}\n\n    {key['key']}\n\n"
            "This secret is shown only once: store it now. The gateway keeps only its hash.")


USAGE_METRICS = (("requests", "REQUESTS"), ("input_tokens", "INPUT"), ("output_tokens", "OUTPUT"),
                 ("cache_creation_input_tokens", "CACHE WRITE"), ("cache_read_input_tokens", "CACHE READ"),
                 ("cost_usd", "COST USD"))


def usage_table(answer: dict[str, Any]) -> str:
    period = f"{show_time(answer['from'])} to {show_time(answer['to'])}"
    rows_in = answer["data"]
    if not rows_in:
        return f"no usage from {period}"
    groups = answer["group_by"]
    rows = []
    for row in rows_in:
        cells = [show(row.get(g)) for g in groups]
        cells += [show_usd(row[m]) if m == "cost_usd" else str(row[m]) for m, _ in USAGE_METRICS]
        rows.append(cells)
    if len(rows_in) > 1:
        total = ["TOTAL"] + [""] * (len(groups) - 1) if groups else []
        total += [show_usd(sum(r[m] for r in rows_in)) if m == "cost_usd" else str(sum(r[m] for r in rows_in))
                  for m, _ in USAGE_METRICS]
        rows.append(total)
    headers = [g.upper() for g in groups] + [h for _, h in USAGE_METRICS]
    numeric = frozenset(range(len(groups), len(headers)))
    return f"Usage from {period}\n\n" + table(headers, rows, numeric)


# -- argument types -----------------------------------------------------------------------------
def _count(text: str) -> int | None:
    if text.lower() in CLEAR_WORDS:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'none', not {text!r}")
    return value


def _usd(text: str) -> float | None:
    if text.lower() in CLEAR_WORDS:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative amount in USD or 'none', not {text!r}")
    return value


def _models(text: str) -> list[str] | None:
    if text.lower() in CLEAR_WORDS:
        return None
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError("expected model ids separated by commas, or 'none'")
    return models


LIMIT_FLAGS = (("--rpm", "rpm", _count, "requests per minute"),
               ("--tpm", "tpm", _count, "tokens per minute"),
               ("--max-concurrent", "max_concurrent", _count, "requests in flight at once"),
               ("--budget-daily", "budget_daily_usd", _usd, "USD per UTC day"),
               ("--budget-monthly", "budget_monthly_usd", _usd, "USD per UTC month"),
               ("--allowed-models", "allowed_models", _models, "comma-separated model ids"))
LIMIT_FIELDS = tuple(dest for _, dest, _, _ in LIMIT_FLAGS)


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    # Absent flags stay out of the namespace, so an update sends only what was given.
    for flag, dest, kind, help_text in LIMIT_FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS,
                            help=f"{help_text} ('none' for unlimited)")


def _given_limits(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for f in LIMIT_FIELDS if hasattr(args, f)}


# -- the commands -------------------------------------------------------------------------------
Action = Callable[[AdminClient, argparse.Namespace], Output]


def teams_create(client: AdminClient, args: argparse.Namespace) -> Output:
    team = client.call("POST", "/admin/teams", body={"name": args.name, **_given_limits(args)})
    return Output(team, f"Created team {team['name']}.\n\n" + details(team))


def teams_list(client: AdminClient, args: argparse.Namespace) -> Output:
    answer = client.call("GET", "/admin/teams")
    return Output(answer, teams_table(answer["data"]))


def teams_get(client: AdminClient, args: argparse.Namespace) -> Output:
    team = client.call("GET", f"/admin/teams/{args.name}")
    return Output(team, details(team))


def teams_update(client: AdminClient, args: argparse.Namespace) -> Output:
    changes = _given_limits(args)
    if not changes:
        raise CommandFailed("nothing to update: give at least one limit flag (see --help)", EXIT_USAGE)
    team = client.call("PATCH", f"/admin/teams/{args.name}", body=changes)
    return Output(team, f"Updated team {team['name']}.\n\n" + details(team))


def teams_delete(client: AdminClient, args: argparse.Namespace) -> Output:
    answer = client.call("DELETE", f"/admin/teams/{args.name}")
    return Output(answer, f"Deleted team {answer['name']}; revoked {len(answer['revoked_keys'])} key(s).")


def keys_create(client: AdminClient, args: argparse.Namespace) -> Output:
    body: dict[str, Any] = _given_limits(args)
    for field in ("name", "expires_in_days", "expires_at"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    key = client.call("POST", f"/admin/teams/{args.team}/keys", body=body)
    headline = f"Created key {key['id']} (prefix {key['prefix']}) for team {key['team']}."
    if key["expires_at"] is not None:
        headline += f" It expires at {show_time(key['expires_at'])}."
    return Output(key, secret_text(headline, key))


def keys_list(client: AdminClient, args: argparse.Namespace) -> Output:
    answer = client.call("GET", "/admin/keys", params={"team": args.team} if args.team else None)
    return Output(answer, keys_table(answer["data"]))


def keys_get(client: AdminClient, args: argparse.Namespace) -> Output:
    key = client.call("GET", f"/admin/keys/{args.id}")
    return Output(key, details(key))


def keys_revoke(client: AdminClient, args: argparse.Namespace) -> Output:
    key = client.call("DELETE", f"/admin/keys/{args.id}")
    return Output(key, f"Revoked key {key['id']} ({key['prefix']}) of team {key['team']}.")


def keys_rotate(client: AdminClient, args: argparse.Namespace) -> Output:
    body = {"grace_seconds": args.grace_seconds} if args.grace_seconds else {}
    key = client.call("POST", f"/admin/keys/{args.id}/rotate", body=body)
    previous = key["previous"]
    fate = ("is revoked" if previous["status"] == "revoked"
            else f"stays valid until {show_time(previous['expires_at'])}")
    headline = (f"Rotated key {key['rotated_from']} to {key['id']} (prefix {key['prefix']}) "
                f"for team {key['team']}; the old key {fate}.")
    return Output(key, secret_text(headline, key))


def usage(client: AdminClient, args: argparse.Namespace) -> Output:
    params = {name: value for name, value in (("from", args.start), ("to", args.end),
                                              ("group_by", args.group_by), ("team", args.team))
              if value is not None}
    answer = client.call("GET", "/admin/usage", params=params)
    return Output(answer, usage_table(answer))


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            output = action(AdminClient.from_args(args), args)
        except CommandFailed as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return exc.code
        print(json.dumps(output.payload, indent=2) if args.json else output.text)
        return 0
    return run


# -- the parsers --------------------------------------------------------------------------------
def _connection_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the gateway (default: $GATEWAY_URL, else {DEFAULT_URL})")
    common.add_argument("--admin-key", help="the admin key (default: $GATEWAY_ADMIN_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    return common


def _leaf(parent: argparse._SubParsersAction, name: str, action: Action, help_text: str,
          common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = parent.add_parser(name, help=help_text, description=help_text, parents=[common])
    parser.set_defaults(func=_runner(action))
    return parser


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `teams`, `keys` and `usage` to the `gateway` command's subparsers."""
    common = _connection_flags()

    teams = subparsers.add_parser("teams", help="create, list, change and delete teams")
    team_commands = teams.add_subparsers(dest="teams_command", required=True)
    p = _leaf(team_commands, "create", teams_create, "create a team", common)
    p.add_argument("name")
    _add_limit_flags(p)
    _leaf(team_commands, "list", teams_list, "list the teams", common)
    p = _leaf(team_commands, "get", teams_get, "show one team", common)
    p.add_argument("name")
    p = _leaf(team_commands, "update", teams_update, "change a team's limits", common)
    p.add_argument("name")
    _add_limit_flags(p)
    p = _leaf(team_commands, "delete", teams_delete, "delete a team and revoke its keys", common)
    p.add_argument("name")

    keys = subparsers.add_parser("keys", help="create, list, revoke and rotate API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    p = _leaf(key_commands, "create", keys_create, "create a key for a team (its secret is shown once)",
              common)
    p.add_argument("--team", required=True)
    p.add_argument("--name", help="a label for the key")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=float, help="days until the key expires")
    expiry.add_argument("--expires-at", help="when the key expires: epoch seconds or RFC 3339")
    _add_limit_flags(p)
    p = _leaf(key_commands, "list", keys_list, "list keys (never their secrets)", common)
    p.add_argument("--team", help="only this team's keys")
    p = _leaf(key_commands, "get", keys_get, "show one key", common)
    p.add_argument("id")
    p = _leaf(key_commands, "revoke", keys_revoke, "revoke a key at once", common)
    p.add_argument("id")
    p = _leaf(key_commands, "rotate", keys_rotate, "replace a key by a new one with the same limits",
              common)
    p.add_argument("id")
    p.add_argument("--grace-seconds", type=float, default=0,
                   help="keep the old key valid this long instead of revoking it at once")

    p = _leaf(subparsers, "usage", usage, "usage and cost, grouped (default: last 30 days by team "
              "and model)", common)
    p.add_argument("--from", dest="start", help="start: epoch seconds, RFC 3339 or YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="end", help="end: the same forms; a date includes that whole day")
    p.add_argument("--group-by", help="comma-separated: team, model, provider, user, key, day, hour")
    p.add_argument("--team", help="only this team")
    add_export_command(p.add_subparsers(dest="usage_command", metavar="{export}"))
