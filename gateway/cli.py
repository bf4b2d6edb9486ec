"""The `gateway` command: `serve` runs the service; the other commands read the catalog or talk to a
running gateway's admin API."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import tempfile

from gateway import logs
from gateway.admin_cli import add_commands
from gateway.settings import ConfigError, load_settings

log = logging.getLogger("gateway")
EXIT_CONFIG = 2


def _apply_flags_to_env(args: argparse.Namespace) -> None:
    """Flags become GATEWAY_* variables, so every worker process reads the same settings."""
    if getattr(args, "config", None):
        os.environ["GATEWAY_CONFIG"] = args.config
    for flag, var in (("host", "GATEWAY_HOST"), ("port", "GATEWAY_PORT"), ("workers", "GATEWAY_WORKERS"),
                      ("log_level", "GATEWAY_LOG_LEVEL"), ("log_format", "GATEWAY_LOG_FORMAT")):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[var] = str(value)
    if getattr(args, "demo", False):
        os.environ["GATEWAY_DEMO"] = "true"


def build_app():
    """Uvicorn's factory: settings from the environment, one Gateway per worker process."""
    from gateway.app import Gateway, GatewayApp
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as in `serve`: a worker is a fresh process
    settings = load_settings()
    # A worker is a fresh process: its lines reach the parent's output (inherited stderr) only
    # once its logging is set up like the parent's.
    logs.setup(settings.log_level, settings.log_format)
    return GatewayApp(Gateway(settings))


def _describe(gateway) -> None:
    settings = gateway.settings
    if settings.redis_url:
        log.info("store: %s (store_outage: %s)", logs.redact_url(settings.redis_url), settings.store_outage)
    else:
        log.info("store: memory (this process only; set redis_url to share it)")
    log.info("admin API: %s", "on" if settings.admin_key else "off (no admin_key)")
    log.info("metrics: /metrics%s", ", token required" if settings.metrics_token else "")
    providers = sorted({e.provider for m in gateway.catalog.models.values() for e in m.endpoints})
    models = [m.id for m in gateway.catalog.models.values() if m.endpoints]
    log.info("providers: %s", ", ".join(providers) or "none")
    log.info("models (%d): %s", len(models), ", ".join(models))
    if gateway.demo:
        log.info("demo mode: the offline mock providers answer every model")
    gateway.warn_unpriced()


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound and listening before "listening on" is said; uvicorn serves on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)  # the worker processes serve on it too
    return sock


