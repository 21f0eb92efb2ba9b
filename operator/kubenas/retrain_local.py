"""Local mode's retraining: the best children trained again as subprocesses, after the
search, each in `runs/<name>/retrain/NNNNNN/` (its result.json, log.txt and model.pt).

A retrained child that finished before a kill is not trained again on --resume (its
result file is reused); the summary goes into best.json (`test_accuracy`, `retrain`).
"""

from __future__ import annotations

import asyncio
import os

from kubenas import spec as specs
from kubenas.evaluators import SubprocessEvaluator
from kubenas.progress import Progress
from kubenas.retrain import candidates, entry, judge, retrain_trial
from kubenas.runs import RunDirectory
from kubenas.search import Search, Ticket

MODEL_FILE = "model.pt"


def retrain_dir(run: RunDirectory):
    return run.path / "retrain"


async def retrain_locally(*, spec: specs.SearchSpec, search: Search, run: RunDirectory, name: str, width: int,
                          progress: Progress, stop: asyncio.Event) -> list[dict] | None:
    """Retrain spec.retrain.topK children, `width` at a time; their entries by rank, or
    None when `stop` was set first (the unfinished ones run again on --resume)."""
    retrain = spec.retrain
    chosen = candidates(search, retrain.top_k)
    threads = max(1, (os.cpu_count() or 1) // max(1, min(width, len(chosen) or 1)))
    slots = asyncio.Semaphore(width)
    progress.log(f"[{name}] retraining the best {len(chosen)}: children "
                 + ", ".join(str(c.index) for c in chosen))

    async def one(candidate) -> dict:
        model_path = retrain_dir(run) / f"{candidate.index:06d}" / MODEL_FILE
        evaluate = SubprocessEvaluator(trial=retrain_trial(spec.trial, retrain, model_path=str(model_path)),
                                       trials_dir=retrain_dir(run), threads_per_child=threads)
        async with slots:
            result = evaluate.finished_result(candidate.index)
            if result is None:
                ticket = Ticket(candidate.index, candidate.architecture, [], 0.0, 0)
                result = await evaluate(ticket)
        verdict = judge(result)
        done = entry(candidate, trial=f"{name}-{candidate.index}", job=None, verdict=verdict,
                     model_path=str(model_path) if model_path.exists() else None)
        figures = (f"test accuracy {verdict.test_accuracy:.4f}, validation {verdict.validation_accuracy:.4f}"
                   if verdict.phase == "Succeeded" else f"failed: {verdict.reason}: {verdict.message}")
        progress.log(f"[{name}] retrained #{candidate.rank} (child {candidate.index}): {figures}")
        return done

    everything = asyncio.ensure_future(asyncio.gather(*(one(c) for c in chosen)))
    stop_waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([everything, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
    stop_waiter.cancel()
    if not everything.done():  # interrupted: stop the children
        everything.cancel()
        await asyncio.gather(everything, return_exceptions=True)
        return None
    return list(everything.result())


def retrain_fields(entries: list[dict], *, best_index: int) -> dict:
    """best.json's retraining fields: the best child's `test_accuracy` and `model_path`
    (retrained), and `retrain`, every retrained child."""
    best = next((e for e in entries if e["index"] == best_index), None)
    return {"test_accuracy": None if best is None else best["testAccuracy"],
            "model_path": None if best is None else best["modelPath"], "retrain": entries}
