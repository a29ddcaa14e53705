"""The benchmarks themselves: the summary table of bench/run from small fake results, bench/run's choice of
quick options, and bench/websocket_echo.py run end to end in its smallest size (it needs only the project's
environment: no peer venv, no wrk or nginx), leaving no process behind."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str, path: Path) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_loader(name, SourceFileLoader(name, str(path)))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def summary() -> ModuleType:
    return load("bench_summary", BENCH / "_summary.py")


FAKE: dict[str, Any] = {
    "micro": {  # micro.py: times per op, comparisons with per-round ratios
        "scenarios": {
            "premier @retry sync, succeeds first time": {"group": "retry", "median_ns": 200.0, "min_ns": 190.0,
                                                         "max_ns": 260.0},
            "tenacity @retry sync, succeeds first time": {"group": "peer retry", "median_ns": 4000.0,
                                                          "min_ns": 3900.0, "max_ns": 4200.0},
        },
        "comparisons": [{"ours": "premier @retry sync, succeeds first time",
                         "reference": "tenacity @retry sync, succeeds first time",
                         "ratio": 20.0, "ratio_min": 16.0, "ratio_max": 21.5}],
        "targets": {"cache hit <= 3 us": {"met": True, "worst": "x", "ns": 900.0}},
    },
    "plugin_http": {  # wrk-driven: requests/s, latency, CPU, ratios computed by the script
        "rows": {
            "FastAPI app": {"rps": 9000.0, "p50_ms": 3.0, "p99_ms": 7.0, "cpu_us_per_request": 110.0,
                            "ratio": 1.0, "ratio_min": 1.0, "ratio_max": 1.0},
            "FastAPI + rate_limit+timeout+monitoring": {"rps": 8100.0, "p50_ms": 3.3, "p99_ms": 8.0,
                                                        "cpu_us_per_request": 120.0, "ratio": 0.9,
                                                        "ratio_min": 0.85, "ratio_max": 0.95},
        },
        "targets": {"rate_limit+timeout+monitoring >= 0.85x the bare app": True},
    },
    "redis_limiter": {  # checks/s with per-round samples; ratios named "ours / peer"
        "scenarios": {
            "premier acquire sliding_window": {"median_per_s": 30000, "samples_per_s": [28000, 30000, 33000],
                                               "cpu_us_per_check": 20.0},
            "limits moving window (redis-py)": {"median_per_s": 10000, "samples_per_s": [10000, 10000, 11000],
                                                "cpu_us_per_check": 70.0},
        },
        "ratios": {"premier acquire sliding_window / limits moving window (redis-py)": {"median": 3.0, "best": 3.0}},
        "targets": {">= 5000 checks/s": {"met": False, "detail": "worst 4000 checks/s"}},
    },
    "gateway_inprocess": {"rows": {"bare app": {"median_ns": 250.0, "min_ns": 240.0, "max_ns": 300.0, "added_ns": 0.0},
                                   "gateway, cache hit": {"median_ns": 2500.0, "min_ns": 2400.0, "max_ns": 2600.0,
                                                          "added_ns": 2250.0}},
                          "targets": {"cache hit served in <= 5 us": True}},
    "standalone_http": None,  # did not run
}


def test_summary_table_from_fake_results(summary: ModuleType) -> None:
    built = summary.build(FAKE, failures={"standalone_http": "skipped: nginx is not installed"},
                          not_measured=[("plugin_http", "FastAPI + all features", "no scenario yet")])
    rows = {(r["script"], r["scenario"]): r for r in built["rows"]}

    retry = rows["micro", "premier @retry sync, succeeds first time"]
    assert (retry["unit"], retry["value"], retry["ratio"], retry["ratio_min"], retry["ratio_max"]) == (
        "µs/op", 0.2, 20.0, 16.0, 21.5)
    assert retry["kind"] == "premier"
    assert rows["micro", "tenacity @retry sync, succeeds first time"]["kind"] == "reference"

    limited = rows["plugin_http", "FastAPI + rate_limit+timeout+monitoring"]
    assert (limited["unit"], limited["reference"], limited["ratio"], limited["cpu_us"], limited["p99_ms"]) == (
        "req/s", "FastAPI app", 0.9, 120.0, 8.0)
    bare = rows["plugin_http", "FastAPI app"]
    assert (bare["kind"], bare["ratio"]) == ("reference", None)

    redis = rows["redis_limiter", "premier acquire sliding_window"]
    assert redis["reference"] == "limits moving window (redis-py)"
    assert redis["ratio"] == pytest.approx(3.0)
    assert (redis["ratio_min"], redis["ratio_max"]) == (pytest.approx(2.8), pytest.approx(33 / 11))
    assert (redis["value_min"], redis["value_max"]) == (28000, 33000)

    hit = rows["gateway_inprocess", "gateway, cache hit"]
    assert (hit["reference"], hit["added_us"], hit["ratio"]) == ("bare app", 2.25, pytest.approx(0.1))

    assert rows["standalone_http", "(did not run)"]["kind"] == "failed"
    assert rows["plugin_http", "FastAPI + all features"]["kind"] == "not measured"
    assert (built["targets_met"], built["targets_total"]) == (3, 4)
    missed = [t for t in built["targets"] if not t["met"]]
    assert missed == [{"script": "redis_limiter", "target": ">= 5000 checks/s", "met": False,
                       "detail": "worst 4000 checks/s"}]

    text = summary.render_text(built)
    assert "20.00x" in text and "16.00–21.50" in text and "tenacity @retry sync" in text
    assert "not measured yet" in text and "skipped: nginx is not installed" in text
    assert "targets (3/4 met)" in text and "MISSED redis_limiter: >= 5000 checks/s (worst 4000 checks/s)" in text

    header = {"date": "2026-01-01T00:00:00+00:00", "mode": "quick", "elapsed_s": 95.0, "notes": ["a note"],
              "machine": {"nproc": 2, "cpu": "Test CPU", "python": "3.11.7", "kernel": "6.1.0",
                          "loadavg_before": 0.5, "loadavg_after": 1.5}}
    markdown = summary.render_markdown(built, header)
    lines = markdown.splitlines()
    assert lines[0] == "## Benchmark summary (quick)"
    assert "2026-01-01" in lines[2] and "2 × Test CPU" in lines[2] and "Python 3.11.7" in lines[2]
    assert "Linux 6.1.0" in lines[2]
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(built["rows"])
    assert all(line.count(" | ") == table[0].count(" | ") for line in table[2:])
    assert "- ❌ missed — redis_limiter: >= 5000 checks/s (worst 4000 checks/s)" in lines
    assert "- a note" in lines


def test_run_passes_only_the_quick_options_a_script_takes() -> None:
    run = load("bench_run", BENCH / "run")
    assert run.quick_args("websocket_echo", BENCH / "websocket_echo.py") == [
        "--quick", "--rounds", "2", "--seconds", "1.5"]
    run.SCRIPTS["websocket_echo"] = {"needs": [], "quick": ["--quick", "--no-such-option", "3", "--seconds", "1"]}
    assert run.quick_args("websocket_echo", BENCH / "websocket_echo.py") == ["--quick", "--seconds", "1"]
    listed = subprocess.run([sys.executable, str(BENCH / "run"), "--list"], capture_output=True, text=True,
                            check=True, timeout=30).stdout
    assert all(name in listed for name in ("micro", "plugin_http", "standalone_http", "websocket_echo"))


def processes_mentioning(needles: list[str]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(needle in cmdline for needle in needles):
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_websocket_echo_smallest_run(tmp_path: Path) -> None:
    out = tmp_path / "websocket_echo.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "websocket_echo.py"), "--rounds", "1", "--seconds", "0.3",
         "--connections", "2", "--out", str(out)], capture_output=True, text=True, timeout=50, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"direct (uvicorn echo app)", "plugin gateway", "standalone (premier serve)"}
    for row in result["rows"].values():
        assert row["msgs_per_s"] > 0 and row["errors"] == 0
        assert row["p50_ms"] <= row["p99_ms"]
    assert result["rows"]["plugin gateway"]["reference"] == "direct (uvicorn echo app)"
    # every server and client is gone: nothing runs with the run's ports on its command line
    needles = [f"--port {port} " for port in result["ports"].values()]
    needles += [f"127.0.0.1:{port}/" for port in result["ports"].values()]
    deadline = time.monotonic() + 5
    while (left := processes_mentioning(needles)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left
    for pid in result["server_pids"].values():
        assert not Path(f"/proc/{pid}").exists() or "websocket_echo" not in Path(f"/proc/{pid}/cmdline").read_text(
            errors="replace")
