"""Prometheus metrics of searches (the operator's and local mode's) and of the operator.

One registry per process (prometheus-client's default, with its process_* and python_*
collectors). Every search metric carries `namespace` and `search` labels (local mode:
namespace "local"); names follow the Prometheus conventions: `kubenas_` prefix, base
units (seconds), `_total` on counters. README.md, "Metrics", lists them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

if TYPE_CHECKING:
    from kubenas.controller import UpdateStats

disable_created_metrics()  # no `<counter>_created` series beside each counter and histogram

SEARCH = ("namespace", "search")
SEARCH_PHASES = ("Pending", "Running", "Suspended", "Retraining", "Succeeded", "Failed")
CHILD_PHASES = ("Pending", "Running", "Succeeded", "Failed")
LOCAL_NAMESPACE = "local"

# Rewards are accuracies (or a power of one): fractions in [0, 1].
REWARD_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# Children train for seconds (tests, tables) to a day (the paper's 50 epochs).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
# A child's end to its result in its NASTrial: a watch event and two API calls.
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

CREATED = Counter("kubenas_children_created", "Children (NASTrials) created.", SEARCH)
SUCCEEDED = Counter("kubenas_children_succeeded", "Children that finished with a reward.", SEARCH)
FAILED = Counter("kubenas_children_failed", "Children that failed, by named reason.", (*SEARCH, "reason"))
RUNNING = Gauge("kubenas_children_running", "Children whose training is running now.", SEARCH)
CHILDREN = Gauge("kubenas_children", "The search's children by phase.", (*SEARCH, "phase"))
REWARD = Histogram("kubenas_child_reward", "Reward of each child that succeeded.", SEARCH, buckets=REWARD_BUCKETS)
DURATION = Histogram("kubenas_child_duration_seconds", "From a child's start to its end.", SEARCH,
                     buckets=DURATION_BUCKETS)
RESULT_DELAY = Histogram("kubenas_child_result_delay_seconds", "From a child's end to its result being recorded.",
                         SEARCH, buckets=DELAY_BUCKETS)
LAST_FINISHED = Gauge("kubenas_child_last_finished_timestamp_seconds",
                      "When a child last finished (unix time; the driver's start while none has).", SEARCH)
BEST = Gauge("kubenas_best_reward", "Best reward of any child so far.", SEARCH)
BASELINE = Gauge("kubenas_policy_baseline", "REINFORCE baseline (moving average of rewards) after the last update.",
                 SEARCH)
ENTROPY = Gauge("kubenas_policy_entropy", "Mean entropy (nats) of the last update's decision sequences.", SEARCH)
LOSS = Gauge("kubenas_policy_loss", "Loss of the last policy update.", SEARCH)
UPDATES = Counter("kubenas_policy_updates", "Policy updates (one per batch of results).", SEARCH)
GPU_SECONDS = Counter("kubenas_child_gpu_seconds", "GPUs requested times run time of the finished children (from the "
                      "search's start: a restarted operator resumes at its NASTrials' sum).", SEARCH)
CPU_SECONDS = Counter("kubenas_child_cpu_seconds", "CPUs requested times run time of the finished children (from the "
                      "search's start: a restarted operator resumes at its NASTrials' sum).", SEARCH)
CACHE_HITS = Counter("kubenas_cache_hits", "Children that reused an identical child's result (no training).", SEARCH)
CACHE_SAVED = Counter("kubenas_cache_saved_seconds", "Training time cache hits saved (their sources' durations).",
                      SEARCH)
CACHE_SAVED_GPU = Counter("kubenas_cache_saved_gpu_seconds", "GPU time cache hits saved (their sources' GPU-seconds).",
                          SEARCH)
PHASE = Gauge("kubenas_search_phase", "1 for the search's current phase, 0 for the others.", (*SEARCH, "phase"))

HANDLER_ERRORS = Counter("kubenas_operator_handler_errors", "Operator handlers that raised, by handler.", ("handler",))
API_RETRIES = Counter("kubenas_operator_api_retries", "API calls retried, by cause (HTTP status or connection).",
                      ("reason",))

LOOP_LAG = Histogram("kubenas_operator_loop_lag_seconds", "How late the operator's event loop wakes a 50 ms sleep.",
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
LOOP_LAG_MAX = Gauge("kubenas_operator_loop_lag_max_seconds", "The largest event-loop lag seen since start.")

HANDLER_ERRORS.labels("drive_search")  # at 0: rate() shows no errors rather than no data

_PER_SEARCH = (CREATED, SUCCEEDED, RUNNING, REWARD, DURATION, RESULT_DELAY, LAST_FINISHED, BEST, BASELINE,
               ENTROPY, LOSS, UPDATES, GPU_SECONDS, CPU_SECONDS, CACHE_HITS, CACHE_SAVED, CACHE_SAVED_GPU)


def serve(*, port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics from a background thread (prometheus-client's own HTTP server)."""
    start_http_server(port, addr=host, registry=REGISTRY)