def serve(args: argparse.Namespace) -> int:
    _apply_flags_to_env(args)
    # A SIGHUP (a reload) that comes before the gateway listens for it must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        settings = load_settings()
        if settings.workers > 1 and not settings.redis_url:
            raise ConfigError("--workers > 1 needs a shared store: set redis_url (GATEWAY_REDIS_URL)")
        from gateway.records import record_store_problem
        if problem := record_store_problem(settings):
            raise ConfigError(problem)
        from gateway.app import Gateway
        from gateway.serving import NothingToServe
        from policies.catalog import CatalogError
        try:
            gateway = Gateway(settings)
        except CatalogError as exc:
            raise ConfigError(f"invalid catalog: {exc}") from None
        except NothingToServe as exc:
            raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(settings.log_level, settings.log_format)
    try:
        listener = bind_listener(settings.host, settings.port)
    except OSError as exc:
        print(f"gateway: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    _describe(gateway)
    if gateway.demo_key:
        os.environ["GATEWAY_DEMO_KEY"] = gateway.demo_key
        if settings.log_format == "json":
            log.info("demo key: %s", gateway.demo_key)  # every line of the output stays one JSON object
        else:
            print(f"demo key: {gateway.demo_key}", flush=True)
    host, port = listener.getsockname()[:2]
    if gateway.demo_admin_key:
        where = f"http://{f'[{host}]' if ':' in host else host}:{port}/console"
        console = f"console: {where} (sample data; sign in with the demo's admin key: {gateway.demo_admin_key})"
        if settings.log_format == "json":
            log.info("%s", console)
        else:
            print(console, flush=True)
    log.info("listening on http://%s:%d%s", f"[{host}]" if ":" in host else host, port,
             f" ({settings.workers} workers)" if settings.workers > 1 else "")
    import uvicorn

    from gateway.http_server import uvicorn_options
    options = uvicorn_options(settings)
    if settings.workers > 1:
        # Each worker writes its metric values to files in this folder and /metrics sums them all;
        # the folder goes when the parent stops.
        with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            config = uvicorn.Config("gateway.cli:build_app", factory=True, workers=settings.workers, **options)
            return _run_workers(config, listener, settings)
    from gateway.app import GatewayApp
    config = uvicorn.Config(GatewayApp(gateway), **options)
    return _run_one(config, listener, settings)


def _run_one(config, listener: socket.socket, settings) -> int:
    import uvicorn
    logs.setup(settings.log_level, settings.log_format)  # uvicorn's Config set up its own handlers
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1


def _run_workers(config, listener: socket.socket, settings) -> int:
    from uvicorn.supervisors import Multiprocess

    class ReloadingWorkers(Multiprocess):
        """SIGHUP reloads each worker in place (see Gateway.reload) rather than replacing them:
        requests in flight finish, and a config found invalid leaves every worker serving."""

        def handle_hup(self) -> None:
            log.info("SIGHUP: every worker reloads the config file")
            for process in self.processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGHUP)

    logs.setup(settings.log_level, settings.log_format)
    try:
        ReloadingWorkers(config, sockets=[listener]).run()
    except KeyboardInterrupt:
        pass
    return 0


def models(args: argparse.Namespace) -> int:
    _apply_flags_to_env(args)
    try:
        settings = load_settings()
        from gateway.serving import without_empty_keys
        from policies.catalog import CatalogError, load_catalog
        try:
            catalog = load_catalog(settings.models, without_empty_keys(settings.providers))
        except CatalogError as exc:
            raise ConfigError(f"invalid catalog: {exc}") from None
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from gateway.model_listing import format_table
    from gateway.serving import NothingToServe, served_models, serving_catalog
    if not args.all:
        try:
            catalog, demo = serving_catalog(catalog, settings.providers, settings.demo)
        except NothingToServe as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        catalog = dataclasses.replace(catalog, models={m.id: m for m in served_models(catalog)})
        if demo:
            print("(demo: the mock providers serve every model; --all shows the catalog)", file=sys.stderr)
    return _write_stdout(format_table(catalog) + "\n")


def _write_stdout(text: str) -> int:
    """Write to stdout; a reader that went away (`gateway models | head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush again at exit: point stdout somewhere harmless.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
    p.add_argument("--demo", action="store_true", help="serve every model from the offline mock providers")
    p.add_argument("--log-level", choices=logs.LEVELS, help="debug, info (default), warning or error "
                   "(or $GATEWAY_LOG_LEVEL); access lines are at info")
    p.add_argument("--log-format", choices=logs.FORMATS, help="text (default) or json, one JSON object per "
                   "line (or $GATEWAY_LOG_FORMAT)")
    p.epilog = ("Logs go to stderr: startup lines, one access line per request (method, path, status, "
                "duration, team, key id, model, provider, attempts, request id; never a key or a prompt), "
                f"and failures that repeat, such as an unreachable Redis, once per {logs.REPEAT_INTERVAL_S:g} s. "
                "Every setting also comes from the config file or a GATEWAY_* variable.")
    p.set_defaults(func=serve)
    p = commands.add_parser("models", help="print the models this gateway serves as a table")
    p.add_argument("--config", help="YAML config file (default: $GATEWAY_CONFIG)")
    p.add_argument("--all", action="store_true", help="the whole catalog, not only what the configured "
                   "providers serve")
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
