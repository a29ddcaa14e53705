"""The WebSocket relay of standalone mode: an ASGI app that opens a WebSocket to a backend chosen by the
upstream pool (balancer and health, as for HTTP) and relays both ways until either side closes.

- **Handshake.** The client's headers (less hop-by-hop and handshake ones), ``X-Forwarded-*`` and its
  requested subprotocols go to the backend; the backend's choice of subprotocol is what the client gets.
  A backend that cannot be reached moves the attempt to the next healthy one; when none accepts, the
  client's handshake is answered 502 (refused), 504 (timed out) or 503 (no healthy backend), or the
  backend's own refusal status, as JSON where the server supports ``websocket.http.response``.
- **Relay.** Text and binary frames pass unchanged, each direction with flow control: the backend is
  read only as fast as the client takes its messages (and the reverse), so a slow side never makes the
  gateway buffer without bound. Pings are answered on each hop by its own endpoints.
- **Closing.** A close code and reason from either side are passed to the other. A backend that vanishes
  closes the client with 1014 (bad gateway). Both connections and both relay tasks end together.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from premier.asgi.client import ClientIdentity
from premier.asgi.exchange import Receive, Scope, Send, error_body, printable
from premier.proxy.pool import Backend, UpstreamPool
from premier.proxy.reverse_proxy import REWRITTEN_REQUEST_HEADERS, AttemptFailed, forwarded_headers, upstream_target

__all__ = ["WebSocketRelay", "refuse"]

logger = logging.getLogger("premier")

BAD_GATEWAY = 1014
# besides what the HTTP proxy rewrites, the handshake's own headers: the client library sends the backend's
_NOT_FORWARDED = REWRITTEN_REQUEST_HEADERS | {
    b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
    b"content-length",
}
# close codes a client cannot be sent (they only describe how a connection ended)
_UNSENDABLE = {1005: 1000, 1006: BAD_GATEWAY, 1015: BAD_GATEWAY}


class WebSocketRelay:
    """Relays WebSocket connections to ``pool``'s backends. ``max_message_bytes`` bounds messages from
    the backend (the policy bounds the client's)."""

    def __init__(
        self, pool: UpstreamPool, *, identity: ClientIdentity, strip_prefix: str | None = None,
        max_message_bytes: int = 1024 * 1024,
    ) -> None:
        self.pool = pool
        self.identity = identity
        self.strip_prefix = strip_prefix.rstrip("/") if strip_prefix else None
        self.max_message_bytes = max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        connected = await self._connect(scope, send)
        if connected is None:
            return
        upstream, backend = connected
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await self._relay(upstream, receive, send, backend)
        finally:
            backend.in_flight -= 1
            await upstream.close()

    async def _connect(self, scope: Scope, send: Send) -> tuple[Any, Backend] | None:
        """The backend's WebSocket (``None`` after answering the client's handshake with the failure)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException

        pool = self.pool
        target = upstream_target(scope, self.strip_prefix).decode("latin-1")
        headers = self._headers(scope)
        tried: list[Backend] = []
        refused: AttemptFailed | None = None
        while (backend := pool.pick(tried)) is not None:
            tried.append(backend)
            scheme = "wss" if backend.ssl_context is not None else "ws"
            uri = f"{scheme}://{backend.host_header.decode('latin-1')}{backend.base_path.decode('latin-1')}{target}"
            try:
                upstream = await connect(
                    uri, additional_headers=headers,
                    subprotocols=scope.get("subprotocols") or None, open_timeout=pool.config.connect_timeout,
                    max_size=self.max_message_bytes, proxy=None, user_agent_header=None, compression=None,
                    ssl=backend.ssl_context,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                failed = status >= 500
                (backend.health.failure if failed else backend.health.success)(pool.clock())
                refused = AttemptFailed(status, f"the backend answered the handshake with {status}", failover=failed)
            except (OSError, asyncio.TimeoutError, InvalidHandshake, WebSocketException) as exc:
                backend.health.failure(pool.clock())
                timed_out = isinstance(exc, asyncio.TimeoutError)
                refused = AttemptFailed(504 if timed_out else 502, _describe(exc), failover=True)
            except BaseException:
                backend.health.abandoned()  # cancelled: no verdict, but a half-open probe is given back
                raise
            else:
                backend.health.success(pool.clock())
                backend.in_flight += 1
                return upstream, backend
            logger.warning("upstream %s: websocket %s (%s)", backend.url, refused.message, printable(scope["path"]))
            if not refused.failover:
                break
        if refused is None:
            status, message = 503, "no healthy upstream server"
        else:
            status, message = refused.status, f"upstream {tried[-1].url}: {refused.message}"
        await refuse(scope, send, status, message)
        return None

    def _headers(self, scope: Scope) -> list[tuple[str, str]]:
        """The client's headers for the backend's handshake, and ``X-Forwarded-*``. ``Host`` is always
        the backend's here (``preserve_host`` is for HTTP): the client's arrives as ``X-Forwarded-Host``."""
        forwarded: dict[bytes, bytes | None] = dict.fromkeys((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"))
        headers: list[tuple[str, str]] = []
        host = None
        for name, value in scope["headers"]:
            if name in _NOT_FORWARDED:
                if name == b"host":
                    host = host or value  # (the first, as the HTTP proxy's request_head takes it)
                elif name == b"x-forwarded-for" and forwarded[name] is not None:
                    forwarded[name] = b"%s, %s" % (forwarded[name], value)  # (every hop, as the HTTP proxy keeps them)
                elif name in forwarded:
                    forwarded[name] = value
                continue
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        http_scope = {**scope, "scheme": "https" if scope.get("scheme") == "wss" else "http"}
        for name, value in forwarded_headers(
            http_scope, self.identity, forwarded[b"x-forwarded-for"], forwarded[b"x-forwarded-proto"],
            forwarded[b"x-forwarded-host"], host,
        ):
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        return headers

    async def _relay(self, upstream: Any, receive: Receive, send: Send, backend: Backend) -> None:
        from websockets.exceptions import ConnectionClosed

        client_gone = False

        async def client_to_backend() -> None:
            nonlocal client_gone
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    data = message.get("bytes")
                    try:
                        await upstream.send(data if data is not None else message.get("text") or "")
                    except ConnectionClosed:
                        return  # the other direction tells the client how the backend closed
                elif kind == "websocket.disconnect":
                    client_gone = True
                    code = message.get("code", 1000)
                    await upstream.close(_UNSENDABLE.get(code, code), message.get("reason") or "")
                    return

        async def backend_to_client() -> None:
            try:
                async for data in upstream:
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            except ConnectionClosed:
                pass
            if client_gone:
                return
            received, sent = upstream.protocol.close_rcvd, upstream.protocol.close_sent
            if received is not None:
                code, reason = received.code, received.reason
            elif sent is not None and sent.code == 1009:
                code, reason = 1009, "message too big"
            else:
                logger.warning("upstream %s: websocket connection to the backend lost", backend.url)
                code, reason = BAD_GATEWAY, "backend connection lost"
            try:
                await send({"type": "websocket.close", "code": _UNSENDABLE.get(code, code), "reason": reason})
            except OSError:
                pass  # the client is gone too

        tasks = [asyncio.ensure_future(client_to_backend()), asyncio.ensure_future(backend_to_client())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if tasks[0] in done and not tasks[1].done():
                # the client left: let the backend's closing handshake finish, briefly
                await asyncio.wait([tasks[1]], timeout=2)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None and not isinstance(error, OSError):
                raise error


async def refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    """Answers a WebSocket handshake with ``status`` and a JSON error (a close, where the server cannot)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error_body(status, message)
        await send({"type": "websocket.http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1011})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError):
        return "handshake timed out"
    return str(exc) or type(exc).__name__

