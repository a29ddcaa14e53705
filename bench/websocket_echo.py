#!/usr/bin/env python3
"""WebSocket echo through the gateway against direct: messages/s of N concurrent connections doing
ping-pong messages with a raw-ASGI echo app, served by uvicorn directly, wrapped by the plugin-mode gateway,
and behind `premier serve` (standalone mode) proxying to it, in alternating rounds.

    python bench/websocket_echo.py                 # 5 rounds x 5 s per scenario, 50 connections (~1.5 min)
    python bench/websocket_echo.py --quick         # 3 rounds x 2 s (~30 s)
    python bench/websocket_echo.py --rounds 1 --seconds 1 --connections 5

Scenarios, every server one uvicorn process (uvloop, httptools, ws="websockets-sansio") on a free port:

1. direct: uvicorn serving `echo`, a raw-ASGI app that sends every message back (the reference).
2. plugin gateway: the same app wrapped by `ASGIGateway(config, app=echo)`; the path `/ws` has
   `rate_limit` (1,000,000 per 60 s: the connection attempts) and `websocket: {message_rate: {quota:
   1000000, duration: 1}}` (every client message is counted, none is refused).
3. standalone: `python -m premier.cli serve FILE` with `servers: [the direct server]` and the same path
   policy: a second process relaying each message to the echo server and back.

The client runs in a process of its own (so its CPU is not the server's): it opens N connections, waits for
the go, then each connection sends a 64-byte text message, waits for its echo, and sends the next, for S
seconds. Reported per scenario: messages/s (round trips, median and min-max over rounds), p50/p99
round-trip latency (medians over rounds), the server process's CPU µs per message (utime+stime from /proc
over the timed window; for standalone the proxy, with the echo backend's CPU apart), and the ratio to
direct in the same round (median, min-max). No issue target: the ratio is for reference.
Results: bench/results/websocket_echo[-quick].json. Needs only the project's environment (uvicorn,
uvloop, httptools, websockets, as `premier[server]` brings).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from plugin_http import cpu_seconds, free_port, stop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MESSAGE = "x" * 64
DIRECT, PLUGIN, STANDALONE = "direct (uvicorn echo app)", "plugin gateway", "standalone (premier serve)"

POLICY = """\
    - pattern: /ws
      features:
        rate_limit: {quota: 1000000, duration: 60}
        websocket: {message_rate: {quota: 1000000, duration: 1}}
"""
PLUGIN_YAML = "premier:\n  paths:\n" + POLICY
STANDALONE_YAML = """\
premier:
  keyspace: websocket-bench
  servers: ["BACKEND"]
  paths:
""" + POLICY


# -- the ASGI apps (served by uvicorn in a child process: `websocket_echo:echo`, `websocket_echo:gateway`) ----
async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes every WebSocket message; answers HTTP with 200 "ok" (the readiness probe)."""
    if scope["type"] == "websocket":
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                await send({"type": "websocket.send", "text": text} if text is not None
                           else {"type": "websocket.send", "bytes": message.get("bytes")})
            elif kind == "websocket.connect":
                await send({"type": "websocket.accept"})
            else:  # websocket.disconnect
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


def gateway() -> Any:
    """uvicorn factory: the echo app behind the plugin-mode gateway."""
    from premier.asgi import ASGIGateway, GatewayConfig

    return ASGIGateway(GatewayConfig.from_yaml(PLUGIN_YAML), app=echo)


# -- the client (a process of its own) --------------------------------------------------------------------
async def client(url: str, connections: int, seconds: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    sockets = [await connect(url, compression=None, max_queue=None) for _ in range(connections)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the go
    latencies: list[list[float]] = [[] for _ in sockets]
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def ping_pong(ws: Any, out: list[float]) -> None:
        clock = time.perf_counter
        try:
            while (start := clock()) < deadline:
                await ws.send(MESSAGE)
                if await ws.recv() != MESSAGE:
                    raise RuntimeError("the echo differs from the message")
                out.append(clock() - start)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    await asyncio.gather(*(ping_pong(ws, out) for ws, out in zip(sockets, latencies, strict=True)))
    elapsed = time.perf_counter() - started
    for ws in sockets:
        await ws.close()
    every = sorted(x for out in latencies for x in out)

    def pct(p: float) -> float:
        return every[min(len(every) - 1, int(p / 100 * len(every)))] * 1e3 if every else float("nan")

    return {"messages": len(every), "seconds": elapsed, "p50_ms": pct(50), "p99_ms": pct(99),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def client_main(url: str, connections: int, seconds: float) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(client(url, connections, seconds))), flush=True)


# -- the servers --------------------------------------------------------------------------------------------
@contextmanager
def server(name: str, argv: list[str], port: int, workdir: Path) -> Iterator[int]:
    """Runs ``argv`` (a server on ``port``) until the block ends; yields its pid. Output goes to a log in
    ``workdir``, shown when the server does not come up."""
    log = workdir / f"{name.split()[0]}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PREMIER_BENCH_REEXEC")}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ws", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start (exit {process.poll()}):\n"
                                       f"{log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.05)
        yield process.pid
    finally:
        stop(process)


def uvicorn(name: str, app: str, port: int, workdir: Path, factory: bool = False) -> Any:
    return server(name, [
        sys.executable, "-m", "uvicorn", f"websocket_echo:{app}", *(["--factory"] if factory else []),
        "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log", "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio"], port, workdir)


