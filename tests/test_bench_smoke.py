"""Smoke run of the benchmark harness on tiny models: it runs end to end and its numbers add up (no timing)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.models import build_backbone, count_flops
from bench.report import judge_targets
from classifiers.body_parts import BODY_PARTS

QUICK_ONNX_RUN = ["--quick", "--backbone", "tiny", "--input-size", "32", "--skip-xla", "--skip-service", "--studies",
                  "4", "--naive-views", "3", "--compare-routers", "", "--backend", "onnx"]


def _optimized_files(cache: Path) -> dict[Path, int]:
    """The fp32 ONNX, INT8 model and INT8 weights files under `cache`, with their modification times."""
    return {path: path.stat().st_mtime_ns for pattern in ("*.onnx", "*.int8.xml", "*.int8.bin")
            for path in cache.rglob(pattern)}


@pytest.fixture(scope="module")
def onnx_quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One --backend onnx quick run on an empty cache (it builds and optimizes the tiny repository), once per module.

    Returns its arguments, exit code, record and the optimized files it left; other tests run on copies of the cache.
    """
    folder = tmp_path_factory.mktemp("onnx_quick_run")
    arguments = [*QUICK_ONNX_RUN, "--cache", str(folder / "models"), "--out", str(folder / "onnx.json")]
    code = main(arguments)
    record = json.loads((folder / "onnx.json").read_text()) if code == 0 else None
    return {"arguments": arguments, "code": code, "record": record, "cache": folder / "models",
            "optimized": _optimized_files(folder / "models")}


@pytest.fixture
def optimized_cache(onnx_quick_run: dict, tmp_path: Path) -> Path:
    """A copy of the module's model cache, its tiny repository already exported to ONNX and INT8."""
    return Path(shutil.copytree(onnx_quick_run["cache"], tmp_path / "models"))


def test_count_flops_matches_a_hand_count():
    # Conv 3x3 stride 2 on 64x64x3 -> 31x31x8; conv 3x3 stride 2 -> 15x15x16; dense 16 -> 7.
    model = build_backbone("tiny", (64, 64), 7, "softmax")
    expected = 2 * (31 * 31 * 8 * 3 * 3 * 3 + 15 * 15 * 16 * 3 * 3 * 8 + 16 * 7)
    assert count_flops(model) == expected


def test_count_flops_of_densenet169_is_about_6_8_gflop():
    model = build_backbone("densenet169", (224, 224), 1, "sigmoid")
    assert 6.5e9 < count_flops(model) < 7.1e9


def test_unknown_backbone_names_the_valid_ones():
    with pytest.raises(ValueError, match="densenet169"):
        build_backbone("resnet9000", (32, 32), 7, "softmax")


def test_judge_targets_reads_direction():
    verdicts = judge_targets({"service_vs_naive": 2.0, "int8_vs_fp32_batch8": 2.1, "compute_vs_matmul": 0.7,
                              "p50_vs_forward": 1.1, "startup_s": 21.0, "peak_rss_mb": None}, {"simd": ["avx2"]})
    assert [verdicts[name]["met"] for name in verdicts] == [False, True, True, True, False, None]


@pytest.mark.parametrize(("simd", "target", "met"), [(["avx2"], 3.5, True), (["avx2", "avx512_vnni"], 5.0, False)])
def test_throughput_target_follows_the_machine_kind(simd, target, met):
    verdict = judge_targets({"service_vs_naive": 4.0}, {"simd": simd})["service_vs_naive"]
    assert (verdict["target"], verdict["met"]) == (target, met)


