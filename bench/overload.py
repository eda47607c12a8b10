"""Overload and memory runs against a real gunicorn: load shedding, deadlines and the pixel budget, measured.

    python -m bench.overload [--models DIR] [--peak-clients 4] [--load 4 | --rate STUDIES_PER_S] [--seconds 30]
                             [--queue-timeout-ms MS] [--threads N] [--front nginx [--max-conns N]]
                             [--out FILE] [--note TEXT]
    python -m bench.overload --memory [--models DIR] [--studies 8] [--side 6300] [--out FILE]

Overload: `peak-clients` closed-loop clients posting 3-view studies measure the unloaded peak (accepted
studies/s); then the same studies are sent at `load` times that rate for `seconds`, open loop (each sent
once, on a schedule, whatever the answers: a 503 is shed load, not retried), while /healthz is probed every
0.5 s; `--rate` offers that many studies/s instead (backends compared at the same request rate). Printed
and saved: every outcome (status codes and connection errors by name), the latency of accepted (200) and
shed (503) studies, throughput against the peak, /healthz latency, the worker's peak RSS and the hardening
targets. With `--front nginx` the studies go through deploy/nginx.conf in front of the replica (its
max_conns: `--max-conns`, default the replica's in-flight cap), sent from 64 loopback addresses so that the
front's per-address limits do not refuse them. "One batch" is a full router batch plus a full expert
batch (max batch size views each) at the seconds per view the models took under that load (the service's
triage_batch_* metrics).

Memory: `studies` requests at once, two rounds each of (a) 12 views of side x side 16-bit PNG, over the
per-study pixel limit, and (b) 3 such views, the largest study under it; the worker's VmHWM (peak RSS)
before and after, and every outcome. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.launch import Server, encode_multipart, http_status, running_gunicorn, running_nginx
from bench.machine import describe_machine, load_average, process_peak_rss_mb
from bench.restarts import Clients, post_study
from bench.workload import make_view_bytes
from web.config import DEFAULTS, GUNICORN_THREADS, in_flight_cap

PROBE_INTERVAL_S = 0.5
LOOPBACK_CLIENTS = tuple(f"127.0.0.{index}" for index in range(2, 66))  # 64 clients, as the front sees them


def three_view_study() -> tuple[bytes, str]:
    """A 3-view study of 512 x 512 8-bit PNGs: the overload run's request."""
    return encode_multipart([(f"view{index}.png", make_view_bytes(index, (512, 512))) for index in range(3)])


def big_16_bit_png(side: int) -> bytes:
    """A side x side 16-bit grayscale PNG: smooth, so it is small on the wire and huge decoded."""
    rows = np.linspace(0, 40_000, side, dtype=np.float32)[:, None]
    columns = np.linspace(0, 20_000, side, dtype=np.float32)[None, :]
    buffer = io.BytesIO()
    Image.fromarray((rows + columns).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


class HealthProbe:
    """GET /healthz every PROBE_INTERVAL_S until stopped; each (status or error name, seconds)."""

    def __init__(self, url: str) -> None:
        self.url, self.results, self.running = url, [], True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            started = time.monotonic()
            status = http_status(self.url + "/healthz", timeout_s=5.0)
            self.results.append((str(status) if status else "no answer", time.monotonic() - started))
            time.sleep(PROBE_INTERVAL_S)

    def stop(self) -> list[tuple[str, float]]:
        """Stop probing; return every probe."""
        self.running = False
        self.thread.join(timeout=10)
        return self.results


def quantile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank), nan when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def run_clients(server: Server, count: int, seconds: float, study: tuple[bytes, str]) -> dict[str, object]:
    """`count` closed-loop clients for `seconds` (the unloaded peak), /healthz probed meanwhile."""
    probe = HealthProbe(server.url)
    clients = Clients(server.url, count, study)
    started = time.monotonic()
    time.sleep(seconds)
    clients.running = False
    outcomes = [(end - start, outcome) for start, end, outcome in clients.stop() if start < started + seconds]
    return summarise_run(outcomes, probe.stop(), seconds) | {"clients": count}


def run_open_loop(server: Server, rate: float, seconds: float, study: tuple[bytes, str],
                  max_concurrent: int, sources: Sequence[str | None] = (None,)) -> dict[str, object]:
    """Send studies at `rate` per second for `seconds` whatever the answers (open loop), /healthz probed meanwhile.

    Each study is sent once: a 503 is shed load, not retried, so the offered load is exactly `rate`. Studies are
    sent from each of `sources` (local addresses; None: the system's choice) in turn.
    """
    probe = HealthProbe(server.url)
    futures = []
    with ThreadPoolExecutor(max_workers=max_concurrent) as pool:
        started = time.monotonic()
        while (due := started + len(futures) / rate) < started + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            futures.append(pool.submit(_timed_post, server.url, study, sources[len(futures) % len(sources)]))
        outcomes = [future.result() for future in futures]
    return summarise_run(outcomes, probe.stop(), seconds) | {"offered_studies_per_s": rate, "sent": len(futures)}


