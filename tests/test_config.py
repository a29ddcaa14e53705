"""Loading and validating gateway configurations: the documented example, defaults, and every user
mistake reported as a ConfigError naming the field and the reason."""

from __future__ import annotations

import dataclasses
import textwrap
import time

import pytest

from premier.config import (
    CacheConfig,
    CircuitBreakerConfig,
    FeaturesConfig,
    GatewayConfig,
    MonitoringConfig,
    PathConfig,
    RateLimitConfig,
    RetryConfig,
    ServerConfig,
    TimeoutConfig,
)
from premier.errors import ConfigError, ConfigIssue, PremierError

DESIGN_EXAMPLE = """\
premier:
  keyspace: "my-api"                       # namespace for every key in every backend
  servers: ["http://b1:8000", "http://b2:8000"]   # standalone mode only
  paths:
    - pattern: "/api/users/*"              # glob; a pattern starting with ^ is a regular expression
      features:
        cache:           {expire_s: 300, cache_key: "user:{user_id}"}
        rate_limit:      {quota: 100, duration: 60, algorithm: sliding_window,   # fixed_window | sliding_window | token_bucket | leaky_bucket
                          bucket_size: 50, error_status: 429, error_message: "Rate limit exceeded"}
        timeout:         {seconds: 5.0, error_status: 504, error_message: "Request timeout"}
        retry:           {max_attempts: 3, wait: [1, 2, 4]}
        circuit_breaker: {failure_threshold: 5, recovery_timeout: 60.0}
        monitoring:      {log_threshold: 0.1}
  default_features: {timeout: {seconds: 10.0}, monitoring: {log_threshold: 0.5}}
"""


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_yaml(textwrap.dedent(text))
    return info.value


def one_path(features: str) -> str:
    """A configuration with one path whose ``features:`` block is ``features`` (YAML, 8-space indent)."""
    return "premier:\n  paths:\n    - pattern: /api/*\n      features:\n" + textwrap.indent(
        textwrap.dedent(features), " " * 8
    )


def assert_issue(error: ConfigError, path: str, *reason_parts: str) -> None:
    """``error`` names ``path`` with a reason containing every one of ``reason_parts``, in str() too."""
    assert isinstance(error, ConfigError) and isinstance(error, ValueError) and isinstance(error, PremierError)
    matching = [issue for issue in error.issues if issue.path == path]
    assert matching, f"no issue for {path!r} in {error.issues}"
    message = matching[0].message
    for part in reason_parts:
        assert part in message, f"{part!r} not in {message!r}"
        assert part in str(error)
    assert f"{path}: " in str(error)


# ---------------------------------------------------------------------------------------------------
# the documented example


def test_design_example_loads_with_every_value():
    config = GatewayConfig.from_yaml(DESIGN_EXAMPLE)
    assert config.keyspace == "my-api"
    assert config.servers == (ServerConfig("http://b1:8000", 1), ServerConfig("http://b2:8000", 1))
    assert config.trusted_proxies == ()
    [path] = config.paths
    assert path.pattern == "/api/users/*"
    features = path.features
    assert features.cache == CacheConfig(expire_s=300.0, cache_key="user:{user_id}")
    assert features.rate_limit == RateLimitConfig(
        quota=100,
        duration=60.0,
        algorithm="sliding_window",
        bucket_size=50,
        error_status=429,
        error_message="Rate limit exceeded",
        key="client",
    )
    assert features.timeout == TimeoutConfig(seconds=5.0, error_status=504, error_message="Request timeout")
    assert features.retry.max_attempts == 3
    assert features.retry.wait == (1.0, 2.0, 4.0)
    assert features.retry.exceptions == ("Exception",)
    assert features.retry.retry_on_status == (502, 503, 504)
    assert features.circuit_breaker == CircuitBreakerConfig(
        failure_threshold=5, recovery_timeout=60.0, half_open_max_calls=1, expected_exception="Exception"
    )
    assert features.monitoring == MonitoringConfig(log_threshold=0.1)
    assert config.default_features == FeaturesConfig(
        timeout=TimeoutConfig(seconds=10.0), monitoring=MonitoringConfig(log_threshold=0.5)
    )


