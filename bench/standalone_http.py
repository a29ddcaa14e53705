"""Standalone mode (issue 3): Premier as a reverse proxy (`premier serve FILE`, `servers:` in the YAML, no
`--app`) against nginx, a minimal aiohttp proxy and the published premier 0.4.10, each in front of the
same backend, driven by wrk on loopback (`wrk -t1 -c50 --latency`), in alternating rounds.

    python bench/standalone_http.py                    # full: 5 rounds x 5 s per scenario (~3.5 min)
    python bench/standalone_http.py --quick            # 3 rounds x 3 s (~1.5 min)
    python bench/standalone_http.py --rounds 7 --seconds 10
    python bench/standalone_http.py --backend python   # backend: uvicorn + raw-ASGI hello (default: nginx)

Scenarios, every proxy one process (one worker) on a free loopback port:

1. nginx: reverse proxy, one worker, upstream keepalive 64, HTTP/1.1 to the backend, access_log off (its
   own temporary prefix and config, never the system's).
2. Premier standalone, no policy: `python -m premier.cli serve FILE --no-access-log --log-level warning`
   (Premier's own server, uvloop, httptools: the direct path), run in the project's environment.
3. Premier standalone, cache hit: the same process, a path with `cache: {expire_s: 600}`, warmed once.
   Premier standalone on uvicorn: the same file served with `--server uvicorn` (the ASGI chain under
   uvicorn: what the server and its shortcuts are worth).
4. aiohttp: a minimal aiohttp reverse proxy (bench/_peer_proxies.py), in bench/.venv.
5. premier 0.4.10 from PyPI, standalone mode (`ASGIGateway(config=..., servers=[...])` under uvicorn), in
   bench/.venv-premier-0.4.10; its `aiohttp.ClienSession()` typo is patched in that venv's copy.
6. ref: uvicorn hello: no proxy, wrk straight to uvicorn serving bench/apps.py's raw-ASGI hello world (the
   ceiling of anything served through uvicorn, a Premier cache hit included).
7. ref: Python TCP relay (bench/_peer_proxies.py tcp-relay, the project's environment): bytes copied between
   client and backend connections on uvloop, no HTTP parsed — the floor under any Python proxy.

The backend, the same for all: a second nginx instance (one worker) answering `return 200 "Hello, world!"`,
or with `--backend python` uvicorn serving bench/apps.py's raw-ASGI hello world. Each round runs every
scenario once, order rotated. Reported per scenario: requests/s (median, min-max over rounds), p50/p99
latency (medians), CPU µs per request of the proxy's processes (utime+stime from /proc over the wrk run,
for nginx its master and worker) and of the backend, and the ratio to nginx of the same round (median,
min-max). Targets (issue 3), judged on the medians of the per-round ratios: Premier standalone >= 0.6x
nginx; Premier standalone >= 2x the faster of premier 0.4.10 and the aiohttp proxy; a Premier cache hit
>= 1.0x nginx proxying an uncached request. Results: bench/results/standalone_http[-quick][-python].json.

wrk, the proxy and the backend share the machine's cores: on a 2-core VM the numbers are those of a
CPU-bound machine, and swing by ±15% with other load; compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _venv import VENV
from plugin_http import CLOCK_TICKS, free_port, wrk

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LEGACY = "0.4.10"
LEGACY_VENV = HERE / f".venv-premier-{LEGACY}"
BODY = b"Hello, world!"
CONNECTIONS = 50
NGINX = "nginx"
PREMIER, PREMIER_CACHE, AIOHTTP, PREMIER_OLD = "Premier standalone", "Premier cache hit", "aiohttp proxy", f"premier {LEGACY}"
PREMIER_UVICORN = "Premier standalone on uvicorn"
UVICORN = "ref: uvicorn hello"
RELAY = "ref: Python TCP relay"


# processes -------------------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """``pid`` and its child processes, recursively (from /proc: an nginx master and its workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, ()))
    return found