def _timed_post(url: str, study: tuple[bytes, str], source: str | None) -> tuple[float, str]:
    started = time.monotonic()
    outcome = post_study(url, study, source=source)
    return time.monotonic() - started, outcome


def summarise_run(outcomes: list[tuple[float, str]], health: list[tuple[str, float]],
                  seconds: float) -> dict[str, object]:
    """Outcome counts, accepted and shed latencies, throughput and /healthz figures of one run."""
    accepted = [s for s, outcome in outcomes if outcome == "200"]
    shed = [s for s, outcome in outcomes if outcome == "503"]
    return {"seconds": seconds, "outcomes": dict(Counter(o for _, o in outcomes)),
            "accepted_studies_per_s": len(accepted) / seconds,
            "accepted_p50_s": quantile(accepted, 0.5), "accepted_p99_s": quantile(accepted, 0.99),
            "accepted_max_s": max(accepted, default=float("nan")),
            "shed_p50_s": quantile(shed, 0.5), "shed_p99_s": quantile(shed, 0.99),
            "shed_max_s": max(shed, default=float("nan")),
            "healthz": dict(Counter(o for o, _ in health)), "healthz_max_s": max((s for _, s in health), default=0.0)}


BATCH_SAMPLES = {"triage_batch_duration_seconds_sum": 0, "triage_batch_size_sum": 1}


def batch_totals(url: str) -> dict[str, tuple[float, float]]:
    """Per model, (seconds, views) of its batched model calls so far, from /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in BATCH_SAMPLES:
                totals.setdefault(sample.labels["model"], [0.0, 0.0])[BATCH_SAMPLES[sample.name]] = sample.value
    return {model: (seconds, views) for model, (seconds, views) in totals.items()}


def one_batch_seconds(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> float:
    """A study's one batch between two scrapes: a full router batch plus a full expert batch.

    A full batch is MAX_BATCH_SIZE views at the seconds per view the models took under that load.
    """
    def seconds_per_view(models: list[str]) -> float:
        seconds = sum(after[m][0] - before.get(m, (0.0, 0.0))[0] for m in models)
        views = sum(after[m][1] - before.get(m, (0.0, 0.0))[1] for m in models)
        return seconds / views if views else 0.0

    experts = [model for model in after if model != "router"]
    return DEFAULTS["MAX_BATCH_SIZE"] * (seconds_per_view(["router"]) + seconds_per_view(experts))


def overload_targets(peak: dict, loaded: dict, queue_timeout_s: float) -> dict[str, dict[str, object]]:
    """The hardening targets for the loaded run, each with its value, limit and whether it is met."""
    one_batch_s = loaded["one_batch_s"]
    unexpected = sum(n for outcome, n in loaded["outcomes"].items() if outcome not in ("200", "503"))
    figures = {
        "accepted p99 / (queue deadline + one batch)": (loaded["accepted_p99_s"] / (queue_timeout_s + one_batch_s),
                                                        1.0, "max"),
        "accepted p99, s": (loaded["accepted_p99_s"], 5.0, "max"),
        "503 p99, s": (loaded["shed_p99_s"] if loaded["outcomes"].get("503") else 0.0, 0.1, "max"),
        "answers other than 200 / 503 (500, reset, timeout)": (unexpected, 0, "max"),
        "accepted studies/s / unloaded peak": (loaded["accepted_studies_per_s"] / peak["accepted_studies_per_s"],
                                               0.9, "min"),
        "/healthz max, s": (loaded["healthz_max_s"], 1.0, "max"),
    }
    return {name: {"value": value, "limit": limit, "direction": direction,
                   "met": bool(value <= limit if direction == "max" else value >= limit)}
            for name, (value, limit, direction) in figures.items()}


def measure_overload(server: Server, peak_clients: int, load: float, max_concurrent: int, seconds: float,
                     queue_timeout_s: float, rate: float | None = None,
                     front: Server | None = None) -> dict[str, object]:
    """The unloaded peak, then `load` times its rate (or `rate`) offered; both runs, the worker's peak RSS, targets.

    With a `front` (nginx before `server`), the studies go through it, from many loopback addresses.
    """
    entry, sources = (front, LOOPBACK_CLIENTS) if front else (server, (None,))
    study = three_view_study()
    for _ in range(3):  # warm the worker's first requests out of the figures
        post_study(entry.url, study)
    peak = run_clients(entry, peak_clients, seconds, study)
    print("peak:", json.dumps(peak), flush=True)
    before = batch_totals(server.url)
    loaded = run_open_loop(entry, rate or load * peak["accepted_studies_per_s"], seconds, study, max_concurrent,
                           sources)
    loaded["one_batch_s"] = one_batch_seconds(before, batch_totals(server.url))
    print("loaded:", json.dumps(loaded), flush=True)
    return {"peak": peak, "loaded": loaded, "worker_peak_rss_mb": _worker_peak_rss_mb(server),
            "targets": overload_targets(peak, loaded, queue_timeout_s)}


def measure_memory(server: Server, studies: int, side: int) -> dict[str, object]:
    """`studies` huge studies at once, over and under the per-study limit; outcomes and the worker's VmHWM."""
    view = big_16_bit_png(side)
    runs: dict[str, object] = {"view_bytes": len(view), "side": side,
                               "worker_peak_rss_mb_before": _worker_peak_rss_mb(server)}
    for num_views in (12, 3):
        study = encode_multipart([(f"view{index}.png", view) for index in range(num_views)])
        outcomes: list[str] = []
        for _ in range(2):
            with ThreadPoolExecutor(max_workers=studies) as pool:
                outcomes += pool.map(lambda _, body=study: post_study(server.url, body, 120), range(studies))
        runs[f"{num_views}_views"] = {"body_mb": round(len(study[0]) / 1e6, 2), "outcomes": dict(Counter(outcomes)),
                                      "worker_peak_rss_mb_after": _worker_peak_rss_mb(server)}
        print(f"{studies} x {num_views} views:", json.dumps(runs[f"{num_views}_views"]), flush=True)
    return runs


