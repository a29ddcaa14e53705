"""The example app wrapped by the gateway in examples/gateway.yaml: an ordinary FastAPI app.

Run it through Premier:  premier serve examples/gateway.yaml --app examples/app.py:app
"""

import asyncio

from fastapi import FastAPI

app = FastAPI(title="Premier example")


@app.get("/api/users/{user_id}")
async def get_user(user_id: int) -> dict[str, object]:
    await asyncio.sleep(0.05)  # pretend to query a database: cache hits skip this
    return {"id": user_id, "name": f"User {user_id}"}


@app.get("/api/posts")
async def list_posts() -> list[dict[str, object]]:
    return [{"id": 1, "title": "Hello, Premier"}]


@app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(30)  # longer than the default timeout: the gateway answers 504
    return {"status": "finally"}
