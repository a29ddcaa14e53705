"""The ASGI apps the HTTP benchmarks serve: the same hello world, bare and behind the gateway."""

from __future__ import annotations

from typing import Any

from premier.asgi import ASGIGateway, GatewayConfig

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]}
BODY = {"type": "http.response.body", "body": b"Hello, world!"}


async def bare(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(START)
    await send(BODY)


CONFIG = GatewayConfig.from_yaml("""
premier:
  paths:
    - pattern: /limited
      features:
        rate_limit: {quota: 1000000000, duration: 60}
        timeout: {seconds: 10}
        monitoring: {log_threshold: 10}
    - pattern: /cached
      features:
        cache: {expire_s: 3600}
    - pattern: /all
      features:
        rate_limit: {quota: 1000000000, duration: 60}
        timeout: {seconds: 10}
        retry: {max_attempts: 3, wait: 0}
        circuit_breaker: {failure_threshold: 5, recovery_timeout: 60}
        monitoring: {log_threshold: 10}
""")

gateway = ASGIGateway(CONFIG, app=bare)


def _fastapi_hello() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/limited", response_class=PlainTextResponse)
    @app.get("/cached", response_class=PlainTextResponse)
    @app.get("/all", response_class=PlainTextResponse)
    @app.get("/plain", response_class=PlainTextResponse)
    async def hello() -> str:
        return "Hello, world!"

    return app


fastapi_bare = _fastapi_hello()
fastapi_gateway = ASGIGateway(CONFIG, app=fastapi_bare)
