"""`python -m bench`: build the benchmark repository, measure every way of serving it, print and save."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from classifiers.backends.registry import BACKEND_CHOICES, DEFAULT_BACKEND

RESULTS = Path(__file__).resolve().parent / "results"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the benchmark options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--input-size", type=int, default=None, help="square input side (default 224; 64 quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small input, few requests")
    parser.add_argument("--out", type=Path, default=RESULTS / "run.json", help="JSON results file")
    parser.add_argument("--cache", type=Path, default=RESULTS / "models", help="benchmark repositories folder")
    parser.add_argument("--backbone", default="densenet169", help="experts' backbone (densenet169, tiny, ...)")
    parser.add_argument("--router-backbone", default=None,
                        help="router backbone (default: the experts'; e.g. mobilenetv3small, efficientnetb0)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent studies in process and over HTTP")
    parser.add_argument("--studies", type=int, default=None, help="3-view studies per concurrent measurement")
    parser.add_argument("--naive-views", type=int, default=None, help="views for the naive measurement")
    parser.add_argument("--single-views", type=int, default=None,
                        help="1-view studies over HTTP for the single-view latency (default 60; 6 quick)")
    parser.add_argument("--time-limit", type=float, default=90.0, help="seconds per measurement, at most")
    parser.add_argument("--max-batch-size", type=int, default=16, help="batcher max batch size")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="batcher max wait, ms")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the pipeline's models")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="TensorFlow intra-op threads (0: default)")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="TensorFlow inter-op threads (0: default)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    parser.add_argument("--skip-service", action="store_true", help="do not start gunicorn")
    parser.add_argument("--compare-routers", default="mobilenetv3small,efficientnetb0",
                        help="comma-separated router backbones to cost beside the router ('' for none)")
    parser.add_argument("--skip-xla", action="store_true", help="do not compare tf.function with XLA")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=list(BACKEND_CHOICES),
                        help="pipeline and service backend (all but tensorflow optimize the repository once:"
                             " fp32 ONNX + INT8, kept in the cache)")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile, kept in the record")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    """One line to stderr, so a long run shows where it is."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure_in_process(arguments: argparse.Namespace, repository: Path,
                       sizes: dict[str, int]) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    """Everything measured inside this process, and the router's and an expert's forward at batch 1.

    The pipeline is closed before returning; its router and first expert stay loaded for the forwards, which
    the single-view measurement over HTTP times again beside its requests.
    """
    from bench.inprocess import (
        BatchRecorder,
        batch_one_forwards,
        compare_routers,
        compare_xla,
        keras_models_of,
        load_pipeline,
        measure_forward,
        measure_naive,
        measure_onnx_precisions,
        measure_pipeline,
    )
    from bench.machine import matmul_gflops, peak_rss_mb
    from bench.models import count_flops
    from bench.workload import make_view_bytes
    from classifiers import PipelineSettings

    results: dict[str, Any] = {"matmul_size": sizes["matmul"]}
    progress("matmul limit")
    gflops_start = matmul_gflops(sizes["matmul"])
    progress("loading the pipeline (eight models, warm-up)")
    recorder = BatchRecorder()
    settings = PipelineSettings(max_batch_size=arguments.max_batch_size, max_wait_ms=arguments.max_wait_ms,
                                jit_compile=arguments.jit_compile, intra_op_threads=arguments.intra_op_threads,
                                inter_op_threads=arguments.inter_op_threads, backend=arguments.backend,
                                on_batch=recorder)
    pipeline, results["load_seconds"] = load_pipeline(repository, settings)
    results["load_breakdown_seconds"] = pipeline.load_breakdown
    try:
        expert_role = pipeline.body_parts[0]
        keras_models = keras_models_of(pipeline)
        router_model = keras_models["router"]
        expert_model = keras_models[expert_role]
        flops = {"router": count_flops(router_model), "expert": count_flops(expert_model)}
        results["flops_per_view"] = {**flops, "both": flops["router"] + flops["expert"]}
        progress(f"loaded in {results['load_seconds']:.1f} s; compiled forward passes")
        forward = measure_forward(pipeline, (1, 8), sizes["repeats"])
        results["forward_ms"] = {"router": forward["router"], "expert": forward[expert_role]}
        forwards = batch_one_forwards(pipeline)
        results["backends"] = {role: f"{loaded.runner.backend} ({loaded.runner.file_name})"
                               for role, loaded in pipeline.models.items()}
        results["onnx_forward_ms"] = measure_onnx_precisions(pipeline, (1, 8), sizes["repeats"])
        views = [make_view_bytes(seed) for seed in range(12)]
        progress("naive Model.predict")
        results["naive"] = measure_naive(pipeline, keras_models, views, sizes["naive_views"])
        progress("pipeline in process")
        results["pipeline"] = {
            "single_view": measure_pipeline(pipeline, views, sizes["single_views"], 1, 1, arguments.time_limit,
                                            recorder),
            "concurrent": measure_pipeline(pipeline, views, sizes["studies"], 3, arguments.clients,
                                           arguments.time_limit, recorder),
        }
        if not arguments.skip_xla:
            progress("tf.function vs XLA")
            results["xla_vs_tf_function"] = compare_xla(router_model, pipeline.models["router"].input_size,
                                                        (1, 8), sizes["repeats"])
        routers = tuple(name for name in arguments.compare_routers.split(",") if name)
        if routers:
            progress(f"router alternatives: {', '.join(routers)}")
            results["router_alternatives"] = compare_routers(routers, pipeline.models["router"].input_size,
                                                             sizes["repeats"])
    finally:
        pipeline.close()
    results["matmul_gflops"] = max(gflops_start, matmul_gflops(sizes["matmul"]))
    results["bench_peak_rss_mb"] = peak_rss_mb()
    return results, forwards


