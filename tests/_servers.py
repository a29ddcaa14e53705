"""Real servers for tests: uvicorn or Premier's own server running an ASGI app on a free loopback port,
in a thread; and servers in their own processes (the proxy's backends, ``premier serve``, ``redis-server``)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn


@contextlib.contextmanager
def serve(app: Any, *, lifespan: str = "auto", ws: str = "none", root_path: str = "") -> Iterator[str]:
    """Runs ``app`` under uvicorn (httptools; WebSockets with ``ws="websockets-sansio"``) on 127.0.0.1 and
    yields its base URL; stops it after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws=ws, http="httptools", lifespan=lifespan, proxy_headers=False,
                            ws_max_size=64 * 1024 * 1024, root_path=root_path)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serve_premier(app: Any, *, lifespan: str = "auto", **options: Any) -> Iterator[str]:
    """Runs ``app`` under Premier's own HTTP/1.1 server (``premier.server.runner.Server``, with ``options``)
    on 127.0.0.1 and yields its base URL; stops it after (gracefully, as on SIGTERM)."""
    from premier.server.runner import Server, run_loop

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = Server(app, lifespan=lifespan, **{"access_log": False, **options})
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_loop(server.serve([sock], handle_signals=False))),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server did not start (exit {result})")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(15)
        sock.close()


def raw_get(base_url: str, raw_path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A GET sending ``raw_path`` exactly as written (no client-side normalisation of ``..`` or ``//``)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", raw_path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: Any = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class Process:
    """A server in its own process on a loopback port: ``url``, ``kill()`` (SIGKILL), ``restart()``."""

    def __init__(self, args: list[str], port: int, *, cwd: Path | None = None, log: Path | None = None) -> None:
        self.args = args
        self.cwd = cwd
        self.log = log  # where its stderr goes (default: the test's captured output)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        if self.log is None:
            self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, cwd=self.cwd)
        else:
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log, cwd=self.cwd)
        wait_for_port(self.port, self.process)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def restart(self) -> Process:
        self.stop()
        return self.start()

    def peak_rss_kib(self) -> int:
        """The process's resident memory high-water mark (Linux ``VmHWM``)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def backend(name: str, port: int | None = None, *, server: str = "uvicorn") -> Process:
    """``tests/_backend.py`` (see its routes) as a real process, under uvicorn or Premier's ``server``."""
    port = port or free_port()
    args = [sys.executable, str(Path(__file__).with_name("_backend.py")), str(port), name]
    return Process(args + (["premier"] if server == "premier" else []), port)


def gateway_process(config_file: Path, *extra: str, log: Path | None = None) -> Process:
    """``premier serve config_file`` as a real process (its log lines in ``log``, if given)."""
    port = free_port()
    args = [sys.executable, "-m", "premier.cli", "serve", str(config_file), "--port", str(port),
            "--log-level", "info", "--no-access-log", *extra]
    return Process(args, port, log=log)


class RedisServer:
    """A ``redis-server`` of our own on ``port``, without persistence: a restart forgets everything."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case it was frozen
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def freeze(self) -> None:
        """The server stops answering (connections hang) without closing them: a timeout, not a refusal."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def command(self, *args: Any) -> Any:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            return client.execute_command(*args)
        finally:
            client.close()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started ``redis-server`` of the test's own on a free port (its keys and stats are the test's
    alone), killed after."""
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
            server.proc.kill()
            server.proc.wait(10)
