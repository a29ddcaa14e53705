"""The summary table of bench/run: turns the JSON results of the benchmark scripts (each its own format) into
rows of one table, and renders it as text (the terminal) and Markdown (bench/results/summary.md).

A row: ``script``, ``scenario``, ``unit`` (``µs/op`` in-process, else a throughput: ``req/s``, ``checks/s``,
``msgs/s``), ``value`` with ``value_min``/``value_max`` over rounds, ``p50_ms``/``p99_ms`` and ``cpu_us`` (CPU
µs per request, check or message) where measured, ``reference`` and ``ratio`` (with ``ratio_min``/``ratio_max``
over rounds where the script gives them per round), and ``kind``: ``premier``, ``reference`` (what others are
compared against), ``not measured`` or ``failed``. A ratio always reads "how many times the reference's
throughput" (for times: reference ns / ours): above 1, Premier is faster.
"""

from __future__ import annotations

import math
from typing import Any

Row = dict[str, Any]

# in scripts whose rows carry no "reference": the reference of a row, from its name
REFERENCES = {
    "gateway_inprocess": lambda name: "FastAPI app" if name.startswith("FastAPI") else "bare app",
    "plugin_http": lambda name: "FastAPI app" if name.startswith("FastAPI") else "raw ASGI app",
    "standalone_http": lambda name: "nginx",
}
CPU_KEYS = ("cpu_us_per_request", "cpu_us_per_check", "cpu_us_per_message")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None


def _base_row(script: str, name: str, raw: dict[str, Any]) -> Row | None:
    """The measured values of one scenario, whatever the script called them; None when it has none."""
    row: Row = {"script": script, "scenario": name, "kind": "premier", "reference": raw.get("reference"),
                "value_min": None, "value_max": None}
    if _num(raw.get("median_ns")) is not None:
        row.update(unit="µs/op", value=raw["median_ns"] / 1e3,
                   value_min=_num(raw.get("min_ns")) and raw["min_ns"] / 1e3,
                   value_max=_num(raw.get("max_ns")) and raw["max_ns"] / 1e3)
    elif _num(raw.get("rps")) is not None:
        row.update(unit="req/s", value=raw["rps"], value_min=_num(raw.get("rps_min")), value_max=_num(raw.get("rps_max")))
    elif _num(raw.get("median_per_s")) is not None:
        per_round = [x for x in raw.get("samples_per_s") or [] if _num(x) is not None]
        row.update(unit="checks/s", value=raw["median_per_s"],
                   value_min=min(per_round, default=None), value_max=max(per_round, default=None))
    elif _num(raw.get("msgs_per_s")) is not None:
        row.update(unit="msgs/s", value=raw["msgs_per_s"], value_min=_num(raw.get("msgs_per_s_min")),
                   value_max=_num(raw.get("msgs_per_s_max")))
    else:
        return None
    if _num(raw.get("added_ns")) is not None:  # gateway_inprocess.py: the time added to the bare app
        row["added_us"] = raw["added_ns"] / 1e3
    row["p50_ms"], row["p99_ms"] = _num(raw.get("p50_ms")), _num(raw.get("p99_ms"))
    row["cpu_us"] = next((_num(raw[k]) for k in CPU_KEYS if _num(raw.get(k)) is not None), None)
    row["ratio"], row["ratio_min"], row["ratio_max"] = (_num(raw.get(k)) for k in ("ratio", "ratio_min", "ratio_max"))
    return row


def _ratio_of_medians(ours: Row, ref: Row) -> float:
    """Throughput ratio of two rows from their medians (times are inverted: ref / ours)."""
    return ref["value"] / ours["value"] if ours["unit"] == "µs/op" else ours["value"] / ref["value"]