def measure(url: str, pid: int, backend_pid: int | None, connections: int, seconds: float) -> dict[str, Any]:
    """One timed client run against ``url``; the server's CPU over the timed window."""
    process = subprocess.Popen([sys.executable, __file__, "--client", url, "--connections", str(connections),
                                "--seconds", str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdin is not None and process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the client could not connect to {url}")
        cpu, backend_cpu = cpu_seconds(pid), cpu_seconds(backend_pid) if backend_pid else 0.0
        process.stdin.write("go\n")
        process.stdin.flush()
        result: dict[str, Any] = json.loads(process.stdout.readline())
        cpu, backend_cpu = cpu_seconds(pid) - cpu, (cpu_seconds(backend_pid) - backend_cpu) if backend_pid else 0.0
    finally:
        stop(process)
    messages = max(1, result["messages"])
    result["msgs_per_s"] = result["messages"] / result["seconds"]
    result["cpu_us_per_message"] = cpu / messages * 1e6
    result["backend_cpu_us_per_message"] = backend_cpu / messages * 1e6
    return result


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds x 2 s per scenario")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--out", type=Path, help="the JSON result's path (default: bench/results/websocket_echo[-quick].json)")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # internal: be the client process
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.connections, args.seconds or 1.0)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop every server (the finally blocks)
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    from importlib.metadata import version

    versions = {d: version(d) for d in ("premier", "uvicorn", "websockets", "uvloop")}
    before = machine()
    print(f"{rounds} rounds x {seconds:g} s per scenario, {args.connections} connections, {len(MESSAGE)}-byte "
          f"text messages; python {platform.python_version()}; {before['cpu']} x{before['nproc']}, load "
          f"{before['loadavg'][0]:.2f}; " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)

    samples: dict[str, list[dict[str, Any]]] = {DIRECT: [], PLUGIN: [], STANDALONE: []}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="premier-ws-bench-")))
        ports = {name: free_port() for name in samples}
        pids = {DIRECT: stack.enter_context(uvicorn(DIRECT, "echo", ports[DIRECT], workdir))}
        pids[PLUGIN] = stack.enter_context(uvicorn(PLUGIN, "gateway", ports[PLUGIN], workdir, factory=True))
        (workdir / "premier.yaml").write_text(STANDALONE_YAML.replace("BACKEND", f"http://127.0.0.1:{ports[DIRECT]}"))
        pids[STANDALONE] = stack.enter_context(server(STANDALONE, [
            sys.executable, "-m", "premier.cli", "serve", str(workdir / "premier.yaml"), "--port",
            str(ports[STANDALONE]), "--no-access-log", "--log-level", "warning"], ports[STANDALONE], workdir))
        backend = {STANDALONE: pids[DIRECT]}
        order = list(samples)
        for name in order:  # warm up: imports, first connections
            measure(f"ws://127.0.0.1:{ports[name]}/ws", pids[name], backend.get(name), args.connections,
                    min(0.3, seconds))
        for round_no in range(rounds):
            shift = round_no % len(order)
            for name in order[shift:] + order[:shift]:
                result = measure(f"ws://127.0.0.1:{ports[name]}/ws", pids[name], backend.get(name),
                                 args.connections, seconds)
                result["round"] = round_no
                samples[name].append(result)
            print(f"  round {round_no + 1}/{rounds} done", flush=True)
    after = machine()

    direct = [s["msgs_per_s"] for s in samples[DIRECT]]
    rows: dict[str, dict[str, Any]] = {}
    print(f"\n{'scenario':<28}{'msgs/s':>9}  {'min-max':<15}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/msg':>11}"
          f"{'backend':>9}{'x direct':>9}  min-max")
    for name, runs in samples.items():
        ratios = [run["msgs_per_s"] / ref for run, ref in zip(runs, direct, strict=True)]
        rate = [r["msgs_per_s"] for r in runs]
        row = {
            "msgs_per_s": statistics.median(rate), "msgs_per_s_min": min(rate), "msgs_per_s_max": max(rate),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "cpu_us_per_message": statistics.median(r["cpu_us_per_message"] for r in runs),
            "backend_cpu_us_per_message": statistics.median(r["backend_cpu_us_per_message"] for r in runs),
            "reference": None if name == DIRECT else DIRECT,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "errors": sum(r["errors"] for r in runs),
        }
        rows[name] = row
        print(f"{name:<28}{row['msgs_per_s']:>9.0f}  {min(rate):>6.0f}-{max(rate):<8.0f}{row['p50_ms']:>8.2f}"
              f"{row['p99_ms']:>8.2f}{row['cpu_us_per_message']:>11.1f}{row['backend_cpu_us_per_message']:>9.1f}"
              f"{row['ratio']:>9.2f}  {row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
              + (f"  ({row['errors']} errors!)" if row["errors"] else ""))
    print("(CPU µs/msg: the server process, utime+stime over the timed window / round trips; backend: the echo\n"
          f" server's, for standalone; medians over rounds; load average after {after['loadavg'][0]:.2f})")
    errors = [r["first_error"] for runs in samples.values() for r in runs if r["errors"]]
    out = args.out or HERE / "results" / f"websocket_echo{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": {**before, "loadavg_after": after["loadavg"]},
        "versions": versions, "rounds": rounds, "seconds": seconds, "connections": args.connections,
        "message_bytes": len(MESSAGE), "rows": rows, "targets": {}, "errors": errors[:5],
        "server_pids": pids, "ports": ports,
        "samples": samples,
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
