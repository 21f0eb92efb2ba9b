"""Retraining, the paper's last step (Zoph & Le 2017, §4.1): once every child is done,
the best architectures are trained again with a longer recipe and each is scored once
on the test set, at the end.

Driver-neutral, like the engine: which children (`candidates`), the pod template they
run with (`retrain_trial`), and what a retrained child's result says (`judge`). The
local runner (kubenas.retrain_local) and the operator (kubenas.operator.retrain) use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubenas import spec as specs
from kubenas.search import Search, is_fraction

# What the trainer reads (trainer-image/README.md): --evaluate-test and --save-model.
EVALUATE_TEST_ENV = "KUBENAS_EVALUATE_TEST"
SAVE_MODEL_ENV = "KUBENAS_SAVE_MODEL"


@dataclass(frozen=True)
class Candidate:
    """A child chosen for retraining; rank 1 is the best."""

    rank: int
    index: int
    reward: float
    validation_accuracy: float | None
    architecture: dict


@dataclass(frozen=True)
class Verdict:
    """What a retrained child's result document says."""

    phase: str  # Succeeded or Failed
    reason: str  # Succeeded, or the failure's named reason
    message: str
    validation_accuracy: float | None  # the last epoch's: the weights tested and saved
    test_accuracy: float | None


def candidates(search: Search, top_k: int) -> list[Candidate]:
    """The `top_k` best children by the search's ranking (highest reward first; equal
    rewards: the lower index first), so the same search always retrains the same ones."""
    return [Candidate(rank, entry.index, entry.reward, entry.validation_accuracy, entry.architecture)
            for rank, entry in enumerate(search.top_k(top_k), start=1)]


def model_file_name(search_name: str, rank: int) -> str:
    return f"{search_name}-retrain-{rank}.pt"


def retrain_trial(trial: specs.Trial, retrain: specs.Retrain, *, model_path: str | None) -> specs.Trial:
    """The trial spec a retrained child runs with: the search's pod template, its trainer
    container changed by `retrain.template` (args appended, env set, resources replaced)
    and told to evaluate the test split and save its weights to `model_path`."""
    if trial.template is None:
        raise specs.SpecError("spec.retrain needs trial.kind Job")
    template = trial.template
    container, *others = template.spec.containers
    ours = [specs.EnvVar(name=EVALUATE_TEST_ENV, value="1")]
    if model_path is not None:
        ours.append(specs.EnvVar(name=SAVE_MODEL_ENV, value=model_path))
    overrides = retrain.template.env
    replaced = {variable.name for variable in [*ours, *overrides]}
    # Ours first, so that the template's variables may refer to them with $(NAME).
    env = [*ours, *(v for v in container.env if v.name not in replaced), *overrides]
    changes: dict = {"args": [*container.args, *retrain.template.args], "env": env}
    if retrain.template.resources:
        changes["resources"] = dict(retrain.template.resources)
    container = container.model_copy(update=changes)
    pod = template.spec.model_copy(update={"containers": [container, *others]})
    return trial.model_copy(update={
        "template": template.model_copy(update={"spec": pod}),
        "active_deadline_seconds": retrain.active_deadline_seconds,
    })


def judge(result: dict) -> Verdict:
    """A retrained child's verdict. It succeeds only with a test accuracy: a trainer
    that ignores KUBENAS_EVALUATE_TEST fails NoTestAccuracy rather than pass unnoticed."""
    if not isinstance(result, dict) or result.get("status") not in ("Succeeded", "Failed"):
        return Verdict("Failed", "MalformedResult", "not a TrialResult document", None, None)
    if result["status"] == "Failed":
        return Verdict("Failed", str(result.get("reason") or "Failed"), str(result.get("message") or "")[:1024],
                       None, None)
    accuracies = result.get("validationAccuracy")
    if not isinstance(accuracies, list) or not accuracies or not all(map(is_fraction, accuracies)):
        return Verdict("Failed", "MalformedResult", "validationAccuracy is not a list of fractions", None, None)
    test = result.get("testAccuracy")
    if test is None:
        return Verdict("Failed", "NoTestAccuracy", "the result has no testAccuracy: the trainer must honour "
                       f"--evaluate-test (or {EVALUATE_TEST_ENV}=1)", float(accuracies[-1]), None)
    if not is_fraction(test):
        return Verdict("Failed", "MalformedResult", "testAccuracy is not a fraction", float(accuracies[-1]), None)
    return Verdict("Succeeded", "Succeeded", "", float(accuracies[-1]), float(test))


def entry(candidate: Candidate, *, trial: str, job: str | None, phase: str = "Pending", reason: str | None = None,
          message: str = "", verdict: Verdict | None = None, model_path: str | None = None) -> dict:
    """One item of status.retrain (and of best.json's `retrain`)."""
    if verdict is not None:
        phase, reason, message = verdict.phase, verdict.reason, verdict.message
    succeeded = phase == "Succeeded"
    return {
        "rank": candidate.rank,
        "trial": trial,
        "index": candidate.index,
        "job": job,
        "phase": phase,
        "reason": reason,
        "message": message,
        "reward": round(candidate.reward, 6),
        "validationAccuracy": None if verdict is None or verdict.validation_accuracy is None
        else round(verdict.validation_accuracy, 6),
        "testAccuracy": None if verdict is None or verdict.test_accuracy is None else round(verdict.test_accuracy, 6),
        "modelPath": model_path if succeeded else None,
    }
