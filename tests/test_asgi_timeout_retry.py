"""Timeouts and retries through the gateway: what the client receives, what the app experiences, and
which requests are replayed (and how long the gateway waits in between)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import premier.asgi.retry
import premier.asgi.timeout
from _asgi import Backend, ClientLeft, call, paths, read_body, upload
from premier.asgi import ASGIGateway
from premier.observability.events import RequestEvent


def timeout_gateway(app: Any, seconds: float = 0.05, **options: Any) -> ASGIGateway:
    return ASGIGateway(paths(("/*", {"timeout": {"seconds": seconds, **options}})), app=app)


# -- timeout ---------------------------------------------------------------------------------------
async def test_timeout_before_the_response_answers_the_configured_error() -> None:
    cancelled = []

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    gateway = timeout_gateway(stuck, error_status=503, error_message='Took too "long" — sorry')
    started = time.perf_counter()
    response = await call(gateway)
    assert 0.04 <= time.perf_counter() - started < 0.5
    assert response.status == 503
    assert response.json() == {"error": 'Took too "long" — sorry', "status": 503}
    assert cancelled == [True]  # the app was stopped, not left running


async def test_default_timeout_answer() -> None:
    gateway = timeout_gateway(Backend(hold=asyncio.Event()))
    response = await call(gateway)
    assert (response.status, response.json()) == (504, {"error": "Request timeout", "status": 504})


async def test_fast_requests_are_untouched() -> None:
    app = Backend(headers=[("x-a", "1")])
    response = await call(timeout_gateway(app, seconds=5))
    assert (response.status, response.header_list, response.body) == (200, [("x-a", "1")], b"GET / call 1")


async def test_timeout_after_the_response_started_cuts_it_off(caplog: pytest.LogCaptureFixture) -> None:
    async def stalls_mid_stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first chunk", "more_body": True})
        await asyncio.Event().wait()

    gateway = timeout_gateway(stalls_mid_stream)
    with caplog.at_level(logging.WARNING, logger="premier"):
        response = await call(gateway, path="/stream")
    assert len(response.starts) == 1  # never a second response start
    assert response.status == 200
    assert response.chunks == [b"first chunk"]
    assert not response.finished  # the body was not completed: the server closes the connection
    (record,) = [r for r in caplog.records if r.name == "premier" and "timeout" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "GET /stream" in record.getMessage()


async def test_work_after_a_finished_response_is_not_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    # Starlette runs background tasks inside the app call, after the response's last body part.
    outcome: list[str] = []

    async def responds_then_works(scope: Any, receive: Any, send: Any) -> None:
        await Backend()(scope, receive, send)
        try:
            await asyncio.sleep(0.15)  # three times the timeout
            outcome.append("finished")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    events: list[RequestEvent] = []
    gateway = timeout_gateway(responds_then_works)
    gateway.events.subscribe(events.append)
    with caplog.at_level(logging.WARNING, logger="premier"):
        response = await call(gateway)
    assert (response.status, response.finished) == (200, True)
    assert outcome == ["finished"]
    assert [r.getMessage() for r in caplog.records if "timeout" in r.getMessage()] == []
    (event,) = events
    assert not event.timed_out
    assert event.duration < 0.1  # the request's time ends with its response, not with the app's work


async def test_a_listening_app_is_told_the_client_left_and_504_follows() -> None:
    # Django (and streaming responses) await receive() for a disconnect; the deadline answers it.
    seen: list[Any] = []

    async def listens(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await read_body(receive))
        try:
            seen.append(await receive())
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("cleaned up")

    gateway = timeout_gateway(listens)
    started = time.perf_counter()
    response = await call(gateway, "POST", body=[b"a", b"b"])
    assert time.perf_counter() - started < 0.5  # no grace period needed: it stopped when asked
    assert seen == [b"ab", {"type": "http.disconnect"}, "cleaned up"]
    assert response.status == 504
    assert response.json()["status"] == 504


async def test_a_listening_app_that_ignores_the_disconnect_is_cancelled_after_a_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(premier.asgi.timeout, "_GRACE", 0.05)  # instead of a whole second
    outcome: list[str] = []

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the (empty) body
        message = await receive()
        outcome.append(message["type"])
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    started = time.perf_counter()
    response = await call(timeout_gateway(stubborn), receive_log=[])
    assert 0.09 <= time.perf_counter() - started < 0.5
    assert outcome == ["http.disconnect", "cancelled"]
    assert response.status == 504


@pytest.mark.parametrize("ends", ["raises", "answers 500, raises", "answers 400", "returns"])
async def test_an_app_reading_a_body_at_the_deadline_gets_the_configured_error(
    ends: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The client sent part of its body and waits; at the deadline the app is told "disconnect" and
    # stops as its framework does. Whatever it answers goes nowhere: the client gets the timeout's.
    gateway = timeout_gateway(upload(ends), error_message="Upload too slow")
    events: list[RequestEvent] = []
    gateway.events.subscribe(events.append)
    with caplog.at_level(logging.WARNING, logger="premier"):
        response = await call(gateway, "POST", body=b"first part", more_body=True)
    assert len(response.starts) == 1
    assert (response.status, response.json()) == (504, {"error": "Upload too slow", "status": 504})
    (event,) = events
    assert (event.status, event.timed_out) == (504, True)
    assert [r.getMessage() for r in caplog.records if r.name == "premier"] == []


async def test_an_app_that_raises_at_the_deadline_mid_response_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    async def streams_then_listens(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first chunk", "more_body": True})
        assert (await receive())["type"] == "http.disconnect"
        raise ClientLeft()

    with caplog.at_level(logging.WARNING, logger="premier"):
        response = await call(timeout_gateway(streams_then_listens), path="/stream")
    assert (len(response.starts), response.status, response.chunks) == (1, 200, [b"first chunk"])
    assert not response.finished  # the server closes the connection
    (record,) = [r for r in caplog.records if r.name == "premier"]
    assert "GET /stream ran past" in record.getMessage()


async def test_only_the_slow_requests_of_a_route_time_out() -> None:
    hang = asyncio.Event()
    app = Backend(hold=None, status=200)

    async def mixed(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await hang.wait()
        await app(scope, receive, send)

    gateway = timeout_gateway(mixed)
    results = await asyncio.gather(*(call(gateway, path="/slow" if i % 2 else "/fast") for i in range(10)))
    assert [r.status for r in results] == [200, 504] * 5


async def test_each_request_gets_its_own_full_deadline() -> None:
    async def slow_when_asked(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await asyncio.Event().wait()
        await Backend()(scope, receive, send)

    gateway = timeout_gateway(slow_when_asked, seconds=0.1)
    assert (await call(gateway, path="/fast")).status == 200
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    assert (await call(gateway, path="/slow")).status == 504
    assert time.perf_counter() - started >= 0.095  # not cut short by the earlier request's deadline
    started = time.perf_counter()
    assert (await call(gateway, path="/slow")).status == 504  # the deadline queue starts over
    assert 0.095 <= time.perf_counter() - started < 0.5


async def test_timeout_is_reported_in_the_request_event() -> None:
    gateway = timeout_gateway(Backend(hold=asyncio.Event()))
    events: list[RequestEvent] = []
    gateway.events.subscribe(events.append)
    await call(gateway)
    (event,) = events
    assert (event.status, event.timed_out) == (504, True)


# -- retry -----------------------------------------------------------------------------------------
class _SleepRecorder:
    """Stands in for the ``asyncio`` module inside ``premier.asgi.retry``: records the waits the retry
    step asks for instead of sleeping them. Sleeping is not the behaviour under test; the waits are."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> _SleepRecorder:
    recorder = _SleepRecorder()
    monkeypatch.setattr(premier.asgi.retry, "asyncio", recorder)
    return recorder


