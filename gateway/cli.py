"""The `gateway` command: `serve` runs the service; the other commands read the catalog or talk to a
running gateway's admin API."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

from gateway.admin_cli import add_commands
from gateway.settings import ConfigError, load_settings

log = logging.getLogger("gateway")
EXIT_CONFIG = 2


def _apply_flags_to_env(args: argparse.Namespace) -> None:
    """Flags become GATEWAY_* variables, so every worker process reads the same settings."""
    if getattr(args, "config", None):
        os.environ["GATEWAY_CONFIG"] = args.config
    for flag, var in (("host", "GATEWAY_HOST"), ("port", "GATEWAY_PORT"), ("workers", "GATEWAY_WORKERS")):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[var] = str(value)
    if getattr(args, "demo", False):
        os.environ["GATEWAY_DEMO"] = "true"


def build_app():
    """Uvicorn's factory: settings from the environment, one Gateway per worker process."""
    from gateway.app import Gateway, GatewayApp
    return GatewayApp(Gateway(load_settings()))


def _describe(gateway) -> None:
    providers = sorted({e.provider for m in gateway.catalog.models.values() for e in m.endpoints})
    models = [m.id for m in gateway.catalog.models.values() if m.endpoints]
    log.info("providers: %s", ", ".join(providers) or "none")
    log.info("models (%d): %s", len(models), ", ".join(models))
    if gateway.demo:
        log.info("demo mode: the offline mock provider answers every model")


def serve(args: argparse.Namespace) -> int:
    _apply_flags_to_env(args)
    try:
        settings = load_settings()
        if settings.workers > 1 and not settings.redis_url:
            raise ConfigError("--workers > 1 needs a shared store: set redis_url (GATEWAY_REDIS_URL)")
        from gateway.records import record_store_problem
        if problem := record_store_problem(settings):
            raise ConfigError(problem)
        from gateway.app import Gateway
        from policies.catalog import CatalogError
        try:
            gateway = Gateway(settings)
        except CatalogError as exc:
            raise ConfigError(f"invalid catalog: {exc}") from None
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _describe(gateway)
    if gateway.demo_key:
        os.environ["GATEWAY_DEMO_KEY"] = gateway.demo_key
        print(f"demo key: {gateway.demo_key}", flush=True)
    log.info("listening on http://%s:%d", settings.host, settings.port)
    import uvicorn
    # No proxy-header rewriting (the gateway never reads the client address) and no Server header:
    # both cost every request something for nothing.
    options = dict(host=settings.host, port=settings.port, loop="uvloop", http="httptools", lifespan="on",
                   access_log=False, log_level="warning", timeout_graceful_shutdown=int(settings.shutdown_grace),
                   proxy_headers=False, server_header=False)
    if settings.workers > 1:
        # Each worker writes its metric values to files in this folder and /metrics sums them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
        uvicorn.run("gateway.cli:build_app", factory=True, workers=settings.workers, **options)
    else:
        from gateway.app import GatewayApp
        uvicorn.run(GatewayApp(gateway), **options)
    return 0


def models(args: argparse.Namespace) -> int:
    _apply_flags_to_env(args)
    try:
        settings = load_settings()
        from policies.catalog import CatalogError, load_catalog
        try:
            catalog = load_catalog(settings.models, settings.providers)
        except CatalogError as exc:
            raise ConfigError(f"invalid catalog: {exc}") from None
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from gateway.model_listing import format_table
    print(format_table(catalog))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gateway", description="Multi-provider LLM routing gateway "
                                   "speaking the Anthropic Messages API.")
    commands = root.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="run the gateway")
    p.add_argument("--config", help="YAML config file (default: $GATEWAY_CONFIG)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--workers", type=int, help="worker processes sharing the port (needs Redis when > 1)")
    p.add_argument("--demo", action="store_true", help="serve every model from the offline mock provider")
    p.set_defaults(func=serve)
    p = commands.add_parser("models", help="print the model catalog as a table")
    p.add_argument("--config", help="YAML config file (default: $GATEWAY_CONFIG)")
    p.set_defaults(func=models)
    add_commands(commands)
    from gateway.records.commands import add_db_commands
    add_db_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
