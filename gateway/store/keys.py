"""Redis key names.

Everything a team's admission, settlement and usage scripts touch carries the team as a hash tag,
`gw:{<team>}:...`, so one script always runs in one Cluster slot. Lookups of a key by its secret
hash or its id live under their own untagged names (`gw:key:<sha256>`, `gw:keyid:<id>`) and only
map to the owning team; the authoritative key record stays in the team's slot. Global state (the
team list, routing state) shares the `{_global}` tag, which no team name can produce because team
names start with a letter or digit.
"""
from __future__ import annotations

PREFIX = "gw"
GLOBAL = f"{PREFIX}:{{_global}}"

TEAMS = f"{GLOBAL}:teams"              # set of team names
USAGE_TEAMS = f"{GLOBAL}:usage_teams"  # set of teams that have usage (survives team deletion)
COOLDOWNS = f"{GLOBAL}:cooldowns"      # hash endpoint -> [until, reason]
ENDPOINT_STATS = f"{GLOBAL}:stats"     # hash endpoint -> EndpointStats json
RATELIMITS = f"{GLOBAL}:ratelimits"    # hash provider -> values json
AUDIT = f"{GLOBAL}:audit"              # stream of audit entries, trimmed by age
ALERT_DELIVERIES = f"{GLOBAL}:alert_deliveries"  # list of webhook outcomes, newest first
ALERT_TEAMS = f"{GLOBAL}:alert_teams"  # set of teams with alert settings of their own


def console_session(session_id: str) -> str:
    """A signed-in console session (expires with its TTL)."""
    return f"{PREFIX}:console:{session_id}"


def key_by_hash(secret_hash: str) -> str:
    return f"{PREFIX}:key:{secret_hash}"


def key_by_id(key_id: str) -> str:
    return f"{PREFIX}:keyid:{key_id}"


def cache(name: str) -> str:
    """A cached value: untagged, so that a cluster spreads the cache over its slots."""
    return f"{PREFIX}:cache:{name}"


class TeamKeys:
    """The names of one team's keys, all in the team's slot."""

    def __init__(self, team: str) -> None:
        self.team = team
        self.base = f"{PREFIX}:{{{team}}}"
        self.record = f"{self.base}:team"
        self.key_ids = f"{self.base}:keys"          # set of key ids
        # The RPM/TPM window counts admissions per second: a zset of the seconds that had any,
        # and a hash c:<second> -> requests, t:<second> -> tokens, _count, _sum.
        self.window = f"{self.base}:rate"
        self.window_tokens = f"{self.base}:rate:n"
        self.leases = f"{self.base}:leases"         # zset request id -> lease expiry
        self.key_concurrency = f"{self.base}:kconc"  # hash k:<key id> -> open leases
        # hash request id -> "<nanos>:<window second>:<tokens>:<windowed scopes>:<key id>"
        self.reservations = f"{self.base}:res"
        self.reserved = f"{self.base}:reserved"     # hash team | k:<key id> -> reserved nanos
        # hash request id -> "<nanos>:<key id>:<time>": leases that expired unsettled, charged as reserved
        self.abandoned = f"{self.base}:abandoned"
        # Batches of settlements and records whose writer has not yet heard back: a sorted set of
        # '<batch id>:s' and '<batch id>:u:<records taken>', all scored 0 (ordered by batch id,
        # which begins with its creation time).
        self.batches = f"{self.base}:batches"
        self.usage = f"{self.base}:usage"           # stream of usage records

    def key_record(self, key_id: str) -> str:
        return f"{self.base}:key:{key_id}"

    def key_window(self, key_id: str) -> str:
        return f"{self.base}:k:{key_id}:rate"

    def key_window_tokens(self, key_id: str) -> str:
        return f"{self.base}:k:{key_id}:rate:n"

    def spend_day(self, day_id: str) -> str:
        """Hash team | k:<key id> -> spent nanos in that UTC day."""
        return f"{self.base}:spend:d:{day_id}"

    def spend_month(self, month_id: str) -> str:
        return f"{self.base}:spend:m:{month_id}"

    def alert_claim(self, claim: str) -> str:
        """Set (NX, with a TTL) by the one replica that sends this alert."""
        return f"{self.base}:alert:{claim}"

    def rollup_hour(self, hour_start: int) -> str:
        """Hash '<metric>|<dims json>' -> sum, for the hour starting at that epoch second."""
        return f"{self.base}:roll:h:{hour_start}"

    def rollup_day(self, day_start: int) -> str:
        return f"{self.base}:roll:d:{day_start}"
