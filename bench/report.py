"""Ratios against the performance targets (docs/PERFORMANCE.md), the printed table, and the JSON record."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# name -> (description, threshold, "min" when the value must reach it, "max" when it must stay under it)
TARGETS: dict[str, tuple[str, float, str]] = {
    "service_vs_naive": ("HTTP views/s / naive views/s", 3.5, "min"),
    "int8_vs_fp32_batch8": ("fp32 ONNX / INT8 (OpenVINO) router forward time at batch 8", 2.0, "min"),
    "compute_vs_matmul": ("forward GFLOP/s at batch 8 / matmul GFLOP/s", 0.6, "min"),
    "p50_vs_forward": ("HTTP single-view p50 / (router + expert forward at batch 1, timed beside it)", 1.3, "max"),
    "startup_s": ("gunicorn start to /readyz 200, s", 20.0, "max"),
    "peak_rss_mb": ("gunicorn worker VmHWM, MB", 3072.0, "max"),
}
# Targets that are higher on a machine with AVX-512 VNNI (int8 dot products in one instruction).
VNNI_TARGETS = {"service_vs_naive": 5.0}


def compute_ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """The target quantities from a results record (None where a part was skipped)."""
    forward = results["forward_ms"]
    router, expert = forward["router"], forward["expert"]
    service = results.get("service") or {}
    single = service.get("single_view") or {}
    loaded = service.get("concurrent") or {}
    flops = results["flops_per_view"]
    onnx = results.get("onnx_forward_ms")
    gflops_batch8 = flops["router"] * 8 / (router["8"] / 1000) / 1e9 if "8" in router else None
    results["achieved_gflops"] = {
        "router_forward_batch8": gflops_batch8,
        "pipeline_concurrent": results["pipeline"]["concurrent"]["views_per_s"] * flops["both"] / 1e9,
        "service_concurrent": loaded["views_per_s"] * flops["both"] / 1e9 if loaded else None,
    }
    return {
        "service_vs_naive": loaded["views_per_s"] / results["naive"]["views_per_s"] if loaded else None,
        "compute_vs_matmul": gflops_batch8 / results["matmul_gflops"] if gflops_batch8 else None,
        # The forwards timed in blocks alternating with the requests (bench.service.single_view_against_forward).
        "p50_vs_forward": single["p50_over_forward"] if single else None,
        # Against the forwards timed minutes earlier, before the service started (no target: for comparison).
        "p50_vs_forward_at_start": single["p50_ms"] / (router["1"] + expert["1"]) if single else None,
        "int8_vs_fp32_batch8": onnx["onnx"]["8"] / onnx["int8"]["8"] if onnx else None,
        "startup_s": service.get("ready_seconds"),
        "peak_rss_mb": service.get("worker_peak_rss_mb"),
    }


def judge_targets(ratios: dict[str, float | None], machine: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its value, threshold (by the machine's SIMD flags) and whether it is met."""
    verdicts = {}
    vnni = "avx512_vnni" in machine.get("simd", ())
    for name, (description, threshold, direction) in TARGETS.items():
        threshold = VNNI_TARGETS.get(name, threshold) if vnni else threshold
        value = ratios.get(name)
        met = None if value is None or math.isnan(value) else (
            value >= threshold if direction == "min" else value <= threshold)
        verdicts[name] = {"description": description, "value": value, "target": threshold,
                          "direction": direction, "met": met}
    return verdicts


def _number(value: Any, digits: int = 1) -> str:
    """Format a number or a dash."""
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(results: dict[str, Any]) -> str:
    """A plain-text (Markdown) table of throughput and latency, then the targets."""
    lines = ["| measurement | views/s | studies/s | p50 ms | p95 ms | p99 ms | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = [("naive Model.predict, 1 view at a time", results["naive"]),
            ("pipeline in process, 1 client, 1-view studies", results["pipeline"]["single_view"]),
            (f"pipeline in process, {results['pipeline']['concurrent']['clients']} clients, 3-view studies",
             results["pipeline"]["concurrent"])]
    service = results.get("service") or {}
    if service:
        rows.append(("HTTP gunicorn, 1 client, 1-view studies", service["single_view"]))
        rows.append((f"HTTP gunicorn, {service['concurrent']['clients']} clients, 3-view studies",
                     service["concurrent"]))
    for label, row in rows:
        lines.append(f"| {label} | {_number(row['views_per_s'], 2)} | {_number(row.get('studies_per_s'), 2)} | "
                     f"{_number(row['p50_ms'])} | {_number(row['p95_ms'])} | {_number(row['p99_ms'])} | "
                     f"{row.get('errors', 0)} |")
    forward = results["forward_ms"]
    lines += ["", "| compiled forward, ms per call | " + " | ".join(f"batch {size}" for size in forward["router"])
              + " |", "| --- |" + " ---: |" * len(forward["router"])]
    for role in ("router", "expert"):
        lines.append(f"| {role} | " + " | ".join(_number(value) for value in forward[role].values()) + " |")
    for name, precision in (results.get("onnx_forward_ms") or {}).items():
        label = {"onnx": "fp32 ONNX (ONNX Runtime)", "int8": "INT8 (OpenVINO)"}.get(name, name)
        lines.append(f"| router {label} | " + " | ".join(_number(value) for value in precision.values()) + " |")
    for name, cost in (results.get("router_alternatives") or {}).items():
        lines.append(f"| router alternative {name} ({cost['gflop_per_view']:.2f} GFLOP), ms per view | "
                     f"{_number(cost['ms_per_view@1'])} | {_number(cost['ms_per_view@8'])} |")
    single = service.get("single_view") or {}
    if "forward_ms" in single:
        beside, ratios = single["forward_ms"], results.get("ratios", {})
        lines += ["", f"forward at batch 1 timed beside the HTTP single views: router {_number(beside['router'])} ms,"
                      f" expert {_number(beside['expert'])} ms; HTTP p50 less their sum"
                      f" {_number(single['p50_less_forward_ms'])} ms, over their sum"
                      f" {_number(ratios.get('p50_vs_forward'), 2)} (over the forwards timed at the start:"
                      f" {_number(ratios.get('p50_vs_forward_at_start'), 2)})"]
    lines += ["", "backends: " + "; ".join(f"{role} {choice}" for role, choice in results.get("backends", {}).items()),
              "", f"matmul {results['matmul_size']}^3 fp32: {results['matmul_gflops']:.1f} GFLOP/s; "
              f"FLOPs per view router {results['flops_per_view']['router'] / 1e9:.2f} G, expert "
              f"{results['flops_per_view']['expert'] / 1e9:.2f} G; in-process load {results['load_seconds']:.1f} s, "
              f"in-process peak RSS {results['bench_peak_rss_mb']:.0f} MB",
              "", "| target | value | limit | met |", "| --- | ---: | ---: | --- |"]
    for verdict in results["targets"].values():
        sign = ">=" if verdict["direction"] == "min" else "<="
        met = {True: "yes", False: "NO", None: "-"}[verdict["met"]]
        lines.append(f"| {verdict['description']} | {_number(verdict['value'], 2)} | {sign} "
                     f"{verdict['target']:g} | {met} |")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results record as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