def _worker_peak_rss_mb(server: Server) -> float:
    """VmHWM of the (first) gunicorn worker, MB."""
    return max((process_peak_rss_mb(pid) or 0.0 for pid in server.worker_pids()), default=0.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the overload (default) or the memory measurement; print and save the record."""
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("h5"))
    parser.add_argument("--peak-clients", type=int, default=4, help="closed-loop clients in the unloaded peak run")
    parser.add_argument("--load", type=float, default=4.0, help="offered load of the loaded run, times the peak")
    parser.add_argument("--rate", type=float, default=None,
                        help="studies/s offered in the loaded run instead of --load times the peak")
    parser.add_argument("--max-concurrent", type=int, default=256, help="most studies in flight from the load run")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument("--queue-timeout-ms", type=float, default=None,
                        help="TRIAGE_QUEUE_TIMEOUT_MS (default: the service's)")
    parser.add_argument("--threads", type=int, default=None, help="TRIAGE_THREADS (default: gunicorn.conf.py's)")
    parser.add_argument("--front", choices=["nginx"], default=None,
                        help="send the studies through deploy/nginx.conf in front of the replica")
    parser.add_argument("--max-conns", type=int, default=None,
                        help="the front's max_conns for the replica (default: its in-flight cap)")
    parser.add_argument("--memory", action="store_true", help="the memory run instead of the overload run")
    parser.add_argument("--studies", type=int, default=8, help="huge studies at once in the memory run")
    parser.add_argument("--side", type=int, default=6300, help="side of the memory run's 16-bit views")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    args = parser.parse_args(argv)
    queue_timeout_ms = args.queue_timeout_ms or DEFAULTS["QUEUE_TIMEOUT_MS"]
    environment = {"TRIAGE_AUDIT_LOG": "", "TRIAGE_QUEUE_TIMEOUT_MS": str(queue_timeout_ms)}
    threads = args.threads or GUNICORN_THREADS
    record: dict[str, object] = {"command": "python -m bench.overload " + " ".join(argv or sys.argv[1:]),
                                 "machine": describe_machine(), "note": args.note, "models": str(args.models),
                                 "queue_timeout_ms": queue_timeout_ms, "threads": threads, "front": args.front,
                                 "max_conns": (args.max_conns or in_flight_cap(threads)) if args.front else None}
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        server = stack.enter_context(running_gunicorn(args.models, Path(folder) / "gunicorn.log", environment,
                                                      threads=threads))
        record["seconds_to_ready"] = round(server.wait_until_ready(600), 2)
        front = stack.enter_context(running_nginx([server.url.removeprefix("http://")], Path(folder) / "nginx",
                                                  max_conns=record["max_conns"])) if args.front else None
        if args.memory:
            record["memory"] = measure_memory(server, args.studies, args.side)
        else:
            record.update(measure_overload(server, args.peak_clients, args.load, args.max_concurrent, args.seconds,
                                           queue_timeout_ms / 1000, args.rate, front))
    record["load_average_end"] = load_average()
    for name, target in dict(record.get("targets", {})).items():
        if "limit" in target:
            print(f"{name}: {target['value']:.3f} (limit {target['limit']}) {'met' if target['met'] else 'NOT met'}")
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