_COST_COUNTED: dict[tuple[Counter, tuple[str, ...]], float] = {}  # (counter, labels) -> seconds counted


class SearchMetrics:
    """The metrics of one search, bound to its labels. Counters count what this process
    saw (Prometheus' rate() and increase() handle the reset of a restart); gauges are
    set from the engine's durable state, so they are right after a restart too."""

    def __init__(self, *, namespace: str | None, search: str) -> None:
        self.labels = (namespace or LOCAL_NAMESPACE, search)
        for metric in (CREATED, SUCCEEDED, UPDATES, REWARD, DURATION, RESULT_DELAY, GPU_SECONDS, CPU_SECONDS, CACHE_HITS,
                       CACHE_SAVED, CACHE_SAVED_GPU):
            metric.labels(*self.labels)  # present at 0 from the start: increase() sees the first child
        LAST_FINISHED.labels(*self.labels).set(time.time())
        self._failure_reasons: set[str] = set()

    def created(self) -> None:
        CREATED.labels(*self.labels).inc()

    def finished(self, *, reason: str | None, reward: float | None, duration: float | None,
                 delay: float | None) -> None:
        """A child's verdict was recorded: `reason` None for success."""
        if reason is None:
            SUCCEEDED.labels(*self.labels).inc()
            if reward is not None:
                REWARD.labels(*self.labels).observe(reward)
        else:
            FAILED.labels(*self.labels, reason).inc()
            self._failure_reasons.add(reason)
        if duration is not None:
            DURATION.labels(*self.labels).observe(max(0.0, duration))
        if delay is not None:
            RESULT_DELAY.labels(*self.labels).observe(max(0.0, delay))
        LAST_FINISHED.labels(*self.labels).set(time.time())

    def cost(self, *, gpu_seconds: float, cpu_seconds: float) -> None:
        """A finished child's GPU- and CPU-seconds."""
        for metric, seconds in ((GPU_SECONDS, gpu_seconds), (CPU_SECONDS, cpu_seconds)):
            self._count_cost(metric, max(0.0, seconds))

    def cost_resumed(self, *, gpu_seconds: float, cpu_seconds: float) -> None:
        """A driver's start: the counters from the recorded sum, so they count from the
        search's start (raised to it, never twice: a driver restarted in this process)."""
        for metric, total in ((GPU_SECONDS, gpu_seconds), (CPU_SECONDS, cpu_seconds)):
            self._count_cost(metric, max(0.0, total - _COST_COUNTED.get((metric, self.labels), 0.0)))

    def _count_cost(self, metric: Counter, seconds: float) -> None:
        # What this process has counted, kept beside the counter: prometheus-client has no
        # public read of one series but REGISTRY.get_sample_value, which collects every
        # series of every search (quadratic over a thousand searches' starts).
        metric.labels(*self.labels).inc(seconds)
        _COST_COUNTED[(metric, self.labels)] = _COST_COUNTED.get((metric, self.labels), 0.0) + seconds

    def cache_hit(self, *, saved_seconds: float | None, saved_gpu_seconds: float | None) -> None:
        """A child reused an identical child's result instead of training."""
        CACHE_HITS.labels(*self.labels).inc()
        if saved_seconds:
            CACHE_SAVED.labels(*self.labels).inc(max(0.0, saved_seconds))
        if saved_gpu_seconds:
            CACHE_SAVED_GPU.labels(*self.labels).inc(max(0.0, saved_gpu_seconds))

    def policy_updated(self, update: UpdateStats) -> None:
        UPDATES.labels(*self.labels).inc()
        self.policy(update)

    def policy(self, update: UpdateStats | None) -> None:
        if update is not None:
            BASELINE.labels(*self.labels).set(update.baseline)
            ENTROPY.labels(*self.labels).set(update.entropy)
            LOSS.labels(*self.labels).set(update.loss)

    def children(self, *, pending: int, running: int, succeeded: int, failed: int, best: float | None) -> None:
        RUNNING.labels(*self.labels).set(running)
        counts = {"Pending": pending, "Running": running, "Succeeded": succeeded, "Failed": failed}
        for phase, count in counts.items():
            CHILDREN.labels(*self.labels, phase).set(count)
        if best is not None:
            BEST.labels(*self.labels).set(best)

    def phase(self, phase: str) -> None:
        for name in SEARCH_PHASES:
            PHASE.labels(*self.labels, name).set(1 if name == phase else 0)

    def forget(self) -> None:
        """The search is gone (deleted): drop its series."""
        for metric in (GPU_SECONDS, CPU_SECONDS):
            _COST_COUNTED.pop((metric, self.labels), None)
        for metric in _PER_SEARCH:
            _remove(metric, self.labels)
        for phase in CHILD_PHASES:
            _remove(CHILDREN, (*self.labels, phase))
        for phase in SEARCH_PHASES:
            _remove(PHASE, (*self.labels, phase))
        for reason in self._failure_reasons:
            _remove(FAILED, (*self.labels, reason))


def _remove(metric: Counter | Gauge | Histogram, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass  # never observed