def rows_of(script: str, data: dict[str, Any]) -> list[Row]:
    """The table's rows for one script's JSON result."""
    table = data.get("rows") or data.get("scenarios") or {}
    base = {name: row for name, raw in table.items() if isinstance(raw, dict) and (row := _base_row(script, name, raw))}
    rows: list[Row] = []
    referenced: set[str] = set()

    if isinstance(data.get("comparisons"), list):  # micro.py: [{ours, reference, ratio, ratio_min, ratio_max}]
        compared: dict[str, list[dict[str, Any]]] = {}
        for c in data["comparisons"]:
            compared.setdefault(c["ours"], []).append(c)
        for name, row in base.items():
            for c in compared.get(name, [None]):  # type: ignore[list-item]
                if c is not None:
                    row = {**row, "reference": c["reference"], "ratio": c.get("ratio"),
                           "ratio_min": c.get("ratio_min"), "ratio_max": c.get("ratio_max")}
                    referenced.add(c["reference"])
                rows.append(row)
    elif isinstance(data.get("ratios"), dict) and any(" / " in k for k in data["ratios"]):
        # redis_limiter.py: {"ours / peer": {median, best}}, the per-round ratios from the samples
        pairs = [tuple(k.split(" / ", 1)) for k in data["ratios"]]
        for name, row in base.items():
            refs = [ref for ours, ref in pairs if ours == name and ref in base]
            for ref in refs or [None]:
                if ref is not None:
                    ours_s, ref_s = table[name].get("samples_per_s") or [], table[ref].get("samples_per_s") or []
                    per_round = [o / r for o, r in zip(ours_s, ref_s, strict=False) if r]
                    row = {**row, "reference": ref, "ratio": _ratio_of_medians(row, base[ref]),
                           "ratio_min": min(per_round, default=None), "ratio_max": max(per_round, default=None)}
                    referenced.add(ref)
                rows.append(row)
    else:
        name_to_ref = REFERENCES.get(script)
        for name, row in base.items():
            row = dict(row)
            if row["reference"] is None and name_to_ref is not None:
                ref = name_to_ref(name)
                row["reference"] = None if ref == name or ref not in base else ref
            if row["reference"] is not None:
                referenced.add(row["reference"])
                if row["ratio"] is None and row["reference"] in base:
                    row["ratio"] = _ratio_of_medians(row, base[row["reference"]])
            elif row["ratio"] == 1.0:
                row["ratio"] = row["ratio_min"] = row["ratio_max"] = None  # the reference itself
            rows.append(row)
    for row in rows:
        if row["scenario"] in referenced or not _is_ours(row["scenario"]):
            row["kind"] = "reference"
    return rows


def _is_ours(name: str) -> bool:
    """Premier's own rows (the rest are peers and references), from the scripts' naming."""
    lower = name.lower()
    return lower.startswith(("premier", "gateway", "plugin", "standalone", "fastapi +", "raw asgi +")) and (
        "0.4.10" not in lower)


