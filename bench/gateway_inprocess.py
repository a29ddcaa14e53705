"""In-process cost of the plugin-mode gateway per request: the gateway called as an ASGI app with a
no-op send, around the same bare hello-world app, in alternating rounds.

    python bench/gateway_inprocess.py [--quick]

Targets (issue 8): no matching policy adds <= 1 us; rate_limit + timeout + monitoring adds <= 8 us; a
cache hit is served in <= 5 us in total (the app is never called). Two more rows, without a target, put
the same policy around the FastAPI hello app that bench/plugin_http.py serves. The gateway executes the
same instructions around both apps (callgrind: ~41k per request either way) but takes about twice as
long around FastAPI, whose own code leaves the gateway's cold (caches, branch predictors) each request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from apps import CONFIG, fastapi_bare, fastapi_gateway
from apps import bare as hello
from premier.asgi import ASGIGateway

REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def noop_send(message: Any) -> None:
    pass


async def receive() -> Any:
    return REQUEST


def scope_for(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"bench")], "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def per_call_ns(app: Any, path: str, calls: int) -> float:
    scope = scope_for(path)
    started = time.perf_counter_ns()
    for _ in range(calls):
        await app(scope, receive, noop_send)
    return (time.perf_counter_ns() - started) / calls


async def main(quick: bool) -> dict[str, Any]:
    gateway = ASGIGateway(CONFIG, app=hello)
    await gateway(scope_for("/cached"), receive, noop_send)  # fill the cache
    scenarios = {
        "bare app": (hello, "/none"),
        "gateway, no matching policy": (gateway, "/none"),
        "gateway, rate_limit+timeout+monitoring": (gateway, "/limited"),
        "gateway, cache hit": (gateway, "/cached"),
        "gateway, all features (no cache)": (gateway, "/all"),
        "FastAPI app": (fastapi_bare, "/limited"),
        "FastAPI + rate_limit+timeout+monitoring": (fastapi_gateway, "/limited"),
    }
    rounds, calls = (5, 20_000) if quick else (11, 100_000)
    samples: dict[str, list[float]] = {name: [] for name in scenarios}
    for _ in range(rounds):
        for name, (app, path) in scenarios.items():  # interleaved: every scenario once per round
            fastapi = name.startswith("FastAPI")  # ~100x the raw app's time per call: fewer calls
            samples[name].append(await per_call_ns(app, path, calls // 50 if fastapi else calls))
    rows = {}
    for name, values in samples.items():
        reference = statistics.median(samples["FastAPI app" if name.startswith("FastAPI") else "bare app"])
        median = statistics.median(values)
        rows[name] = {"median_ns": median, "min_ns": min(values), "max_ns": max(values), "added_ns": median - reference}
    return rows


def report(rows: dict[str, Any]) -> list[tuple[str, bool]]:
    print(f"{'scenario':<42}{'ns/call':>10}{'min-max':>18}{'added':>10}")
    for name, row in rows.items():
        spread = f"{row['min_ns']:.0f}-{row['max_ns']:.0f}"
        print(f"{name:<42}{row['median_ns']:>10.0f}{spread:>18}{row['added_ns']:>10.0f}")
    targets = [
        ("no matching policy adds <= 1 us", rows["gateway, no matching policy"]["added_ns"] <= 1000),
        ("rate_limit+timeout+monitoring adds <= 8 us", rows["gateway, rate_limit+timeout+monitoring"]["added_ns"] <= 8000),
        ("cache hit served in <= 5 us", rows["gateway, cache hit"]["median_ns"] <= 5000),
    ]
    for label, met in targets:
        print(f"  {'met   ' if met else 'MISSED'} {label}")
    return targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    rows = asyncio.run(main(args.quick))
    targets = report(rows)
    out = Path(__file__).parent / "results" / "gateway_inprocess.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "loop": loop_name,
        "machine": platform.machine(), "rows": rows, "targets": {label: met for label, met in targets},
    }, indent=2))
