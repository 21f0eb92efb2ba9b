"""Local mode: run a NeuralArchitectureSearch manifest on this machine, no cluster.

A thin driver of the engine: keep up to `parallelism` children in flight (each the pod
template's command as a subprocess, or a table lookup), tell the engine each result,
and record everything under `runs/<name>/` so that `--resume` continues after Ctrl-C
or a kill without losing or repeating a child.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from kubenas import spec as specs
from kubenas.budget import BUDGET_EXHAUSTED
from kubenas.evaluators import SubprocessEvaluator, TabularEvaluator
from kubenas.local_usage import LocalMeter
from kubenas.local_cache import LocalCache
from kubenas.metrics import SearchMetrics
from kubenas.metrics import serve as serve_metrics
from kubenas.plot import PlotWorker
from kubenas.progress import Progress
from kubenas.retrain_local import retrain_fields, retrain_locally
from kubenas.runs import RunDirectory
from kubenas.result_cache import CachedResult
from kubenas.search import Search, Ticket

PLOT_EVERY_SECONDS = 30.0


class RunExists(Exception):
    """The run directory already holds a search and neither resume nor restart was asked."""


@dataclass(frozen=True)
class LocalResult:
    phase: str  # Succeeded, Failed or Interrupted
    reason: str | None
    search: Search
    run: RunDirectory
    usage: dict | None = None  # GPU- and CPU-hours, as the operator's status.usage
    retrain: list[dict] | None = None  # spec.retrain's entries, by rank (kubenas.retrain_local)
    cache: LocalCache | None = None  # the result cache's figures (hits, seconds saved)


def effective_parallelism(spec: specs.SearchSpec, *, override: int | None, cores: int | None = None) -> int:
    """Subprocess children are capped by the cores (each gets cores // parallelism threads)."""
    wanted = override or spec.parallelism
    if spec.trial.kind == "Tabular":
        return wanted
    return max(1, min(wanted, cores or os.cpu_count() or 1))


def open_search(
    manifest: specs.NeuralArchitectureSearch, raw: dict, *, run: RunDirectory, resume: bool, restart: bool
) -> Search:
    if run.exists() and not (resume or restart):
        raise RunExists(
            f"{run.path} already holds search {manifest.metadata.name!r}: pass --resume to continue it "
            "or --restart to start over"
        )
    if resume and run.exists():
        search = Search.restore(manifest.spec, run.checkpoint.read_bytes())
        search.max_trials = manifest.spec.max_trials  # raising maxTrials continues a search
        run.repair_torn_tail()
        return search
    run.create(raw)
    search = Search(manifest.spec)
    run.save(search)
    return search


async def run_search(
    manifest: specs.NeuralArchitectureSearch,
    raw: dict,
    *,
    runs_dir: Path,
    resume: bool = False,
    restart: bool = False,
    parallelism: int | None = None,
    progress: Progress | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> LocalResult:
    with PlotWorker() as plotter:  # first: matplotlib's import overlaps the search
        return await _run_search(
            manifest, raw, runs_dir=runs_dir, resume=resume, restart=restart, parallelism=parallelism,
            progress=progress, metrics_port=metrics_port, metrics_host=metrics_host, plotter=plotter,
        )


async def _run_search(
    manifest: specs.NeuralArchitectureSearch,
    raw: dict,
    *,
    runs_dir: Path,
    resume: bool,
    restart: bool,
    parallelism: int | None,
    progress: Progress | None,
    metrics_port: int | None,
    metrics_host: str,
    plotter: PlotWorker,
) -> LocalResult:
    spec = manifest.spec
    name = manifest.metadata.name
    run = RunDirectory(runs_dir / name)
    search = open_search(manifest, raw, run=run, resume=resume, restart=restart)
    if metrics_port is not None:  # the operator's metrics, namespace "local"
        serve_metrics(port=metrics_port, host=metrics_host)
    observed = SearchMetrics(namespace=manifest.metadata.namespace, search=name)
    observed.policy(search.last_update)
    width = effective_parallelism(spec, override=parallelism)
    threads = max(1, (os.cpu_count() or 1) // width)
    if spec.trial.kind == "Tabular":
        evaluate = TabularEvaluator(spec.trial.tabular)
    else:
        evaluate = SubprocessEvaluator(trial=spec.trial, trials_dir=run.trials_dir, threads_per_child=threads)
    progress = progress or Progress(name=name, live=False)
    recorded = run.recorded()
    meter = LocalMeter(spec=spec, threads=threads, records=recorded.values())  # spec.budget, best.json's usage
    observed.cost_resumed(gpu_seconds=meter.usage.spent.gpu_seconds, cpu_seconds=meter.usage.spent.cpu_seconds)

    def usage() -> dict:
        return meter.status(remaining_children=search.max_trials - search.counters.succeeded - search.counters.failed)
    cache = LocalCache(spec=spec, name=name, runs_dir=runs_dir, recorded=recorded)
    # Children recorded before a crash but not yet in the checkpoint: tell them now.
    for index in sorted(set(search.in_flight) & set(recorded)):
        search.tell(index, recorded[index]["result"])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running: dict[asyncio.Task, tuple[Ticket, float]] = {}
    ended: dict[asyncio.Task, float] = {}  # when each child's task finished: the result delay
    hits: dict[asyncio.Future, CachedResult] = {}  # children reusing an identical child's result
    reused_now: list[asyncio.Future] = []  # hits made while results are recorded: told in the same pass
    last_plot = time.monotonic()
    phase, reason = "Succeeded", None
    retrained = None

    def observe() -> None:
        best = search.best
        observed.children(pending=0, running=len(running), succeeded=search.counters.succeeded,
                          failed=search.counters.failed, best=best.reward if best else None)

    def record(ticket: Ticket, result: dict, seconds: float | None, *, delay: float | None = None,
               cached: CachedResult | None = None) -> None:
        outcome = search.tell(ticket.index, result)
        if outcome is None:
            return
        told = search.counters.succeeded + search.counters.failed
        cost = meter.finished(ticket.index, result, seconds)  # a hit's seconds are None: it cost nothing
        observed.cost(gpu_seconds=cost.gpu_seconds, cpu_seconds=cost.cpu_seconds)
        entry = run.append_trial(ticket, outcome, result, seconds=seconds, told=told,
                                 extra={**cost.fields(),
                                        **cache.record_fields(ticket, cached=cached)})
        recorded[ticket.index] = entry
        progress.usage = meter.line(remaining_children=search.max_trials - told)
        if cached is not None:
            cache.hit(cached)
            observed.cache_hit(saved_seconds=cached.seconds, saved_gpu_seconds=None)
        if spec.cache.enabled:
            progress.cache_line = cache_line()
        progress.finished(entry, search, running=len(running))
        observed.finished(reason=outcome.reason, reward=outcome.reward if outcome.succeeded else None,
                          duration=seconds, delay=delay)
        if outcome.update is not None:
            observed.policy_updated(outcome.update)
        if cached is None:  # the children that waited for this one: its result, or their own turn
            for index in cache.finished(ticket, reason=outcome.reason, result=result, seconds=seconds):
                launch(search.in_flight[index])

    def cache_line() -> str:
        return f"{cache.hits} hits, {cache.waiting()} waiting, {cache.saved_seconds:.0f}s of training saved"

    def launch(ticket: Ticket) -> None:
        if ticket.index in recorded:  # finished before a crash, asked again on resume
            search.tell(ticket.index, recorded[ticket.index]["result"])
        elif (leftover := evaluate.finished_result(ticket.index)) is not None:
            record(ticket, leftover, None)
        elif (decision := cache.decide(ticket)).action == "hit":
            # A finished future, not told at once: results still go to the engine in index
            # order among those that finish together (as a table's children do).
            reused = loop.create_future()
            reused.set_result(decision.entry.result)
            hits[reused] = decision.entry
            running[reused] = (ticket, time.monotonic())
            reused_now.append(reused)
        elif decision.action == "train":  # else it waits for its identical twin, still running
            task = asyncio.ensure_future(evaluate(ticket))
            task.add_done_callback(lambda done: ended.setdefault(done, time.monotonic()))
            running[task] = (ticket, time.monotonic())
            meter.started(ticket.index)

    try:
        with progress:
            # Children in flight at the last checkpoint (killed with the runner) run again.
            for ticket in sorted(search.in_flight.values(), key=lambda t: t.index):
                launch(ticket)
            stop_waiter = asyncio.ensure_future(stop.wait())
            observed.phase("Running")
            while True:
                too_many_failures = spec.max_failed_trials is not None and search.counters.failed > spec.max_failed_trials
                if too_many_failures and phase != "Failed":
                    phase, reason = "Failed", "MaxFailedTrialsReached"
                    observed.phase(phase)
                    progress.log(
                        f"[{name}] {search.counters.failed} children failed, more than maxFailedTrials="
                        f"{spec.max_failed_trials}: no new children; waiting for the {len(running)} running"
                    )
                if phase != "Failed" and not search.exhausted:  # judged again each pass, as the operator does
                    spent = meter.spent()
                    if spent is not None and reason != BUDGET_EXHAUSTED:
                        reason = BUDGET_EXHAUSTED  # Succeeded once the running finish
                        progress.log(f"[{name}] {spent}: no new children; waiting for the {len(running)} running")
                    elif spent is None and reason == BUDGET_EXHAUSTED:  # inFlight Expected: a cheaper mean
                        reason = None
                        progress.log(f"[{name}] spec.budget has room for another child again")
                # A child waiting for an identical one holds its place, as on a cluster.
                while (phase != "Failed" and reason != BUDGET_EXHAUSTED and not stop.is_set()
                       and len(running) + cache.waiting() < width and meter.room() != 0):  # inFlight Expected: per child
                    ticket = search.ask()
                    if ticket is None:
                        break
                    if ticket.index not in recorded:  # not a child re-asked on resume
                        observed.created()
                    launch(ticket)
                observe()  # once per pass: after the records and launches of the last one
                run.save(search)
                if time.monotonic() - last_plot > PLOT_EVERY_SECONDS:
                    _write_summaries(run, search, name, records=list(recorded.values()), plotter=plotter,
                                     usage=usage(), cache=cache)
                    last_plot = time.monotonic()
                if stop.is_set():
                    phase, reason = "Interrupted", "Interrupted"
                    break
                if not running:
                    if search.exhausted or phase == "Failed" or reason == BUDGET_EXHAUSTED:
                        break
                    continue  # every child asked so far was already recorded (resume)
                progress.refresh(search, running=len(running))
                done, _ = await asyncio.wait([*running, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
                reused_now.clear()
                queue = [(running[t][0].index, t) for t in done - {stop_waiter}]
                heapq.heapify(queue)
                while queue:  # in index order, twins released by a result among them
                    task = heapq.heappop(queue)[1]
                    ticket, started = running.pop(task)
                    finished = ended.pop(task, time.monotonic())
                    cached = hits.pop(task, None)  # a hit: no training, so no duration
                    record(ticket, task.result(), None if cached else finished - started,
                           delay=time.monotonic() - finished, cached=cached)
                    while reused_now:
                        reused = reused_now.pop()
                        heapq.heappush(queue, (running[reused][0].index, reused))
            stop_waiter.cancel()
            if running:  # interrupted: stop children; they stay in flight for --resume
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                running.clear()
            run.save(search)
            if phase == "Succeeded" and spec.retrain is not None and search.best is not None:
                _write_summaries(run, search, name, records=list(recorded.values()), plotter=plotter, usage=usage(),
                                 cache=cache)
                retrained = await retrain_locally(spec=spec, search=search, run=run, name=name, width=width,
                                                  progress=progress, stop=stop)
                if retrained is None:
                    phase, reason = "Interrupted", "Interrupted"
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    figures = usage()
    _write_summaries(run, search, name, records=list(recorded.values()), plotter=plotter, usage=figures, cache=cache,
                     retrained=retrained)
    if phase in ("Succeeded", "Failed"):
        observed.phase(phase)
    return LocalResult(phase=phase, reason=reason, search=search, run=run, usage=figures, retrain=retrained,
                       cache=cache)


def _write_summaries(
    run: RunDirectory, search: Search, name: str, *, records: list[dict], plotter: PlotWorker,
    usage: dict | None = None,
    cache: LocalCache | None = None,
    retrained: list[dict] | None = None,
) -> None:
    """best.json and reward.png, from the records already in memory (no re-read of trials.jsonl)."""
    extra = cache.summary() if cache is not None and cache.hits else {}
    if retrained is not None and search.best is not None:
        extra.update(retrain_fields(retrained, best_index=search.best.index))
    run.write_best(search, usage=usage, extra=extra)
    if records:
        plotter.plot(records=records, updates=run.updates(), title=f"kubenas search {name}", path=run.plot_file)