def targets_of(script: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue targets a script checked: {"script", "target", "met", "detail"}."""
    found = []
    for label, value in (data.get("targets") or {}).items():
        if isinstance(value, dict):
            detail = "; ".join(str(v) if k == "detail" else f"{k} {v}" for k, v in value.items() if k != "met")
            found.append({"script": script, "target": label, "met": bool(value.get("met")), "detail": detail})
        else:
            found.append({"script": script, "target": label, "met": bool(value), "detail": ""})
    return found


def build(results: dict[str, dict[str, Any] | None], *, failures: dict[str, str] | None = None,
          not_measured: list[tuple[str, str, str]] | None = None) -> dict[str, Any]:
    """The summary: ``results`` maps each script name to its JSON result (None when it did not run),
    ``failures`` a script to why it did not run, ``not_measured`` (script, scenario, why) rows to add."""
    rows: list[Row] = []
    targets: list[dict[str, Any]] = []
    for script, data in results.items():
        if data is None:
            rows.append({"script": script, "scenario": "(did not run)", "kind": "failed",
                         "note": (failures or {}).get(script, "no result")})
            continue
        rows.extend(rows_of(script, data))
        targets.extend(targets_of(script, data))
    for script, scenario, why in not_measured or []:
        rows.append({"script": script, "scenario": scenario, "kind": "not measured", "note": why})
    return {"rows": rows, "targets": targets,
            "targets_met": sum(t["met"] for t in targets), "targets_total": len(targets)}


# -- rendering ------------------------------------------------------------------------------------------------
COLUMNS = ("script", "scenario", "value", "min–max", "p50 ms", "p99 ms", "CPU µs", "ratio", "ratio min–max", "vs")


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "µs/op" or abs(value) < 10:
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:,.0f}"


def cells(row: Row) -> list[str]:
    if row["kind"] in ("failed", "not measured"):
        return [row["script"], row["scenario"], row["kind"].upper() if row["kind"] == "failed" else "not measured yet",
                "", "", "", "", "", "", row.get("note", "")]
    unit = row["unit"]
    spread = (f"{_fmt(row['value_min'], unit)}–{_fmt(row['value_max'], unit)}"
              if row.get("value_min") is not None and row.get("value_max") is not None else "–")
    ratio = f"{row['ratio']:.2f}x" if row.get("ratio") is not None else ("ref" if row["kind"] == "reference" else "–")
    ratio_spread = (f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}"
                    if row.get("ratio_min") is not None and row.get("ratio_max") is not None else "–")
    value = f"{_fmt(row['value'], unit)} {unit}"
    if row.get("added_us"):
        value += f" ({row['added_us']:+.2f})"
    return [row["script"], row["scenario"], value, spread, _fmt(row.get("p50_ms")),
            _fmt(row.get("p99_ms")), _fmt(row.get("cpu_us")), ratio, ratio_spread, row.get("reference") or ""]


def render_text(summary: dict[str, Any]) -> str:
    table = [list(COLUMNS)] + [cells(row) for row in summary["rows"]]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    right = {2, 3, 4, 5, 6, 7, 8}
    lines = []
    for n, r in enumerate(table):
        if n and r[0] != table[n - 1][0]:
            lines.append("")
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    lines += ["", "ratio: throughput relative to the reference in `vs` (times: reference / ours), median over rounds,"
              " min–max of the per-round ratios;", "above 1 Premier is faster; (+x): µs added to the bare app;"
              " CPU µs: the server's CPU per request, check or message", "", f"targets ({summary['targets_met']}/{summary['targets_total']} met):"]
    lines += [f"  {'met   ' if t['met'] else 'MISSED'} {t['script']}: {t['target']}" + (f" ({t['detail']})" if t["detail"] else "")
              for t in summary["targets"]]
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any], header: dict[str, Any]) -> str:
    """``header``: date, machine (nproc, cpu, python, kernel, loadavg), mode, notes."""
    m = header["machine"]
    out = [f"## Benchmark summary ({header['mode']})", "",
           f"{header['date']} · {m['nproc']} × {m['cpu']} · Python {m['python']} · Linux {m['kernel']} · "
           f"load average {m['loadavg_before']} before, {m['loadavg_after']} after · {header['elapsed_s']:.0f} s", ""]
    out += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 2 + "---:|" * 7 + "---|"]
    for row in summary["rows"]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |")
    out += ["", "ratio: throughput relative to the reference in *vs* (for µs/op: reference time / ours), median "
            "over rounds, min–max of the per-round ratios; above 1 Premier is faster. (+x): µs added to the bare "
            "app. CPU µs: the server's CPU per request, check or message.", "",
            f"**Targets** ({summary['targets_met']}/{summary['targets_total']} met):", ""]
    out += [f"- {'✅ met' if t['met'] else '❌ missed'} — {t['script']}: {t['target']}" + (f" ({t['detail']})" if t["detail"] else "")
            for t in summary["targets"]]
    if header.get("notes"):
        out += ["", "Notes:", ""] + [f"- {note}" for note in header["notes"]]
    return "\n".join(out) + "\n"
