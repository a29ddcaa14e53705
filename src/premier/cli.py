"""The ``premier`` command: ``premier check FILE`` validates a configuration; ``premier serve FILE`` runs it."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from premier.config import FeaturesConfig, GatewayConfig
from premier.errors import ConfigError

__all__ = ["describe_features", "main"]


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _describe(name: str, feature: Any) -> str:
    if name == "cache":
        return f"cache({_seconds(feature.expire_s) if feature.expire_s else 'no expiry'})"
    if name == "rate_limit":
        return f"rate_limit({feature.quota}/{_seconds(feature.duration)} {feature.algorithm}, per {feature.key})"
    if name == "timeout":
        return f"timeout({_seconds(feature.seconds)})"
    if name == "retry":
        return f"retry({feature.max_attempts} attempts)"
    if name == "circuit_breaker":
        return f"circuit_breaker({feature.failure_threshold} failures, {_seconds(feature.recovery_timeout)})"
    if name == "websocket":
        rate = feature.message_rate
        return f"websocket({f'{rate.quota} msgs/{_seconds(rate.duration)}' if rate else 'no message limit'})"
    return f"monitoring(log over {_seconds(feature.log_threshold)})"


def describe_features(features: FeaturesConfig) -> str:
    """One line naming a policy's features and their main settings."""
    parts = [_describe(name, value) for name, value in features.enabled().items()]
    return " ".join(parts) or "no features"


def _load(path: str) -> GatewayConfig | None:
    """The configuration in ``path``, or ``None`` after printing every problem in it."""
    try:
        return GatewayConfig.from_file(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return 1
    print(f"ok: {args.file} (keyspace {config.keyspace!r}, {len(config.paths)} path polic{'y' if len(config.paths) == 1 else 'ies'})")
    width = max((len(p.pattern) for p in config.paths), default=0)
    width = max(width, len("(other paths)"))
    for path in config.paths:
        print(f"  {path.pattern:<{width}}  {describe_features(config.features_for(path))}")
        for note in _notes(path.pattern, config.features_for(path)):
            print(f"  {'':<{width}}  note: {note}")
    print(f"  {'(other paths)':<{width}}  {describe_features(config.features_for(None))}")
    servers = {s.url for s in config.servers} | {s.url for p in config.paths for s in p.servers}
    if servers:
        print(f"  upstream: {len(servers)} server{'s' * (len(servers) != 1)}, {config.upstream.load_balancing}")
    return 0


def _notes(pattern: str, features: FeaturesConfig) -> list[str]:
    """What is valid but probably not meant: a cache_key naming what the pattern does not capture, a
    bucket_size for an algorithm that has no bucket."""
    from premier.asgi.router import compile_pattern

    notes = []
    limit = features.rate_limit
    if limit is not None and limit.bucket_size is not None and limit.algorithm != "leaky_bucket":
        notes.append(f"rate_limit.bucket_size applies to leaky_bucket only: ignored with {limit.algorithm}")
    if features.cache is None or not features.cache.cache_key:
        return notes
    captured = set(compile_pattern(pattern).groupindex)
    missing = [name for name in re.findall(r"\{(\w+)\}", features.cache.cache_key) if name not in captured]
    if missing:
        names = ", ".join("{" + name + "}" for name in missing)
        notes.append(f"cache_key {names} is not captured by the pattern (a glob captures {{name}} segments, e.g. "
                     f"/users/{{{missing[0]}}}): it is read from the query string, and without it the key is the "
                     f"path and query")
    return notes


def _serve(args: argparse.Namespace) -> int:
    from premier.server import serve

    config = _load(args.file)
    return 1 if config is None else serve(args, config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="premier", description="Premier API gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a gateway configuration file")
    check.add_argument("file")
    check.set_defaults(run=_check)
    serve = commands.add_parser("serve", help="run the gateway for a configuration file")
    serve.add_argument("file")
    serve.add_argument("--app", help="plugin mode: the ASGI app to wrap, as module:attribute (or path/to/file.py:attribute)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (state is per process unless storage is Redis)")
    serve.add_argument("--reload-config", action="store_true", help="reload the configuration when the file changes (SIGHUP always reloads)")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log every request")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--server", choices=["premier", "uvicorn"],
                       help="the HTTP server: Premier's own (default in standalone mode) or uvicorn (default with --app)")
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:  # `premier check FILE | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


if __name__ == "__main__":
    sys.exit(main())
