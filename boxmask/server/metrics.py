"""Prometheus metrics of one app: requests, latency per route, queue depth, encoder cache.

Each app owns its ``CollectorRegistry`` (not the process-global one), so tests can build many
apps in one process and a scrape shows exactly one server's numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Cached box decodes take milliseconds, first encodes seconds: buckets cover both.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: name -> {"hits", "misses", "bytes", "entries", "capacity_bytes"} of each model's cache.
CacheStatsSource = Callable[[], Mapping[str, Mapping[str, float]]]


class _CacheCollector(Collector):
    """Reads the runtime caches' counters at scrape time, so the hot path pays nothing."""

    def __init__(self, source: CacheStatsSource) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        hits = CounterMetricFamily("boxmask_cache_hits", "Encoder cache hits.", labels=["model"])
        misses = CounterMetricFamily("boxmask_cache_misses", "Encoder cache misses (encodes).",
                                     labels=["model"])
        used = GaugeMetricFamily("boxmask_cache_bytes", "Bytes held by the encoder cache.",
                                 labels=["model"])
        entries = GaugeMetricFamily("boxmask_cache_entries", "Images held by the encoder cache.",
                                    labels=["model"])
        capacity = GaugeMetricFamily("boxmask_cache_capacity_bytes",
                                     "Byte budget of the encoder cache.", labels=["model"])
        for model, stats in self._source().items():
            hits.add_metric([model], float(stats.get("hits", 0)))
            misses.add_metric([model], float(stats.get("misses", 0)))
            used.add_metric([model], float(stats.get("bytes", 0)))
            entries.add_metric([model], float(stats.get("entries", 0)))
            capacity.add_metric([model], float(stats.get("capacity_bytes", 0)))
        yield from (hits, misses, used, entries, capacity)


#: The Label Studio training loop's figures (`TrainingLoop.stats`), read at scrape time.
JobStatsSource = Callable[[], Mapping[str, Any]]


class _JobsCollector(Collector):
    """Label Studio training rounds: how they ended, the one running, each project's figures."""

    def __init__(self, source: JobStatsSource) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        stats = self._source()
        ended = CounterMetricFamily("boxmask_labelstudio_jobs",
                                    "Label Studio training rounds ended since start, by outcome.",
                                    labels=["state"])
        for state, count in sorted(stats.get("finished", {}).items()):
            ended.add_metric([state], float(count))
        running = GaugeMetricFamily("boxmask_labelstudio_job_running",
                                    "1 while a Label Studio training round runs.",
                                    value=float(stats.get("running", 0)))
        progress = GaugeMetricFamily("boxmask_labelstudio_job_progress",
                                     "Training progress of the running round, 0 to 1.",
                                     value=float(stats.get("progress", 0.0)))
        queued = GaugeMetricFamily("boxmask_labelstudio_jobs_queued",
                                   "Label Studio training rounds waiting to run.",
                                   value=float(stats.get("queued", 0)))
        annotations = GaugeMetricFamily("boxmask_labelstudio_annotations",
                                        "Annotations the next round learns from, per project.",
                                        labels=["project"])
        iou = GaugeMetricFamily("boxmask_labelstudio_served_heldout_mean_iou",
                                "Held-out box-prompted mean IoU of the version a project is "
                                "served (when the gate scored it).", labels=["project", "version"])
        box = GaugeMetricFamily("boxmask_labelstudio_served_heldout_box_mean_iou",
                                "The box baseline of the same held-out instances.",
                                labels=["project", "version"])
        for project, figures in sorted(stats.get("projects", {}).items()):
            annotations.add_metric([project], float(figures.get("annotations", 0)))
            if figures.get("mean_iou") is not None:
                iou.add_metric([project, figures["version"]], float(figures["mean_iou"]))
            if figures.get("box_mean_iou") is not None:
                box.add_metric([project, figures["version"]], float(figures["box_mean_iou"]))
        yield from (ended, running, progress, queued, annotations, iou, box)


class ServerMetrics:
    """The app's metrics; routes and middleware update them, ``/metrics`` renders them."""

    def __init__(self, cache_stats: CacheStatsSource | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("boxmask_http_requests", "HTTP requests served.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("boxmask_http_request_duration_seconds",
                                 "Time from request to response, per route.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.queue_depth = Gauge("boxmask_queue_depth",
                                 "Requests waiting for an inference slot.", registry=self.registry)
        self.in_flight = Gauge("boxmask_inference_in_flight",
                               "Requests holding an inference slot.", registry=self.registry)
        self.rejected = Counter("boxmask_rejected_requests",
                                "Requests refused before inference, by reason.", ["reason"],
                                registry=self.registry)
        self.boxes = Histogram("boxmask_boxes_per_request", "Boxes decoded per segment request.",
                               buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
                               registry=self.registry)
        if cache_stats is not None:
            self.registry.register(_CacheCollector(cache_stats))

    def watch_labelstudio_training(self, source: JobStatsSource) -> None:
        """Report the Label Studio training loop's jobs (read from `source` at each scrape)."""
        self.registry.register(_JobsCollector(source))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
