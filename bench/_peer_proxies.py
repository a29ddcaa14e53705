"""The peer reverse proxies bench/standalone_http.py compares Premier with, each run in its own virtual
environment (never the project's):

    bench/.venv/bin/python bench/_peer_proxies.py aiohttp PORT BACKEND_URL
    bench/.venv-premier-0.4.10/bin/python bench/_peer_proxies.py premier-0.4.10 PORT BACKEND_URL
    python bench/_peer_proxies.py tcp-relay PORT BACKEND_URL

- ``aiohttp``: a minimal reverse proxy, the baseline a Python developer would write in an afternoon: an
  aiohttp web server on uvloop whose one catch-all handler forwards the request through one pooled
  ``aiohttp.ClientSession`` (keep-alive connections to the backend), reads the whole response and returns
  it, hop-by-hop headers dropped both ways (no streaming).
- ``premier-0.4.10``: the published release's standalone mode, as its README shows it, ``ASGIGateway(config=...,
  servers=[...])`` served by uvicorn (uvloop, httptools). It creates its ``aiohttp.ClientSession`` in the
  constructor, so the gateway is built inside uvicorn's running loop (``factory=True``); the release's
  ``aiohttp.ClienSession()`` typo is patched by the benchmark in that venv's copy before it starts.
- ``tcp-relay``: not a proxy but a floor: asyncio protocols on uvloop copying bytes between each client
  connection and a backend connection of its own, parsing nothing (no HTTP, no routing, no headers). What
  Python and its event loop cost per request before any of the work an HTTP proxy must do.
"""

from __future__ import annotations

import sys
from typing import Any

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade",
})


def run_aiohttp_proxy(port: int, backend: str) -> None:
    import asyncio

    import aiohttp
    import uvloop
    from aiohttp import web

    backend = backend.rstrip("/")
    request_skip = HOP_BY_HOP | {"host", "content-length"}
    response_skip = HOP_BY_HOP | {"content-length", "date", "server"}

    async def start(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
        app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in request_skip}
        body = await request.read() if request.can_read_body else None
        async with session.request(request.method, backend + request.rel_url.raw_path_qs, headers=headers,
                                   data=body, allow_redirects=False) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in response_skip}
            return web.Response(status=upstream.status, headers=out, body=payload)

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", proxy)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def run_premier_0410(port: int, backend: str) -> None:
    import uvicorn

    import premier

    if premier.__version__ != "0.4.10":
        sys.exit(f"expected premier 0.4.10 in {sys.prefix}, found {premier.__version__}")

    def build() -> Any:  # called by uvicorn inside its running loop (the release needs one)
        from premier.asgi import ASGIGateway, GatewayConfig

        return ASGIGateway(config=GatewayConfig(paths=[]), servers=[backend])

    uvicorn.run(build, factory=True, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", lifespan="off")


def run_tcp_relay(port: int, backend: str) -> None:
    import asyncio
    from urllib.parse import urlsplit

    import uvloop

    parts = urlsplit(backend)
    host, backend_port = parts.hostname or "127.0.0.1", parts.port or 80

    class Upstream(asyncio.Protocol):
        def __init__(self, client: asyncio.Transport) -> None:
            self.client = client

        def data_received(self, data: bytes) -> None:
            self.client.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.client.close()

    class Client(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.upstream: asyncio.Transport | None = None
            self.early: list[bytes] = []
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            upstream, _ = await asyncio.get_running_loop().create_connection(
                lambda: Upstream(self.transport), host, backend_port)
            self.upstream = upstream
            for data in self.early:
                upstream.write(data)

        def data_received(self, data: bytes) -> None:
            if self.upstream is None:
                self.early.append(data)
            else:
                self.upstream.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.upstream is not None:
                self.upstream.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


if __name__ == "__main__":
    kind, port_arg, backend_arg = sys.argv[1:4]
    runs = {"aiohttp": run_aiohttp_proxy, "premier-0.4.10": run_premier_0410, "tcp-relay": run_tcp_relay}
    runs[kind](int(port_arg), backend_arg)