def retry_gateway(app: Any, **options: Any) -> ASGIGateway:
    more = options.pop("more", {})
    retry = {"max_attempts": 3, "wait": [0.1, 0.2], **options}
    return ASGIGateway(paths(("/*", {"retry": retry, **more})), app=app)


def flaky(failures: int, status: int = 503, headers: Any = ()) -> Backend:
    return Backend(
        status=lambda n: status if n <= failures else 200,
        headers=lambda n: headers if n <= failures else (),
        body=lambda n: f"attempt {n}".encode(),
        read_body=True,
    )


async def test_get_is_retried_until_it_succeeds(sleeps: _SleepRecorder) -> None:
    app = flaky(2)
    response = await call(retry_gateway(app))
    assert (response.status, response.body) == (200, b"attempt 3")
    assert len(response.starts) == 1  # the failed attempts' responses never reached the client
    assert sleeps.waits == [0.1, 0.2]


async def test_the_last_attempts_response_is_passed_on(sleeps: _SleepRecorder) -> None:
    app = flaky(10)
    response = await call(retry_gateway(app, max_attempts=4))
    assert (response.status, response.body) == (503, b"attempt 4")
    assert app.calls == 4
    assert sleeps.waits == [0.1, 0.2, 0.2]  # a wait list shorter than the attempts reuses its last value


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
async def test_idempotent_methods_are_retried(sleeps: _SleepRecorder, method: str) -> None:
    app = flaky(1)
    assert (await call(retry_gateway(app), method)).status == 200
    assert app.calls == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_methods_are_not_retried(sleeps: _SleepRecorder, method: str) -> None:
    app = flaky(1)
    response = await call(retry_gateway(app), method, body=b"payload")
    assert response.status == 503
    assert app.calls == 1
    assert app.bodies == [b"payload"]
    assert sleeps.waits == []


