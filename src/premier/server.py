"""``premier serve``: run the gateway for a configuration file under uvicorn."""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from premier.config import GatewayConfig

__all__ = ["load_app", "serve"]


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
        module = importlib.import_module(location)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"--app: {location} has no attribute {attribute!r}") from None


def serve(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Run ``config`` (already validated, from ``args.file``) with the options of ``premier serve``."""
    from premier.asgi import ASGIGateway

    if not args.app:
        print("premier serve: standalone mode (proxying to servers) is not available yet; pass --app module:app",
              file=sys.stderr)
        return 2
    try:
        app = load_app(args.app)
    except (ValueError, ImportError) as exc:
        print(f"premier serve: {exc}", file=sys.stderr)
        return 2
    try:
        import uvicorn
    except ImportError:
        print("premier serve needs uvicorn: pip install 'premier[server]'", file=sys.stderr)
        return 2
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["premier"] = {"handlers": ["default"], "level": args.log_level.upper(), "propagate": False}
    gateway = ASGIGateway(config, app=app)
    uvicorn.run(gateway, host=args.host, port=args.port, log_level=args.log_level, log_config=log_config)
    return 0