def measure_service(arguments: argparse.Namespace, repository: Path, sizes: dict[str, int],
                    forwards: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Start gunicorn over `repository`, measure single-view latency (beside `forwards`) and throughput, stop it."""
    from bench.service import load_test, run_gunicorn, single_view_against_forward, worker_peak_rss_mb
    from bench.workload import make_view_bytes

    environment = {"TRIAGE_MAX_BATCH_SIZE": str(arguments.max_batch_size),
                   "TRIAGE_MAX_WAIT_MS": str(arguments.max_wait_ms),
                   "TRIAGE_JIT_COMPILE": str(int(arguments.jit_compile)),
                   "TRIAGE_INTRA_OP_THREADS": str(arguments.intra_op_threads),
                   "TRIAGE_INTER_OP_THREADS": str(arguments.inter_op_threads),
                   "TRIAGE_BACKEND": arguments.backend}
    views = [make_view_bytes(seed) for seed in range(12)]
    progress("starting gunicorn")
    log_path = arguments.out.with_suffix(".gunicorn.log")
    with run_gunicorn(repository, arguments.workers, arguments.threads, environment, log_path,
                      startup_limit_s=600) as server:
        progress(f"gunicorn ready in {server.ready_seconds:.1f} s; HTTP load")
        single = single_view_against_forward(server, views, forwards, sizes["single_views"])
        concurrent = load_test(server, views, 3, arguments.clients, sizes["studies"], arguments.time_limit)
        return {"workers": arguments.workers, "threads": arguments.threads, "ready_seconds": server.ready_seconds,
                "single_view": single, "concurrent": concurrent, "worker_peak_rss_mb": worker_peak_rss_mb(server)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON record."""
    arguments = parse_arguments(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench.machine import describe_machine, load_average
    from bench.models import build_repository, prepare_repository
    from bench.report import compute_ratios, format_table, judge_targets, write_json

    side = arguments.input_size or (64 if arguments.quick else 224)
    sizes = ({"matmul": 512, "repeats": 2, "naive_views": 4, "studies": 6, "single_views": 6} if arguments.quick else
             {"matmul": 2048, "repeats": 3, "naive_views": 12, "studies": 24, "single_views": 60})
    sizes["single_views"] = arguments.single_views or sizes["single_views"]
    sizes["naive_views"] = arguments.naive_views or sizes["naive_views"]
    sizes["studies"] = arguments.studies or sizes["studies"]
    router_backbone = arguments.router_backbone or arguments.backbone
    started = time.perf_counter()
    results: dict[str, Any] = {"command": " ".join(["python -m bench", *(argv or sys.argv[1:])]),
                               "machine": describe_machine(), "note": arguments.note,
                               "input_size": side, "backbone": arguments.backbone,
                               "router_backbone": router_backbone,
                               "settings": {key: getattr(arguments, key) for key in (
                                   "max_batch_size", "max_wait_ms", "jit_compile", "intra_op_threads",
                                   "inter_op_threads", "workers", "threads", "clients", "backend")}}
    try:
        repository = build_repository(arguments.cache, router_backbone, arguments.backbone, (side, side))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if arguments.backend != "tensorflow":
        prepare_repository(repository, log=progress)
    results["repository"] = str(repository)
    in_process, forwards = measure_in_process(arguments, repository, sizes)
    results.update(in_process)
    results["service"] = None if arguments.skip_service else measure_service(arguments, repository, sizes, forwards)
    results["ratios"] = compute_ratios(results)
    results["targets"] = judge_targets(results["ratios"], results["machine"])
    results["load_average_end"] = load_average()
    results["total_seconds"] = time.perf_counter() - started
    print(format_table(results))
    print(f"\nload average at start {results['machine']['load_average']}, at end {results['load_average_end']}")
    write_json(results, arguments.out)
    print(f"results written to {arguments.out}")
    return 0
