"""The benchmark's table: the fake measured directly and through the gateway, side by side.

`added` is gateway minus direct, same scenario, same run. With N connections in a closed loop a
request's latency is mostly its wait behind the other N-1 (Little's law), so at c64 read the RPS,
and at c1 the added latency.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from load import Result


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _added(gateway: float, direct: float) -> str:
    return f"{gateway - direct:+.3f}"


def share(value: float) -> str:
    return "n/a" if value != value else f"{value:.0%}"


def _errors(result: Result | None) -> str:
    if result is None or not result.error_count:
        return "0"
    return ", ".join(f"{n} {kind}" for kind, n in result.errors.items() if n)


def table(rows: list[tuple[str, Result, Result | None]]) -> str:
    with_gateway = any(gateway is not None for _, _, gateway in rows)
    if not with_gateway:
        header = ["scenario", "direct RPS", "p50 ms", "p99 ms", "load CPU", "errors"]
        lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
        for name, direct, _ in rows:
            lines.append(_row([name, f"{direct.rps:,.0f}", _ms(direct.p50_ms), _ms(direct.p99_ms),
                               share(direct.cpu_busy), _errors(direct)]))
        return "\n".join(lines)
    header = ["scenario", "direct RPS", "gateway RPS", "ratio", "p50 direct", "p50 gateway", "added p50",
              "p99 direct", "p99 gateway", "added p99", "gateway CPU", "gateway errors"]
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for name, direct, gateway in rows:
        assert gateway is not None
        ratio = gateway.rps / direct.rps if direct.rps else 0.0
        lines.append(_row([
            name, f"{direct.rps:,.0f}", f"{gateway.rps:,.0f}", f"{ratio:.3f}",
            _ms(direct.p50_ms), _ms(gateway.p50_ms), _added(gateway.p50_ms, direct.p50_ms),
            _ms(direct.p99_ms), _ms(gateway.p99_ms), _added(gateway.p99_ms, direct.p99_ms),
            share(gateway.cpu_busy), _errors(gateway)]))
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def as_json(rows: list[tuple[str, Result, Result | None]]) -> list[dict[str, Any]]:
    out = []
    for name, direct, gateway in rows:
        entry: dict[str, Any] = {"scenario": name, "direct": dict(asdict(direct), rps=direct.rps)}
        if gateway is not None:
            entry["gateway"] = dict(asdict(gateway), rps=gateway.rps)
        out.append(entry)
    return out