def test_numbers_are_typed_as_the_schema_says():
    config = GatewayConfig.from_yaml(DESIGN_EXAMPLE)
    rate_limit = config.paths[0].features.rate_limit
    assert type(rate_limit.quota) is int
    assert type(rate_limit.duration) is float  # written as 60 in YAML
    assert type(config.paths[0].features.cache.expire_s) is float


def test_defaults():
    config = GatewayConfig.from_yaml("premier:\n  paths:\n    - pattern: /x\n")
    assert config.keyspace == "asgi-gateway"
    assert config.servers == () and config.default_features is None
    assert config.paths == (PathConfig(pattern="/x", features=FeaturesConfig()),)
    minimal = (
        GatewayConfig.from_yaml(
            one_path(
                """\
            rate_limit: {quota: 5, duration: 1}
            timeout: {seconds: 2}
            retry: {}
            circuit_breaker: {}
            monitoring: {}
            cache: {}
            """
            )
        )
        .paths[0]
        .features
    )
    assert minimal.rate_limit == RateLimitConfig(quota=5, duration=1.0)
    assert (minimal.rate_limit.algorithm, minimal.rate_limit.bucket_size) == ("fixed_window", None)
    assert (minimal.rate_limit.error_status, minimal.rate_limit.key) == (429, "client")
    assert minimal.rate_limit.error_message == "Rate limit exceeded"
    assert minimal.timeout == TimeoutConfig(seconds=2.0, error_status=504, error_message="Request timeout")
    assert minimal.retry == RetryConfig(max_attempts=3, wait=1.0)
    assert minimal.circuit_breaker == CircuitBreakerConfig(5, 60.0, 1, "Exception")
    assert minimal.monitoring == MonitoringConfig(log_threshold=0.1)
    assert minimal.cache.expire_s is None and minimal.cache.cache_key is None


def test_empty_premier_section_is_all_defaults():
    assert GatewayConfig.from_yaml("premier:\n") == GatewayConfig()


def test_server_may_be_a_mapping_with_weight():
    config = GatewayConfig.from_yaml(
        "premier:\n  servers: [{url: 'https://b1', weight: 3}, 'http://[::1]:8080/prefix']\n"
    )
    assert config.servers == (ServerConfig("https://b1", 3), ServerConfig("http://[::1]:8080/prefix", 1))


def test_from_dict_and_from_file(tmp_path):
    data = {"premier": {"keyspace": "k", "paths": [{"pattern": "^/v[0-9]+/"}]}}
    assert GatewayConfig.from_dict(data).paths[0].pattern == "^/v[0-9]+/"
    file = tmp_path / "gateway.yaml"
    file.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    assert GatewayConfig.from_file(file) == GatewayConfig.from_yaml(DESIGN_EXAMPLE)
    assert GatewayConfig.from_file(str(file)).keyspace == "my-api"


def test_from_file_with_a_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_file(missing)
    assert str(missing) in str(info.value)
    assert "cannot read configuration file" in str(info.value)
    assert info.value.source == str(missing)


