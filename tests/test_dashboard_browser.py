"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright) against a real
uvicorn serving ``ASGIGateway`` around a small app, with traffic flowing from a background thread.

Through the page only: sign in with the token, watch the live numbers move, get a validation error
marked in the editor, lower the rate limit's quota and apply it; then, over plain HTTP, the new limit
is enforced. With ``PREMIER_SCREENSHOT=1`` the page under traffic is saved to ``docs/dashboard.png``.

Needs the ``playwright`` Python package (no browser download: ``playwright install`` is never run) and
``/usr/bin/chromium``; without them the test skips, unless ``PREMIER_REQUIRE_BROWSER=1`` (as CI sets),
which makes that a failure.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from _servers import serve
from premier.asgi import ASGIGateway, GatewayConfig

CHROMIUM = "/usr/bin/chromium"
TOKEN = "test-token"
DASHBOARD = "/premier/dashboard"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


_problem = _browser_problem()
if _problem:
    if os.environ.get("PREMIER_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"PREMIER_REQUIRE_BROWSER=1 but {_problem}")
    pytest.skip(_problem, allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=10_000)

CONFIG = f"""
premier:
  dashboard:
    path: {DASHBOARD}
    token: {TOKEN}
    slow_threshold: 0.2
  paths:
    - pattern: /api/cached/*
      features:
        cache: {{expire_s: 60}}
        circuit_breaker: {{failure_threshold: 50}}
    - pattern: /api/slow
      features:
        timeout: {{seconds: 0.3}}
    - pattern: /api/*
      features:
        rate_limit: {{quota: 1000, duration: 3600, key: "header:X-Client", algorithm: sliding_window}}
"""


async def small_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The wrapped app: JSON for everything, 404 under /api/missing, half a second for /api/slow."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/api/slow":
        await asyncio.sleep(0.5)
    elif len(path) % 3 == 0:
        await asyncio.sleep(0.003)  # some spread in the latencies
    status = 404 if path.startswith("/api/missing") else 200
    body = b'{"ok": true}' if status == 200 else b'{"error": "not found"}'
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def gateway_url() -> Iterator[str]:
    gateway = ASGIGateway(GatewayConfig.from_yaml(CONFIG), app=small_app)
    with serve(gateway) as url:
        yield url


@contextmanager
def browser_page() -> Iterator[tuple[Page, list[str]]]:
    """A page in headless Chromium, and the list of problems it reports: console errors (a Content
    Security Policy violation among them) and uncaught exceptions. (A failed request is only the
    browser's report of a status the test asks for, such as a refused login's 401.)"""
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.set_default_timeout(10_000)
            page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                    and problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            yield page, problems
        finally:
            browser.close()


class Traffic:
    """Requests to the gateway from background threads until stopped: fast ones (some 404s, some cached;
    four rate-limit keys; the rate swinging so the chart has a shape), and a slow one (timed out by the
    gateway) now and then."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._fast, daemon=True), threading.Thread(target=self._slow, daemon=True)]

    def _fast(self) -> None:
        paths = ["/api/users/1", "/api/users/22", "/api/orders", "/api/cached/a", "/api/cached/b", "/api/missing"]
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stop.is_set():
                client.get(paths[self.sent % len(paths)], headers={"X-Client": f"traffic-{self.sent % 4}"})
                self.sent += 1
                self.stop.wait(0.004 + 0.012 * (1 + math.sin(time.monotonic() / 2)))

    def _slow(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stop.is_set():
                client.get("/api/slow")
                self.stop.wait(0.7)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def _number(page: Page, testid: str) -> float:
    text = page.get_by_test_id(testid).inner_text()
    return float(re.sub(r"[^0-9.]", "", text) or "nan")


def _statuses(url: str, client_key: str, count: int) -> list[int]:
    with httpx.Client(base_url=url, headers={"X-Client": client_key}, timeout=5) as client:
        return [client.get("/api/users/1").status_code for _ in range(count)]


def test_dashboard_in_a_browser(gateway_url: str, tmp_path: Path) -> None:
    with Traffic(gateway_url), browser_page() as (page, problems):
        page.goto(f"{gateway_url}{DASHBOARD}/")
        # Signed out: only the login form; a wrong token is refused, the right one lets us in.
        expect(page.get_by_test_id("login")).to_be_visible()
        expect(page.get_by_test_id("dashboard")).to_be_hidden()
        page.get_by_test_id("login-token").fill("not-the-token")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("login-error")).to_have_text("Wrong token.")
        page.get_by_test_id("login-token").fill(TOKEN)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("dashboard")).to_be_visible()
        expect(page.get_by_test_id("login")).to_be_hidden()
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["premier_session"]["httpOnly"]
        assert "token" not in page.url

        # Live: the stream is up and the numbers move while traffic flows.
        expect(page.get_by_test_id("connection")).to_have_text("live")
        page.wait_for_function("() => Number(document.getElementById('tile-total').textContent.replace(/,/g, '')) > 0")
        first = _number(page, "tile-total")
        page.wait_for_function(
            "n => Number(document.getElementById('tile-total').textContent.replace(/,/g, '')) > n", arg=first)
        assert _number(page, "tile-rate") > 0
        expect(page.get_by_test_id("routes")).to_contain_text("/api/*")
        expect(page.get_by_test_id("routes")).to_contain_text("/api/cached/*")
        expect(page.get_by_test_id("tile-cache")).to_have_text(re.compile(r"^\d+(\.\d)?%$"))
        expect(page.get_by_test_id("breakers")).to_contain_text("closed")
        expect(page.get_by_test_id("slow")).to_contain_text("/api/slow")
        page.wait_for_function("() => Number(document.getElementById('tile-timedout').textContent) > 0")
        if os.environ.get("PREMIER_SCREENSHOT") == "1":
            # For the README's picture: half a minute of traffic in the charts (uptime "30s" or more).
            page.wait_for_function("() => /^([3-9]\\ds|\\d+[mhd])/.test(document.getElementById('uptime').textContent)",
                                   timeout=45_000)

        # The editor holds the running configuration (without the token).
        editor = page.get_by_test_id("config-editor")
        expect(editor).to_have_value(re.compile(r"quota: 1000\b"))
        running = editor.input_value()
        assert TOKEN not in running

        # An invalid quota: the error is listed with its path and its line marked in the gutter.
        editor.fill(re.sub(r"quota: 1000\b", "quota: 0", running))
        page.get_by_test_id("config-validate").click()
        errors = page.get_by_test_id("config-errors")
        expect(errors).to_be_visible()
        expect(errors).to_contain_text("rate_limit.quota")
        bad_line = next(i for i, line in enumerate(editor.input_value().splitlines(), 1) if "quota: 0" in line)
        expect(page.get_by_test_id("gutter-error")).to_have_text(str(bad_line))
        # Applying it is refused and changes nothing.
        page.get_by_test_id("config-apply").click()
        expect(page.get_by_test_id("config-message")).to_contain_text("nothing was changed")
        assert _statuses(gateway_url, f"before-{uuid.uuid4().hex}", 4) == [200] * 4

        # A quota of 3, applied through the page.
        editor.fill(re.sub(r"quota: 1000\b", "quota: 3", running))
        page.get_by_test_id("config-validate").click()
        expect(page.get_by_test_id("config-message")).to_have_text("Valid.")
        expect(errors).to_be_hidden()
        expect(page.get_by_test_id("gutter-error")).to_have_count(0)
        page.get_by_test_id("config-apply").click()
        expect(page.get_by_test_id("config-message")).to_have_text(re.compile(r"^Applied"))

        # The traffic's own key is over the new quota now: rate-limited requests show up.
        page.wait_for_function("() => Number(document.getElementById('tile-limited').textContent.replace(/,/g, '')) > 0")
        expect(page.get_by_test_id("connection")).to_have_text("live")
        editor.evaluate("area => { area.scrollTop = 0; area.setSelectionRange(0, 0); area.blur(); }")
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("PREMIER_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)

    # Over plain HTTP: a fresh key gets three requests, and the fourth is refused.
    assert _statuses(gateway_url, f"after-{uuid.uuid4().hex}", 4) == [200, 200, 200, 429]
    assert not problems, problems


def test_open_dashboard_polls_and_saves(tmp_path: Path) -> None:
    """With ``open_on_loopback`` (no token) the page needs no login; with the stream refused it polls
    ``api/stats`` instead, and the numbers still move. With ``save_config`` and a file, an edit is
    applied and written back (the previous file kept as a backup)."""
    source = tmp_path / "gateway.yaml"
    source.write_text("""# the gateway of this test
premier:
  dashboard: {path: /ops, open_on_loopback: true, save_config: true}
  paths:
    - pattern: /api/*
      features: {rate_limit: {quota: 1000, duration: 3600}}  # generous
""")
    gateway = ASGIGateway(GatewayConfig.from_file(source), app=small_app, config_file=source)
    with serve(gateway) as url, Traffic(url), browser_page() as (page, problems):
        page.route("**/ops/api/stream", lambda route: route.abort())
        page.goto(f"{url}/ops/")
        expect(page.get_by_test_id("dashboard")).to_be_visible()
        expect(page.get_by_test_id("login")).to_be_hidden()
        expect(page.get_by_test_id("connection")).to_have_text("polling")
        page.wait_for_function("() => Number(document.getElementById('tile-total').textContent.replace(/,/g, '')) > 0")
        first = _number(page, "tile-total")
        page.wait_for_function(
            "n => Number(document.getElementById('tile-total').textContent.replace(/,/g, '')) > n", arg=first)

        # The file as written (comments kept) is in the editor; "save" applies it and rewrites the file.
        editor = page.get_by_test_id("config-editor")
        expect(editor).to_have_value(source.read_text())
        editor.fill(source.read_text().replace("quota: 1000", "quota: 500"))
        page.get_by_test_id("config-save").click()
        expect(page.get_by_test_id("config-message")).to_contain_text("saved")
    assert "quota: 500, duration: 3600}}  # generous" in source.read_text()
    assert "quota: 1000" in source.with_name("gateway.yaml.bak").read_text()
    assert gateway.config.paths[0].features.rate_limit.quota == 500
    assert not problems, problems