async def test_idempotency_key_makes_post_retryable_with_the_same_body(sleeps: _SleepRecorder) -> None:
    app = flaky(2)
    body = [b"{\"order\": ", b"42, \"note\": \"", "ünïcode".encode(), b"\"}"]
    response = await call(retry_gateway(app), "POST", headers=[("idempotency-key", "abc-1")], body=body)
    assert response.status == 200
    assert app.bodies == [b"".join(body)] * 3


async def test_bodies_over_max_body_bytes_are_sent_once_and_intact(sleeps: _SleepRecorder) -> None:
    app = flaky(1)
    body = [b"a" * 8, b"b" * 8, b"c" * 8, b"d" * 3]
    response = await call(retry_gateway(app, max_body_bytes=10), "PUT", body=body)
    assert response.status == 503  # not retried: it could not be replayed
    assert app.bodies == [b"".join(body)]
    assert sleeps.waits == []


async def test_a_body_over_max_body_bytes_in_one_part_is_sent_once_too(sleeps: _SleepRecorder) -> None:
    app = flaky(1)
    response = await call(retry_gateway(app, max_body_bytes=10), "PUT", body=[b"x" * 50])
    assert response.status == 503
    assert app.bodies == [b"x" * 50]
    assert sleeps.waits == []


async def test_body_within_max_body_bytes_is_retried(sleeps: _SleepRecorder) -> None:
    app = flaky(1)
    response = await call(retry_gateway(app, max_body_bytes=10), "PUT", body=[b"12345", b"67890"])
    assert response.status == 200
    assert app.bodies == [b"1234567890"] * 2


async def test_only_retry_on_status_statuses_are_retried(sleeps: _SleepRecorder) -> None:
    app = flaky(1, status=500)
    assert (await call(retry_gateway(app))).status == 500  # 500 is not in the default 502/503/504
    app = flaky(1, status=500)
    assert (await call(retry_gateway(app, retry_on_status=[500]))).status == 200


