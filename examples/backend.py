"""A tiny backend for the standalone example: `python examples/backend.py PORT NAME` answers every GET with
JSON naming itself, `/health` with 200 and `/slow` after two seconds; WebSockets are echoed."""

import asyncio
import json
import sys

import uvicorn

NAME = sys.argv[2] if len(sys.argv) > 2 else "backend"


async def echo(receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": f"{NAME}: {message.get('text') or message.get('bytes')!r}"})


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await echo(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2)
    body = json.dumps({"backend": NAME, "path": scope["path"], "query": scope["query_string"].decode()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", ws="websockets-sansio")
