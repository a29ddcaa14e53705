"""``premier check FILE``: validate a configuration and show the policy of each path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from premier.cli import describe_features, main
from premier.config import FeaturesConfig, GatewayConfig

GOOD = """\
premier:
  keyspace: "my-api"
  paths:
    - pattern: "/api/users/*"
      features:
        cache:      {expire_s: 300}
        rate_limit: {quota: 100, duration: 60, algorithm: sliding_window}
    - pattern: "/health"
      features: {monitoring: null, timeout: null}
    - pattern: "^/v[0-9]+/"
      features:
        retry:           {max_attempts: 4}
        circuit_breaker: {failure_threshold: 2, recovery_timeout: 30}
  default_features: {timeout: {seconds: 10.0}, monitoring: {log_threshold: 0.5}}
"""

BAD = """\
premier:
  paths:
    - pattern: "/api/*"
      features:
        rate_limit: {quota: 0, duration: 60, algoritm: token_bucket}
"""


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


def test_check_ok_prints_one_line_per_path_policy(good_file, capsys):
    assert main(["check", str(good_file)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"ok: {good_file} (keyspace 'my-api', 3 path policies)"
    assert len(lines) == 1 + 3 + 1  # the header, each path, then requests no path matched
    users, health, versioned, other = lines[1:]
    assert users.split() == [
        "/api/users/*",
        "cache(300s)",
        "rate_limit(100/60s",
        "sliding_window,",
        "per",
        "client)",
        "timeout(10s)",
        "monitoring(log",
        "over",
        "0.5s)",
    ]
    assert health.split() == ["/health", "no", "features"]
    assert versioned.split()[0] == "^/v[0-9]+/"
    assert "retry(4 attempts)" in versioned and "circuit_breaker(2 failures, 30s)" in versioned
    assert other.split()[:2] == ["(other", "paths)"]
    assert "timeout(10s) monitoring(log over 0.5s)" in other


def test_check_single_path_says_policy(tmp_path, capsys):
    path = tmp_path / "one.yaml"
    path.write_text("premier:\n  paths:\n    - pattern: /x\n", encoding="utf-8")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(keyspace 'asgi-gateway', 1 path policy)" in out
    assert out.splitlines()[1].split() == ["/x", "no", "features"]


def test_check_invalid_file_names_each_field_and_exits_1(bad_file, capsys):
    assert main(["check", str(bad_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"invalid configuration in {bad_file} (2 problems)" in err
    assert "premier.paths[0].features.rate_limit.algoritm: unknown field; did you mean 'algorithm'?" in err
    assert "premier.paths[0].features.rate_limit.quota: must be greater than 0, got 0" in err


def test_check_missing_file(tmp_path, capsys):
    assert main(["check", str(tmp_path / "absent.yaml")]) == 1
    assert "cannot read configuration file" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "file" in capsys.readouterr().err


def test_check_via_subprocess(good_file, bad_file):
    ok = subprocess.run(
        [sys.executable, "-m", "premier.cli", "check", str(good_file)], capture_output=True, text=True, timeout=30
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok: {good_file}")
    assert len(ok.stdout.splitlines()) == 5
    bad = subprocess.run(
        [sys.executable, "-m", "premier.cli", "check", str(bad_file)], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 1
    assert "premier.paths[0].features.rate_limit.quota" in bad.stderr


def test_describe_features():
    assert describe_features(FeaturesConfig()) == "no features"
    config = GatewayConfig.from_yaml(
        "premier:\n  default_features: {cache: {}, rate_limit: {quota: 3, duration: 1.5, key: global}}\n"
    )
    assert (
        describe_features(config.features_for(None)) == "cache(no expiry) rate_limit(3/1.5s fixed_window, per global)"
    )


def checked(path, capsys, text):
    """What ``premier check`` prints for ``text`` (written to ``path``), which it must accept."""
    path.write_text(text, encoding="utf-8")
    assert main(["check", str(path)]) == 0, capsys.readouterr()
    out, err = capsys.readouterr()
    return out + err


def test_check_notes_a_cache_key_the_pattern_does_not_capture(tmp_path, capsys):
    out = checked(tmp_path / "gateway.yaml", capsys,
        "premier:\n  paths:\n"
        "    - {pattern: '/users/*', features: {cache: {cache_key: 'user:{user_id}'}}}\n"
        "    - {pattern: '/items/{item_id}', features: {cache: {cache_key: 'item:{item_id}'}}}\n"
    )
    assert out.count("note: cache_key") == 1 and "{user_id} is not captured by the pattern" in out


def test_check_notes_a_bucket_size_that_does_nothing(tmp_path, capsys):
    out = checked(tmp_path / "gateway.yaml", capsys,
        "premier:\n  paths:\n"
        "    - {pattern: '/a', features: {rate_limit: {quota: 5, duration: 1, algorithm: sliding_window, bucket_size: 3}}}\n"
        "    - {pattern: '/b', features: {rate_limit: {quota: 5, duration: 1, algorithm: leaky_bucket, bucket_size: 3}}}\n"
    )
    assert out.count("note: rate_limit.bucket_size") == 1 and "ignored with sliding_window" in out


def test_check_into_a_closed_pipe_exits_quietly(tmp_path):
    config = tmp_path / "many.yaml"  # an output far larger than a pipe's buffer: writing must hit the closed end
    config.write_text("premier:\n  paths:\n" + "".join(
        f"    - {{pattern: '/p{i}/*', features: {{timeout: {{seconds: 1}}}}}}\n" for i in range(3000)
    ))
    result = subprocess.run(
        f"{sys.executable} -m premier.cli check {config} | head -c 3", shell=True, capture_output=True, text=True,
        timeout=30,
    )
    assert result.stdout == "ok:" and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_every_configuration_in_the_readme_checks_without_a_note(tmp_path, capsys, monkeypatch):
    # The README's YAML is what users copy: each whole one (a top-level premier:) must pass as it stands,
    # and with nothing premier check would remark on (a setting it ignores, a cache_key it cannot fill).
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    configurations = [text for text in re.findall(r"```yaml\n(.*?)```", readme, re.S) if text.startswith("premier:")]
    assert len(configurations) >= 3
    monkeypatch.setenv("PREMIER_DASHBOARD_TOKEN", "a-token-for-the-test")
    for number, text in enumerate(configurations):
        assert "note:" not in checked(tmp_path / f"readme-{number}.yaml", capsys, text), text
