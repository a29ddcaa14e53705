"""``premier serve``: run the gateway for a configuration file, in plugin mode with ``--app`` and as a
reverse proxy without. Standalone mode runs on Premier's own HTTP/1.1 server (:mod:`premier.server.runner`)
by default, plugin mode on uvicorn; ``--server`` chooses. Both use uvloop and httptools (``premier[server]``)."""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from premier.config import GatewayConfig
from premier.errors import ConfigError

__all__ = ["build", "load_app", "serve", "worker_app"]


def load_app(target: str) -> Any:
    """The object named by ``module:attribute`` or ``path/to/file.py:attribute``."""
    location, _, attribute = target.rpartition(":")
    if not location or not attribute:
        raise ValueError(f"--app must look like module:attribute or path/to/file.py:attribute, got {target!r}")
    if location.endswith(".py"):
        path = Path(location).resolve()
        if not path.is_file():
            raise ValueError(f"--app: no such file: {location}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"--app: cannot import {location}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        # As uvicorn does: a module next to where ``premier serve`` runs is found without PYTHONPATH.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (location == exc.name or location.startswith(exc.name + ".")):
                raise  # (the module was found: something it imports is missing)
            raise ValueError(
                f"--app: no module named {exc.name!r} in the current directory nor among the installed packages"
            ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"--app: {location} has no attribute {attribute!r}") from None


class _Served:
    """The ASGI app ``premier serve`` runs: the gateway, with the config file watched while it serves."""

    def __init__(self, gateway: Any, watcher: Any) -> None:
        self.gateway = gateway
        self.watcher = watcher
        # (for Premier's server: answers given without running as ASGI)
        self.shortcut = gateway.shortcut
        self.wire_answer = gateway.wire_answer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.gateway(scope, receive, send)
            return

        async def lifespan_send(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.watcher.start()
            elif message["type"] == "lifespan.shutdown.complete":
                await self.watcher.stop()
            await send(message)

        await self.gateway(scope, receive, lifespan_send)


def build(file: str, app: str | None = None, *, reload_config: bool = False, config: GatewayConfig | None = None) -> Any:
    """The app ``premier serve`` runs for ``file`` (plugin mode when ``app`` names one)."""
    from premier.asgi import ASGIGateway
    from premier.config.watch import ConfigWatcher

    config = config if config is not None else GatewayConfig.from_file(file)
    gateway = ASGIGateway(config, app=load_app(app), config_file=file) if app else ASGIGateway(config, config_file=file)
    return _Served(gateway, ConfigWatcher(gateway, file, poll=reload_config))


def worker_app() -> Any:
    """Each worker's app when ``--workers`` is above 1 (uvicorn imports it by name in every process)."""
    try:
        return build(
            os.environ["PREMIER_SERVE_FILE"], os.environ.get("PREMIER_SERVE_APP") or None,
            reload_config=os.environ.get("PREMIER_SERVE_RELOAD") == "1",
        )
    except ConfigError as exc:  # e.g. a worker restarted (SIGHUP) on a file broken since: no traceback
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


class _HandshakeAnswered(logging.Filter):
    """uvicorn's websockets-sansio protocol (0.54) logs "ASGI callable returned without completing
    handshake" after a handshake answered with ``websocket.http.response`` (how the gateway refuses one
    with 429 or 502): a false alarm for every refused connection, so it is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def serve(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Run ``config`` (already validated, from ``args.file``) with the options of ``premier serve``."""
    try:
        import uvicorn
    except ImportError:
        print("premier serve needs uvicorn: pip install 'premier[server]'", file=sys.stderr)
        return 2
    from uvicorn.config import LOGGING_CONFIG

    from premier.server.uvicorn_protocol import HttpToolsProtocol

    try:
        app = build(args.file, args.app, reload_config=args.reload_config, config=config)
    except (ValueError, ImportError) as exc:  # ConfigError is a ValueError
        print(f"premier serve: {exc}", file=sys.stderr)
        return 2
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["premier"] = {"handlers": ["default"], "level": args.log_level.upper(), "propagate": False}
    log_config.setdefault("filters", {})["handshake_answered"] = {"()": _HandshakeAnswered}
    log_config["handlers"]["default"].setdefault("filters", []).append("handshake_answered")
    if (args.server or ("uvicorn" if args.app else "premier")) == "premier":
        return _serve_premier(args, app, log_config)
    options: dict[str, Any] = {
        "host": args.host, "port": args.port, "log_level": args.log_level, "log_config": log_config,
        "access_log": args.access_log, "ws": "websockets-sansio",
        # uvicorn's httptools protocol, less trailer fields merged into the request's headers
        "http": HttpToolsProtocol,
        # standalone: the gateway itself answers the lifespan; an app may not support it
        "lifespan": "auto" if args.app else "on",
        # an open dashboard stream (or any long request) must not hold a SIGTERM off for ever
        "timeout_graceful_shutdown": 5,
        # X-Forwarded-For is believed only from the config's trusted_proxies, not from uvicorn's defaults
        "proxy_headers": False,
    }
    if args.workers > 1:
        os.environ["PREMIER_SERVE_FILE"] = str(Path(args.file).resolve())
        os.environ["PREMIER_SERVE_APP"] = args.app or ""
        os.environ["PREMIER_SERVE_RELOAD"] = "1" if args.reload_config else ""
        uvicorn.run("premier.server:worker_app", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(app, **options)
    return 0


def _serve_premier(args: argparse.Namespace, app: Any, log_config: dict[str, Any]) -> int:
    """``premier serve`` on Premier's own server (:mod:`premier.server.runner`)."""
    import logging.config

    from premier.server.runner import Server

    log_config["loggers"]["uvicorn.error"]["level"] = args.log_level.upper()  # (the WebSocket protocol's)
    logging.config.dictConfig(log_config)

    def each_worker() -> Any:  # a fresh gateway in every worker process (the first one reuses `app`)
        return build(args.file, args.app, reload_config=args.reload_config) if args.workers > 1 else app

    server = Server(app_factory=each_worker, lifespan="auto" if args.app else "on", access_log=args.access_log)
    try:
        return server.run(args.host, args.port, workers=args.workers)
    except OSError as exc:
        print(f"premier serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