def test_quick_run_on_tiny_models_writes_a_complete_record(tmp_path, optimized_cache, capsys):
    out = tmp_path / "run.json"
    code = main(["--quick", "--backbone", "tiny", "--input-size", "32", "--cache", str(optimized_cache),
                 "--out", str(out), "--skip-xla", "--studies", "4", "--naive-views", "3", "--single-views", "5",
                 "--compare-routers", "tiny"])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["naive"]["views"] == 3
    for part in (record["pipeline"]["concurrent"], record["service"]["concurrent"]):
        assert part["errors"] == 0 and part["studies"] == 4
        assert math.isclose(part["views_per_s"], 3 * part["studies_per_s"])
    assert sum(int(size) * count for size, count in record["pipeline"]["concurrent"]["batch_sizes"].items()) == 24
    assert record["service"]["worker_peak_rss_mb"] > 50
    # Single views over HTTP, with the router's and an expert's forward timed beside them for the target's ratio.
    single = record["service"]["single_view"]
    assert (single["studies"], single["errors"]) == (5, 0) and set(single["forward_ms"]) == {"router", "expert"}
    assert record["ratios"]["p50_vs_forward"] == pytest.approx(single["p50_ms"] / sum(single["forward_ms"].values()))
    assert record["ratios"]["p50_vs_forward_at_start"] == pytest.approx(
        single["p50_ms"] / (record["forward_ms"]["router"]["1"] + record["forward_ms"]["expert"]["1"]))
    assert set(record["targets"]) == {"service_vs_naive", "int8_vs_fp32_batch8", "compute_vs_matmul",
                                      "p50_vs_forward", "startup_s", "peak_rss_mb"}
    # The default backend on an optimized repository: INT8 everywhere, and its speed-up over fp32 measured.
    assert record["backends"] == {role: f"int8 ({role}.int8.xml)" for role in ("router", *BODY_PARTS)}
    assert record["ratios"]["int8_vs_fp32_batch8"] == pytest.approx(
        record["onnx_forward_ms"]["onnx"]["8"] / record["onnx_forward_ms"]["int8"]["8"])
    assert record["router_alternatives"]["tiny"]["gflop_per_view"] > 0
    assert "HTTP gunicorn" in capsys.readouterr().out



def test_single_view_comparison_runs_both_checkouts_alternately(tmp_path, optimized_cache, capsys):
    from bench.launch import ROOT
    from bench.models import build_repository, prepare_repository
    from bench.single_view import main as single_view_main

    repository = build_repository(optimized_cache, "tiny", "tiny", (32, 32))  # the cached one, already optimized
    prepare_repository(repository, log=lambda line: None)
    out = tmp_path / "single.json"
    # This checkout against itself as the "other": the harness runs each service in turn and keeps every run.
    assert single_view_main([str(repository), "--runs", "1", "--requests", "4", "--code", str(ROOT),
                             "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"this", "other"}
    for (run,) in record["runs"].values():
        assert run["errors"] == 0 and set(run["forward_ms"]) == {"router", "expert"}
        assert run["p50_less_forward_ms"] == pytest.approx(run["p50_ms"] - sum(run["forward_ms"].values()))
        assert run["p50_over_forward"] == pytest.approx(run["p50_ms"] / sum(run["forward_ms"].values()))
    assert "median over runs, other" in capsys.readouterr().out

@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_xla_compiled_model_matches_tf_function_on_padded_batches(batch_size):
    # classifiers/runtime.py pads XLA batches to a power of two; the padding must not leak into the rows.
    from classifiers.backends.base import padded_batch_size
    from classifiers.backends.tensorflow_backend import CompiledModel
    from tests.support.model_factory import build_tiny_expert

    model = build_tiny_expert((32, 32), two_way=True)
    images = np.random.default_rng(batch_size).integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    plain = CompiledModel("plain", model, (32, 32), "torch", 3).predict(images)
    xla = CompiledModel("xla", model, (32, 32), "torch", 3, jit_compile=True).predict(images)
    assert xla.shape == plain.shape == (batch_size, 2)
    np.testing.assert_allclose(xla, plain, atol=1e-5)
    assert [padded_batch_size(size) for size in (1, 2, 3, 5, 8, 9, 16)] == [1, 2, 4, 8, 8, 16, 16]


def test_quick_onnx_run_optimizes_once_and_records_the_backend(onnx_quick_run):
    assert onnx_quick_run["code"] == 0
    record = onnx_quick_run["record"]
    assert record["settings"]["backend"] == "onnx" and record["service"] is None
    assert record["pipeline"]["concurrent"]["errors"] == 0 and record["naive"]["views"] == 3
    exported = onnx_quick_run["optimized"]
    assert len(exported) == 24  # fp32 ONNX, INT8 model and INT8 weights per model
    assert set(record["backends"]) == {"router", *BODY_PARTS}
    assert all(choice.startswith("onnx (") for choice in record["backends"].values())
    assert main(onnx_quick_run["arguments"]) == 0  # the second run reuses the files
    assert _optimized_files(onnx_quick_run["cache"]) == exported