def test_from_file_errors_name_the_file(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("premier:\n  keyspace: ''\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_file(file)
    assert f"invalid configuration in {file}" in str(info.value)
    assert_issue(info.value, "premier.keyspace", "must not be empty")


def test_from_file_that_is_not_utf8(tmp_path):
    file = tmp_path / "latin1.yaml"
    file.write_bytes("premier:\n  keyspace: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        GatewayConfig.from_file(file)


# ---------------------------------------------------------------------------------------------------
# immutability and defaults per path


def test_config_objects_are_frozen():
    config = GatewayConfig.from_yaml(DESIGN_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.keyspace = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.paths[0].features.rate_limit.quota = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.servers[0].url = "http://evil"
    assert isinstance(config.paths, tuple) and isinstance(config.paths[0].features.retry.wait, tuple)


def test_features_for_merges_defaults_and_null_disables_one():
    config = GatewayConfig.from_yaml(
        """\
premier:
  paths:
    - pattern: /health
      features: {monitoring: null}
    - pattern: /slow/*
      features: {timeout: {seconds: 30}}
    - pattern: /plain
  default_features: {timeout: {seconds: 10.0}, monitoring: {log_threshold: 0.5}}
"""
    )
    health, slow, plain = config.paths
    assert health.features.disabled == frozenset({"monitoring"})
    assert config.features_for(health).enabled() == {"timeout": TimeoutConfig(seconds=10.0)}
    assert config.features_for(slow).timeout == TimeoutConfig(seconds=30.0)  # replaces the default
    assert config.features_for(slow).monitoring == MonitoringConfig(log_threshold=0.5)
    assert config.features_for(plain) == config.default_features
    assert config.features_for(None) == config.default_features


def test_features_for_without_defaults():
    config = GatewayConfig.from_yaml(one_path("cache: {expire_s: 5}\n"))
    assert config.features_for(config.paths[0]).enabled() == {"cache": CacheConfig(expire_s=5.0)}
    assert config.features_for(None) == FeaturesConfig()


# ---------------------------------------------------------------------------------------------------
# one test per user mistake


def test_unknown_key_suggests_the_closest_field():
    assert_issue(
        config_error("premier:\n  keyspce: x\n"), "premier.keyspce", "unknown field", "did you mean 'keyspace'?"
    )


def test_unknown_feature_suggests_the_closest_feature():
    error = config_error(one_path("rate_limt: {quota: 1, duration: 1}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limt", "unknown field", "did you mean 'rate_limit'?")


def test_unknown_key_without_a_close_match_lists_the_valid_fields():
    error = config_error(one_path("rate_limit: {quota: 1, duration: 1, zzz: 1}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.zzz", "unknown field", "valid fields: quota, duration")


def test_string_for_quota():
    error = config_error(one_path("rate_limit: {quota: '100', duration: 60}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "must be an integer", "got the string '100'")


def test_float_for_quota():
    error = config_error(one_path("rate_limit: {quota: 1.5, duration: 60}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "must be an integer", "1.5")


def test_bool_for_a_number():
    error = config_error(one_path("timeout: {seconds: true}\n"))
    assert_issue(error, "premier.paths[0].features.timeout.seconds", "must be a number", "got a boolean")
    error = config_error(one_path("rate_limit: {quota: yes, duration: 1}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "must be an integer", "got a boolean")


def test_list_for_a_mapping():
    error = config_error(one_path("rate_limit: [100, 60]\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit", "must be a mapping", "got a list")


def test_mapping_for_a_list():
    error = config_error("premier:\n  paths: {pattern: /x}\n")
    assert_issue(error, "premier.paths", "must be a list", "got a mapping")


def test_string_for_a_feature_block():
    error = config_error("premier:\n  default_features:\n    cache: 'yes'\n")
    assert_issue(error, "premier.default_features.cache", "must be a mapping", "got the string 'yes'")


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ("rate_limit: {quota: 0, duration: 60}", "rate_limit.quota"),
        ("rate_limit: {quota: -5, duration: 60}", "rate_limit.quota"),
        ("rate_limit: {quota: 5, duration: 0}", "rate_limit.duration"),
        ("rate_limit: {quota: 5, duration: -1.5}", "rate_limit.duration"),
        ("rate_limit: {quota: 5, duration: 1, algorithm: leaky_bucket, bucket_size: 0}", "rate_limit.bucket_size"),
        ("timeout: {seconds: 0}", "timeout.seconds"),
        ("timeout: {seconds: -1}", "timeout.seconds"),
        ("cache: {expire_s: 0}", "cache.expire_s"),
        ("retry: {max_attempts: 0}", "retry.max_attempts"),
        ("circuit_breaker: {failure_threshold: 0}", "circuit_breaker.failure_threshold"),
        ("circuit_breaker: {recovery_timeout: 0}", "circuit_breaker.recovery_timeout"),
    ],
)
def test_non_positive_values(features, field):
    error = config_error(one_path(features + "\n"))
    assert_issue(error, f"premier.paths[0].features.{field}", "must be greater than 0")


def test_unknown_algorithm_suggests_the_closest():
    error = config_error(one_path("rate_limit: {quota: 1, duration: 1, algorithm: sliding}\n"))
    assert_issue(
        error,
        "premier.paths[0].features.rate_limit.algorithm",
        "must be one of 'fixed_window', 'sliding_window', 'token_bucket', 'leaky_bucket'",
        "got the string 'sliding'",
        "did you mean 'sliding_window'?",
    )


def test_invalid_regex_pattern():
    error = config_error("premier:\n  paths:\n    - pattern: '^/api/(users'\n")
    assert_issue(error, "premier.paths[0].pattern", "is not a valid regular expression", "'^/api/(users'")


def test_glob_pattern_must_start_with_a_slash():
    error = config_error("premier:\n  paths:\n    - pattern: 'api/*'\n")
    assert_issue(error, "premier.paths[0].pattern", "must start with '/'")


def test_missing_pattern():
    error = config_error("premier:\n  paths:\n    - features: {}\n")
    assert_issue(error, "premier.paths[0].pattern", "required field is missing")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://b1:21", "must be an http:// or https:// URL"),
        ("http://", "must name a host"),
        ("b1:8000", "must be an http:// or https:// URL"),
        ("http://b1:8000/?debug=1", "must not have a query or fragment"),
        ("http://b1:8000/#top", "must not have a query or fragment"),
        ("http://b1:99999", "is not a valid URL"),
        ("http://b1:0", "must not use port 0"),
    ],
)
def test_malformed_server_urls(url, reason):
    error = config_error(f"premier:\n  servers: ['http://ok:1', '{url}']\n")
    assert_issue(error, "premier.servers[1].url", reason)
    assert len(error.issues) == 1


def test_server_of_the_wrong_shape():
    error = config_error("premier:\n  servers: [8000]\n")
    assert_issue(error, "premier.servers[0]", "must be a URL or a mapping")


def test_yaml_syntax_error_names_line_and_column():
    error = config_error("premier:\n  keyspace: [a\n  paths: x\n")
    [issue] = error.issues
    assert issue.path == "line 3, column 8"
    assert "YAML syntax error" in issue.message
    assert "line 3, column 8: YAML syntax error" in str(error)


def test_yaml_tab_indentation_error():
    error = config_error("premier:\n\tkeyspace: x\n")
    assert "line 2, column 1" in str(error) and "YAML syntax error" in str(error)


def test_missing_premier_key():
    error = config_error("gateway:\n  keyspace: x\n")
    assert_issue(error, "premier", "required top-level key is missing")
    assert_issue(error, "gateway", "unknown field")


@pytest.mark.parametrize("text", ["", "- premier\n", "just a string\n"])
def test_top_level_must_be_a_mapping(text):
    error = config_error(text)
    assert "top-level 'premier:' key" in str(error)


def test_rate_limit_without_quota():
    error = config_error(one_path("rate_limit: {duration: 60}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "required field is missing")
    assert len(error.issues) == 1


def test_timeout_without_seconds():
    error = config_error("premier:\n  default_features: {timeout: {error_status: 504}}\n")
    assert_issue(error, "premier.default_features.timeout.seconds", "required field is missing")


@pytest.mark.parametrize(("wait", "bad"), [("[1, -2, 4]", "-2.0"), ("-1", "-1.0")])
def test_negative_retry_waits(wait, bad):
    error = config_error(one_path(f"retry: {{wait: {wait}}}\n"))
    assert_issue(error, "premier.paths[0].features.retry.wait", "waits must be 0 or greater", bad)


def test_empty_retry_wait_list():
    error = config_error(one_path("retry: {wait: []}\n"))
    assert_issue(error, "premier.paths[0].features.retry.wait", "must not be an empty list")


def test_retry_wait_of_the_wrong_type():
    error = config_error(one_path("retry: {wait: 'soon'}\n"))
    assert_issue(error, "premier.paths[0].features.retry.wait", "must be a number or a list")


@pytest.mark.parametrize("name", ["NoSuchError", "premier.errors.NoSuchError", "nosuchmodule.Error"])
def test_unknown_exception_name(name):
    error = config_error(one_path(f"retry: {{exceptions: [ConnectionError, {name}]}}\n"))
    assert_issue(error, "premier.paths[0].features.retry.exceptions", "names no importable exception class", repr(name))


def test_exception_name_that_is_not_an_exception():
    error = config_error(one_path("circuit_breaker: {expected_exception: 'os.path'}\n"))
    assert_issue(error, "premier.paths[0].features.circuit_breaker.expected_exception", "'os.path'")
    error = config_error(one_path("circuit_breaker: {expected_exception: 'dict'}\n"))
    assert_issue(error, "premier.paths[0].features.circuit_breaker.expected_exception", "is not an exception class")


def test_dotted_exception_names_load():
    config = GatewayConfig.from_yaml(
        one_path("retry: {exceptions: [ConnectionError, premier.errors.BackendError, asyncio.TimeoutError]}\n")
    )
    assert config.paths[0].features.retry.exceptions[1] == "premier.errors.BackendError"


@pytest.mark.parametrize("status", [200, 302, 600, 99])
def test_bad_error_status(status):
    error = config_error(one_path(f"rate_limit: {{quota: 1, duration: 1, error_status: {status}}}\n"))
    assert_issue(
        error, "premier.paths[0].features.rate_limit.error_status", "HTTP error status between 400 and 599", str(status)
    )


def test_bad_retry_on_status():
    error = config_error(one_path("retry: {retry_on_status: [503, 700]}\n"))
    assert_issue(error, "premier.paths[0].features.retry.retry_on_status", "700")


@pytest.mark.parametrize("key", ["cookie:session", "header:", "header:X Bad", "ip"])
def test_bad_rate_limit_key(key):
    error = config_error(one_path(f"rate_limit: {{quota: 1, duration: 1, key: '{key}'}}\n"))
    assert_issue(
        error, "premier.paths[0].features.rate_limit.key", "must be 'client', 'global' or 'header:<Header-Name>'"
    )


@pytest.mark.parametrize("key", ["client", "global", "header:X-API-Key"])
def test_good_rate_limit_keys(key):
    config = GatewayConfig.from_yaml(one_path(f"rate_limit: {{quota: 1, duration: 1, key: '{key}'}}\n"))
    assert config.paths[0].features.rate_limit.key == key


def test_bad_trusted_proxies():
    error = config_error("premier:\n  trusted_proxies: ['10.0.0.0/8', 'not-an-ip']\n")
    assert_issue(error, "premier.trusted_proxies", "must be IP addresses or CIDR networks", "'not-an-ip'")
    error = config_error("premier:\n  trusted_proxies: 10.0.0.1\n")
    assert_issue(error, "premier.trusted_proxies", "must be a list")


def test_good_trusted_proxies():
    config = GatewayConfig.from_yaml("premier:\n  trusted_proxies: ['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8']\n")
    assert config.trusted_proxies == ("10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8")


def test_empty_keyspace():
    assert_issue(config_error("premier:\n  keyspace: '  '\n"), "premier.keyspace", "must not be empty")


def test_null_for_a_required_field():
    error = config_error(one_path("rate_limit: {quota: null, duration: 1}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "must be an integer", "got null")


def test_several_mistakes_are_reported_together():
    error = config_error(
        """\
premier:
  keyspce: x
  servers: ['ftp://b1']
  paths:
    - pattern: /a
      features:
        rate_limit: {quota: 0, duration: 60, algorithm: token_bucktet}
    - pattern: '^(('
      features:
        timeout: {seconds: -1}
"""
    )
    paths = [issue.path for issue in error.issues]
    assert paths == [
        "premier.keyspce",
        "premier.servers[0].url",
        "premier.paths[0].features.rate_limit.quota",
        "premier.paths[0].features.rate_limit.algorithm",
        "premier.paths[1].pattern",
        "premier.paths[1].features.timeout.seconds",
    ]
    assert "(6 problems)" in str(error)
    assert all(f"  {issue}" in str(error) for issue in error.issues)


def test_config_error_from_a_string_and_an_issue():
    assert ConfigError("plain").issues == (ConfigIssue("", "plain"),)
    error = ConfigError(ConfigIssue("premier.x", "bad"), source="g.yaml")
    assert str(error) == "invalid configuration in g.yaml (1 problem):\n  premier.x: bad"


# ---------------------------------------------------------------------------------------------------
# environment variables


def test_env_substitution(monkeypatch):
    monkeypatch.setenv("PREMIER_KEYSPACE", "from-env")
    monkeypatch.setenv("BACKEND_HOST", "b9")
    monkeypatch.delenv("BACKEND_PORT", raising=False)
    config = GatewayConfig.from_yaml(
        "premier:\n  keyspace: ${PREMIER_KEYSPACE}\n  servers: ['http://${BACKEND_HOST}:${BACKEND_PORT:-8000}/x']\n"
    )
    assert config.keyspace == "from-env"
    assert config.servers[0].url == "http://b9:8000/x"


def test_env_substitution_into_numeric_fields(monkeypatch):
    monkeypatch.setenv("RL_QUOTA", "250")
    monkeypatch.setenv("RL_DURATION", "0.5")
    monkeypatch.delenv("TIMEOUT_S", raising=False)
    config = GatewayConfig.from_yaml(
        one_path(
            """\
            rate_limit: {quota: '${RL_QUOTA}', duration: '${RL_DURATION}'}
            timeout: {seconds: '${TIMEOUT_S:-7.5}'}
            """
        )
    )
    features = config.paths[0].features
    assert features.rate_limit.quota == 250 and type(features.rate_limit.quota) is int
    assert features.rate_limit.duration == 0.5
    assert features.timeout.seconds == 7.5


def test_env_value_still_validated(monkeypatch):
    monkeypatch.setenv("RL_QUOTA", "lots")
    error = config_error(one_path("rate_limit: {quota: '${RL_QUOTA}', duration: 1}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "must be an integer", "${RL_QUOTA}")
    assert "lots" not in str(error)  # (an environment variable's value may be a secret: never shown)
    monkeypatch.setenv("RL_QUOTA", "0")
    error = config_error(one_path("rate_limit: {quota: '${RL_QUOTA}', duration: 1}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "must be greater than 0")


def test_secrets_are_never_shown_in_errors(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://default:REDISPASS@127.0.0.1:6379/0x")
    error = config_error("premier:\n  storage: {url: '${REDIS_URL}'}\n")
    assert_issue(error, "premier.storage.url", "database number", "${REDIS_URL}")
    assert "REDISPASS" not in str(error) and "127.0.0.1" not in str(error)  # (nothing of an environment's value)
    error = config_error("premier:\n  storage: {url: 'redis://default:p@ss-SECRET@127.0.0.1:6379/0x'}\n")
    assert "SECRET" not in str(error) and "default:***@127.0.0.1" in str(error)  # (a written URL: its password)
    error = config_error("premier:\n  storage: {url: 'redis://u:pa/ss@h:6379/0'}\n")
    assert "pa/ss" not in str(error) and "not shown" in str(error)
    error = config_error("premier:\n  servers: ['http://svc:BACKENDPW@127.0.0.1:9000']\n")
    assert_issue(error, "premier.servers[0].url", "must not hold credentials")  # (never sent; shown in 502s)
    assert "BACKENDPW" not in str(error)


def test_a_billion_laughs_or_deep_nesting_is_refused_at_once():
    # a few hundred bytes whose aliases expand to 10**9 values: refused before anything walks them
    laughs = "a0: &a0 [" + ", ".join(["lol"] * 10) + "]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)
    ) + "premier:\n  paths: *a8\n"
    merges = "x0: &x0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}\n" + "".join(
        f"x{i}: &x{i} {{<<: [" + ", ".join([f"*x{i - 1}"] * 10) + "]}\n" for i in range(1, 9)
    ) + "premier: {}\n"  # (merge keys expand while YAML loads: counted on the node graph, before)
    started = time.monotonic()
    for text in (laughs, merges):
        with pytest.raises(ConfigError, match="more than 100000 values"):
            GatewayConfig.from_yaml(text)
    with pytest.raises(ConfigError, match="nested"):
        GatewayConfig.from_yaml("premier: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="nested deeper"):
        GatewayConfig.from_yaml("premier: " + "[" * 100 + "]" * 100)
    assert time.monotonic() - started < 5


def test_references_cannot_make_millions_of_problems_or_characters(monkeypatch):
    monkeypatch.setenv("BIG", "x" * 40_000)
    started = time.monotonic()
    error = config_error("premier:\n  keyspace: '" + "${UNSET_VARIABLE}" * 2000 + "'\n")
    assert len(error.issues) == 1  # (one problem per variable and value)
    fan = "a: &a ['" + "${BIG}" * 30 + "']\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\npremier:\n  trusted_proxies: *b\n"
    error = config_error(fan)
    assert any("past 1048576 characters" in issue.message for issue in error.issues)
    assert len(error.issues) <= 200
    assert time.monotonic() - started < 5


def test_empty_env_value_uses_the_default(monkeypatch):
    monkeypatch.setenv("PREMIER_KEYSPACE", "")
    assert GatewayConfig.from_yaml("premier:\n  keyspace: ${PREMIER_KEYSPACE:-fallback}\n").keyspace == "fallback"


def test_missing_env_variable_names_the_field(monkeypatch):
    monkeypatch.delenv("NO_SUCH_QUOTA", raising=False)
    error = config_error(one_path("rate_limit: {quota: '${NO_SUCH_QUOTA}', duration: 1}\n"))
    assert_issue(
        error,
        "premier.paths[0].features.rate_limit.quota",
        "environment variable NO_SUCH_QUOTA is not set",
    )


def test_dollar_dollar_escapes_a_reference(monkeypatch):
    monkeypatch.setenv("X", "nope")
    config = GatewayConfig.from_yaml(one_path("rate_limit: {quota: 1, duration: 1, error_message: 'cost $${X}'}\n"))
    assert config.paths[0].features.rate_limit.error_message == "cost ${X}"


def test_string_fields_stay_plain_strings(monkeypatch):
    monkeypatch.setenv("KS", "123")
    config = GatewayConfig.from_yaml("premier:\n  keyspace: ${KS}\n")
    assert config.keyspace == "123" and type(config.keyspace) is str


def test_quoted_numbers_in_yaml_are_strings_not_numbers():
    error = config_error(one_path("rate_limit: {quota: '10', duration: 1}\n"))
    assert_issue(error, "premier.paths[0].features.rate_limit.quota", "must be an integer")


# -- values that parse but cannot work -----------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "field"),
    [
        ("rate_limit: {quota: 1, duration: .inf}", "rate_limit.duration"),
        ("timeout: {seconds: .nan}", "timeout.seconds"),
        ("circuit_breaker: {recovery_timeout: .inf}", "circuit_breaker.recovery_timeout"),
        ("cache: {expire_s: .inf}", "cache.expire_s"),
        ("monitoring: {log_threshold: .nan}", "monitoring.log_threshold"),
    ],
)
def test_infinite_and_nan_numbers_are_rejected(feature, field):
    error = config_error(one_path(feature + "\n"))
    assert_issue(error, f"premier.paths[0].features.{field}", "must be a finite number")


def test_a_nan_retry_wait_is_rejected():
    error = config_error(one_path("retry: {wait: [1, .nan]}\n"))
    assert_issue(error, "premier.paths[0].features.retry.wait", "finite")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("^a{99999999999}", "regular expression"), ("/a/{x}/{x}", "glob pattern")],
)
def test_patterns_that_cannot_compile_are_config_errors(pattern, reason):
    error = config_error(f"premier:\n  paths:\n    - pattern: '{pattern}'\n")
    assert_issue(error, "premier.paths[0].pattern", reason)


def test_a_malformed_dotted_exception_name_is_a_config_error():
    error = config_error(one_path("retry: {exceptions: ['..x']}\n"))
    assert_issue(error, "premier.paths[0].features.retry.exceptions", "'..x'")


def test_a_duplicate_pattern_is_a_config_error():
    error = config_error("premier:\n  paths:\n    - pattern: /a\n    - pattern: /b\n    - pattern: /a\n")
    assert_issue(error, "premier.paths[2].pattern", "already the pattern of paths[0]")


def test_scientific_notation_read_as_text_gets_a_hint():
    error = config_error(one_path("timeout: {seconds: 1e3}\n"))
    assert_issue(error, "premier.paths[0].features.timeout.seconds", "write 1000")