def tree_cpu(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user, system) used so far by ``pids`` (utime and stime from /proc/PID/stat)."""
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / CLOCK_TICKS
        system += int(fields[12]) / CLOCK_TICKS
    return user, system


def wait_until_up(port: int, process: subprocess.Popen[bytes], name: str, log: Path, seconds: float = 20) -> None:
    """Waits for ``GET /`` to get any HTTP answer (a proxy whose backend is up answers for real)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{name} did not start (exit {process.poll()}):\n{tail}") from None
            time.sleep(0.05)


@contextmanager
def server(name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Runs ``argv`` (a server listening on ``port``) until the block ends; yields its pid. Output goes to
    a log file in ``workdir``, shown if it does not start."""
    log = workdir / f"{name.replace(' ', '_')}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        wait_until_up(port, process, name, log)
        yield process.pid
    finally:
        process.terminate()  # SIGTERM: uvicorn and aiohttp shut down, nginx's master stops its workers
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# the servers -----------------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
{body}
}}
"""
NGINX_BACKEND = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "Hello, world!"; }}
    }}"""
NGINX_PROXY = """\
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


@contextmanager
def nginx(name: str, body: str, port: int, workdir: Path) -> Iterator[int]:
    """An nginx of its own (temporary prefix and config, never the system's), in the foreground."""
    prefix = workdir / name
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, body=body))
    with server(name, ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)], port, workdir) as pid:
        yield pid


def uvicorn_hello(name: str, port: int, workdir: Path, env: dict[str, str] | None) -> AbstractContextManager[int]:
    """uvicorn (uvloop, httptools) serving bench/apps.py's raw-ASGI hello world: the python backend, and
    the reference row: what uvicorn serves with no proxying at all, the ceiling of a Premier cache hit."""
    return server(name, [
        sys.executable, "-m", "uvicorn", "apps:bare", "--app-dir", str(HERE), "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--no-access-log", "--loop", "uvloop",
        "--http", "httptools"], port, workdir, env)


PREMIER_YAML = """\
premier:
  keyspace: standalone-bench
  servers: ["{backend}"]
  upstream: {{load_balancing: round_robin}}
  paths:
    - pattern: /cached
      features:
        cache: {{expire_s: 600}}
"""


def ensure_venv(path: Path, imports: list[str], install: list[str]) -> Path:
    """The python of the virtual environment ``path``, created and given ``install`` (pip arguments) when
    one of ``imports`` is missing there (as bench/_venv.py does for bench/.venv, without re-executing)."""
    python = path / "bin" / "python"
    if not python.exists():
        print(f"creating {path}", flush=True)
        venv.create(path, with_pip=True)
    probe = subprocess.run([python, "-c", "import " + ", ".join(imports)], capture_output=True, check=False, cwd="/")
    if probe.returncode:
        print(f"installing {' '.join(install)} into {path}", flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *install], check=True)
    return python


def version(dist: str, python: str | Path = sys.executable) -> str:
    try:
        out = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                             capture_output=True, text=True, check=False, cwd="/")
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def patch_legacy(python: Path) -> list[str]:
    """Fixes, in premier 0.4.10's own venv copy, what keeps its standalone mode from starting; returns notes."""
    origin = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('premier').origin)"],
                            capture_output=True, text=True, check=True, cwd="/").stdout.strip()
    forward = Path(origin).parent / "asgi" / "forward.py"
    notes = []
    source = forward.read_text()
    if "aiohttp.ClienSession()" in source:
        forward.write_text(source.replace("aiohttp.ClienSession()", "aiohttp.ClientSession()"))
        notes.append(f"patched the typo aiohttp.ClienSession() -> aiohttp.ClientSession() in {forward.relative_to(ROOT)}")
    elif "aiohttp.ClientSession()" in source:
        notes.append(f"aiohttp.ClienSession() typo already patched in {forward.relative_to(ROOT)}")
    notes.append("its ClientSession is created in ASGIGateway.__init__ (needs a running loop): the gateway is "
                 "built by uvicorn's factory=True inside the loop")
    return notes


