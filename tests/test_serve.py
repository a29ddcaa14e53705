"""``premier serve`` as users run it: the README's example commands, config reload (file watch and
SIGHUP) and several workers, each a real process answering real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from _servers import Process, backend, free_port, gateway_process

ROOT = Path(__file__).resolve().parent.parent
PREMIER = str(Path(sysconfig.get_path("scripts")) / "premier")  # the command ``pip install`` made


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never became true"
        time.sleep(0.05)


def test_the_plugin_example_serves_the_fastapi_app() -> None:
    port = free_port()
    args = [sys.executable, "-m", "premier.cli", "serve", "examples/gateway.yaml", "--app", "examples/app.py:app",
            "--port", str(port), "--log-level", "warning"]
    with Process(args, port, cwd=ROOT):
        status, headers, _ = get(port, "/api/users/7")
        assert status == 200 and headers["x-cache"] == "MISS"
        status, headers, _ = get(port, "/api/users/7")
        assert status == 200 and headers["x-cache"] == "HIT" and "ratelimit" in headers


def test_the_standalone_example_starts_two_backends_and_the_gateway() -> None:
    port, first, second = free_port(), free_port(), free_port()
    args = [sys.executable, "examples/standalone.py", "--port", str(port), "--backend-ports", str(first), str(second)]
    with Process(args, port, cwd=ROOT) as example:
        seen = [json.loads(get(port, "/anything")[2])["backend"] for _ in range(3)]
        assert sorted(seen) == sorted([f"backend-{first}", f"backend-{second}", f"backend-{second}"])
        assert json.loads(get(port, "/first/hello")[2]) == {"backend": f"backend-{first}", "path": "/hello", "query": ""}
        assert get(port, "/api/users/7")[1]["x-cache"] == "MISS"
        assert get(port, "/api/users/7")[1]["x-cache"] == "HIT"
        process = example.process
    assert process is not None and process.returncode is not None
    for backend_port in (first, second):  # the example stopped its backends too
        eventually(lambda p=backend_port: not _listening(p))  # type: ignore[misc]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _limited_config(path: Path, origin: str, quota: int | str) -> None:
    path.write_text(
        f"premier:\n  servers: [{origin}]\n  paths:\n"
        f"    - pattern: /*\n      features: {{rate_limit: {{quota: {quota}, duration: 60, key: global, algorithm: sliding_window}}}}\n"
    )


def _admitted(port: int, tries: int) -> int:
    return sum(get(port, "/")[0] == 200 for _ in range(tries))


def test_reload_config_applies_a_changed_file_and_keeps_serving_on_a_broken_one(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    with backend("r1") as origin:
        _limited_config(config, origin.url, 2)
        log = tmp_path / "gateway.log"
        with gateway_process(config, "--reload-config", log=log) as gateway:
            assert _admitted(gateway.port, 3) == 2
            _limited_config(config, origin.url, 0)  # invalid: the running limit stays
            eventually(lambda: "config reload rejected" in log.read_text())
            assert "premier.paths[0].features.rate_limit.quota: must be greater than 0" in log.read_text()
            assert get(gateway.port, "/")[0] == 429
            _limited_config(config, origin.url, 50)
            eventually(lambda: "config reloaded from" in log.read_text())
            assert get(gateway.port, "/")[0] == 200


def test_sighup_reloads_the_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    with backend("h1") as origin:
        _limited_config(config, origin.url, 1)
        with gateway_process(config) as gateway:  # no watching: only the signal reloads
            assert _admitted(gateway.port, 2) == 1
            _limited_config(config, origin.url, 50)
            assert gateway.process is not None
            gateway.process.send_signal(signal.SIGHUP)
            eventually(lambda: get(gateway.port, "/")[0] == 200)


def test_trailer_fields_never_reach_a_backend_as_headers_under_either_server(tmp_path: Path) -> None:
    import socket

    config = tmp_path / "gateway.yaml"
    with backend("t1") as origin:
        config.write_text(f"premier:\n  servers: [{origin.url}]\n")
        for server in ("premier", "uvicorn"):
            with gateway_process(config, "--server", server) as gateway:
                with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as client:
                    client.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                   b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nAuthorization: Bearer forged\r\n"
                                   b"X-Forwarded-For: 10.9.9.9\r\n\r\n")
                    answer = b""
                    while chunk := client.recv(65536):
                        answer += chunk
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), (server, answer[:300])
                if b"transfer-encoding: chunked" in head.lower():
                    parts = []
                    while (size := int(body.split(b"\r\n", 1)[0], 16)) > 0:
                        start = body.index(b"\r\n") + 2
                        parts.append(body[start:start + size])
                        body = body[start + size + 2:]
                    body = b"".join(parts)
                seen = json.loads(body)
                names = {name for name, _ in seen["headers"]}
                assert seen["length"] == 3, server
                assert "authorization" not in names, server
                assert dict(seen["headers"])["x-forwarded-for"] == "127.0.0.1", server


def test_several_workers_serve_the_same_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    with backend("w1") as origin:
        config.write_text(f"premier:\n  servers: [{origin.url}]\n")
        with gateway_process(config, "--workers", "2") as gateway:
            assert all(get(gateway.port, "/")[0] == 200 for _ in range(10))
            assert gateway.process is not None
            assert len(_children(gateway.process.pid)) >= 2


def test_sighup_reaches_every_worker_which_reloads_in_place(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    with backend("w2") as origin:
        _limited_config(config, origin.url, 1)  # per worker (memory): each admits one request a minute
        log = tmp_path / "gateway.log"
        with gateway_process(config, "--workers", "2", log=log) as gateway:
            assert gateway.process is not None
            pid = gateway.process.pid
            # (the socket listens before the workers are forked and started: wait for both)
            eventually(lambda: log.read_text().count("accepting connections") == 2)
            workers = sorted(_children(pid))
            assert len(workers) == 2
            assert _admitted(gateway.port, 6) <= 2
            _limited_config(config, origin.url, 50)
            gateway.process.send_signal(signal.SIGHUP)
            eventually(lambda: log.read_text().count("config reloaded from") == 2)
            assert _admitted(gateway.port, 6) == 6
            assert sorted(_children(gateway.process.pid)) == workers  # the same processes: reloaded, not restarted


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_serve_refuses_a_standalone_config_without_servers(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("premier:\n  keyspace: x\n")
    result = subprocess.run([sys.executable, "-m", "premier.cli", "serve", str(config), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=30, env={**os.environ})
    assert result.returncode == 2
    assert "premier.servers: standalone mode" in result.stderr



async def test_a_refused_websocket_handshake_is_not_logged_as_an_error(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    config = tmp_path / "gateway.yaml"
    log = tmp_path / "gateway.log"
    with backend("ws1") as origin:
        config.write_text(f"premier:\n  servers: [{origin.url}]\n  paths:\n"
                          "    - {pattern: /ws, features: {rate_limit: {quota: 1, duration: 60, algorithm: sliding_window}}}\n")
        with gateway_process(config, log=log) as gateway:
            async with connect(f"ws://127.0.0.1:{gateway.port}/ws"):
                pass
            try:
                await connect(f"ws://127.0.0.1:{gateway.port}/ws")
            except InvalidStatus as refused:
                assert refused.response.status_code == 429
            else:
                raise AssertionError("the second connection was not refused")
    assert "without completing handshake" not in log.read_text()


def test_plugin_mode_serves_an_app_without_lifespan_support(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text(
        "async def app(scope, receive, send):\n"
        "    assert scope['type'] == 'http'  # no lifespan support at all\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'plain'})\n"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text("premier:\n  keyspace: plain\n")
    port = free_port()
    # As module:attribute, from the directory that holds it, as with uvicorn: no PYTHONPATH needed. (The
    # installed command, as a user runs it: ``python -m`` would put the directory on the path itself.)
    args = [PREMIER, "serve", "gateway.yaml", "--app", "plain:app",
            "--port", str(port), "--log-level", "warning"]
    with Process(args, port, cwd=tmp_path):
        assert get(port, "/")[2] == b"plain"


def test_an_app_module_that_is_nowhere_is_named(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("premier:\n  keyspace: x\n")
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\napp = None\n")
    for target, expected in [
        ("nowhere:app", "premier serve: --app: no module named 'nowhere' in the current directory nor among the installed packages"),
        ("broken:app", "No module named 'not_installed_anywhere'"),  # (found: what it imports is missing)
    ]:
        done = subprocess.run([PREMIER, "serve", "gateway.yaml", "--app", target],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and expected in done.stderr, done.stderr


async def test_a_file_changed_while_the_gateway_started_is_loaded_when_its_watcher_starts(tmp_path: Path) -> None:
    # (a worker that got SIGHUP before its watcher took the signal must still end up on the new file)
    from premier.asgi import ASGIGateway, GatewayConfig
    from premier.config.watch import ConfigWatcher

    config = tmp_path / "gateway.yaml"
    _limited_config(config, "http://127.0.0.1:9", 1)
    gateway = ASGIGateway(GatewayConfig.from_file(config))
    watcher = ConfigWatcher(gateway, config)
    _limited_config(config, "http://127.0.0.1:9", 500)  # (a longer file: another size)
    watcher.start()
    try:
        assert gateway.config.paths[0].features.rate_limit is not None
        assert gateway.config.paths[0].features.rate_limit.quota == 500
    finally:
        await watcher.stop()
