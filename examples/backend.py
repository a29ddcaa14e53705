"""A tiny backend for the standalone example: `python examples/backend.py PORT NAME` answers every GET with
JSON naming itself, `/health` with 200 and `/slow` after two seconds."""

import asyncio
import json
import sys

import uvicorn

NAME = sys.argv[2] if len(sys.argv) > 2 else "backend"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2)
    body = json.dumps({"backend": NAME, "path": scope["path"], "query": scope["query_string"].decode()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
