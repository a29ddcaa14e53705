"""The same small API written three times — FastAPI, Starlette, Django — for the end-to-end tests.

Endpoints: /api/limited, /api/items/{id} (counts its calls), /api/search (the ``page`` and ``sort`` it
read from the query, as the framework reads it), /api/slow (5 s), /api/flaky (503 twice, then 200),
/api/fragile (500 while ``state.fail``), /api/stream (one chunk, then waits for the test to release it),
/api/admin/{rest}, /api/upload (POST: reads the whole JSON body ``{"text": ...}`` — FastAPI through a
model — and answers it back).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel


class Upload(BaseModel):  # (at module level: FastAPI resolves the endpoint's annotation by name)
    text: str


class AppState:
    def __init__(self) -> None:
        self.item_calls = 0
        self.search_calls = 0
        self.flaky_calls = 0
        self.fail = False
        self.release = threading.Event()
        self.stream_outcome = ""
        self.clock: Any = None

    def item(self, item_id: int) -> dict[str, int]:
        self.item_calls += 1
        return {"id": item_id, "calls": self.item_calls}

    def search(self, page: str | None, sort: str | None) -> dict[str, Any]:
        self.search_calls += 1
        return {"page": page, "sort": sort, "calls": self.search_calls}

    def flaky(self) -> tuple[int, dict[str, Any]]:
        self.flaky_calls += 1
        if self.flaky_calls < 3:
            return 503, {"error": "warming up"}
        return 200, {"recovered_after": self.flaky_calls}

    async def stream(self) -> AsyncIterator[bytes]:
        yield b"first\n"
        released = await asyncio.to_thread(self.release.wait, 5)
        self.stream_outcome = "released" if released else "waited 5 s: the first chunk was held back"
        yield b"second\n"


def fastapi_app(state: AppState) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    @app.get("/api/limited")
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/api/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return state.item(item_id)

    @app.get("/api/search")
    async def search(page: str | None = None, sort: str | None = None) -> dict[str, Any]:
        return state.search(page, sort)

    @app.get("/api/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(5)
        return {"slow": True}

    @app.get("/api/flaky")
    async def flaky() -> JSONResponse:
        status, body = state.flaky()
        return JSONResponse(body, status_code=status)

    @app.get("/api/fragile")
    async def fragile() -> JSONResponse:
        return JSONResponse({"fail": state.fail}, status_code=500 if state.fail else 200)

    @app.get("/api/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(state.stream(), media_type="text/plain")

    @app.get("/api/admin/{rest:path}")
    async def admin(rest: str) -> dict[str, str]:
        return {"admin": rest}

    @app.post("/api/upload")
    async def upload(body: Upload) -> dict[str, str]:
        return {"text": body.text}

    return app


def starlette_app(state: AppState) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def limited(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def item(request: Request) -> JSONResponse:
        return JSONResponse(state.item(int(request.path_params["item_id"])))

    async def search(request: Request) -> JSONResponse:
        return JSONResponse(state.search(request.query_params.get("page"), request.query_params.get("sort")))

    async def slow(request: Request) -> JSONResponse:
        await asyncio.sleep(5)
        return JSONResponse({"slow": True})

    async def flaky(request: Request) -> JSONResponse:
        status, body = state.flaky()
        return JSONResponse(body, status_code=status)

    async def fragile(request: Request) -> JSONResponse:
        return JSONResponse({"fail": state.fail}, status_code=500 if state.fail else 200)

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(state.stream(), media_type="text/plain")

    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": request.path_params["rest"]})

    async def upload(request: Request) -> JSONResponse:
        return JSONResponse({"text": (await request.json())["text"]})

    return Starlette(routes=[
        Route("/api/limited", limited),
        Route("/api/items/{item_id:int}", item),
        Route("/api/search", search),
        Route("/api/slow", slow),
        Route("/api/flaky", flaky),
        Route("/api/fragile", fragile),
        Route("/api/stream", stream),
        Route("/api/admin/{rest:path}", admin),
        Route("/api/upload", upload, methods=["POST"]),
    ])


_django_state: list[AppState] = []


def django_app(state: AppState) -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            SECRET_KEY="tests-only",
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            USE_TZ=True,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    _django_state[:] = [state]
    return get_asgi_application()


def _django_urlpatterns() -> list[Any]:
    from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
    from django.urls import path

    def current() -> AppState:
        return _django_state[0]

    async def limited(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"ok": True})

    async def item(request: HttpRequest, item_id: int) -> JsonResponse:
        return JsonResponse(current().item(item_id))

    async def search(request: HttpRequest) -> JsonResponse:
        return JsonResponse(current().search(request.GET.get("page"), request.GET.get("sort")))

    async def slow(request: HttpRequest) -> JsonResponse:
        await asyncio.sleep(5)
        return JsonResponse({"slow": True})

    async def flaky(request: HttpRequest) -> JsonResponse:
        status, body = current().flaky()
        return JsonResponse(body, status=status)

    async def fragile(request: HttpRequest) -> JsonResponse:
        fail = current().fail
        return JsonResponse({"fail": fail}, status=500 if fail else 200)

    async def stream(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(current().stream(), content_type="text/plain")

    async def admin(request: HttpRequest, rest: str) -> JsonResponse:
        return JsonResponse({"admin": rest})

    async def upload(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"text": json.loads(request.body)["text"]})

    return [
        path("api/limited", limited),
        path("api/items/<int:item_id>", item),
        path("api/search", search),
        path("api/slow", slow),
        path("api/flaky", flaky),
        path("api/fragile", fragile),
        path("api/stream", stream),
        path("api/admin/<path:rest>", admin),
        path("api/upload", upload),
    ]


def __getattr__(name: str) -> Any:
    # Django reads `urlpatterns` from ROOT_URLCONF (this module) only once it is configured.
    if name == "urlpatterns":
        return _django_urlpatterns()
    raise AttributeError(name)


FRAMEWORKS = {"fastapi": fastapi_app, "starlette": starlette_app, "django": django_app}
