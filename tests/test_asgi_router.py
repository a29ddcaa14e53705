"""Which policy a request gets: glob and regex patterns, path parameters, first match in YAML order,
default features and their per-path overrides, path normalisation and the router's bounded memo."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from _asgi import Backend, call, config, paths
from premier.asgi import ASGIGateway
from premier.asgi.router import Router, normalize_path
from premier.observability.events import RequestEvent


def _route_of(patterns: list[str], path: str) -> tuple[str | None, dict[str, str]]:
    router = Router([(p, p) for p in patterns], None)
    target, _, params = router.match(path)
    return target, params


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        # `*` is any run of characters, `/` included, and also the empty run
        ("/api/*", "/api/a/b/c", True),
        ("/files*", "/files", True),
        ("/files*", "/files/a/b.txt", True),
        ("*", "/anything/at/all", True),
        ("/a*z", "/a/b/c/z", True),
        ("/a*z", "/a/b/c/zz/y", False),
        ("/**/end", "/x/y/end", True),
        # `?` is exactly one character
        ("/api/v?/x", "/api/v1/x", True),
        ("/api/v?/x", "/api/v10/x", False),
        ("/api/v?/x", "/api/v/x", False),
        # `.` and every other regex character is literal in a glob
        ("/file.json", "/file.json", True),
        ("/file.json", "/fileXjson", False),
        ("/a+b", "/a+b", True),
        ("/a+b", "/aab", False),
        ("/[ab]", "/[ab]", True),
        ("/[ab]", "/a", False),
        ("/(x)|y", "/(x)|y", True),
        ("/(x)|y", "/y", False),
        ("/cost$", "/cost$", True),
        ("/cost$", "/cost", False),
        ("/a^b", "/a^b", True),
        ("/a\\d", "/a\\d", True),
        ("/a\\d", "/a1", False),
        ("/{x", "/{x", True),
        # a glob is matched against the whole path
        ("/api", "/api/users", False),
        ("/users", "/api/users", False),
        # `/api/users/*` also matches `/api/users`, but not a longer sibling
        ("/api/users/*", "/api/users", True),
        ("/api/users/*", "/api/users/", True),
        ("/api/users/*", "/api/users/7/posts", True),
        ("/api/users/*", "/api/usersX", False),
        ("/api/users/*", "/api/users-admin/1", False),
        ("/api/users/*", "/api/user", False),
        # `{name}` is exactly one non-empty segment
        ("/users/{id}", "/users/7", True),
        ("/users/{id}", "/users/7/posts", False),
        ("/users/{id}", "/users/", False),
        # `^...` is a regular expression searched in the path
        (r"^/api/v\d+/", "/api/v2/users", True),
        (r"^/api/v\d+/", "/x/api/v2/users", False),
        (r"^/static/.*\.css$", "/static/a/b.css", True),
        (r"^/static/.*\.css$", "/static/a/b.css.map", False),
        (r"^/legacy/|/old/", "/app/old/page", True),
        # a decoded %0A is a path character like any other: it cannot slip past a pattern
        ("/api/admin/*", "/api/admin/x\n", True),
        ("/api/admin/*", "/api/admin/\nx", True),
        ("/users/{id}", "/users/7\n", True),
        ("/a?c", "/a\nc", True),
        (r"^/api/admin/.+$", "/api/admin/\nx", True),
        # and a final one is ignored, as Starlette's `$` ignores it when it routes
        ("/admin/users", "/admin/users\n", True),
        ("/api/admin/*", "/api/admin\n", True),
        ("/users/{id}", "/users/\n", True),  # (a segment of its own, as Starlette routes it)
    ],
)
def test_pattern_matching(pattern: str, path: str, matches: bool) -> None:
    assert (_route_of([pattern], path)[0] == pattern) is matches


@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        (r"^/api/v(?P<version>\d+)/(?P<rest>.*)", "/api/v2/users/7", {"version": "2", "rest": "users/7"}),
        (r"^/a(?P<tail>/b)?", "/a", {}),  # a group that took no part is not a parameter
        ("/orgs/{org}/repos/{repo}", "/orgs/acme/repos/premier", {"org": "acme", "repo": "premier"}),
        ("/files/{kind}/*", "/files/img/2024/a.png", {"kind": "img"}),
        ("/files/*", "/files/a", {}),
    ],
)
def test_path_parameters(pattern: str, path: str, params: dict[str, str]) -> None:
    assert _route_of([pattern], path) == (pattern, params)


def test_first_match_in_configuration_order_wins() -> None:
    assert _route_of(["/api/*", "/api/special"], "/api/special")[0] == "/api/*"
    assert _route_of(["/api/special", "/api/*"], "/api/special")[0] == "/api/special"
    assert _route_of(["/api/special", "/api/*"], "/api/other")[0] == "/api/*"
    assert _route_of(["/a", "/b"], "/c")[0] is None


def _limit(quota: int) -> dict[str, Any]:
    return {"rate_limit": {"quota": quota, "duration": 100}}


async def test_gateway_uses_the_first_matching_path(provider: Any) -> None:
    app = Backend()
    first = ASGIGateway(paths(("/api/*", _limit(1)), ("/api/special", _limit(5))), app=app, cache_provider=provider)
    response = await call(first, path="/api/special")
    assert response.header("ratelimit-policy") == '"premier";q=1;w=100'
    assert (await call(first, path="/api/special")).status == 429

    swapped = ASGIGateway(paths(("/api/special", _limit(5)), ("/api/*", _limit(1))), app=app, cache_provider=provider)
    assert (await call(swapped, path="/api/special")).header("ratelimit-policy") == '"premier";q=5;w=100'
    assert (await call(swapped, path="/api/other")).header("ratelimit-policy") == '"premier";q=1;w=100'


async def test_default_features_apply_to_unmatched_paths(provider: Any) -> None:
    app = Backend()
    gateway = ASGIGateway(paths(("/cached", {"cache": {}}), default_features=_limit(2)), app=app, cache_provider=provider)
    statuses = [(await call(gateway, path="/nowhere")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    # Unmatched paths are one route: their counter is shared.
    assert (await call(gateway, path="/elsewhere")).status == 429


async def test_default_features_merge_feature_by_feature(provider: Any) -> None:
    app = Backend()
    cfg = paths(
        ("/cached", {"cache": {}}),  # its own cache, plus the default rate limit
        ("/own-limit", _limit(5)),  # replaces the default rate limit
        ("/unlimited", {"rate_limit": None}),  # switches the default off
        ("/uncached", {"cache": None}),  # switching off a feature the defaults lack is harmless
        default_features={**_limit(2), "monitoring": {"log_threshold": 10}},
    )
    gateway = ASGIGateway(cfg, app=app, cache_provider=provider)

    cached = [await call(gateway, path="/cached") for _ in range(3)]
    assert [r.status for r in cached] == [200, 200, 429]
    assert [r.x_cache for r in cached[:2]] == ["MISS", "HIT"]
    assert cached[0].header("ratelimit-policy") == '"premier";q=2;w=100'

    own = await call(gateway, path="/own-limit")
    assert own.header("ratelimit-policy") == '"premier";q=5;w=100'

    unlimited = [await call(gateway, path="/unlimited") for _ in range(5)]
    assert [r.status for r in unlimited] == [200] * 5
    assert all(r.header("ratelimit") is None for r in unlimited)

    uncached = [await call(gateway, path="/uncached") for _ in range(2)]
    assert [r.x_cache for r in uncached] == [None, None]
    assert uncached[0].header("ratelimit-policy") == '"premier";q=2;w=100'

    assert gateway.routes["/unlimited"].features.monitoring is not None  # other defaults still apply


def test_feature_null_in_yaml_switches_a_default_off() -> None:
    from premier.asgi import GatewayConfig

    cfg = GatewayConfig.from_yaml(
        """
