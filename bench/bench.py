"""What the gateway costs on this machine: the same load on a fast fake upstream, directly and
through the gateway, in one run.

Run it from the repository root (it installs wrk, nginx and nginx's echo module from Debian
with apt-get if they are missing, then calls this script):

    bench/run.sh                                   # 8 scenarios, 10 s each, in-memory store
    bench/run.sh --duration 5 --scenarios json-small-c1,sse-large-c64
    bench/run.sh --redis                           # the gateway's state in a redis-server
    bench/run.sh --with-limits                     # + a team with limits and budgets (implies --redis)
    bench/run.sh --redis --workers 2 --gateway-cpus 2-3   # on a machine with 4 CPUs
    bench/run.sh --direct-only                     # the fake alone (checks the harness)
    python3 bench/bench.py --help                  # every option

What runs where (2 cores): wrk and the fake upstream (nginx, one worker) on CPU 0, the gateway
alone on CPU 1 (`--load-cpus`, `--gateway-cpus`); a redis-server, with `--redis`, on CPU 0 too,
so that it neither shares the gateway's core nor counts in its memory.

Scenarios are `{json|sse}-{small|large}-c{N}`: a ~300 B one-turn body or a ~31 KB coding-agent
body (bench/bodies.py), answered as JSON or as an Anthropic event stream, with N keep-alive
connections in a closed loop (`wrk -t1 -cN`). Each scenario is measured on the fake directly and
through the gateway, back to back (the order alternates between scenarios), after a short warm-up.

The table gives each side's requests per second and their ratio, p50 and p99 latency to the last
byte and what the gateway adds (gateway − direct), how busy the gateway's CPU was (100%: the
gateway was the bottleneck), any non-2xx answers or socket errors, and the gateway's peak
resident memory (VmHWM summed over its processes). The machine is shared and noisy: compare
ratios and added latencies within one run, not absolute figures across runs.

Every process is started on 127.0.0.1 by this script and stopped at the end, also on Ctrl-C or
SIGTERM. Scratch files (nginx config, bodies, gateway config, every process's log, wrk output,
results.md and results.json) go to bench/.cache/<timestamp>/; the last 10 runs are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import bodies
import fake_upstream
import gateway_target
import load
import processes
import report

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
KEEP_RUNS = 10
DEFAULT_SCENARIOS = ("json-small-c1,json-small-c64,sse-small-c1,sse-small-c64,"
                     "json-large-c1,json-large-c64,sse-large-c1,sse-large-c64")
SCENARIO = re.compile(r"(json|sse)-(small|large)-c([1-9][0-9]*)")


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    size: str
    connections: int


def parse_scenarios(text: str) -> list[Scenario]:
    scenarios = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        m = SCENARIO.fullmatch(name)
        if m is None:
            raise SystemExit(f"bench: bad scenario {name!r}: expected {{json|sse}}-{{small|large}}-c{{N}}")
        scenarios.append(Scenario(name, m.group(1) == "sse", m.group(2), int(m.group(3))))
    if not scenarios:
        raise SystemExit("bench: no scenario given")
    return scenarios


def parse_cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.sh", description="Measure the gateway against a fast fake Anthropic upstream.",
        epilog="Details: the docstring of bench/bench.py.")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before each (default 1, 0: none)")
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                        help="comma-separated {json|sse}-{small|large}-c{N} (default: both sizes, both modes, c1 and c64)")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (more than 1 needs --redis)")
    parser.add_argument("--redis", action="store_true", help="keep the gateway's state in a redis-server started for the run")
    parser.add_argument("--with-limits", action="store_true",
                        help="send requests with a key of a team with rate limits, concurrency cap and budgets "
                             "(created through the admin API; implies --redis)")
    parser.add_argument("--direct-only", action="store_true", help="measure the fake upstream alone, no gateway")
    parser.add_argument("--model", default=bodies.DEFAULT_MODEL, help=f"model id in the bodies (default {bodies.DEFAULT_MODEL})")
    parser.add_argument("--gateway-cpus", default="1", help="CPUs for the gateway, taskset syntax (default 1)")
    parser.add_argument("--load-cpus", default="0", help="CPUs for wrk, the fake and redis (default 0)")
    args = parser.parse_args(argv)
    if args.with_limits:
        args.redis = True
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 and --warmup at least 0 (whole seconds)")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and not args.redis:
        parser.error("--workers above 1 needs --redis (the in-memory store lives in one process)")
    args.scenario_list = parse_scenarios(args.scenarios)
    return args


def new_run_dir() -> Path:
    CACHE_DIR.mkdir(exist_ok=True)
    runs = sorted(p for p in CACHE_DIR.iterdir() if p.is_dir() and re.fullmatch(r"\d{8}-\d{6}", p.name))
    for old in runs[:max(0, len(runs) - (KEEP_RUNS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = CACHE_DIR / time.strftime("%Y%m%d-%H%M%S")
    while run_dir.exists():
        time.sleep(1)
        run_dir = CACHE_DIR / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir()
    return run_dir


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if not fake_upstream.ECHO_MODULE.is_file():
        missing.append("libnginx-mod-http-echo")
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)}: run bench/run.sh, which installs them")


def usable_cpus(text: str, what: str) -> str | None:
    """The taskset CPU list, or None (no pinning) when this machine lacks one of those CPUs."""
    available = os.sched_getaffinity(0)
    if not set(parse_cpus(text)) <= available or shutil.which("taskset") is None:
        print(f"[bench] CPUs {text} for {what} are not available here: not pinning it")
        return None
    return text


def write_bodies(run_dir: Path, model: str) -> dict[tuple[str, bool], Path]:
    files = {}
    for size, build in (("small", bodies.small_body), ("large", bodies.large_body)):
        for stream in (False, True):
            path = run_dir / f"body-{size}-{'sse' if stream else 'json'}.json"
            path.write_bytes(build(model, stream))
            files[(size, stream)] = path
    return files


def start_fake(procs: processes.Processes, run_dir: Path, cpus: str | None) -> load.Target:
    port = processes.free_port()
    config = run_dir / "fake-nginx.conf"
    config.write_text(fake_upstream.nginx_config(port, run_dir))
    argv = ["nginx", "-p", str(run_dir), "-c", str(config), "-e", str(run_dir / "fake.error.log")]
    proc = procs.start("fake upstream (nginx)", argv, run_dir / "fake.log", cpus=cpus)
    processes.wait_http_ok(f"http://127.0.0.1:{port}/v1/models", proc, timeout=15)
    return load.Target("direct", f"http://127.0.0.1:{port}/v1/messages", "sk-bench-direct-unused")


def start_redis(procs: processes.Processes, run_dir: Path, cpus: str | None) -> int:
    port = processes.free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(run_dir), "--protected-mode", "no"]
    proc = procs.start("redis-server", argv, run_dir / "redis.log", cpus=cpus)
    processes.wait_redis(port, proc)
    return port


def start_gateway(procs: processes.Processes, run_dir: Path, args: argparse.Namespace, fake: load.Target,
                  redis_url: str | None, cpus: str | None) -> tuple[load.Target, processes.Started]:
    port = processes.free_port()
    admin_key = "sk-bench-admin-" + secrets.token_hex(16)
    bench_key = "sk-bench-team-" + secrets.token_hex(16)
    fake_port = urlsplit(fake.url).port
    config = run_dir / "gateway.yaml"
    gateway_target.write_config(config, fake_port, admin_key, bench_key, redis_url)
    # The user's own GATEWAY_* settings must not leak into the measured configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = procs.start("gateway", gateway_target.serve_argv(config, port, args.workers), run_dir / "gateway.log",
                       cpus=cpus, env=env, cwd=run_dir)
    base = f"http://127.0.0.1:{port}"
    processes.wait_http_ok(f"{base}/readyz", proc, timeout=90)
    key = gateway_target.create_limited_key(base, admin_key) if args.with_limits else bench_key
    return load.Target("gateway", f"{base}/v1/messages", key), proc


def smoke(targets: list[load.Target], body_files: dict[tuple[str, bool], Path]) -> None:
    for target in targets:
        for size in ("small", "large"):
            json_answer = load.smoke_json(target, body_files[(size, False)].read_bytes())
            events = load.smoke_stream(target, body_files[(size, True)].read_bytes())
            print(f"[bench] {target.name:<7} {size}: JSON {json_answer}")
            print(f"[bench] {target.name:<7} {size}: SSE  {events}")


def measure(args: argparse.Namespace, targets: list[load.Target], body_files: dict[tuple[str, bool], Path],
            load_cpus: str | None, gateway_cpus: list[int], fake_cpus: list[int], wrk_log: Path,
            ) -> list[tuple[str, load.Result, load.Result | None]]:
    rows = []
    for index, scenario in enumerate(args.scenario_list):
        body = body_files[(scenario.size, scenario.stream)]
        order = targets if index % 2 == 0 else list(reversed(targets))
        results: dict[str, load.Result] = {}
        for target in order:
            cpus = gateway_cpus if target.name == "gateway" else fake_cpus
            if args.warmup > 0:
                load.run_wrk(target, body, scenario.connections, args.warmup, load_cpus, cpus, wrk_log)
            results[target.name] = load.run_wrk(target, body, scenario.connections, args.duration,
                                                load_cpus, cpus, wrk_log)
            r = results[target.name]
            print(f"[bench] {scenario.name:<16} {target.name:<7} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                  f"p99 {r.p99_ms:7.2f} ms  CPU {report.share(r.cpu_busy):>4}  errors {r.error_count}")
        rows.append((scenario.name, results["direct"], results.get("gateway")))
    return rows


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    run_dir = new_run_dir()
    load_cpus = usable_cpus(args.load_cpus, "wrk and the fake")
    gateway_cpus = usable_cpus(args.gateway_cpus, "the gateway")
    procs = processes.Processes()
    started = time.monotonic()
    try:
        body_files = write_bodies(run_dir, args.model)
        fake = start_fake(procs, run_dir, load_cpus)
        targets = [fake]
        gateway_proc, redis_port = None, None
        if not args.direct_only:
            redis_port = start_redis(procs, run_dir, load_cpus) if args.redis else None
            redis_url = f"redis://127.0.0.1:{redis_port}/0" if redis_port else None
            gateway, gateway_proc = start_gateway(procs, run_dir, args, fake, redis_url, gateway_cpus)
            targets.append(gateway)
        print(f"[bench] run directory {run_dir}")
        smoke(targets, body_files)
        rows = measure(args, targets, body_files, load_cpus,
                       parse_cpus(gateway_cpus) if gateway_cpus else [],
                       parse_cpus(load_cpus) if load_cpus else [], run_dir / "wrk.log")
        rss_kib = processes.peak_rss_kib(gateway_proc.pid) if gateway_proc else None
        redis_commands = processes.redis_command_counts(redis_port) if redis_port else None
    except (processes.StartError, load.SmokeError) as exc:
        print(f"[bench] {exc}\n[bench] logs in {run_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n[bench] interrupted; logs in {run_dir}", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        procs.stop_all()
    text = summary(args, rows, rss_kib, redis_commands, body_files, time.monotonic() - started)
    print("\n" + text)
    (run_dir / "results.md").write_text(text + "\n")
    (run_dir / "results.json").write_text(json.dumps({
        "options": {k: v for k, v in vars(args).items() if k != "scenario_list"},
        "gateway_peak_rss_kib": rss_kib, "redis_commands_processed": redis_commands,
        "rows": report.as_json(rows)}, indent=2) + "\n")
    print(f"\n[bench] results and logs in {run_dir}")
    return 0


def summary(args: argparse.Namespace, rows: list[tuple[str, load.Result, load.Result | None]],
            rss_kib: int | None, redis_commands: dict[str, int] | None, body_files: dict[tuple[str, bool], Path],
            elapsed: float) -> str:
    store = "redis" if args.redis else "in-memory"
    sizes = ", ".join(f"{size} {body_files[(size, False)].stat().st_size:,} B" for size in ("small", "large"))
    lines = [
        f"Gateway benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {args.duration:g} s per measurement, "
        f"bodies {sizes}, model {args.model}.",
        f"wrk + fake upstream{' + redis' if args.redis else ''} on CPU {args.load_cpus}"
        + ("" if args.direct_only else
           f"; gateway on CPU {args.gateway_cpus}, {args.workers} worker(s), {store} store"
           f"{', team with limits and budgets' if args.with_limits else ''}") + ".",
        "Latency in ms to the last byte; added = gateway − direct (same run).",
        "",
        report.table(rows),
    ]
    if rss_kib is not None:
        lines += ["", f"Gateway peak RSS (VmHWM, all its processes): {rss_kib / 1024:.1f} MiB"]
    if redis_commands is not None:
        # Smoke checks and warm-ups reach the gateway too: a per-request figure would mislead.
        total = sum(redis_commands.values())
        top = sorted(redis_commands.items(), key=lambda item: -item[1])[:4]
        gateway_requests = sum(gateway.requests for _, _, gateway in rows if gateway is not None)
        lines.append(f"redis-server processed {total:,} commands over the run, "
                     f"{gateway_requests:,} measured gateway requests"
                     + (f" (most: {', '.join(f'{name} {calls:,}' for name, calls in top)})." if total >= 10
                        else ": the gateway did not use it."))
    lines.append(f"Run time {elapsed / 60:.1f} min.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
