#!/usr/bin/env python3
"""Redis-backed rate-limit checks per second: Premier's AsyncRedisCache (Lua via EVALSHA) side by side with
`limits`' async Redis limiters, 50 concurrent coroutines in one process, in alternating rounds.

    python3 bench/redis_limiter.py           # 5 rounds x 2 s per scenario; writes bench/results/redis_limiter.json
    python3 bench/redis_limiter.py --quick   # 3 rounds x 1 s; writes bench/results/redis_limiter-quick.json

Needs Redis at 127.0.0.1:6379 (db 0); its keys live under `premier-bench-<random>` and are removed with
SCAN + UNLINK afterwards. Like micro.py, it runs itself inside bench/.venv (created and filled if needed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import secrets
import statistics
import time
from functools import partial
from itertools import cycle
from pathlib import Path

from _venv import enter_venv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# limits' async-redis extra brings its default async client, coredis; hiredis is redis-py's C reply parser.
INSTALL = ["-e", f"{ROOT}[redis]", "limits[async-redis]", "hiredis"]
URL = "redis://127.0.0.1:6379/0"
PREFIX = f"premier-bench-{secrets.token_hex(4)}"
CONCURRENCY, KEYS, QUOTA, DURATION = 50, 1000, 100_000, 60  # checks spread over KEYS keys, all admitted



def scenarios(python_parser: bool) -> tuple[dict, list]:
    """{name: (group, check(key) -> awaitable, keys)}, and the clients to close; one client per library."""
    from limits import parse
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
    from redis.asyncio import Redis
    from redis.asyncio.connection import _AsyncRESP2Parser  # becomes the RESP3 one on a RESP3 connection

    from premier import rate_limit
    from premier.config.schema import RateLimitConfig
    from premier.features.ratelimit.limiter import make_algorithm
    from premier.providers.redis import AsyncRedisCache

    pure = {"max_connections": 64, "parser_class": _AsyncRESP2Parser}
    opts = pure if python_parser else {"max_connections": 64}  # 50 commands at once; default parser: hiredis
    provider = AsyncRedisCache(Redis.from_url(URL, **opts))
    found: dict = {}

    def keys(tag: str) -> list[str]:
        return [f"{tag}-{i}" for i in range(KEYS)]

    def acquire(provider: AsyncRedisCache, algo: str):  # check(key) = provider.acquire(key, algorithm=...)
        return partial(provider.acquire, algorithm=make_algorithm(RateLimitConfig(QUOTA, DURATION, algorithm=algo)))

    for algo in ("sliding_window", "fixed_window", "token_bucket", "leaky_bucket"):
        found[f"premier acquire {algo}"] = ("premier", acquire(provider, algo), keys(f"{PREFIX}:{algo}"))

    @rate_limit(QUOTA, DURATION, algorithm="sliding_window", key=lambda key: key, keyspace=PREFIX, provider=provider)
    async def noop(key: str) -> None:
        return None

    found["premier @rate_limit sliding_window"] = ("premier", noop, keys("user"))

    item = parse(f"{QUOTA}/minute")
    redispy = RedisStorage(f"async+{URL}", implementation="redispy", key_prefix=f"{PREFIX}:limits", **opts)
    core = RedisStorage(f"async+{URL}", key_prefix=f"{PREFIX}:limits", max_connections=64)  # limits' default
    for label, limiter in (("moving window (redis-py)", MovingWindowRateLimiter(redispy)),
                           ("moving window (coredis)", MovingWindowRateLimiter(core)),
                           ("fixed window (redis-py)", FixedWindowRateLimiter(redispy))):
        found[f"limits {label}"] = ("limits", partial(limiter.hit, item), keys(label.replace(" ", "-")))

    clients = [provider.client, redispy.bridge.storage]
    if not python_parser:  # what the pure-Python reply parser costs premier
        plain = AsyncRedisCache(Redis.from_url(URL, **pure))
        clients.append(plain.client)
        found["premier acquire sliding_window, pure-Python parser"] = (
            "reference", acquire(plain, "sliding_window"), keys(f"{PREFIX}:plain"))
    floor = provider.client.register_script("return 1")  # redis-py's cost of one EVALSHA round trip
    found["redis-py EVALSHA of 'return 1'"] = ("reference", lambda key: floor(keys=[key]), keys("floor"))
    return found, clients


async def rate(check, keys: list[str], seconds: float) -> tuple[float, float]:
    """Checks/s of CONCURRENCY coroutines cycling over their share of the keys; this process's CPU µs/check."""
    async def worker(own: list[str]) -> int:
        n, clock, deadline, own_keys = 0, time.perf_counter, t0 + seconds, cycle(own)
        while clock() < deadline:
            await check(next(own_keys))
            n += 1
        return n

    t0, cpu0 = time.perf_counter(), time.process_time()
    counts = await asyncio.gather(*(worker(keys[w::CONCURRENCY]) for w in range(CONCURRENCY)))
    return sum(counts) / (time.perf_counter() - t0), (time.process_time() - cpu0) / sum(counts) * 1e6


