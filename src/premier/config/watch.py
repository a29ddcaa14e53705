"""Reloading a running gateway's configuration from its file: when the file changes (opt-in polling) and
on ``SIGHUP``. A file that fails validation is reported, problem by problem, and the running
configuration stays in place."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from premier.config.schema import GatewayConfig
from premier.errors import ConfigError

__all__ = ["ConfigWatcher"]

logger = logging.getLogger("premier")


class ConfigWatcher:
    """Reloads ``gateway`` (anything with ``reload(config)``) from ``path``. :meth:`start` inside the
    running loop: it handles ``SIGHUP`` and, with ``poll`` set, checks the file every ``interval``
    seconds for a new modification time or size."""

    def __init__(self, gateway: Any, path: str | os.PathLike[str], *, poll: bool = False, interval: float = 1.0) -> None:
        self.gateway = gateway
        self.path = Path(path)
        self.poll = poll
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._signal = False
        self._seen = self._stamp()

    def reload(self) -> bool:
        """Loads the file and swaps it in; ``False`` (and the errors logged) if it is invalid."""
        try:
            config = GatewayConfig.from_file(self.path)
        except ConfigError as exc:
            logger.error("config reload rejected, still serving the previous configuration: %s", exc)
            return False
        self.gateway.reload(config)
        logger.info("config reloaded from %s (%d path policies)", self.path, len(config.paths))
        return True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._signal = True
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass  # not the main thread, or no SIGHUP on this platform
        if self.poll:
            self._task = loop.create_task(self._watch(), name="premier-config-watch")
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            # Changed while the gateway started (a SIGHUP then found no handler yet): take it now.
            logger.info("%s changed during startup: reloading", self.path)
            self._seen = stamp
            self.reload()

    async def stop(self) -> None:
        if self._signal:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._signal = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _on_sighup(self) -> None:
        logger.info("SIGHUP: reloading %s", self.path)
        self._seen = self._stamp()
        self.reload()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            stamp = self._stamp()
            if stamp != self._seen and stamp is not None:
                self._seen = stamp
                self.reload()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None  # being replaced (editors write a new file and rename it): look again later
        return stat.st_mtime_ns, stat.st_size