async def test_exceptions_before_the_response_are_retried(sleeps: _SleepRecorder) -> None:
    calls = 0

    async def unstable(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("reset by peer")
        await Backend()(scope, receive, send)

    response = await call(retry_gateway(unstable, exceptions=["ConnectionError"]))
    assert response.status == 200
    assert calls == 3


async def test_exceptions_not_configured_propagate_at_once(sleeps: _SleepRecorder) -> None:
    calls = 0

    async def buggy(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await call(retry_gateway(buggy, exceptions=["ConnectionError"]))
    assert calls == 1


async def test_exceptions_after_the_response_started_are_not_retried(sleeps: _SleepRecorder) -> None:
    calls = 0

    async def fails_mid_body(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise ConnectionError("lost the database mid-stream")

    sent: list[Any] = []
    with pytest.raises(ConnectionError):
        await call(retry_gateway(fails_mid_body), on_send=sent.append)
    assert calls == 1
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


async def test_upstream_retry_after_longer_than_the_wait_is_honoured(sleeps: _SleepRecorder) -> None:
    app = flaky(2, headers=[("retry-after", "7")])
    assert (await call(retry_gateway(app, wait=0.5))).status == 200
    assert sleeps.waits == [7.0, 7.0]


async def test_upstream_retry_after_shorter_than_the_wait_keeps_the_wait(sleeps: _SleepRecorder) -> None:
    app = flaky(1, headers=[("retry-after", "1")])
    assert (await call(retry_gateway(app, wait=3))).status == 200
    assert sleeps.waits == [3.0]


async def test_retry_after_over_a_minute_ends_the_retrying(sleeps: _SleepRecorder) -> None:
    app = flaky(5, headers=[("retry-after", "120")])
    response = await call(retry_gateway(app))
    assert response.status == 503
    assert response.header("retry-after") == "120"  # passed on for the client to honour
    assert app.calls == 1
    assert sleeps.waits == []


async def test_gateway_rejections_are_never_retried(sleeps: _SleepRecorder) -> None:
    app = Backend()
    gateway = retry_gateway(
        app, retry_on_status=[429, 503], more={"rate_limit": {"quota": 1, "duration": 100}}
    )
    assert (await call(gateway)).status == 200
    limited = await call(gateway)
    assert limited.status == 429
    assert app.calls == 1
    assert sleeps.waits == []


async def test_cancelled_requests_are_not_retried(sleeps: _SleepRecorder) -> None:
    hold = asyncio.Event()
    app = Backend(hold=hold)
    request = asyncio.create_task(call(retry_gateway(app)))
    await app.entered.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert app.calls == 1
    assert sleeps.waits == []


@pytest.mark.parametrize("ends", ["raises", "answers 503"])
async def test_a_request_whose_client_left_is_not_retried(sleeps: _SleepRecorder, ends: str) -> None:
    # The body is whole (the retry step has it to replay); the client leaves while the app works.
    calls = 0

    async def listens(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await read_body(receive)
        assert (await receive())["type"] == "http.disconnect"
        if ends == "raises":
            raise ConnectionError("the client went away")  # (Starlette: ClientDisconnect)
        await Backend(status=503)(scope, receive, send)

    gone = asyncio.Event()
    gone.set()
    gateway = retry_gateway(listens)
    if ends == "raises":
        with pytest.raises(ConnectionError):
            await call(gateway, "PUT", body=b"payload", disconnect=gone)
    else:
        await call(gateway, "PUT", body=b"payload", disconnect=gone)
    assert calls == 1
    assert sleeps.waits == []


async def test_timeout_bounds_all_attempts_together() -> None:
    # Real waits here (0.03 s between attempts): the timeout, not the retry, ends the request.
    app = flaky(10)
    gateway = ASGIGateway(
        paths(("/*", {"retry": {"max_attempts": 50, "wait": 0.03}, "timeout": {"seconds": 0.1}})), app=app
    )
    started = time.perf_counter()
    response = await call(gateway)
    assert response.status == 504
    assert time.perf_counter() - started < 0.5
    assert 2 <= app.calls <= 5


def test_timeout_mid_response_closes_the_connection_under_uvicorn() -> None:
    # Where the server matters: a response cut off by the deadline must reach the client as an
    # incomplete body on a closed connection, never as a second response or a silent hang.
    import httpx

    from _servers import serve

    async def stalls_mid_stream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ok":
            await Backend()(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first chunk", "more_body": True})
        await asyncio.Event().wait()

    gateway = timeout_gateway(stalls_mid_stream, seconds=0.1)
    received = b""
    with serve(gateway) as base_url, httpx.Client(base_url=base_url, timeout=5) as client:
        started = time.perf_counter()
        with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", "/stream") as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += chunk
        assert time.perf_counter() - started < 2
        assert received == b"first chunk"
        assert client.get("/ok").status_code == 200  # and the gateway serves the next request


async def test_upstream_retry_after_as_an_http_date(sleeps: _SleepRecorder) -> None:
    from email.utils import formatdate

    app = flaky(1, headers=[("retry-after", formatdate(time.time() + 5, usegmt=True))])
    assert (await call(retry_gateway(app, wait=0))).status == 200
    (wait,) = sleeps.waits
    assert 3 <= wait <= 5


async def test_a_response_cut_off_by_the_timeout_is_not_cached() -> None:
    calls = 0

    async def stalls_once(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        if calls == 1:
            await asyncio.Event().wait()
        await send({"type": "http.response.body", "body": b" and the rest"})

    gateway = ASGIGateway(paths(("/*", {"cache": {}, "timeout": {"seconds": 0.05}})), app=stalls_once)
    assert not (await call(gateway)).finished
    whole = await call(gateway)
    assert (whole.x_cache, whole.body) == ("MISS", b"part and the rest")
    assert (await call(gateway)).x_cache == "HIT"


async def test_a_listening_app_stopped_by_the_deadline_counts_as_a_breaker_failure() -> None:
    async def listens(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await receive()  # returns http.disconnect at the deadline; the app gives up without answering

    features = {"timeout": {"seconds": 0.02}, "circuit_breaker": {"failure_threshold": 2}}
    gateway = ASGIGateway(paths(("/*", features)), app=listens)
    assert [(await call(gateway)).status for _ in range(3)] == [504, 504, 503]


@pytest.mark.parametrize("ends", ["raises", "answers 500, raises", "answers 400"])
async def test_an_app_that_answers_the_deadlines_disconnect_counts_as_a_breaker_failure(ends: str) -> None:
    features = {"timeout": {"seconds": 0.02}, "circuit_breaker": {"failure_threshold": 2}}
    gateway = ASGIGateway(paths(("/*", features)), app=upload(ends))
    assert [(await call(gateway, "POST", body=b"part", more_body=True)).status for _ in range(3)] == [504, 504, 503]


async def test_an_attempt_stopped_by_the_deadline_is_not_retried(sleeps: _SleepRecorder) -> None:
    calls = 0

    async def listens(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await read_body(receive)
        await receive()  # "disconnect", at the deadline
        raise ClientLeft()

    gateway = ASGIGateway(paths(("/*", {"retry": {"max_attempts": 3}, "timeout": {"seconds": 0.02}})), app=listens)
    assert (await call(gateway, "PUT", body=b"payload")).status == 504
    assert calls == 1
    assert sleeps.waits == []


async def test_a_retryable_answer_then_the_deadline_is_not_retried(sleeps: _SleepRecorder) -> None:
    # A 503 head (swallowed, to be retried), then the app listens, as a streaming response or Django
    # does, until the deadline's "disconnect": it returns normally, and the timeout answers, not a retry.
    calls = 0

    async def answers_then_listens(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await read_body(receive)
        await receive()  # "disconnect", at the deadline
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    gateway = ASGIGateway(paths(("/*", {"retry": {"max_attempts": 3}, "timeout": {"seconds": 0.02}})),
                          app=answers_then_listens)
    assert (await call(gateway)).status == 504
    assert calls == 1
    assert sleeps.waits == []


async def test_a_retried_request_spends_one_rate_limit_token(sleeps: _SleepRecorder) -> None:
    # quota 2: the first request needs 3 attempts, yet the client still has its second request.
    app = flaky(2)
    gateway = retry_gateway(app, more={"rate_limit": {"quota": 2, "duration": 100}})
    first = await call(gateway)
    assert (first.status, first.body) == (200, b"attempt 3")
    assert first.header("ratelimit") is not None and first.header("ratelimit").startswith('"premier";r=1;')
    assert (await call(gateway)).status == 200
    assert (await call(gateway)).status == 429


async def test_upstream_retry_after_as_a_date_without_zone(sleeps: _SleepRecorder) -> None:
    # "-0000" dates parse without a time zone: read as UTC, never a crash inside the retry step.
    from email.utils import formatdate

    when = formatdate(time.time() + 3, usegmt=True).replace("GMT", "-0000")
    app = flaky(1, headers=[("retry-after", when)])
    response = await call(retry_gateway(app))
    assert (response.status, response.body) == (200, b"attempt 2")
    assert len(sleeps.waits) == 1 and 1.0 <= sleeps.waits[0] <= 4.0