async def round_trips(admin, check, keys: list[str]) -> dict:
    """Per check, one per key: EVALSHA calls and µs in Redis (INFO commandstats), requests sent by redis-py."""
    from redis.asyncio.connection import AbstractConnection
    sent, original = [0], AbstractConnection.send_packed_command

    async def counting(self, command, check_health=True):
        sent[0] += 1
        return await original(self, command, check_health)

    before = (await admin.info("commandstats")).get("cmdstat_evalsha", {})
    AbstractConnection.send_packed_command = counting
    try:
        results = [r for i in range(0, len(keys), CONCURRENCY)
                   for r in await asyncio.gather(*(check(key) for key in keys[i:i + CONCURRENCY]))]
    finally:
        AbstractConnection.send_packed_command = original
    after = (await admin.info("commandstats")).get("cmdstat_evalsha", {})
    calls, usec = (after.get(k, 0) - before.get(k, 0) for k in ("calls", "usec"))
    return {"evalsha": calls / len(keys), "redis_us": usec / max(calls, 1), "requests": sent[0] / len(keys) or None,
            "admitted": sum(r is not False and getattr(r, "allowed", True) for r in results) / len(keys)}


async def delete_keys(admin) -> int:
    """SCAN + UNLINK everything under PREFIX (never KEYS or FLUSHDB); the number of keys removed."""
    found = [key async for key in admin.scan_iter(match=f"{PREFIX}*", count=500)]
    return sum([await admin.unlink(*found[i:i + 500]) for i in range(0, len(found), 500)])


