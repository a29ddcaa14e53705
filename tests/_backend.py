"""A real HTTP backend for the standalone proxy's tests, run as its own process:

    python tests/_backend.py PORT NAME [premier]      # (premier: on Premier's server instead of uvicorn)

Routes (anything else echoes the request as JSON):
- ``/stream?size=N&chunk=M``: N bytes of a repeating pattern, sent in chunks of M (no Content-Length).
- ``/upload``: reads the body as it streams; answers its length and SHA-256.
- ``/gzip``: a gzip-encoded JSON body with ``Content-Encoding: gzip`` and its ``Content-Length``.
- ``/slow?seconds=S``: answers after S seconds.
- ``/status/N``: answers status N.
- ``/health``: 200, or the status set by ``/set-health/N``.
- ``/hop``: a response carrying hop-by-hop headers.
- ``/set-fail/N``: from now on echoes answer status N (0: answer normally again).
Every response carries the backend's ``Date`` and ``Server`` (uvicorn's); echoes count the requests served.

WebSockets: ``/ws`` echoes every message (text as text, binary as binary) and accepts the first
subprotocol offered; ``/ws/close?code=C&reason=R`` closes with that code after the first message;
``/ws/flood?count=N&size=S`` sends N binary messages of S bytes; ``/ws/die`` ends the process after the first
message (no close frame); ``/ws/refuse`` refuses the handshake (403); ``/ws/headers`` first sends the handshake's headers as JSON. ``/ws-last-close`` (HTTP) tells the
close code and reason of the last connection the client closed.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import sys
from urllib.parse import parse_qs

import uvicorn

NAME = sys.argv[2] if len(sys.argv) > 2 else "backend"
PATTERN = bytes(range(256)) * 256  # 64 KiB
state = {"health": 200, "fail": 0, "served": 0, "last_close": None}


async def websocket(scope, receive, send) -> None:
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    await receive()  # websocket.connect
    if path == "/ws/refuse":
        await send({"type": "websocket.close", "code": 1008})
        return
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    if path == "/ws/headers":
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        await send({"type": "websocket.send", "text": json.dumps({"path": path, "query": scope["query_string"].decode(),
                                                                   "headers": headers})})
    if path == "/ws/flood":
        for _ in range(int(query["count"])):
            await send({"type": "websocket.send", "bytes": bytes(int(query["size"]))})
        await send({"type": "websocket.close", "code": 1000, "reason": "flood done"})
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            state["last_close"] = [message.get("code"), message.get("reason", "")]
            return
        if path == "/ws/die":
            os._exit(0)
        if path == "/ws/close":
            await send({"type": "websocket.close", "code": int(query["code"]), "reason": query.get("reason", "")})
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})


async def _respond(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"x-backend", NAME.encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/stream":
        size, chunk = int(query["size"]), int(query.get("chunk", 65536))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-backend", NAME.encode())]})
        sent = 0
        while sent < size:
            n = min(chunk, size - sent)
            await send({"type": "http.response.body", "body": PATTERN[:n] if n <= len(PATTERN) else bytes(n), "more_body": True})
            sent += n
        await send({"type": "http.response.body", "body": b""})
        return
    digest, length = hashlib.sha256(), 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        digest.update(body)
        length += len(body)
        if not message.get("more_body"):
            break
    if path == "/gzip":
        body = gzip.compress(json.dumps({"backend": NAME, "data": "x" * 1000}).encode())
        await _respond(send, 200, body, [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode())])
    elif path == "/slow":
        await asyncio.sleep(float(query.get("seconds", "1")))
        await _respond(send, 200, json.dumps({"backend": NAME, "slow": True}).encode())
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        await _respond(send, status, json.dumps({"backend": NAME, "status": status}).encode())
    elif path == "/health":
        await _respond(send, state["health"], json.dumps({"backend": NAME}).encode())
    elif path.startswith("/set-health/"):
        state["health"] = int(path.rsplit("/", 1)[1])
        await _respond(send, 200, b"{}")
    elif path == "/ws-last-close":
        await _respond(send, 200, json.dumps(state["last_close"]).encode())
    elif path.startswith("/set-fail/"):
        state["fail"] = int(path.rsplit("/", 1)[1])
        await _respond(send, 200, b"{}")
    elif state["fail"]:
        await _respond(send, state["fail"], json.dumps({"backend": NAME, "failing": True}).encode())
    elif path == "/hop":
        await _respond(send, 200, b"{}", [
            (b"connection", b"x-private"), (b"x-private", b"secret"), (b"keep-alive", b"timeout=5"), (b"x-kept", b"yes"),
        ])
    else:
        state["served"] += 1
        await _respond(send, 200, json.dumps({
            "backend": NAME,
            "served": state["served"],
            "method": scope["method"],
            "path": path,
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "length": length,
            "sha256": digest.hexdigest(),
        }).encode())


if __name__ == "__main__":
    if sys.argv[3:] == ["premier"]:  # Premier's server: a response's head and (first) body in one write
        from premier.server.runner import Server

        sys.exit(Server(app, access_log=False, ws_max_size=64 * 1024 * 1024).run("127.0.0.1", int(sys.argv[1])))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                ws="websockets-sansio", ws_max_size=64 * 1024 * 1024)
