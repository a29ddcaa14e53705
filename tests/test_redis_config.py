"""``storage:`` in YAML: a valid section builds the Redis provider with its options; a bad one is a
ConfigError naming the field. (Nothing here connects to Redis.)"""

from __future__ import annotations

import pytest

from premier.asgi import ASGIGateway, GatewayConfig
from premier.config import StorageConfig
from premier.errors import ConfigError

VALID = """
premier:
  keyspace: my-api
  storage: {url: "redis://127.0.0.1:6379/0", on_backend_error: deny, timeout: 0.3}
"""


async def hello(scope: object, receive: object, send: object) -> None:  # pragma: no cover - never called
    raise AssertionError("not called")


def test_a_storage_section_loads() -> None:
    config = GatewayConfig.from_yaml(VALID)
    assert config.storage == StorageConfig(url="redis://127.0.0.1:6379/0", on_backend_error="deny", timeout=0.3)


def test_storage_defaults() -> None:
    storage = GatewayConfig.from_yaml('premier: {storage: {url: "redis://cache.internal"}}').storage
    assert storage == StorageConfig(url="redis://cache.internal", on_backend_error="local", timeout=0.5)
    assert GatewayConfig.from_yaml("premier: {}").storage is None


async def test_the_gateway_builds_the_redis_provider_from_storage() -> None:
    from premier.providers.redis import AsyncRedisCache

    gateway = ASGIGateway(GatewayConfig.from_yaml(VALID), app=hello)
    try:
        provider = gateway.provider
        assert isinstance(provider, AsyncRedisCache)
        assert provider.on_backend_error == "deny"
        options = provider.client.connection_pool.connection_kwargs
        assert (options["host"], options["port"], options.get("db", 0)) == ("127.0.0.1", 6379, 0)
        assert options["socket_timeout"] == options["socket_connect_timeout"] == 0.3
    finally:
        await gateway.provider.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379", "redis://"),
        ("https://cache.internal", "redis://"),
        ("127.0.0.1:6379", "redis://"),
        ("redis://", "host"),
        ("redis://:6379/0", "host"),
        ("rediss:///0", "host"),
        ("redis://cache:99999/0", "port"),
        ("redis://cache:6379/zero", "database number"),
        ("unix://", "socket path"),
        ("", "redis://"),
    ],
)
def test_a_bad_storage_url_names_the_field(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_dict({"premier": {"storage": {"url": url}}})
    (issue,) = raised.value.issues
    assert issue.path == "premier.storage.url"
    assert reason.lower() in issue.message.lower()


@pytest.mark.parametrize("policy", ["fail", "ALLOW", "", None, 1, True])
def test_a_bad_on_backend_error_names_the_field(policy: object) -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_dict({"premier": {"storage": {"url": "redis://h:6379/0", "on_backend_error": policy}}})
    (issue,) = raised.value.issues
    assert issue.path == "premier.storage.on_backend_error"


@pytest.mark.parametrize(
    ("storage", "path"),
    [
        ({}, "premier.storage.url"),
        ({"url": "redis://h", "timeout": 0}, "premier.storage.timeout"),
        ({"url": "redis://h", "timeout": -1}, "premier.storage.timeout"),
        ({"url": "redis://h", "retry": 3}, "premier.storage.retry"),
    ],
)
def test_other_storage_mistakes_name_their_field(storage: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_dict({"premier": {"storage": storage}})
    assert [issue.path for issue in raised.value.issues] == [path]


def test_the_provider_refuses_an_unknown_policy_too() -> None:
    pytest.importorskip("redis")
    from premier.providers.redis import AsyncRedisCache

    with pytest.raises(ValueError, match="on_backend_error"):
        AsyncRedisCache.from_url("redis://127.0.0.1:6379/0", on_backend_error="ignore")  # type: ignore[arg-type]
