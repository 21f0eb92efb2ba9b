"""The operator's retraining phase: once every child is done, one Job per best child
(spec.retrain.topK), owned by the search, named `<search>-retrain-<rank>`.

Level-triggered: each step lists the search's retraining Jobs, creates the missing ones
(a 409 is a Job made before a restart) and reads the finished ones. A verdict, once in
status.retrain, is final: a restarted operator does not look at that Job again, and
after every entry is final no request is made at all.
"""

from __future__ import annotations

import posixpath

from kubenas import spec as specs
from kubenas.operator import children, names, results
from kubenas.operator.kube import ApiError, KubeClient
from kubenas.operator.trainer_defaults import TrainerDefaults
from kubenas.retrain import Candidate, candidates, entry, judge, model_file_name, retrain_trial
from kubenas.search import Search, Ticket, failure

COMPONENT = "retrain"  # app.kubernetes.io/component of retraining Jobs and pods (children: "trial")
LABEL_RETRAIN_RANK = "kubenas.io/retrain-rank"
ANNOTATION_INDEX = "kubenas.io/retrain-index"  # which child a retraining Job trains
FINAL = ("Succeeded", "Failed")


def job_name(search: str, rank: int) -> str:
    return f"{names.child_prefix(search)}-retrain-{rank}"


def retrain_labels(search: str, rank: int) -> dict[str, str]:
    return {**names.search_labels(search), names.LABEL_COMPONENT: COMPONENT, LABEL_RETRAIN_RANK: str(rank)}


def model_path(retrain: specs.Retrain, search: str, rank: int) -> str | None:
    return None if retrain.model_dir is None else posixpath.join(retrain.model_dir, model_file_name(search, rank))


def retrain_job(*, owner: dict, spec: specs.SearchSpec, candidate: Candidate,
                defaults: TrainerDefaults | None = None) -> dict:
    """The Job retraining `candidate`: a trainer Job as a child's (children.trainer_job: the
    operator's trainer defaults, termination message, no API token, Kueue's queue) from the
    retraining template, with its own name and labels, owned by the search itself."""
    search, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    name = job_name(search, candidate.rank)
    trial_spec = retrain_trial(spec.trial, spec.retrain, model_path=model_path(spec.retrain, search, candidate.rank))
    trial_spec = trial_spec.model_copy(update={"ttl_seconds_after_finished": None})  # kept until its verdict is read
    ticket = Ticket(candidate.index, candidate.architecture, [], 0.0, 0)
    # Not a child's labels (no trial index): the pod watch and the replay leave it alone.
    job = children.trainer_job(name=name, namespace=namespace, owner=owner, ticket=ticket, spec=trial_spec,
                               labels=retrain_labels(search, candidate.rank), defaults=defaults)
    job["metadata"]["annotations"] = {ANNOTATION_INDEX: str(candidate.index)}
    return job


def check_retrain_template(spec: specs.SearchSpec, *, defaults: TrainerDefaults | None = None) -> None:
    """TemplateError when the retraining template cannot make a Job (checked with the spec)."""
    if spec.retrain is not None and spec.trial.kind == "Job":
        children.typed_template(retrain_trial(spec.trial, spec.retrain, model_path=None).template, defaults=defaults)


class Retrainer:
    """One search's retraining, stepped by its driver."""

    def __init__(self, *, client: KubeClient, owner: dict, defaults: TrainerDefaults | None, previous: list | None):
        self.client = client
        self.owner = owner
        self.search_name = owner["metadata"]["name"]
        self.namespace = owner["metadata"]["namespace"]
        self.defaults = defaults
        self.entries: list[dict] = [e for e in previous or [] if isinstance(e, dict)]  # status.retrain as found

    def _final(self, spec: specs.SearchSpec, search: Search) -> tuple[list[Candidate], dict[tuple, dict]]:
        """The chosen children, and the entries with a final verdict by (rank, index)."""
        final = {(e.get("rank"), e.get("index")): e for e in self.entries if e.get("phase") in FINAL}
        return candidates(search, spec.retrain.top_k), final

    def done(self, spec: specs.SearchSpec, search: Search) -> bool:
        """Every chosen child has a final verdict (none chosen: nothing to do)."""
        chosen, final = self._final(spec, search)
        return all((c.rank, c.index) in final for c in chosen)

    async def step(self, spec: specs.SearchSpec, search: Search) -> bool:
        """Create, adopt and read the retraining Jobs; True when `entries` changed."""
        chosen, final = self._final(spec, search)
        if all((c.rank, c.index) in final for c in chosen):
            return False
        jobs = {job["metadata"]["name"]: job for job in await self.client.list(
            names.JOBS, namespace=self.namespace,
            label_selector=f"{names.LABEL_SEARCH}={self.search_name},{names.LABEL_COMPONENT}={COMPONENT}")}
        entries = []
        for candidate in chosen:
            known = final.get((candidate.rank, candidate.index))
            entries.append(known if known is not None else await self._entry(spec, candidate, jobs))
        changed = entries != self.entries
        self.entries = entries
        return changed

    async def _entry(self, spec: specs.SearchSpec, candidate: Candidate, jobs: dict[str, dict]) -> dict:
        name = job_name(self.search_name, candidate.rank)
        trial = names.trial_name(self.search_name, candidate.index)
        path = model_path(spec.retrain, self.search_name, candidate.rank)

        def pending(phase: str = "Pending", **fields) -> dict:
            return entry(candidate, trial=trial, job=name, phase=phase, model_path=path, **fields)

        job = jobs.get(name)
        if job is None:
            body = retrain_job(owner=self.owner, spec=spec, candidate=candidate, defaults=self.defaults)
            try:
                await self.client.create(names.JOBS, namespace=self.namespace, body=body)
            except ApiError as error:
                if error.status != 409:  # 409: made before a restart, listed next step
                    return pending("Failed", reason="JobRejected", message=error.message[:1024])
            return pending()
        if (job["metadata"].get("annotations") or {}).get(ANNOTATION_INDEX) != str(candidate.index):
            return pending("Failed", reason="StaleRetrainJob", message=(
                f"Job {name} retrains another child (an earlier retraining of this search); delete it to retrain "
                f"{trial}"))
        if not results.job_finished(job):
            return pending("Running" if (job.get("status") or {}).get("active") else "Pending")
        pods = results.pods_of(job, await self.client.list(
            names.PODS, namespace=self.namespace, label_selector=f"job-name={name}"))
        result, _ = results.job_result(job, pods)
        verdict = judge(result if isinstance(result, dict) else failure("MalformedResult"))
        return entry(candidate, trial=trial, job=name, verdict=verdict, model_path=path)
