"""Settings: the YAML config file, `${VAR}` expansion and `GATEWAY_*` environment overrides.

Read once at startup into typed objects and passed down; nothing else reads the environment.
Precedence, highest first: command-line flags, `GATEWAY_*` variables, the config file, defaults.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.search.settings import SearchOverride, SearchSettings, merge_search
from policies import retry

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """An unusable configuration; the message names the field or variable at fault."""


def expand_env(value: Any, env: dict[str, str] | None = None, path: str = "") -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document."""
    env = os.environ if env is None else env
    if isinstance(value, str):
        def substitute(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or 'config'}: environment variable {name} is not set "
                              f"(use ${{{name}:-default}} for an optional value)")
        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


class StaticKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: SecretStr
    team: str = Field(min_length=1, max_length=64)
    name: str | None = None

    @field_validator("key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 8:
            raise ValueError("a key must be at least 8 characters")
        return v


class StaticTeam(BaseModel):
    """A team declared in the config file; the admin API manages the rest."""
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    budget_daily_usd: float | None = Field(default=None, ge=0)
    budget_monthly_usd: float | None = Field(default=None, ge=0)
    allowed_models: list[str] | None = None
    model_map: dict[str, str] = Field(default_factory=dict, description="this team's own model_map, laid "
                                      "over the top-level one")
    search: SearchOverride | None = Field(default=None, description="this team's web search settings, laid "
                                          "over the top-level `search:`")


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unpriced: Literal["allow", "deny"] = Field(default="allow", description="whether a team or key with a "
                                               "budget may use a model the catalog has no price for")


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connect: float = Field(default=10.0, gt=0, description="seconds to open a connection upstream")
    first_byte: float = Field(default=120.0, gt=0, description="seconds until the upstream's response headers")
    idle: float = Field(default=120.0, gt=0, description="longest silence between two chunks of a stream")
    total: float = Field(default=900.0, gt=0, description="the whole request, retries and fallbacks included")


class Retries(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(default=4, ge=1, description="attempts per request over every endpoint and model")
    per_endpoint: int = Field(default=2, ge=1, description="attempts on one endpoint before moving on")
    backoff_base: float = Field(default=retry.BACKOFF_BASE_S, ge=0)
    backoff_max: float = Field(default=retry.BACKOFF_CAP_S, ge=0)
    budget_ratio: float = Field(default=retry.RETRY_BUDGET_RATIO, ge=0,
                                description="retries allowed as a share of recent requests")


class Cooldowns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failures: int = Field(default=retry.COOLDOWN_THRESHOLD, ge=1,
                          description="consecutive failures that put an endpoint in cooldown")
    seconds: float = Field(default=retry.COOLDOWN_BASE_S, gt=0, description="the first cooldown; each episode doubles it")
    max_seconds: float = Field(default=retry.COOLDOWN_CAP_S, gt=0)


class ReservationCeilings(BaseModel):
    """What a budget reservation assumes for content whose size the request body does not show
    (tokens; see the README's limits). Too low a ceiling lets such a request spend past its
    reservation; the stream is then cut at the budget."""
    model_config = ConfigDict(extra="forbid")
    image_tokens: int = Field(default=1_600, ge=1, description="one base64 image (the provider's per-image maximum)")
    item_tokens: int = Field(default=100_000, ge=1, description="a document, or content by URL or file id, when "
                             "no upstream count_tokens sized it")
    server_tool_use_tokens: int = Field(default=25_000, ge=0, description="the result of one server tool use")
    server_tool_uses: int = Field(default=10, ge=0, description="uses assumed of a server tool without max_uses")


class InputLimits(BaseModel):
    """Bounds on what a request may carry, checked when its body is read: a request over one is
    refused with 400 `invalid_request_error` naming the field, before it costs the store anything.
    Everything the gateway keeps from a request (its usage record) is bounded by these."""
    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(default=1_000_000, ge=1, le=2**31,
                            description="ceiling on max_tokens; the model's own maximum output applies too")
    id_chars: int = Field(default=128, ge=1, le=4096, description="session_id (or x-session-id) and user")
    model_chars: int = Field(default=256, ge=16, le=4096, description="model and each id of models")
    fallback_models: int = Field(default=16, ge=0, le=256, description="ids in models")
    metadata_user_id_chars: int = Field(default=256, ge=1, le=4096, description="metadata.user_id")
    trace_bytes: int = Field(default=8192, ge=64, le=1024 * 1024, description="trace, as sent")
    trace_depth: int = Field(default=8, ge=1, le=64, description="objects and arrays nested in trace")
    trace_keys: int = Field(default=128, ge=1, le=100_000,
                            description="members and array items in trace, at every depth")


class Server(BaseModel):
    """What one inbound connection may cost a worker before any key is checked."""
    model_config = ConfigDict(extra="forbid")
    max_request_line_bytes: int = Field(default=8192, ge=256, description="method, path and query (over: 414)")
    max_header_bytes: int = Field(default=65536, ge=1024, description="all header names and values (over: 431)")
    max_headers: int = Field(default=100, ge=8, description="header lines in one request (over: 431)")
    header_timeout: float = Field(default=10.0, gt=0, description="seconds to receive the request line and "
                                  "headers, from the connection's start or the request's first byte (over: 408)")
    body_min_rate: int = Field(default=1024, ge=0, description="bytes per second a request body must average "
                               "once body_rate_grace has passed (below: 408); 0 turns the check off")
    body_rate_grace: float = Field(default=10.0, gt=0, description="seconds a body may take before its rate counts")
    max_connections: int = Field(default=1024, ge=1, description="open connections per worker process "
                                 "(over: 529 and closed)")
    keep_alive_timeout: float = Field(default=5.0, gt=0, description="seconds an idle keep-alive connection stays open")


class Upstream(BaseModel):
    """What the gateway holds of its providers: connections and answers."""
    model_config = ConfigDict(extra="forbid")
    max_connections_per_origin: int = Field(default=512, ge=1, description="connections per provider origin "
                                            "(scheme, host, port) per worker process")
    pool_wait: float = Field(default=5.0, ge=0, description="seconds a request waits for a connection when all "
                             "are busy (then: 529 overloaded_error)")
    max_answer_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="an upstream answer read whole: "
                                  "JSON answers and error bodies (over: 502 api_error); streams are not capped")


class Alerts(BaseModel):
    """Budget alerts: a signed webhook when a team's (or a key's own) daily or monthly spend passes
    each threshold, once per period per threshold (see gateway/alerts.py)."""
    model_config = ConfigDict(extra="forbid")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    secret: SecretStr | None = None
    thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0], min_length=1, max_length=16)
    format: Literal["json", "slack"] = "json"
    attempts: int = Field(default=4, ge=1, le=10, description="deliveries tried before giving up")
    backoff: float = Field(default=1.0, ge=0, description="seconds before the first retry; doubled for each next")
    timeout: float = Field(default=5.0, gt=0, description="seconds one delivery may take")

    @field_validator("thresholds")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not all(0 < t <= 10 for t in v):
            raise ValueError("each threshold is a fraction of the budget above 0 (1.0 is the whole budget)")
        return sorted(set(v))