async def bench(rounds: int, seconds: float, python_parser: bool) -> dict:
    from redis.asyncio import Redis

    admin = Redis.from_url(URL)
    found, clients = scenarios(python_parser)
    names, trips, samples = list(found), {}, {name: [] for name in found}
    try:
        for name, (_, check, keys) in found.items():
            await rate(check, keys, 0.3)  # warm-up: connections opened, scripts loaded
            trips[name] = await round_trips(admin, check, keys)
        for r in range(rounds):  # alternating: every scenario once per round, order rotated each round
            for name in names[r % len(names):] + names[:r % len(names)]:
                samples[name].append(await rate(found[name][1], found[name][2], seconds))
            print(f"  round {r + 1}/{rounds} done", flush=True)
        server = (await admin.info("server"))["redis_version"]
    finally:
        removed = await delete_keys(admin)
        left = len([key async for key in admin.scan_iter(match=f"{PREFIX}*", count=500)])
        for client in [*clients, admin]:
            await client.aclose()
    print(f"removed {removed} keys under {PREFIX}* with SCAN + UNLINK ({left} left)")
    return {"server": server, "groups": {n: found[n][0] for n in names}, "samples": samples, "trips": trips}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds x 1 s per scenario")
    parser.add_argument("--python-parser", action="store_true", help="redis-py parses replies in pure Python")
    args = parser.parse_args()
    enter_venv(__file__, ["premier", "redis", "hiredis", "limits", "coredis"], INSTALL)
    from importlib.metadata import version

    from redis.utils import HIREDIS_AVAILABLE

    rounds, seconds = (3, 1.0) if args.quick else (5, 2.0)
    reply_parser = "hiredis" if HIREDIS_AVAILABLE and not args.python_parser else "pure Python"
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    host = {"nproc": os.cpu_count(), "cpu": cpu_model, "platform": platform.platform(),
            "loadavg_1min_before": round(os.getloadavg()[0], 2)}
    vers = {name: version(name) for name in ("premier", "redis", "hiredis", "limits", "coredis")}
    print(f"{rounds} rounds x {seconds:g} s per scenario, concurrency {CONCURRENCY}, {KEYS} keys, quota {QUOTA}/"
          f"{DURATION}s; redis-py {vers['redis']} ({reply_parser} parser), limits {vers['limits']}, coredis "
          f"{vers['coredis']}; python {platform.python_version()}; {host['cpu']} x{host['nproc']}, load average "
          f"{host['loadavg_1min_before']:.2f}", flush=True)
    run = asyncio.run(bench(rounds, seconds, args.python_parser))
    host["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    samples, trips, groups = run["samples"], run["trips"], run["groups"]
    rates = {name: [s[0] for s in samples[name]] for name in samples}
    med = {name: statistics.median(r) for name, r in rates.items()}
    cpu = {name: statistics.median(s[1] for s in samples[name]) for name in samples}
    print(f"\n{'scenario (50 concurrent checks)':<52} {'checks/s':>8} {'min-max':>13} {'µs/check':>8} "
          f"{'CPU µs':>6} {'EVALSHA':>7} {'Redis µs':>8} {'requests':>8} {'admitted':>8}")
    group = None
    for name, r in rates.items():
        if groups[name] != group:
            print(f"-- {(group := groups[name])}")
        t = trips[name]
        print(f"{name:<52} {med[name]:>8.0f} {min(r):>6.0f}-{max(r):<6.0f} {1e6 / med[name]:>8.1f} {cpu[name]:>6.1f} "
              f"{t['evalsha']:>7.2f} {t['redis_us']:>8.1f} {t['requests'] or '-':>8} {t['admitted']:>8.0%}")
    print("  µs/check = 1/throughput; CPU µs: this process's, per check (less than µs/check: it waited, for Redis\n"
          f"  or for a CPU; load average now {host['loadavg_1min_after']:.2f}); Redis µs: inside Redis, per EVALSHA")

    ours = "premier acquire sliding_window"
    ratios = {f"{ours} / {p}": {"median": round(med[ours] / med[p], 2),
                                "best": round(max(rates[ours]) / max(rates[p]), 2)}
              for p in ("limits moving window (redis-py)", "limits moving window (coredis)")}
    print("\nratios (checks/s; medians, and best rounds in brackets)", *(
        f"  {name:<72} {value['median']:5.2f}x  ({value['best']:.2f}x)" for name, value in ratios.items()), sep="\n")

    premier_rows = [n for n in rates if groups[n] == "premier"]
    slowest = min(premier_rows, key=med.__getitem__)
    # One EVALSHA per check, sent in at most one write: concurrent checks share a pipelined write (and
    # its read), so a check never waits for more than one round trip.
    one_trip = all(trips[n]["evalsha"] == 1 and trips[n]["requests"] <= 1 for n in premier_rows)
    ratio = min(v["median"] for v in ratios.values())  # against the faster of limits' two clients
    targets = {name: {"met": met, "detail": detail} for name, met, detail in (
        ("one round trip per check", one_trip, "1 EVALSHA and <= 1 write per check in every premier row"),
        (">= 5000 checks/s", med[slowest] >= 5000, f"worst {med[slowest]:.0f} checks/s: {slowest}"),
        (">= 1.5x limits' moving window", ratio >= 1.5,
         f"{ratio:.2f}x, against the faster of limits' two clients"))}
    print(f"\ntargets (medians, {reply_parser} parser)", *(
        f"  {name:<34} {'met' if t['met'] else 'MISSED':<7} ({t['detail']})" for name, t in targets.items()), sep="\n")
    out = HERE / "results" / f"redis_limiter{'-quick' * args.quick}{'-python-parser' * args.python_parser}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": host, "versions": vers, "redis_server": run["server"],
        "parser": reply_parser, "rounds": rounds, "seconds": seconds, "concurrency": CONCURRENCY, "keys": KEYS,
        "quota": f"{QUOTA}/{DURATION}s", "ratios": ratios, "targets": targets,
        "scenarios": {n: {"group": groups[n], "median_per_s": round(med[n]), "samples_per_s": [round(x) for x in r],
                          "us_per_check": round(1e6 / med[n], 1), "cpu_us_per_check": round(cpu[n], 1),
                          **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in trips[n].items()}}
                      for n, r in rates.items()},
    }, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
