"""Plugin mode under a real server: requests/s of the gateway against the bare app, both served by
uvicorn (one worker, uvloop, httptools), driven by wrk on loopback, in alternating rounds.

    python bench/plugin_http.py [--quick]

Two apps are wrapped: a FastAPI hello world (what plugin mode is for: the targets are judged on it) and
a raw-ASGI hello world (the worst case: an app that costs next to nothing, so the gateway's own cost
shows undiluted). Targets (issue 8): rate_limit + timeout + monitoring >= 0.85x the bare app; a cache
hit >= 1.0x. Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_server(app: str) -> Iterator[tuple[str, int]]:
    """Starts `uvicorn apps:<app>` on a free loopback port; yields (base URL, pid)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"apps:{app}", "--app-dir", str(HERE), "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"uvicorn for {app} did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminates ``process`` (killing it after 10 s) and reaps it."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def latency(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    return {"rps": rps, "requests": total, "p50_ms": latency("50"), "p99_ms": latency("99"),
            "non_2xx": int(errors.group(1)) if errors else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about a minute)")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, quick 3)")
    parser.add_argument("--seconds", type=int, help="seconds of wrk per scenario and round (default 5, quick 3)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    rounds, seconds = (3, 3) if args.quick else (7, 5)
    rounds, seconds = args.rounds or rounds, args.seconds or seconds
    scenarios = {
        "FastAPI app": ("fastapi_bare", "/limited"),
        "FastAPI + no matching policy": ("fastapi_gateway", "/plain"),
        "FastAPI + rate_limit+timeout+monitoring": ("fastapi_gateway", "/limited"),
        "FastAPI + cache hit": ("fastapi_gateway", "/cached"),
        "FastAPI + all features except cache": ("fastapi_gateway", "/all"),
        "raw ASGI app": ("bare", "/limited"),
        "raw ASGI + rate_limit+timeout+monitoring": ("gateway", "/limited"),
        "raw ASGI + cache hit": ("gateway", "/cached"),
    }
    references = {name: "FastAPI app" if name.startswith("FastAPI") else "raw ASGI app" for name in scenarios}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in scenarios}
    with ExitStack() as stack:
        servers = {app: stack.enter_context(uvicorn_server(app)) for app in {a for a, _ in scenarios.values()}}
        for app, path in scenarios.values():  # warm up: imports, caches, first connections
            wrk(servers[app][0] + path, 1, 32)
        for _ in range(rounds):
            for name, (app, path) in scenarios.items():
                base, pid = servers[app]
                before = cpu_seconds(pid)
                result = wrk(base + path, seconds, 32)
                result["cpu_us_per_request"] = (cpu_seconds(pid) - before) / max(1, result["requests"]) * 1e6
                samples[name].append(result)
    rows = {}
    print(f"{'scenario':<42}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'ratio':>8}  min-max")
    for name, runs in samples.items():
        reference = [s["rps"] for s in samples[references[name]]]
        ratios = [run["rps"] / bare for run, bare in zip(runs, reference, strict=True)]
        row = {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "rps_min": min(r["rps"] for r in runs), "rps_max": max(r["rps"] for r in runs),
            "non_2xx": sum(r["non_2xx"] for r in runs),
        }
        rows[name] = row
        print(f"{name:<42}{row['rps']:>10.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
              f"{row['cpu_us_per_request']:>12.1f}{row['ratio']:>8.2f}  {row['ratio_min']:.2f}-{row['ratio_max']:.2f}")
    targets = {
        "rate_limit+timeout+monitoring >= 0.85x the bare app": rows["FastAPI + rate_limit+timeout+monitoring"]["ratio"] >= 0.85,
        "cache hit >= 1.0x the bare app": rows["FastAPI + cache hit"]["ratio"] >= 1.0,
    }
    for label, met in targets.items():
        print(f"  {'met   ' if met else 'MISSED'} {label}")
    out = HERE / "results" / ("plugin_http-quick.json" if args.quick else "plugin_http.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
                               "cores": os.cpu_count(), "rounds": rounds, "seconds": seconds,
                               "rows": rows, "targets": targets}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
