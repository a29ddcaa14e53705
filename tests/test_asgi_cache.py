"""The gateway's HTTP cache as a client sees it: what is stored and served (RFC 9111, as documented in
``premier/asgi/http_cache.py``), keys, freshness on a fake clock, conditional requests, request
directives, request coalescing and streamed bodies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import pytest

from _asgi import Backend, Result, call, paths
from conftest import FakeClock
from premier.asgi import ASGIGateway, http_cache
from premier.errors import BackendError
from premier.providers import AsyncInMemoryCache

Make = Callable[..., ASGIGateway]


@pytest.fixture
def make(clock: FakeClock, provider: AsyncInMemoryCache) -> Make:
    """A gateway caching every path (``pattern``) with ``cache`` settings, on the fake clock."""

    def make(app: Any, cache: dict[str, Any] | None = None, *, pattern: str = "/*", more: dict[str, Any] | None = None,
             **top: Any) -> ASGIGateway:
        cfg = paths((pattern, {"cache": cache or {}, **(more or {})}), **top)
        return ASGIGateway(cfg, app=app, cache_provider=provider, wall_clock=clock)

    return make


async def get(gateway: ASGIGateway, path: str = "/r", **kwargs: Any) -> Result:
    return await call(gateway, "GET", path, **kwargs)


async def test_miss_then_hit_serves_the_stored_response(make: Make) -> None:
    app = Backend(headers=[("content-type", "text/plain"), ("x-custom", "1")])
    gateway = make(app)
    first, second = await get(gateway), await get(gateway)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    assert first.body == second.body == b"GET /r call 1"
    assert second.status == 200
    assert second.header("content-type") == "text/plain"
    assert second.header("x-custom") == "1"
    assert second.header("age") == "0"
    assert first.header("age") is None
    assert app.calls == 1


async def test_age_grows_with_time_and_entries_expire(make: Make, clock: FakeClock) -> None:
    app = Backend()
    gateway = make(app, {"expire_s": 10})
    await get(gateway)
    clock.advance(4)
    assert (await get(gateway)).header("age") == "4"
    clock.advance(5.5)
    hit = await get(gateway)
    assert (hit.x_cache, hit.header("age")) == ("HIT", "9")
    clock.advance(0.5)  # 10 s after it was stored: stale
    expired = await get(gateway)
    assert (expired.x_cache, expired.body) == ("MISS", b"GET /r call 2")
    assert (await get(gateway)).header("age") == "0"


async def test_a_response_arrives_as_old_as_its_age_says(make: Make, clock: FakeClock) -> None:
    # From another cache (a CDN, a backend's own cache): RFC 9111 4.2.3 counts the Age it came with.
    app = Backend(headers=[("cache-control", "max-age=100"), ("age", "30")])
    gateway = make(app)
    assert (await get(gateway)).header("age") == "30"  # the miss passes the app's Age through
    clock.advance(5)
    hit = await get(gateway)
    assert (hit.x_cache, hit.header_list.count(("age", "35"))) == ("HIT", 1)  # one Age, grown from 30
    clock.advance(65)  # 100 s old: stale
    assert (await get(gateway)).x_cache == "MISS"
    assert app.calls == 2


async def test_entries_without_expire_s_stay_until_evicted(make: Make, clock: FakeClock) -> None:
    gateway = make(Backend())
    await get(gateway)
    clock.advance(10 * 365 * 86400)
    assert (await get(gateway)).x_cache == "HIT"


@pytest.mark.parametrize(
    ("cache_control", "fresh_for"),
    [
        ("max-age=100", 100),  # the response's own max-age beats expire_s
        ("max-age=3", 3),
        ("public, max-age=100, s-maxage=30", 30),  # s-maxage beats max-age in a shared cache
    ],
)
async def test_response_freshness_beats_expire_s(make: Make, clock: FakeClock, cache_control: str, fresh_for: int) -> None:
    gateway = make(Backend(headers=[("cache-control", cache_control)]), {"expire_s": 10})
    await get(gateway)
    clock.advance(fresh_for - 0.5)
    assert (await get(gateway)).x_cache == "HIT"
    clock.advance(0.5)
    assert (await get(gateway)).x_cache == "MISS"


async def test_expires_header_sets_freshness(make: Make, clock: FakeClock) -> None:
    def headers(n: int) -> list[tuple[str, str]]:
        return [("date", formatdate(clock.now, usegmt=True)), ("expires", formatdate(clock.now + 30, usegmt=True))]

    gateway = make(Backend(headers=headers), {"expire_s": 5})
    await get(gateway)
    clock.advance(29)
    assert (await get(gateway)).x_cache == "HIT"
    clock.advance(1)
    assert (await get(gateway)).x_cache == "MISS"


async def test_expires_without_date_counts_from_the_cache_clock(make: Make, clock: FakeClock) -> None:
    gateway = make(Backend(headers=lambda n: [("expires", formatdate(clock.now + 20, usegmt=True))]))
    await get(gateway)
    clock.advance(19)
    assert (await get(gateway)).x_cache == "HIT"
    clock.advance(1)
    assert (await get(gateway)).x_cache == "MISS"


@pytest.mark.parametrize(
    "headers",
    [
        [("cache-control", "max-age=0")],
        [("expires", "not a date")],  # an invalid Expires means already expired
        [("expires", "Thu, 01 Jan 1970 00:00:00 GMT"), ("date", "Thu, 01 Jan 1970 00:01:00 GMT")],
        [("cache-control", "max-age=30"), ("age", "30")],  # it spent its freshness in another cache
    ],
)
async def test_already_stale_responses_are_not_stored(make: Make, headers: list[tuple[str, str]]) -> None:
    app = Backend(headers=headers)
    gateway = make(app, {"expire_s": 60})
    assert [(await get(gateway)).x_cache for _ in range(2)] == ["MISS", "MISS"]
    assert app.calls == 2


async def test_head_is_served_from_a_stored_get_without_body(make: Make) -> None:
    app = Backend(headers=[("content-length", "13")])
    gateway = make(app)
    await get(gateway)
    head = await call(gateway, "HEAD", "/r")
    assert (head.status, head.x_cache, head.body) == (200, "HIT", b"")
    assert head.header("content-length") == "13"
    assert app.calls == 1


async def test_head_miss_is_not_stored(make: Make) -> None:
    app = Backend()
    gateway = make(app)
    assert (await call(gateway, "HEAD", "/r")).x_cache == "MISS"
    assert (await call(gateway, "HEAD", "/r")).x_cache == "MISS"
    first_get = await get(gateway)
    assert (first_get.x_cache, first_get.body) == ("MISS", b"GET /r call 3")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_are_never_cached(make: Make, method: str) -> None:
    app = Backend()
    gateway = make(app)
    results = [await call(gateway, method, "/r") for _ in range(2)]
    assert [r.body for r in results] == [f"{method} /r call 1".encode(), f"{method} /r call 2".encode()]
    assert all(r.x_cache is None for r in results)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_successful_unsafe_request_invalidates_the_path(make: Make, method: str) -> None:
    app = Backend(headers=[("vary", "accept-language")])
    gateway = make(app)
    for query, language in (("", "en"), ("", "de"), ("page=2", "en")):
        await get(gateway, query=query, headers=[("accept-language", language)])
    await get(gateway, "/other")
    assert (await get(gateway, headers=[("accept-language", "de")])).x_cache == "HIT"

    assert (await call(gateway, method, "/r")).status == 200
    for query, language in (("", "en"), ("", "de"), ("page=2", "en")):
        assert (await get(gateway, query=query, headers=[("accept-language", language)])).x_cache == "MISS"
    assert (await get(gateway, "/other")).x_cache == "HIT"  # other paths keep their entries


async def test_failed_unsafe_request_does_not_invalidate(make: Make) -> None:
    app = Backend(status=lambda n: 409 if n == 2 else 200)
    gateway = make(app)
    await get(gateway)
    assert (await call(gateway, "POST", "/r")).status == 409
    assert (await get(gateway)).x_cache == "HIT"


async def test_an_unsafe_request_invalidates_on_its_head_whatever_the_app_does_after(make: Make) -> None:
    # RFC 9111 4.4: a non-error status invalidates; the app failing after its head changes nothing.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201 if scope["method"] == "POST" else 200})
        await send({"type": "http.response.body", "body": b"stored"})
        if scope["method"] == "POST":
            raise RuntimeError("after the response")

    gateway = make(app)
    await get(gateway)
    with pytest.raises(RuntimeError, match="after the response"):
        await call(gateway, "POST", "/r")
    assert (await get(gateway)).x_cache == "MISS"


@pytest.mark.parametrize("ends", ["answers", "raises"])
async def test_an_unsafe_request_stopped_by_its_deadline_invalidates_all_the_same(make: Make, ends: str) -> None:
    # It made its change, then was told "disconnect" at the deadline: its answer (or its exception) is
    # dropped for the timeout's 504, but the entry it made stale must not be served after that 504.
    version = 1

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal version
        if scope["method"] == "POST":
            version = 2
            await receive()  # the body
            await receive()  # "disconnect", at the deadline
            if ends == "raises":
                raise RuntimeError("the client left")  # as Starlette's ClientDisconnect
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"v%d" % version})

    gateway = make(app, more={"timeout": {"seconds": 0.02}})
    assert (await get(gateway)).body == b"v1"
    assert (await call(gateway, "POST", "/r")).status == 504
    again = await get(gateway)
    assert (again.x_cache, again.body) == ("MISS", b"v2")


async def test_a_store_failing_to_invalidate_leaves_the_app_s_answer_to_the_client(clock: FakeClock) -> None:
    class Failing(AsyncInMemoryCache):
        async def delete(self, key: str) -> None:
            raise BackendError("the store is gone")

    gateway = ASGIGateway(paths(("/*", {"cache": {}})), app=Backend(), cache_provider=Failing(clock=clock), wall_clock=clock)
    await get(gateway)
    sent: list[dict[str, Any]] = []
    with pytest.raises(BackendError, match="the store is gone"):  # raised once the app is done, as before
        await call(gateway, "POST", "/r", on_send=sent.append)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]
    assert b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body") == b"POST /r call 2"


async def test_unsafe_request_invalidates_entries_stored_before_a_reload(make: Make) -> None:
    app = Backend()
    gateway = make(app)
    await get(gateway)
    gateway.reload(gateway.config)
    assert (await get(gateway)).x_cache == "HIT"  # the entries live in the provider: still there
    await call(gateway, "PUT", "/r")
    assert (await get(gateway)).x_cache == "MISS"


async def test_query_string_is_part_of_the_key(make: Make) -> None:
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app)
    a1, b1, a2 = [await get(gateway, query=q) for q in ("a=1", "a=2", "a=1")]
    assert (a1.x_cache, b1.x_cache, a2.x_cache) == ("MISS", "MISS", "HIT")
    assert (a1.body, b1.body, a2.body) == (b"call 1", b"call 2", b"call 1")
    # byte for byte: the same parameters in another order are another entry, and so is no query
    assert (await get(gateway, query="b=2&a=1")).x_cache == "MISS"
    assert (await get(gateway, query="a=1&b=2")).x_cache == "MISS"
    assert (await get(gateway)).x_cache == "MISS"


async def test_vary_stores_one_entry_per_header_value(make: Make) -> None:
    app = Backend(headers=[("vary", "Accept-Language")], body=lambda n: f"call {n}".encode())
    gateway = make(app)
    en, de = [("accept-language", "en")], [("accept-language", "de")]
    results = [await get(gateway, headers=h) for h in (en, de, en, de, [])]
    assert [r.x_cache for r in results] == ["MISS", "MISS", "HIT", "HIT", "MISS"]
    assert [r.body for r in results] == [b"call 1", b"call 2", b"call 1", b"call 2", b"call 3"]
    assert (await get(gateway)).body == b"call 3"


async def test_vary_on_several_headers(make: Make) -> None:
    app = Backend(headers=[("vary", "accept-language, accept-encoding")])
    gateway = make(app)
    both = [("accept-language", "en"), ("accept-encoding", "gzip")]
    await get(gateway, headers=both)
    assert (await get(gateway, headers=both)).x_cache == "HIT"
    assert (await get(gateway, headers=[("accept-language", "en"), ("accept-encoding", "br")])).x_cache == "MISS"


@pytest.mark.parametrize(
    "headers",
    [
        [("vary", "*")],
        [("vary", "accept, *")],
        [("cache-control", "no-store")],
        [("cache-control", "private")],
        [("cache-control", "private, max-age=60")],
        [("cache-control", "no-cache")],
        [("cache-control", "max-age=60"), ("cache-control", "no-store")],  # split over two headers
        [("set-cookie", "session=abc")],
        [("Cache-Control", "NO-STORE")],
    ],
)
async def test_responses_that_forbid_storing_are_not_stored(make: Make, headers: list[tuple[str, str]]) -> None:
    app = Backend(headers=headers)
    gateway = make(app)
    assert [(await get(gateway)).x_cache for _ in range(2)] == ["MISS", "MISS"]
    assert app.calls == 2


async def test_public_response_with_set_cookie_is_stored_without_the_cookie(make: Make) -> None:
    app = Backend(headers=[("cache-control", "public"), ("set-cookie", "session=abc"), ("x-kept", "yes")])
    gateway = make(app)
    miss = await get(gateway)
    assert miss.header("set-cookie") == "session=abc"  # the response it belongs to keeps it
    hit = await get(gateway)
    assert hit.x_cache == "HIT"
    assert hit.header("set-cookie") is None
    assert hit.header("x-kept") == "yes"


async def test_responses_to_authorized_requests_are_not_stored_by_default(make: Make) -> None:
    app = Backend()
    gateway = make(app)
    auth = [("authorization", "Bearer alice")]
    assert (await get(gateway, headers=auth)).x_cache == "MISS"
    assert (await get(gateway, headers=[("authorization", "Bearer bob")])).body == b"GET /r call 2"
    anonymous = await get(gateway)
    assert (anonymous.x_cache, anonymous.body) == ("MISS", b"GET /r call 3")


@pytest.mark.parametrize("cache_control", ["public", "s-maxage=60", "must-revalidate"])
async def test_authorized_responses_stored_when_explicitly_allowed(make: Make, cache_control: str) -> None:
    app = Backend(headers=[("cache-control", cache_control)])
    gateway = make(app)
    auth = [("authorization", "Bearer alice")]
    await get(gateway, headers=auth)
    hit = await get(gateway, headers=auth)
    assert (hit.x_cache, hit.body) == ("HIT", b"GET /r call 1")
    assert app.calls == 1


@pytest.mark.parametrize(
    ("etag", "if_none_match", "not_modified"),
    [
        ('"v1"', '"v1"', True),
        ('"v1"', 'W/"v1"', True),  # weak comparison
        ('W/"v1"', '"v1"', True),
        ('W/"v1"', 'W/"v1"', True),
        ('"v1"', '"v0", "v1"', True),
        ('"v1"', "*", True),
        ('"v1"', '"v2"', False),
        ('"v1"', '"v10"', False),
    ],
)
async def test_if_none_match_on_a_fresh_entry(make: Make, etag: str, if_none_match: str, not_modified: bool) -> None:
    app = Backend(headers=[("etag", etag), ("cache-control", "max-age=60"), ("content-type", "text/plain")])
    gateway = make(app)
    await get(gateway)
    conditional = await get(gateway, headers=[("if-none-match", if_none_match)])
    assert conditional.x_cache == "HIT"
    if not_modified:
        assert conditional.status == 304
        assert conditional.body == b""
        assert conditional.header("etag") == etag
        assert conditional.header("cache-control") == "max-age=60"
    else:
        assert conditional.status == 200
        assert conditional.body == b"GET /r call 1"
    assert app.calls == 1


async def test_if_none_match_on_a_stale_entry_goes_downstream(make: Make, clock: FakeClock) -> None:
    app = Backend(headers=[("etag", '"v1"')])
    gateway = make(app, {"expire_s": 5})
    await get(gateway)
    clock.advance(5)
    response = await get(gateway, headers=[("if-none-match", '"v1"')])
    assert (response.status, response.x_cache) == (200, "MISS")
    assert app.calls == 2


@pytest.mark.parametrize("header", [("cache-control", "no-cache"), ("pragma", "no-cache"), ("cache-control", "max-age=2")])
async def test_request_no_cache_goes_downstream_and_refreshes(make: Make, clock: FakeClock, header: tuple[str, str]) -> None:
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app)
    await get(gateway)
    clock.advance(3)
    assert (await get(gateway)).body == b"call 1"
    refreshed = await get(gateway, headers=[header])
    assert (refreshed.x_cache, refreshed.body) == ("MISS", b"call 2")
    after = await get(gateway)
    assert (after.x_cache, after.body, after.header("age")) == ("HIT", b"call 2", "0")


async def test_request_no_store_bypasses_the_cache(make: Make) -> None:
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app)
    no_store = [("cache-control", "no-store")]
    assert (await get(gateway, headers=no_store)).body == b"call 1"
    assert (await get(gateway)).x_cache == "MISS"  # the bypassed response was not stored
    bypassed = await get(gateway, headers=no_store)
    assert (bypassed.body, bypassed.x_cache) == (b"call 3", None)
    assert (await get(gateway)).body == b"call 2"  # and the entry stays


async def test_only_if_cached_miss_is_a_504(make: Make) -> None:
    app = Backend()
    gateway = make(app)
    only = [("cache-control", "only-if-cached")]
    miss = await get(gateway, headers=only)
    assert miss.status == 504
    assert miss.json() == {"error": "Not in cache (only-if-cached)", "status": 504}
    assert app.calls == 0
    await get(gateway)
    hit = await get(gateway, headers=only)
    assert (hit.status, hit.x_cache) == (200, "HIT")


async def test_only_if_cached_miss_is_neither_retried_nor_a_breaker_failure(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    # The 504 is the cache's own answer to the client's directive: it says nothing about the app.
    app = Backend()
    more = {"retry": {"max_attempts": 3, "wait": 0}, "circuit_breaker": {"failure_threshold": 1}}
    gateway = make(app, more=more)
    with caplog.at_level(logging.INFO, logger="premier"):
        for _ in range(2):
            miss = await get(gateway, headers=[("cache-control", "only-if-cached")])
            assert (miss.status, miss.json()["status"]) == (504, 504)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    assert (await get(gateway)).status == 200
    assert app.calls == 1


async def test_range_requests_bypass_the_cache(make: Make) -> None:
    app = Backend(status=lambda n: 206 if n == 1 else 200)
    gateway = make(app)
    ranged = await get(gateway, headers=[("range", "bytes=0-3")])
    assert (ranged.status, ranged.x_cache) == (206, None)
    await get(gateway)
    again = await get(gateway, headers=[("range", "bytes=0-3")])
    assert again.x_cache is None
    assert app.calls == 3


@pytest.mark.parametrize("status", [500, 502, 206, 201, 302, 403])
async def test_statuses_not_cacheable_by_default_are_not_stored(make: Make, status: int) -> None:
    app = Backend(status=status)
    gateway = make(app)
    assert [(await get(gateway)).x_cache for _ in range(2)] == ["MISS", "MISS"]
    assert app.calls == 2


@pytest.mark.parametrize("status", [200, 203, 204, 301, 404, 410])
async def test_statuses_cacheable_by_default_are_stored(make: Make, status: int) -> None:
    app = Backend(status=status, body=b"" if status == 204 else None)
    gateway = make(app)
    await get(gateway)
    hit = await get(gateway)
    assert (hit.status, hit.x_cache) == (status, "HIT")
    assert app.calls == 1


async def test_concurrent_misses_make_one_downstream_call(make: Make) -> None:
    hold = asyncio.Event()
    app = Backend(hold=hold, body=[b"part one, ", b"part two"])
    gateway = make(app)
    tasks = [asyncio.create_task(get(gateway, "/hot")) for _ in range(50)]
    await app.entered.wait()
    for _ in range(3):
        await asyncio.sleep(0)
    hold.set()
    results = await asyncio.gather(*tasks)
    assert app.calls == 1
    assert {r.body for r in results} == {b"part one, part two"}
    assert {r.status for r in results} == {200}
    assert sorted(r.x_cache or "" for r in results) == ["HIT"] * 49 + ["MISS"]


async def test_a_non_storable_response_releases_the_waiting_requests(make: Make) -> None:
    hold = asyncio.Event()
    app = Backend(hold=hold, headers=[("cache-control", "no-store")])
    gateway = make(app)
    tasks = [asyncio.create_task(get(gateway, "/hot")) for _ in range(5)]
    await app.entered.wait()
    await asyncio.sleep(0)
    assert app.calls == 1  # the others wait for the first
    hold.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert app.calls == 5  # then, with nothing stored, each asks the app itself
    assert sorted(r.body for r in results) == [f"GET /hot call {n}".encode() for n in range(1, 6)]


@pytest.mark.parametrize(
    ("headers", "cache"),
    [([(b"cache-control", b"no-store")], {}), ([], {"max_entry_bytes": 4})],
    ids=["head says no-store", "body past max_entry_bytes"],
)
async def test_waiting_requests_go_on_once_a_streamed_response_shows_it_is_not_stored(
    make: Make, headers: list[tuple[bytes, bytes]], cache: dict[str, Any]
) -> None:
    # A stream (an SSE feed, say) under a cached route: the requests waiting for the first one's entry
    # go downstream as soon as its head (or its first part) shows that there will be none.
    first_streams, end_first, calls = asyncio.Event(), asyncio.Event(), []

    async def feed(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"tick tick", "more_body": True})
        if len(calls) == 1:
            first_streams.set()
            await end_first.wait()
        await send({"type": "http.response.body", "body": b""})

    gateway = make(feed, cache)
    first = asyncio.create_task(get(gateway, "/feed"))
    await first_streams.wait()
    others = await asyncio.wait_for(asyncio.gather(*(get(gateway, "/feed") for _ in range(3))), 5)
    assert [r.body for r in others] == [b"tick tick"] * 3  # served while the first still streams
    assert not first.done()
    end_first.set()
    assert (await first).body == b"tick tick"
    assert len(calls) == 4


async def test_a_failed_fetch_releases_the_waiting_requests(make: Make) -> None:
    hold = asyncio.Event()
    app = Backend(hold=hold, status=lambda n: 500 if n == 1 else 200)
    gateway = make(app)
    tasks = [asyncio.create_task(get(gateway, "/hot")) for _ in range(3)]
    await app.entered.wait()
    hold.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(r.status for r in results) == [200, 200, 500]


async def test_streamed_body_is_stored_whole_and_replayed(make: Make) -> None:
    chunks = [b"alpha-", b"beta-", b"", b"gamma"]
    app = Backend(body=chunks)
    gateway = make(app)
    miss = await get(gateway)
    assert miss.chunks == chunks  # the miss streams through as the app sent it
    hit = await get(gateway)
    assert hit.body == b"alpha-beta-gamma"
    assert hit.finished


async def test_bodies_over_max_entry_bytes_stream_through_unstored(make: Make) -> None:
    chunks = [b"x" * 8, b"y" * 8, b"z" * 8]
    app = Backend(body=chunks)
    gateway = make(app, {"max_entry_bytes": 20})
    first = await get(gateway)
    assert first.chunks == chunks
    second = await get(gateway)
    assert (second.x_cache, second.body) == ("MISS", b"x" * 8 + b"y" * 8 + b"z" * 8)
    assert app.calls == 2
    small = Backend(body=[b"x" * 10, b"y" * 10])
    gateway = make(small, {"max_entry_bytes": 20})
    await get(gateway, "/small")
    assert (await get(gateway, "/small")).x_cache == "HIT"  # exactly the limit is stored


async def test_a_response_the_app_did_not_finish_is_not_stored(make: Make) -> None:
    # A streaming response cut short (the app stopped after a client disconnect, as Starlette's
    # StreamingResponse does) must not be stored as if it were the whole body.
    calls = 0

    async def truncating_app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first half", "more_body": True})
        if calls == 1:
            return
        await send({"type": "http.response.body", "body": b" second half"})

    gateway = make(truncating_app)
    assert (await get(gateway)).body == b"first half"
    full = await get(gateway)
    assert (full.x_cache, full.body) == ("MISS", b"first half second half")
    assert (await get(gateway)).body == b"first half second half"


@pytest.mark.parametrize(
    ("pattern", "cache_key", "path", "other_path"),
    [
        ("/users/{user_id}/*", "user:{user_id}", "/users/5/profile", "/users/5/settings"),
        (r"^/v(?P<version>\d+)/docs", "docs:{version}", "/v2/docs/a", "/v2/docs/b"),
    ],
)
async def test_cache_key_template_from_path_parameters(make: Make, pattern: str, cache_key: str, path: str, other_path: str) -> None:
    # The template decides what distinguishes entries within a path (here: not the query), but two
    # paths never share an entry, even when the template renders the same for both.
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app, {"cache_key": cache_key}, pattern=pattern)
    first = await get(gateway, path, query="utm_source=a")
    second = await get(gateway, path, query="utm_source=b")
    assert (second.x_cache, second.body) == ("HIT", first.body)
    other = await get(gateway, other_path)
    assert (other.x_cache, other.body) == ("MISS", b"call 2")
    assert app.calls == 2


async def test_cache_key_template_from_query(make: Make) -> None:
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app, {"cache_key": "search:{q}"}, pattern="/search")
    assert (await get(gateway, "/search", query="q=cats&page=1")).body == b"call 1"
    assert (await get(gateway, "/search", query="page=2&q=cats")).x_cache == "HIT"
    assert (await get(gateway, "/search", query="q=dogs")).body == b"call 2"


async def test_cache_key_template_with_a_missing_name_falls_back_to_the_full_key(make: Make) -> None:
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app, {"cache_key": "item:{item_id}"}, pattern="/items/*")
    one, two = await get(gateway, "/items/1"), await get(gateway, "/items/2")
    assert (one.body, two.body) == (b"call 1", b"call 2")  # never one shared "item:" entry
    assert (await get(gateway, "/items/1")).body == b"call 1"
    assert (await get(gateway, "/items/3", query="item_id=9")).x_cache == "MISS"
    assert (await get(gateway, "/items/3", query="item_id=9&page=2")).x_cache == "HIT"  # the template applies
    assert (await get(gateway, "/items/4", query="item_id=9")).x_cache == "MISS"  # ... within the path only


async def test_keyspaces_keep_gateways_apart_in_one_provider(
    provider: AsyncInMemoryCache, clock: FakeClock
) -> None:
    app = Backend(body=lambda n: f"call {n}".encode())
    one = ASGIGateway(paths(("/*", {"cache": {}}), keyspace="one"), app=app, cache_provider=provider, wall_clock=clock)
    two = ASGIGateway(paths(("/*", {"cache": {}}), keyspace="two"), app=app, cache_provider=provider, wall_clock=clock)
    assert (await get(one)).body == b"call 1"
    assert (await get(two)).body == b"call 2"
    assert (await get(one)).body == b"call 1"


async def test_hit_carries_rate_limit_headers_and_costs_a_token(make: Make) -> None:
    app = Backend()
    gateway = make(app, more={"rate_limit": {"quota": 2, "duration": 100}})
    _, hit, limited = await get(gateway), await get(gateway), await get(gateway)
    assert hit.x_cache == "HIT"
    assert hit.header("ratelimit") is not None
    assert limited.status == 429


async def test_a_template_never_lets_one_url_answer_for_another(make: Make) -> None:
    # The example's shape: a glob that captures nothing, so the query fills {user_id}.
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app, {"cache_key": "user:{user_id}"}, pattern="/api/users/*")
    assert (await get(gateway, "/api/users/1", query="user_id=2")).body == b"call 1"
    leaked = await get(gateway, "/api/users/2", query="user_id=2")
    assert (leaked.x_cache, leaked.body) == ("MISS", b"call 2")


async def test_a_path_with_an_encoded_question_mark_has_its_own_entry(make: Make) -> None:
    # "/a?b" as a path (sent as /a%3Fb) and "/a" with the query "b?" must not share a key.
    app = Backend(body=lambda n: f"call {n}".encode())
    gateway = make(app, {}, pattern="/*")
    assert (await get(gateway, "/a?b")).body == b"call 1"
    assert (await get(gateway, "/a", query="b?")).body == b"call 2"


async def test_the_invalidation_index_stays_bounded(make: Make) -> None:
    app = Backend()
    gateway = make(app, {}, pattern="/*")
    for i in range(300):
        await get(gateway, "/c/x", query=f"a={i}")
    index = gateway._cache_index.paths
    assert index.get("/c/x") is None  # past the per-path bound: remembered as "invalidate by prefix"
    assert (await get(gateway, "/c/x", query="a=7")).x_cache == "HIT"
    await call(gateway, method="POST", path="/c/x")
    assert (await get(gateway, "/c/x", query="a=7")).x_cache == "MISS"  # still invalidated


async def test_a_path_that_left_the_index_leaves_no_entry_behind(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its entries leave the store with it, those of a path of too many keys to list too: an unsafe
    # request, finding nothing indexed, never leaves one of them to be served.
    monkeypatch.setattr(http_cache, "_MAX_INDEXED_PATHS", 2)
    gateway = make(Backend())
    for i in range(65):
        await get(gateway, "/many", query=f"a={i}")
    assert gateway._cache_index.paths["/many"] is None
    await get(gateway, "/one")
    await get(gateway, "/two")  # /many, stored least recently, leaves the index
    assert list(gateway._cache_index.paths) == ["/one", "/two"]
    await call(gateway, "POST", "/many")
    assert (await get(gateway, "/many", query="a=7")).x_cache == "MISS"


async def test_the_invalidation_index_is_bounded_in_bytes(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its keys outlive their entries (the store evicts and expires on its own) and are as long as the
    # client makes them: the index counts what it holds, and past its budget the paths stored least
    # recently leave it, their entries with them.
    budget = 50_000
    monkeypatch.setattr(http_cache, "_MAX_INDEX_BYTES", budget)
    gateway = make(Backend())
    for n in range(100):
        for i in range(4):
            await get(gateway, f"/p/{n}", query=f"q={i}{'x' * 150}")
    index, overhead = gateway._cache_index, http_cache._INDEXED_OVERHEAD
    held = sum(len(path) + overhead + sum(len(key) + overhead for key in keys or ()) for path, keys in index.paths.items())
    assert index.nbytes == held <= budget
    assert "/p/0" not in index.paths and "/p/99" in index.paths
    assert (await get(gateway, "/p/0", query=f"q=1{'x' * 150}")).x_cache == "MISS"  # left with its path
    await call(gateway, "POST", "/p/99")
    assert (await get(gateway, "/p/99", query=f"q=1{'x' * 150}")).x_cache == "MISS"


@pytest.mark.parametrize("part", ["path", "query", "vary"])
async def test_a_long_key_part_is_keyed_by_its_digest(make: Make, part: str) -> None:
    # A client's long path, query or header value makes no long key (each part past 200 characters is
    # keyed by its SHA-256), and still its own entry.
    app = Backend(headers=[("vary", "x-token")], body=lambda n: f"call {n}".encode())
    gateway = make(app)

    async def fetch(long: str) -> Any:
        return await get(gateway, "/" + long if part == "path" else "/r", query=long if part == "query" else "",
                         headers=[("x-token", long)] if part == "vary" else [])

    one, other = "a" * 5000, "a" * 4999 + "b"
    first, again, different = await fetch(one), await fetch(one), await fetch(other)
    assert (first.x_cache, again.x_cache, again.body) == ("MISS", "HIT", b"call 1")
    assert (different.x_cache, different.body) == ("MISS", b"call 2")
    keys = [key for keys in gateway._cache_index.paths.values() for key in keys or ()]
    assert len(keys) == (3 if part == "vary" else 4)  # Vary markers (one when the URL is the same) and entries
    assert max(len(key) for key in keys) < 400
    await call(gateway, "POST", "/" + one if part == "path" else "/r")
    assert (await fetch(one)).x_cache == "MISS"
