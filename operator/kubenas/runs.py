"""A local search's durable record under `runs/<search name>/`.

- `manifest.yaml`   the manifest the search was started with
- `checkpoint.pt`   the engine's full state (written atomically after every step)
- `trials.jsonl`    one line per finished child (written *before* the checkpoint, so a
                    crash between the two is repaired on resume from this file)
- `updates.jsonl`   one line per policy update
- `best.json`       the best child so far
- `reward.png`      reward per child, running best, baseline
- `trials/NNNNNN/`  each child's result.json and log.txt
- `retrain/NNNNNN/` spec.retrain: each retrained child's result.json, log.txt and model.pt
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import yaml

from kubenas.search import Outcome, Search, Ticket


def atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoint = path / "checkpoint.pt"
        self.trials_file = path / "trials.jsonl"
        self.updates_file = path / "updates.jsonl"
        self.best_file = path / "best.json"
        self.plot_file = path / "reward.png"
        self.manifest_file = path / "manifest.yaml"
        self.trials_dir = path / "trials"

    def exists(self) -> bool:
        return self.checkpoint.exists()

    def create(self, manifest: dict) -> None:
        # A new search (or --restart): children left by an earlier run must not pass
        # for this run's (their result files would be picked up as finished children).
        shutil.rmtree(self.trials_dir, ignore_errors=True)
        shutil.rmtree(self.path / "retrain", ignore_errors=True)  # spec.retrain's children (kubenas.retrain_local)
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.trials_file, self.updates_file, self.best_file, self.plot_file):
            stale.unlink(missing_ok=True)
        atomic_write(self.manifest_file, yaml.safe_dump(manifest, sort_keys=False).encode())

    def save(self, search: Search) -> None:
        atomic_write(self.checkpoint, search.to_bytes())

    def recorded(self) -> dict[int, dict]:
        """Finished children already in trials.jsonl, by index (a torn last line is dropped)."""
        records: dict[int, dict] = {}
        if not self.trials_file.exists():
            return records
        with self.trials_file.open() as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                records[record["index"]] = record
        return records

    def repair_torn_tail(self) -> None:
        """A crash mid-append can leave half a line; cut it so new lines start clean."""
        if not self.trials_file.exists():
            return
        data = self.trials_file.read_bytes()
        if data and not data.endswith(b"\n"):
            atomic_write(self.trials_file, data[: data.rfind(b"\n") + 1])

    def append_trial(self, ticket: Ticket, outcome: Outcome, result: dict, *, seconds: float | None, told: int,
                     extra: dict | None = None) -> dict:
        """Record a finished child; `told` is how many results the search has now; `extra`:
        more fields (its gpuSeconds and cpuSeconds, the result cache's)."""
        record = {
            "index": ticket.index,
            "status": "Succeeded" if outcome.succeeded else "Failed",
            "reward": outcome.reward,
            "validationAccuracy": outcome.validation_accuracy,
            "reason": outcome.reason,
            "architecture": ticket.architecture,
            "actions": ticket.actions,
            "logProb": ticket.log_prob,
            "policyVersion": ticket.policy_version,
            "seconds": None if seconds is None else round(seconds, 3),
            **(extra or {}),
            "result": result,
        }
        _append_line(self.trials_file, record)
        if outcome.update is not None:
            _append_line(self.updates_file, {"afterResults": told, **asdict(outcome.update)})
        return record

    def write_best(self, search: Search, *, usage: dict | None = None, extra: dict | None = None) -> None:
        best = search.best
        if best is None:
            return
        document = {
            "index": best.index,
            "architecture": best.architecture,
            "reward": best.reward,
            "validation_accuracy": best.validation_accuracy,
            **({"usage": usage} if usage is not None else {}),  # the search's GPU- and CPU-hours
            **(extra or {}),
        }
        atomic_write(self.best_file, (json.dumps(document, indent=2) + "\n").encode())

    def updates(self) -> list[dict]:
        if not self.updates_file.exists():
            return []
        return [json.loads(line) for line in self.updates_file.read_text().splitlines() if line.strip()]


def _append_line(path: Path, record: dict) -> None:
    # Flushed, not fsynced: it guards against a killed runner; the checkpoint that
    # follows it is fsynced, and a line lost with the OS is re-run on resume.
    with path.open("a") as handle:
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")