def check_answer(url: str, expect_cache_hit: bool = False) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:
        body, status, cache = response.read(), response.status, response.headers.get("x-cache")
    if status != 200 or body != BODY:
        raise RuntimeError(f"{url} answered {status} {body[:100]!r}, not 200 {BODY!r}")
    if expect_cache_hit and cache != "HIT":
        raise RuntimeError(f"{url} was not served from Premier's cache (X-Cache: {cache})")


# the run ---------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "cpu": model, "loadavg": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds x 3 s (about 1.5 minutes)")
    parser.add_argument("--backend", choices=["nginx", "python"], default="nginx",
                        help="nginx `return 200` (default) or uvicorn + raw-ASGI hello world")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=int)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop every server (the finally blocks)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install {tool}", file=sys.stderr)
            return 2
    rounds, seconds = (3, 3) if args.quick else (5, 5)
    rounds, seconds = args.rounds or rounds, args.seconds or seconds

    # the same uvicorn/uvloop/httptools for every uvicorn-served proxy as Premier's own (this interpreter)
    server_stack = [f"{d}=={importlib.metadata.version(d)}" for d in ("uvicorn", "uvloop", "httptools")]
    failed: dict[str, str] = {}
    notes: dict[str, list[str]] = {PREMIER_OLD: []}
    try:
        aiohttp_python = ensure_venv(VENV, ["aiohttp", "uvloop"], ["aiohttp", server_stack[1]])
    except (OSError, subprocess.CalledProcessError) as exc:
        aiohttp_python, failed[AIOHTTP] = VENV / "bin" / "python", f"cannot set up {VENV}: {exc}"
    try:
        legacy_python = ensure_venv(LEGACY_VENV, ["aiohttp", "uvicorn", "uvloop", "httptools", "yaml"],
                                    [f"premier[aiohttp,uvicorn]=={LEGACY}", *server_stack])
        notes[PREMIER_OLD] = patch_legacy(legacy_python)
    except (OSError, subprocess.CalledProcessError) as exc:
        legacy_python, failed[PREMIER_OLD] = LEGACY_VENV / "bin" / "python", f"cannot set up or patch {LEGACY_VENV}: {exc}"
    versions = {
        "python": sys.version.split()[0],
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1],
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1],
        "premier": importlib.metadata.version("premier"),
        **{d.split("==")[0]: d.split("==")[1] for d in server_stack},
        "aiohttp (proxy)": version("aiohttp", aiohttp_python),
        "premier (published)": version("premier", legacy_python),
        "aiohttp (premier 0.4.10)": version("aiohttp", legacy_python),
    }
    before = machine()
    print(f"{before['nproc']} cores ({before['cpu']}), load {before['loadavg'][0]:.2f}; "
          f"{rounds} rounds x {seconds} s per scenario, wrk -t1 -c{CONNECTIONS}; backend: {args.backend}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for line in notes[PREMIER_OLD]:
        print(f"{PREMIER_OLD}: {line}")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PREMIER_BENCH_REEXEC")}
    samples: dict[str, list[dict[str, float]]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="premier-standalone-bench-")))
        backend_port = free_port()
        if args.backend == "nginx":
            backend_pid = stack.enter_context(nginx("backend", NGINX_BACKEND.format(port=backend_port), backend_port, workdir))
            backend_label = "nginx `return 200` (1 worker)"
        else:
            backend_pid = stack.enter_context(uvicorn_hello("backend", backend_port, workdir, env))
            backend_label = "uvicorn raw-ASGI hello (bench/apps.py:bare, uvloop, httptools)"
        backend_url = f"http://127.0.0.1:{backend_port}"
        print(f"backend: {backend_label} at {backend_url}")
        (workdir / "premier.yaml").write_text(PREMIER_YAML.format(backend=backend_url))

        starts: dict[str, Callable[[int], AbstractContextManager[int]]] = {
            NGINX: lambda port: nginx("proxy", NGINX_PROXY.format(port=port, backend=backend_port), port, workdir),
            PREMIER: lambda port: server(PREMIER, [
                sys.executable, "-m", "premier.cli", "serve", str(workdir / "premier.yaml"), "--port", str(port),
                "--no-access-log", "--log-level", "warning"], port, workdir, env),
            PREMIER_UVICORN: lambda port: server(PREMIER_UVICORN, [
                sys.executable, "-m", "premier.cli", "serve", str(workdir / "premier.yaml"), "--port", str(port),
                "--no-access-log", "--log-level", "warning", "--server", "uvicorn"], port, workdir, env),
            UVICORN: lambda port: uvicorn_hello(UVICORN, port, workdir, env),
            RELAY: lambda port: server(RELAY, [
                sys.executable, str(HERE / "_peer_proxies.py"), "tcp-relay", str(port), backend_url], port, workdir, env),
            AIOHTTP: lambda port: server(AIOHTTP, [
                str(aiohttp_python), str(HERE / "_peer_proxies.py"), "aiohttp", str(port), backend_url], port, workdir, env),
            PREMIER_OLD: lambda port: server(PREMIER_OLD, [
                str(legacy_python), str(HERE / "_peer_proxies.py"), f"premier-{LEGACY}", str(port), backend_url],
                port, workdir, env),
        }
        proxies: dict[str, tuple[int, int]] = {}  # name -> (port, pid)
        for name, start in starts.items():
            if name in failed:
                continue
            port = free_port()
            try:
                proxies[name] = (port, stack.enter_context(start(port)))
                check_answer(f"http://127.0.0.1:{port}/hello")
            except (RuntimeError, OSError) as exc:
                proxies.pop(name, None)
                failed[name] = str(exc).strip()
                print(f"{name}: FAILED to start or to answer, left out: {failed[name]}", file=sys.stderr)
        if NGINX not in proxies or PREMIER not in proxies:
            return 1
        scenarios = {name: (port, pid, "/hello") for name, (port, pid) in proxies.items()}
        scenarios[PREMIER_CACHE] = (proxies[PREMIER][0], proxies[PREMIER][1], "/cached")
        order = [n for n in (NGINX, PREMIER, PREMIER_CACHE, PREMIER_UVICORN, AIOHTTP, PREMIER_OLD, UVICORN, RELAY)
                 if n in scenarios]
        urlopen_cached = f"http://127.0.0.1:{proxies[PREMIER][0]}/cached"
        urllib.request.urlopen(urlopen_cached, timeout=5).close()  # warm the cache once...
        check_answer(urlopen_cached, expect_cache_hit=True)  # ...and make sure the next one is a hit
        pids = {name: descendants(pid) for name, (_, pid, _) in scenarios.items()}
        backend_pids = descendants(backend_pid)
        for name in order:  # warm up: imports, first connections to the backend
            port, _, path = scenarios[name]
            wrk(f"http://127.0.0.1:{port}{path}", 1, CONNECTIONS)
        samples = {name: [] for name in order}
        for round_no in range(rounds):
            shift = round_no % len(order)
            for name in order[shift:] + order[:shift]:
                port, _, path = scenarios[name]
                (user, system), backend_cpu = tree_cpu(pids[name]), sum(tree_cpu(backend_pids))
                result = wrk(f"http://127.0.0.1:{port}{path}", seconds, CONNECTIONS)
                requests = max(1, result["requests"])
                user_after, system_after = tree_cpu(pids[name])
                result["cpu_us_per_request"] = (user_after - user + system_after - system) / requests * 1e6
                result["sys_us_per_request"] = (system_after - system) / requests * 1e6
                result["backend_cpu_us_per_request"] = (sum(tree_cpu(backend_pids)) - backend_cpu) / requests * 1e6
                result["round"] = round_no
                samples[name].append(result)
        for name in order:
            port, _, path = scenarios[name]
            check_answer(f"http://127.0.0.1:{port}{path}", expect_cache_hit=name == PREMIER_CACHE)
    after = machine()

    # the report ------------------------------------------------------------------------------------------
    nginx_rps = [s["rps"] for s in samples[NGINX]]
    rows: dict[str, dict[str, float]] = {}
    print(f"\n{'scenario':<22}{'req/s':>9}  {'min-max':<15}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/req':>12}{'(sys)':>7}"
          f"{'backend':>9}{'x nginx':>9}  min-max")
    for name in order:
        runs = samples[name]
        ratios = [run["rps"] / ref for run, ref in zip(runs, nginx_rps, strict=True)]
        row = {
            "rps": statistics.median(r["rps"] for r in runs),
            "rps_min": min(r["rps"] for r in runs), "rps_max": max(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs),
            "sys_us_per_request": statistics.median(r["sys_us_per_request"] for r in runs),
            "backend_cpu_us_per_request": statistics.median(r["backend_cpu_us_per_request"] for r in runs),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "non_2xx": sum(r["non_2xx"] for r in runs),
        }
        rows[name] = row
        print(f"{name:<22}{row['rps']:>9.0f}  {row['rps_min']:>6.0f}-{row['rps_max']:<8.0f}{row['p50_ms']:>8.2f}"
              f"{row['p99_ms']:>8.2f}{row['cpu_us_per_request']:>12.1f}{row['sys_us_per_request']:>7.1f}{row['backend_cpu_us_per_request']:>9.1f}"
              f"{row['ratio']:>9.2f}  {row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
              + (f"  ({row['non_2xx']} non-2xx!)" if row["non_2xx"] else ""))
    for name, reason in failed.items():
        print(f"{name:<22}did not run: {reason.splitlines()[-1] if reason else '?'}")
    print("(CPU us/req: the proxy's processes, utime+stime over the wrk run / requests, (sys) the stime part;\n"
          " backend: the backend's CPU us/req; medians over rounds)")

    peers = [n for n in (PREMIER_OLD, AIOHTTP) if n in samples]
    vs_peer = [p / max(samples[n][i]["rps"] for n in peers) for i, p in enumerate(s["rps"] for s in samples[PREMIER])] if peers else []
    if peers:
        print(f"Premier standalone / the faster of {' and '.join(peers)} (per round): median {statistics.median(vs_peer):.2f}, "
              f"{min(vs_peer):.2f}-{max(vs_peer):.2f}")
    targets = {
        "Premier standalone >= 0.6x nginx": rows[PREMIER]["ratio"] >= 0.6,
        f"Premier standalone >= 2x the faster of {' and '.join(peers) or '(no peer ran)'}":
            bool(vs_peer) and statistics.median(vs_peer) >= 2.0,
        "Premier cache hit >= 1.0x nginx proxying": rows[PREMIER_CACHE]["ratio"] >= 1.0,
    }
    for label, met in targets.items():
        print(f"  {'met   ' if met else 'MISSED'} {label}")
    print(f"load average before {before['loadavg'][0]:.2f}, after {after['loadavg'][0]:.2f}")

    suffix = ("-quick" if args.quick else "") + ("-python" if args.backend == "python" else "")
    out = HERE / "results" / f"standalone_http{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": {**before, "loadavg_after": after["loadavg"]},
        "versions": versions, "backend": backend_label, "rounds": rounds, "seconds": seconds,
        "wrk": f"wrk -t1 -c{CONNECTIONS} -d{seconds}s --latency", "rows": rows,
        "premier_vs_faster_peer": {"median": statistics.median(vs_peer), "min": min(vs_peer), "max": max(vs_peer)} if vs_peer else None,
        "targets": targets, "notes": notes, "failed": failed, "samples": samples,
    }, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
