"""The dashboard's API, ``/metrics`` and hot reload, over real HTTP against a gateway under uvicorn."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from _servers import serve
from premier.asgi import ASGIGateway, GatewayConfig

TOKEN = "s3cret-dashboard-token"
P = "/premier/dashboard"


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        import asyncio

        await asyncio.sleep(0.3)
    body = b"hello"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": body})


YAML = f"""\
premier:
  dashboard: {{token: "{TOKEN}", slow_threshold: 0.2}}
  paths:
    - pattern: "/limited/*"
      features:
        rate_limit: {{quota: 3, duration: 60, key: global, error_status: 503, algorithm: sliding_window}}
    - pattern: "/cached/*"
      features:
        cache: {{expire_s: 60}}
    - pattern: "/slow"
      features:
        timeout: {{seconds: 0.1, error_status: 504}}
"""


class Client:
    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, str], bytes, list[tuple[str, str]]]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = [(k.lower(), v) for k, v in response.getheaders()]
            for name, value in raw:
                if name == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key] = rest.split(";", 1)[0]
            return response.status, dict(raw), response.read(), raw
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        status, _, data, _ = self.request(method, path, body, {k.replace("_", "-"): v for k, v in headers.items()})
        return status, json.loads(data)


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def running(yaml_text: str = YAML, *, config_file: Path | None = None, **options: Any) -> Iterator[tuple[Client, ASGIGateway]]:
    config = GatewayConfig.from_file(config_file) if config_file else GatewayConfig.from_yaml(yaml_text)
    gateway = ASGIGateway(config, app=hello, config_file=config_file, **options)
    with serve(gateway) as url:
        yield Client(url), gateway


def test_the_api_and_metrics_need_the_token_the_page_does_not() -> None:
    with running() as (client, _):
        assert client.request("GET", f"{P}/api/stats")[0] == 401
        assert client.request("GET", "/metrics")[0] == 401
        assert client.request("GET", f"{P}/api/stats", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert client.request("GET", f"{P}/api/stats", headers=bearer())[0] == 200
        assert client.request("GET", "/metrics", headers=bearer())[0] == 200
        assert client.json("GET", f"{P}/api/session") == (200, {"authenticated": False, "token_required": True})


def test_login_sets_an_httponly_cookie_and_posts_need_the_csrf_token() -> None:
    with running() as (client, _):
        assert client.json("POST", f"{P}/api/login", {"token": "nope"})[0] == 401
        status, _, body, raw = client.request("POST", f"{P}/api/login", {"token": TOKEN})
        assert status == 200
        csrf = json.loads(body)["csrf"]
        session_cookie = next(v for k, v in raw if k == "set-cookie" and v.startswith("premier_session="))
        assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and f"Path={P}" in session_cookie
        assert TOKEN not in body.decode() and all(TOKEN not in v for _, v in raw)
        assert client.json("GET", f"{P}/api/session")[1]["authenticated"] is True
        assert client.request("GET", f"{P}/api/stats")[0] == 200
        ok = {"yaml": "premier: {keyspace: x, dashboard: {}}"}
        assert client.json("POST", f"{P}/api/config/validate", ok)[0] == 403  # no CSRF header
        assert client.json("POST", f"{P}/api/config/validate", ok, X_CSRF_Token="forged")[0] == 403
        assert client.json("POST", f"{P}/api/config/validate", ok, X_CSRF_Token=csrf) == (200, {"ok": True})


def test_failed_logins_are_limited_and_never_log_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with running() as (client, _):
        statuses = [client.json("POST", f"{P}/api/login", {"token": f"guess-{i}"})[0] for i in range(11)]
        assert statuses == [401] * 10 + [429]
        assert client.json("POST", f"{P}/api/login", {"token": TOKEN})[0] == 429  # even the right one, for a while
        assert client.request("GET", f"{P}/api/stats", headers=bearer())[0] == 429
        assert client.request("GET", f"{P}/")[0] == 200  # the page itself stays reachable
    with running() as (client, _):
        wrong = {"Authorization": "Bearer guess"}
        assert [client.request("GET", "/metrics", headers=wrong)[0] for _ in range(11)] == [401] * 10 + [429]
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


def test_open_on_loopback_needs_no_token_from_loopback() -> None:
    with running("premier: {dashboard: {open_on_loopback: true}}") as (client, _):
        assert client.json("GET", f"{P}/api/session") == (200, {"authenticated": True, "token_required": False})
        assert client.request("GET", f"{P}/api/stats")[0] == 200


def test_a_dashboard_without_a_token_or_loopback_opening_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"premier.dashboard.token: required"):
        GatewayConfig.from_yaml("premier: {dashboard: {path: /admin}}")


def test_malformed_api_calls_get_4xx() -> None:
    with running() as (client, _):
        status, _, _, _ = client.request("POST", f"{P}/api/config", headers={**bearer(), "Content-Type": "application/json"})
        assert status == 400
        assert client.json("POST", f"{P}/api/config", ["not", "an", "object"], **{"Authorization": f"Bearer {TOKEN}"})[0] == 400
        assert client.json("POST", f"{P}/api/config", {"yaml": 5}, Authorization=f"Bearer {TOKEN}")[0] == 400
        big = {"yaml": "x" * (1024 * 1024 + 10)}
        assert client.json("POST", f"{P}/api/config", big, Authorization=f"Bearer {TOKEN}")[0] == 413
        assert client.json("GET", f"{P}/api/nothing", Authorization=f"Bearer {TOKEN}")[0] == 404
        assert client.request("GET", f"{P}/static/../app.py")[0] == 404


def test_validation_names_the_field_its_line_and_apply_keeps_the_running_config() -> None:
    with running() as (client, gateway):
        broken = YAML.replace("quota: 3", "quota: 0")
        status, result = client.json("POST", f"{P}/api/config/validate", {"yaml": broken}, Authorization=f"Bearer {TOKEN}")
        assert status == 200 and result["ok"] is False
        (error,) = result["errors"]
        assert error["path"] == "premier.paths[0].features.rate_limit.quota"
        assert "greater than 0" in error["message"] and error["line"] == 6
        assert client.json("POST", f"{P}/api/config", {"yaml": broken}, Authorization=f"Bearer {TOKEN}")[0] == 400
        assert gateway.config.paths[0].features.rate_limit is not None
        assert gateway.config.paths[0].features.rate_limit.quota == 3
        syntax = client.json("POST", f"{P}/api/config/validate", {"yaml": "premier: [unclosed"},
                             Authorization=f"Bearer {TOKEN}")[1]
        assert syntax["ok"] is False and "YAML syntax error" in syntax["errors"][0]["message"]


def test_applying_a_config_changes_the_limit_that_is_enforced() -> None:
    with running() as (client, _):
        assert [client.request("GET", "/limited/a")[0] for _ in range(4)] == [200, 200, 200, 503]
        status, result = client.json("POST", f"{P}/api/config", {"yaml": YAML.replace("quota: 3", "quota: 5")},
                                     Authorization=f"Bearer {TOKEN}")
        assert (status, result) == (200, {"ok": True, "saved": False})
        # the route is unchanged but for its quota: its counter (3 used) carries over
        assert [client.request("GET", "/limited/a")[0] for _ in range(3)] == [200, 200, 503]


def test_the_config_view_never_shows_the_token_and_saving_keeps_a_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    config_file = tmp_path / "gateway.yaml"
    original = YAML.replace(f'token: "{TOKEN}"', 'token: "${DASHBOARD_TOKEN}", save_config: true')
    config_file.write_text(original)
    with running(config_file=config_file) as (client, gateway):
        status, view = client.json("GET", f"{P}/api/config", Authorization=f"Bearer {TOKEN}")
        assert status == 200 and view["yaml"] == original and view["can_save"] is True
        assert TOKEN not in json.dumps(view)
        edited = original.replace("quota: 3", "quota: 7")
        status, result = client.json("POST", f"{P}/api/config", {"yaml": edited, "save": True}, Authorization=f"Bearer {TOKEN}")
        assert (status, result) == (200, {"ok": True, "saved": True})
        assert config_file.read_text() == edited
        assert (tmp_path / "gateway.yaml.bak").read_text() == original
        assert gateway.config.paths[0].features.rate_limit.quota == 7  # type: ignore[union-attr]

    with running() as (client, _):  # no file: a dump, without the secret
        view = client.json("GET", f"{P}/api/config", Authorization=f"Bearer {TOKEN}")[1]
        assert TOKEN not in view["yaml"] and "quota: 3" in view["yaml"] and view["can_save"] is False
        # the dump applied as it is keeps the running token
        assert client.json("POST", f"{P}/api/config", {"yaml": view["yaml"]}, Authorization=f"Bearer {TOKEN}")[0] == 200
        assert client.request("GET", f"{P}/api/stats", headers=bearer())[0] == 200


def test_stats_count_every_request_by_route_and_outcome() -> None:
    with running() as (client, _):
        for _ in range(4):
            client.request("GET", "/limited/x")
        for _ in range(3):
            client.request("GET", "/cached/page")
        client.request("GET", "/slow")
        client.request("GET", "/elsewhere")
        status, stats = client.json("GET", f"{P}/api/stats", Authorization=f"Bearer {TOKEN}")
    assert status == 200
    totals = stats["totals"]
    assert totals["requests"] == 9
    assert totals["status"]["2xx"] == 7 and totals["status"]["5xx"] == 2
    assert totals["rate_limited"] == 1 and totals["timed_out"] == 1
    assert totals["latency_ms"]["p99"] >= totals["latency_ms"]["p50"] > 0
    routes = {r["route"]: r for r in stats["routes"]}
    assert routes["/limited/*"]["rate_limited"] == 1 and routes["/limited/*"]["cache"] is None
    assert routes["/cached/*"]["cache"] == {"hits": 2, "misses": 1, "hit_ratio": round(2 / 3, 4)}
    assert routes["/slow"]["timed_out"] == 1
    assert routes["(unmatched)"]["requests"] == 1
    assert [s["path"] for s in stats["slow"]] == []  # the slow request was cut at 0.1 s, under 0.2 s
    assert sum(point["requests"] for point in stats["series"]) == 9 and len(stats["series"]) == 60
    assert stats["backends"] == [] and stats["websockets"] == {"open": 0, "total": 0}
    assert "/premier/dashboard" not in routes  # the dashboard's own requests are not traffic


def test_metrics_are_valid_prometheus_text_labelled_by_route_pattern() -> None:
    with running() as (client, _):
        for path in ("/limited/1", "/limited/2", "/cached/a", "/cached/a", "/other/123", "/other/456"):
            client.request("GET", path)
        status, headers, body, _ = client.request("GET", "/metrics", headers=bearer())
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["premier_requests"].samples}
    assert requests[("/limited/*", "2xx")] == 2 and requests[("(unmatched)", "2xx")] == 2
    assert not any("/other/123" in route for route, _ in requests)  # patterns, not raw paths
    lookups = {(s.labels["route"], s.labels["result"]): s.value for s in families["premier_cache_lookups"].samples}
    assert lookups == {("/cached/*", "hit"): 1, ("/cached/*", "miss"): 1}
    histogram = families["premier_request_duration_seconds"]
    counts = [s for s in histogram.samples if s.name.endswith("_count") and s.labels["route"] == "/limited/*"]
    assert counts[0].value == 2


def test_the_stream_sends_a_fresh_snapshot_about_every_interval() -> None:
    with running() as (client, gateway):
        assert gateway._dashboard is not None
        gateway._dashboard.stream_interval = 0.05
        connection = http.client.HTTPConnection(client.host, client.port, timeout=10)
        connection.request("GET", f"{P}/api/stream", headers=bearer())
        response = connection.getresponse()
        assert response.getheader("content-type") == "text/event-stream"

        def next_event() -> dict[str, Any]:
            line = b""
            while not line.startswith(b"data: "):
                line = response.fp.readline()
                if line.startswith(b"data: "):
                    break
            return json.loads(line[6:])  # type: ignore[no-any-return]

        first = next_event()
        client.request("GET", "/cached/z")
        deadline = time.monotonic() + 5
        while (later := next_event())["totals"]["requests"] == first["totals"]["requests"]:
            assert time.monotonic() < deadline
        connection.close()
    assert later["totals"]["requests"] == first["totals"]["requests"] + 1


def test_fifty_reloads_under_steady_traffic_fail_no_request() -> None:
    with running() as (client, gateway):
        failures: list[int] = []
        done = threading.Event()

        def traffic() -> None:
            while not done.is_set():
                status = client.request("GET", "/cached/steady")[0]
                if status != 200:
                    failures.append(status)

        threads = [threading.Thread(target=traffic) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            for i in range(50):
                yaml_text = YAML.replace("expire_s: 60", f"expire_s: {60 + i}")
                assert client.json("POST", f"{P}/api/config", {"yaml": yaml_text}, Authorization=f"Bearer {TOKEN}")[0] == 200
        finally:
            done.set()
            for thread in threads:
                thread.join(10)
        assert gateway.config.paths[1].features.cache is not None
        assert gateway.config.paths[1].features.cache.expire_s == 109
        stats = client.json("GET", f"{P}/api/stats", Authorization=f"Bearer {TOKEN}")[1]
    assert failures == []
    assert stats["totals"]["requests"] > 50


def test_the_page_lives_behind_a_trailing_slash() -> None:
    with running() as (client, _):
        status, headers, _, _ = client.request("GET", f"{P}?tab=routes")
        assert status == 308 and headers["location"] == f"{P}/?tab=routes"
        status, headers, body, _ = client.request("GET", f"{P}/")
        assert status == 200 and headers["content-type"].startswith("text/html") and b"<html" in body.lower()
        assert "default-src 'self'" in headers["content-security-policy"]
        status, headers, _, _ = client.request("GET", f"{P}/static/app.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")


def test_open_on_loopback_does_not_open_for_forwarded_requests() -> None:
    cfg = "premier: {dashboard: {open_on_loopback: true, token: " + TOKEN + "}}"
    with running(cfg) as (client, _):
        assert client.request("GET", f"{P}/api/stats")[0] == 200
        # a local proxy relaying someone else: not the loopback client the setting trusts
        assert client.request("GET", f"{P}/api/stats", headers={"X-Forwarded-For": "203.0.113.5"})[0] == 401
        assert client.json("POST", f"{P}/api/config", {"yaml": "premier: {}"},
                           X_Forwarded_For="203.0.113.5")[0] == 401
    # a peer that is a trusted proxy speaks for others, forwarding header or not
    with running(cfg.replace("premier: {", "premier: {trusted_proxies: [127.0.0.1], ")) as (client, _):
        assert client.request("GET", f"{P}/api/stats")[0] == 401


def test_a_cross_site_page_cannot_apply_a_config_nor_a_rebound_name_open_the_dashboard() -> None:
    with running("premier: {dashboard: {open_on_loopback: true}}") as (client, gateway):
        before = gateway.config
        apply = f"{P}/api/config"
        body = json.dumps({"yaml": "premier: {servers: ['http://evil.example.com'], dashboard: {open_on_loopback: true}}"})
        # a form or no-cors fetch can only send "simple" content types: never JSON
        status, _, answer, _ = _raw_post(client, apply, body, {"Content-Type": "text/plain"})
        assert status == 403 and b"application/json" in answer
        # JSON with another site's Origin (a page that got a preflight answered elsewhere: not here)
        status, _, _, _ = _raw_post(client, apply, body, {"Content-Type": "application/json",
                                                          "Origin": "https://attacker.example"})
        assert status == 403
        status, _, _, _ = _raw_post(client, apply, body, {"Content-Type": "application/json",
                                                          "Sec-Fetch-Site": "cross-site"})
        assert status == 403
        # DNS rebinding: a page of another name resolved to 127.0.0.1 is not the loopback the setting opens
        assert client.request("GET", f"{P}/api/config", headers={"Host": f"attacker.example:{client.port}"})[0] == 401
        assert gateway.config is before
        # the dashboard's own page: JSON, from its own origin
        own = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{client.port}",
               "Sec-Fetch-Site": "same-origin"}
        status, _, _, _ = _raw_post(client, f"{P}/api/config/validate", json.dumps({"yaml": "premier: {}"}), own)
        assert status == 200


def test_scripts_with_the_token_and_pages_behind_a_host_rewriting_proxy_are_not_refused() -> None:
    with running() as (client, _):  # a deploy script: the bearer token, curl's default content type
        status, _, _, _ = _raw_post(client, f"{P}/api/config/validate", json.dumps({"yaml": "premier: {}"}),
                                    {"Content-Type": "application/x-www-form-urlencoded", **bearer()})
        assert status == 200
    with running("premier: {dashboard: {open_on_loopback: true}}") as (client, _):
        # the dashboard's page behind nginx's default (Host: the upstream address), as the browser says it
        behind = {"Content-Type": "application/json", "Origin": "https://dash.example.com",
                  "Sec-Fetch-Site": "same-origin", "Host": f"127.0.0.1:{client.port}"}
        status, _, _, _ = _raw_post(client, f"{P}/api/config/validate", json.dumps({"yaml": "premier: {}"}), behind)
        assert status == 200


def test_the_written_out_view_hides_a_storage_password_and_applying_it_keeps_the_password() -> None:
    url = "redis://default:STORE-PW@127.0.0.1:1/0"  # (never connected to: the view and Apply are all that run)
    with running(YAML.replace("premier:\n", f"premier:\n  storage: {{url: '{url}'}}\n", 1)) as (client, gateway):
        view = client.json("GET", f"{P}/api/config", **bearer())[1]["yaml"]
        assert "STORE-PW" not in view and "default:***@127.0.0.1:1/0" in view
        assert client.json("POST", f"{P}/api/config", {"yaml": view.replace("quota: 3", "quota: 4")}, **bearer())[0] == 200
        assert gateway.config.storage is not None and gateway.config.storage.url == url


def test_odd_login_and_json_bodies_are_4xx_not_500() -> None:
    with running() as (client, _):
        assert client.json("POST", f"{P}/api/login", {"token": "\ud800abc"})[0] == 401  # (a lone surrogate)
        deep = "[" * 100_000 + "]" * 100_000
        status, _, answer, _ = _raw_post(client, f"{P}/api/config/validate", deep, {"Content-Type": "application/json",
                                                                                  **bearer()})
        assert status == 400 and b"JSON" in answer


def _raw_post(client: Client, path: str, body: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes, Any]:
    connection = http.client.HTTPConnection(client.host, client.port, timeout=10)
    try:
        connection.request("POST", path, body=body.encode(), headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read(), None
    finally:
        connection.close()


def test_an_edit_cannot_read_the_servers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_DB_PASSWORD", "hunter2")
    with running() as (client, gateway):
        text = YAML.replace("premier:\n", 'premier:\n  keyspace: "${SECRET_DB_PASSWORD}"\n')
        status, result = client.json("POST", f"{P}/api/config", {"yaml": text}, Authorization=f"Bearer {TOKEN}")
        assert status == 400 and "SECRET_DB_PASSWORD" in result["errors"][0]["message"]
        assert result["errors"][0]["line"] == 2
        assert gateway.config.keyspace != "hunter2"


def test_no_escape_reads_another_variable_and_no_error_shows_an_allowed_ones_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AWS-SHOULD-NOT-LEAK")
    monkeypatch.setenv("BACKEND_URL", "http://127.0.0.1:9/SHOULD-NOT-LEAK?x")
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(YAML.replace("premier:\n", 'premier:\n  keyspace: "k${BACKEND_URL:-}"\n', 1))
    with running(config_file=config_file) as (client, _):
        for text in ('premier:\n  servers: ["\\x24{AWS_SECRET_ACCESS_KEY}"]\n',  # a YAML escape for "$"
                     'premier:\n  servers: ["\\u0024{AWS_SECRET_ACCESS_KEY}"]\n',
                     'premier:\n  servers: ["${BACKEND_URL}"]\n'):  # allowed, but its value is not shown
            status, result = client.json("POST", f"{P}/api/config/validate", {"yaml": text}, **{"Authorization": f"Bearer {TOKEN}"})
            assert status == 200 and result["ok"] is False, text
            assert "SHOULD-NOT-LEAK" not in json.dumps(result), result


def test_after_an_apply_the_view_keeps_the_references_not_the_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    monkeypatch.setenv("STORE_KEYSPACE", "ks-from-the-environment")
    config_file = tmp_path / "gateway.yaml"
    original = YAML.replace(f'token: "{TOKEN}"', 'token: "${DASHBOARD_TOKEN}"').replace(
        "premier:\n", 'premier:\n  keyspace: "${STORE_KEYSPACE}"\n', 1)
    config_file.write_text(original)
    with running(config_file=config_file) as (client, gateway):
        edited = original.replace("quota: 3", "quota: 9")
        assert client.json("POST", f"{P}/api/config", {"yaml": edited}, Authorization=f"Bearer {TOKEN}")[0] == 200
        view = client.json("GET", f"{P}/api/config", Authorization=f"Bearer {TOKEN}")[1]["yaml"]
        assert view == edited  # what was applied, as written (not the file, which no longer runs)
        assert gateway.config.keyspace == "ks-from-the-environment" and "ks-from-the-environment" not in view


def test_a_literal_token_in_the_file_is_masked_and_never_saved_masked(tmp_path: Path) -> None:
    config_file = tmp_path / "gateway.yaml"
    original = YAML.replace("slow_threshold: 0.2}", "slow_threshold: 0.2, save_config: true}")
    config_file.write_text(original)
    config_file.chmod(0o644)
    with running(config_file=config_file) as (client, gateway):
        view = client.json("GET", f"{P}/api/config", Authorization=f"Bearer {TOKEN}")[1]
        assert TOKEN not in view["yaml"] and 'token: "********"' in view["yaml"]
        edited = view["yaml"].replace("quota: 3", "quota: 4")
        assert client.json("POST", f"{P}/api/config", {"yaml": edited}, Authorization=f"Bearer {TOKEN}")[0] == 200
        assert gateway.config.dashboard is not None and gateway.config.dashboard.token == TOKEN  # kept
        status, result = client.json("POST", f"{P}/api/config", {"yaml": edited, "save": True},
                                     Authorization=f"Bearer {TOKEN}")
        assert status == 400 and "no dashboard token of its own" in result["errors"][0]["message"]
        assert config_file.read_text() == original  # neither saved nor half-done
        own = edited.replace('"********"', f'"{TOKEN}"').replace("quota: 4", "quota: 5")
        assert client.json("POST", f"{P}/api/config", {"yaml": own, "save": True}, Authorization=f"Bearer {TOKEN}")[0] == 200
    assert config_file.read_text() == own and config_file.stat().st_mode & 0o777 == 0o644


def test_a_session_is_valid_in_every_worker() -> None:
    """Sessions are signed with the token, not stored: another process with the same configuration
    (here, a second gateway) accepts the cookie and its CSRF token."""
    with running() as (first, _), running() as (second, _):
        _, _, body, _ = first.request("POST", f"{P}/api/login", {"token": TOKEN})
        csrf = json.loads(body)["csrf"]
        second.cookies = dict(first.cookies)
        assert second.request("GET", f"{P}/api/stats")[0] == 200
        assert second.json("POST", f"{P}/api/config/validate", {"yaml": "premier: {}"}, X_CSRF_Token=csrf)[0] == 200
        cookie = first.cookies["premier_session"]
        second.cookies["premier_session"] = cookie[:-1] + ("0" if cookie[-1] != "0" else "1")  # tampered
        assert second.request("GET", f"{P}/api/stats")[0] == 401


def test_metrics_pass_promtool() -> None:
    """The exposition passes Prometheus' own checker (Debian's ``prometheus`` package; CI installs it)."""
    import os
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("PREMIER_REQUIRE_PROMTOOL") == "1":
            pytest.fail("PREMIER_REQUIRE_PROMTOOL=1 but promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install --no-install-recommends prometheus)")
    yaml_text = YAML.replace('    - pattern: "/slow"', "    - pattern: '/q\"uote/*'\n      features: {monitoring: {}}\n    - pattern: \"/slow\"")
    with running(yaml_text) as (client, _):
        for path in ("/limited/1", "/cached/a", "/cached/a", "/q%22uote/1", "/slow", "/other"):
            client.request("GET", path)
        body = client.request("GET", "/metrics", headers=bearer())[2]
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b'route="/q\\"uote/*"' in body  # the label escaped as the format requires
