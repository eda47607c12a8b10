"""Prometheus metrics, one CollectorRegistry per app so tests can build many apps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from classifiers.drift_monitor import PartDrift

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class QueueDepthCollector(Collector):
    """Reads the batchers' queue depths at scrape time."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]]):
        self.queue_depths = queue_depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield one gauge sample per model's batcher queue."""
        gauge = GaugeMetricFamily("triage_queue_depth", "Views waiting in each model's batcher queue",
                                  labels=["model"])
        for model_name, depth in sorted(self.queue_depths().items()):
            gauge.add_metric([model_name], float(depth))
        yield gauge


class DriftCollector(Collector):
    """Reads the drift monitor's figures at scrape time (docs/MONITORING.md)."""

    def __init__(self, snapshot: Callable[[], dict[str, PartDrift]]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the PSI, window and out-of-distribution gauges; a figure not computed has no sample."""
        psi = GaugeMetricFamily("triage_drift_psi", "Population stability index of the body part's recent studies"
                                " against the repository's validation reference, per signal", labels=["body_part",
                                                                                                      "signal"])
        studies = GaugeMetricFamily("triage_drift_window_studies", "Studies in the body part's drift window",
                                    labels=["body_part"])
        ood = GaugeMetricFamily("triage_ood_rate", "Share of the window's studies with a view the out-of-domain"
                                " gate flags", labels=["body_part"])
        reference_ood = GaugeMetricFamily("triage_drift_reference_ood_rate", "The same share in the validation"
                                          " reference", labels=["body_part"])
        for part, figures in sorted(self.snapshot().items()):
            studies.add_metric([part], float(figures.studies))
            for signal, value in sorted(figures.psi.items()):
                psi.add_metric([part, signal], value)
            if figures.out_of_distribution_rate is not None:
                ood.add_metric([part], figures.out_of_distribution_rate)
            if figures.reference_out_of_distribution_rate is not None:
                reference_ood.add_metric([part], figures.reference_out_of_distribution_rate)
        yield from (psi, studies, ood, reference_ood)


class Metrics:
    """The app's metrics: requests by endpoint and status, latency, batch sizes, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("triage_http_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("triage_http_request_duration_seconds", "Time to answer a request",
                                 ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_size = Histogram("triage_batch_size", "Views per model call made by the batchers",
                                    ["model"], buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("triage_batch_duration_seconds", "Time of one model call made by the batchers",
                                       ["model"], buckets=LATENCY_BUCKETS_S, registry=self.registry)

    def watch_queues(self, queue_depths: Callable[[], dict[str, int]]) -> None:
        """Report the batchers' queue depths (read at every scrape)."""
        self.registry.register(QueueDepthCollector(queue_depths))

    def watch_drift(self, snapshot: Callable[[], dict[str, PartDrift]]) -> None:
        """Report the drift monitor's figures (read at every scrape)."""
        self.registry.register(DriftCollector(snapshot))

    def observe_batch(self, model_name: str, batch_size: int, seconds: float) -> None:
        """Record one batched model call (PipelineSettings.on_batch): its views and its time."""
        self.batch_size.labels(model=model_name).observe(batch_size)
        self.batch_seconds.labels(model=model_name).observe(seconds)

    def render(self) -> Response:
        """Answer GET /metrics in the Prometheus text format."""
        return Response(generate_latest(self.registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def register_request_metrics(app: Flask, metrics: Metrics) -> None:
    """Count and time every request; the endpoint label is the route, never the raw path."""

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def record_request(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(endpoint=endpoint, method=request.method, status=str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
        return response