premier:
  paths:
    - pattern: /health
      features: {timeout: null}
  default_features:
    timeout: {seconds: 5}
    monitoring: {log_threshold: 0.5}
"""
    )
    features = cfg.features_for(cfg.paths[0])
    assert features.timeout is None
    assert features.monitoring is not None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("//a", "/a"),
        ("/a///b//", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/./a", "/a"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/../../c", "/c"),
        ("/../../etc/passwd", "/etc/passwd"),  # never above the root
        ("/a/../../../b", "/b"),
        ("/..", "/"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/./", "/a/"),
        ("/a/b/", "/a/b/"),  # a trailing slash is kept
        ("/a//b/", "/a/b/"),
        ("/a/.hidden", "/a/.hidden"),
        ("/a/..b/...", "/a/..b/..."),  # only whole `.` and `..` segments are special
    ],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    "raw", ["/api//admin/x", "/api/./admin/x", "/api/x/../admin/x", "//api/admin/x", "/api/admin/x/.", "/z/../api/admin/x"]
)
async def test_app_receives_the_normalised_path(provider: Any, raw: str) -> None:
    app = Backend()
    gateway = ASGIGateway(paths(("/api/admin/*", _limit(1))), app=app, cache_provider=provider)
    first = await call(gateway, path=raw)
    assert first.status == 200
    seen = app.scopes[0]
    expected = normalize_path(raw)
    assert seen["path"] == expected
    assert seen["raw_path"] == expected.encode()
    assert (await call(gateway, path="/api/admin/x")).status == 429  # and it counted against that policy


async def test_unmatched_paths_are_normalised_too(provider: Any) -> None:
    app = Backend()
    gateway = ASGIGateway(paths(("/api/*", _limit(5))), app=app, cache_provider=provider)
    await call(gateway, path="/other//x/../y")
    assert app.scopes[0]["path"] == "/other/y"


async def test_a_normal_path_reaches_the_app_unchanged(provider: Any) -> None:
    # The scope (and its raw_path, with the client's own percent-encoding) is left alone when the path
    # needs no normalisation -- on the first request for a path and on every later one.
    app = Backend()
    gateway = ASGIGateway(paths(("/files/*", _limit(5))), app=app, cache_provider=provider)
    for _ in range(3):
        path = b"/files/a/b c".decode()  # a new string each time, as a server makes one per request
        await call(gateway, path=path, raw_path=b"/files/a%2Fb%20c")
    assert [s["raw_path"] for s in app.scopes] == [b"/files/a%2Fb%20c"] * 3
    assert [s["path"] for s in app.scopes] == ["/files/a/b c"] * 3


async def test_route_pattern_is_reported_in_events(provider: Any) -> None:
    app = Backend()
    gateway = ASGIGateway(paths(("/users/{id}", _limit(5)), (r"^/v(?P<n>\d)/", _limit(5))), app=app, cache_provider=provider)
    events: list[RequestEvent] = []
    gateway.events.subscribe(events.append)
    for path in ("/users/1", "/users/2", "/v1/x", "/nope"):
        await call(gateway, path=path)
    assert [(e.route, e.path) for e in events] == [
        ("/users/{id}", "/users/1"),
        ("/users/{id}", "/users/2"),
        (r"^/v(?P<n>\d)/", "/v1/x"),
        ("(unmatched)", "/nope"),
    ]


def test_route_memo_is_bounded() -> None:
    router = Router([("/api/{id}", "api"), ("/static/*", "static")], "default", memo_size=100)
    for i in range(5000):
        assert router.match(f"/api/{i}")[0] == "api"
        assert router.match(f"/static/{i}/x//y")[1] == f"/static/{i}/x/y"
        assert router.match(f"/other/{i}")[0] == "default"
        assert len(router._memo) <= 100
    assert router.match("/api/7") == ("api", "/api/7", {"id": "7"})


def test_many_distinct_paths_do_not_grow_memory() -> None:
    router = Router([("/api/{id}", "api")], None, memo_size=1000)

    def fill(start: int) -> None:
        for i in range(start, start + 20_000):
            router.match(f"/api/{i}/{'x' * 50}")

    fill(0)  # the memo is full at least once
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill(100_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 20 000 more paths of ~60 characters would be well over 2 MB if kept; the memo holds at most 1000.
    assert grown < 600_000, grown


def test_config_with_a_bad_regex_is_refused() -> None:
    from premier.errors import ConfigError

    with pytest.raises(ConfigError, match=r"paths\[0\]\.pattern"):
        config({"paths": [{"pattern": "^/api/(unclosed"}]})