class Console(BaseModel):
    """The built-in console at /console."""
    model_config = ConfigDict(extra="forbid")
    session_ttl: float = Field(default=8 * 3600, gt=0, description="seconds a console sign-in lasts")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    demo: bool = False
    demo_key: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    redis_url: str | None = None
    store_outage: Literal["fail_open", "fail_closed"] = "fail_open"
    store_timeout: float = Field(default=0.5, gt=0)
    admin_key: SecretStr | None = None
    key_cache_ttl: float = Field(default=5.0, ge=0)
    lease_ttl: float = Field(default=30.0, ge=3, description="seconds a request's concurrency lease and budget "
                             "reservation outlive its replica's last renewal (renewed every third of it)")
    key_cache_grace: float = Field(default=600.0, ge=0, description="seconds past key_cache_ttl that a key "
                                   "the store vouched for keeps working while the store is down (fail_open)")

    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: list[dict[str, Any]] = Field(default_factory=list)
    keys: list[StaticKey] = Field(default_factory=list)
    teams: list[StaticTeam] = Field(default_factory=list)
    # Native or alias id -> router id: Claude Code's `claude-opus-4-8` served by any model.
    # `aliases:` is the same map under another name.
    model_map: dict[str, str] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)
    budgets: Budgets = Field(default_factory=Budgets)

    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    input_limits: InputLimits = Field(default_factory=InputLimits)
    reservation: ReservationCeilings = Field(default_factory=ReservationCeilings)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    cooldowns: Cooldowns = Field(default_factory=Cooldowns)
    server: Server = Field(default_factory=Server)
    upstream: Upstream = Field(default_factory=Upstream)
    shutdown_grace: float = Field(default=30.0, ge=0)
    usage_retention_days: int = Field(default=90, ge=1)
    usage_spill_path: str = "gateway-usage-spill.jsonl"
    usage_db_url: str | None = None  # postgresql://... or sqlite:///path; default: SQLite in data_dir
    data_dir: str = "gateway-data"
    usage_db_migrate: bool = Field(default=True, description="bring the record store's schema up to date at startup")
    usage_db_timeout: float = Field(default=10.0, gt=0, description="seconds for one record store statement")
    usage_max_pending: int = Field(default=50_000, ge=1, description="records and settlements waiting in one process before they go to the spill file")
    usage_batch_size: int = Field(default=500, ge=1, le=10_000, description="records per store call and per database batch")
    usage_flush_interval: float = Field(default=0.5, gt=0, description="seconds between database batches while the buffer holds less than one")
    usage_buffer_max_records: int = Field(default=200_000, ge=1, description="records per team waiting in Redis for the database")
    usage_claim_idle: float = Field(default=30.0, gt=0, description="seconds before another replica takes over records a replica read and never committed")
    usage_dedupe_window: float = Field(default=30 * 86400.0, gt=0, description="seconds after which the mark of a batch no replica acknowledged (its writer was killed before hearing back) may be forgotten, and only while a team holds more than 1,000 such marks; a replayed batch counts once in the budgets and rollups however late it comes while its mark is kept")
    otlp_endpoint: str | None = None
    metrics_token: SecretStr | None = None  # when set, GET /metrics needs it as Authorization: Bearer
    alerts: Alerts = Field(default_factory=Alerts)
    audit_retention_days: int = Field(default=365, ge=1)
    console: Console = Field(default_factory=Console)
    search: SearchSettings | None = None  # web search for every model; off without a backend

    @field_validator("redis_url", "otlp_endpoint", "usage_db_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("admin_key", "demo_key", "metrics_token", mode="before")
    @classmethod
    def _empty_key_is_none(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    @model_validator(mode="after")
    def _team_search_usable(self) -> Settings:
        # A team's search settings must work once laid over the gateway's (brave needs a key...).
        for team in self.teams:
            if team.search is not None:
                try:
                    merge_search(self.search or SearchSettings(), team.search)
                except ValidationError as exc:
                    reason = "; ".join(e["msg"] for e in exc.errors())
                    raise ValueError(f"teams[{team.name}].search: {reason}") from None
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """The config file named by `GATEWAY_CONFIG` (the CLI sets it from `--config`)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused, __call__ does it all
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("GATEWAY_CONFIG")
        return read_config_file(Path(path)) if path else {}


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return expand_env(data)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning every validation failure into a ConfigError naming the field."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
