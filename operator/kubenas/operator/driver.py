"""One search, driven: the engine hosted by the operator (a kopf daemon per search).

Durable state is the cluster's: the policy checkpoint (a ConfigMap, written after every
policy update and before any child sampled by the new policy exists) and the NASTrials
(each child's sampled actions and, once finished, its result). A driver started on an
existing search restores the checkpoint, asks the engine again for the children created
since (same RNG state, same children: it checks), tells it the results recorded since,
and adopts the children still running. So an operator restarted at any moment loses no
child, creates none twice and updates the policy once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from kubenas import spec as specs
from kubenas.budget import BUDGET_EXHAUSTED, Cost, budget_spent, children_that_fit, usage_status
from kubenas.evaluators import TabularEvaluator
from kubenas.metrics import SearchMetrics
from kubenas.operator import children, metering, names, queueing, results
from kubenas.operator.cache import LABEL_CACHE_KEY, WAITING_REASON, ClusterCache, key_of
from kubenas.operator.checkpoints import owned_by, read_checkpoint, write_checkpoint
from kubenas.operator.engine_thread import off_loop
from kubenas.operator.failpoints import failpoint
from kubenas.operator.kube import ApiError, KubeClient
from kubenas.operator.retrain import Retrainer
from kubenas.operator.spec_checks import SearchFailed, check_space, parse_spec, started_message
from kubenas.operator.status import conditions_for, now, search_status, unschedulable_condition
from kubenas.operator.trainer_defaults import TrainerDefaults
from kubenas.operator.waiting import WaitingChildren
from kubenas.operator.workloads import INADMISSIBLE, KueueVerdicts
from kubenas.result_cache import CachedResult, gpus_of
from kubenas.search import CheckpointMismatch, Search, Ticket, failure, fingerprint
from kubenas.spaces import summarize

TERMINAL = ("Succeeded", "Failed")
MILESTONES = (1, 2, 5)  # Events for policy updates 1, 2, 5, 10, 20, 50, 100, …


@dataclass(frozen=True)
class JobEvent:
    index: int
    job: dict
    deleted: bool


@dataclass(frozen=True)
class DriverSettings:
    status_interval: float = 1.0  # at most one status write per interval (plus transitions)
    idle_wake: float = 5.0  # re-check the live spec this often even without events
    trainer_defaults: TrainerDefaults | None = None  # --trainer-defaults: what children's pods leave unset
    tabular_dir: Path | None = None  # --tabular-dir: the only place Tabular searches' CSV files are read from
    operator_account: tuple[str, str] | None = None  # (namespace, name) the operator runs as: never a child's
    # Children created at once in a burst (their API writes overlap; the client keeps 32
    # connections). Asks happen between bursts, so no child of a policy precedes its checkpoint.
    create_concurrency: int = 32


def is_milestone(update: int) -> bool:
    scale = 1
    while scale * 10 <= update:
        scale *= 10
    return update in tuple(m * scale for m in MILESTONES)


def ticket_of(trial: dict) -> Ticket:
    """A child's ticket as its NASTrial records it."""
    spec = trial["spec"]
    return Ticket(index=spec["index"], architecture=spec["architecture"], actions=spec["actions"],
                  log_prob=spec["logProb"], policy_version=spec["policyVersion"])


class SearchDriver:
    def __init__(self, *, client: KubeClient, body: Any, logger: logging.Logger | logging.LoggerAdapter,
                 settings: DriverSettings | None = None) -> None:
        self.client = client
        self.body = body  # kopf's live view: follows the object as it changes
        self.logger = logger
        self.settings = settings or DriverSettings()
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.uid: str = body["metadata"]["uid"]
        self.events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.wake = asyncio.Event()
        self.search: Search | None = None
        self.spec: specs.SearchSpec | None = None
        self.evaluate_table: TabularEvaluator | None = None
        self.marked_running: set[int] = set()
        self.phase = ""
        self.failure: SearchFailed | None = None
        self.dirty = True
        self.last_status = 0.0
        self.seen_generation: int | None = None
        self.last_checkpoint: str | None = None
        self.trial_uids: dict[int, str] = {}  # children in flight, for their Events
        # The pods of children in flight, from the pod watch (index -> pod name -> the
        # fields a result needs), so a finished Job costs no list request.
        self.pods: dict[int, dict[str, dict]] = {}
        self.checkpoint_lock = asyncio.Lock()  # concurrent children's updates: one write at a time, newest last
        # Why children in flight are still Pending: index -> (reason, message, since), from
        # the pod watch (Unschedulable) and the Job's FailedCreate Events (quota).
        self.waiting = WaitingChildren()
        self.podless: set[int] = set()  # children whose Job started with no pod active
        self.queued: set[int] = set()  # children whose Job waits, suspended, for Kueue (in flight all the same)
        self.kueue = KueueVerdicts(logger=logger)  # why Kueue has not admitted them, from their Workloads
        self.kueue_said: dict[int, tuple[str, str]] = {}  # what their NASTrials say of it
        self.inadmissible_reported: set[str] = set()  # Kueue messages already told as a Warning Event
        self.metrics = SearchMetrics(namespace=self.namespace, search=self.name)
        self.meter = metering.SearchMeter()  # GPU- and CPU-seconds, spec.budget
        self.retrainer: Retrainer | None = None  # spec.retrain, made when first due (kubenas.operator.retrain)
        self.cache = ClusterCache(search=self.name)  # identical children's results (spec.cache)

    # -- identity --------------------------------------------------------------------

    def owner(self) -> dict:
        return {"apiVersion": names.SEARCHES.api_version, "kind": names.SEARCHES.kind,
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}}

    def trial_name(self, index: int) -> str:
        return names.trial_name(self.name, index)

    # -- the daemon ------------------------------------------------------------------

    async def run(self) -> None:
        if not (self.body.get("status") or {}).get("phase"):  # a new search: say so before the first child
            await self._publish("Pending", "Initialising", "checking the spec and initialising the controller")
        while self.search is None:
            try:
                await self._start()
            except SearchFailed as failed:
                await self._fail_permanently(failed)
                await self._wait_for_new_generation()
        while True:
            try:
                await self._step()
            except SearchFailed as failed:
                await self._fail_permanently(failed)
            await self._wait()

    async def _start(self) -> None:
        self.seen_generation = self.body["metadata"].get("generation")
        self.failure = None
        spec = parse_spec(self.body, self.settings)
        if spec.trial.kind == "Tabular":
            try:
                self.evaluate_table = await off_loop(lambda: TabularEvaluator(
                    spec.trial.tabular, directory=self.settings.tabular_dir, confined=True))
            except specs.SpecError as error:
                raise SearchFailed("InvalidSpec", str(error)) from None
        self.cache = ClusterCache(search=self.name)
        await self._refresh_cache(spec)
        data = await read_checkpoint(self.client, search=self.owner())
        if data is None:
            await off_loop(check_space, spec)  # a restored search passed it when it began
            search = await off_loop(Search, spec)
            self.search, self.spec = search, spec
            await self._checkpoint()
            self._event("Started", started_message(spec))
        else:
            trials = await self.client.list(names.TRIALS, namespace=self.namespace,
                                            label_selector=f"{names.LABEL_SEARCH}={self.name}")
            recorded = {t["spec"]["index"]: t for t in trials if owned_by(t, self.uid)}
            try:  # the checkpoint names its children in flight; their tickets are their NASTrials
                search = await off_loop(lambda: Search.restore(spec, data, in_flight={
                    index: ticket_of(trial) for index, trial in recorded.items()}))
            except CheckpointMismatch as error:
                raise SearchFailed("CheckpointMismatch", str(error)) from None
            search.max_trials = spec.max_trials
            self.search, self.spec = search, spec
            self.meter.restore(recorded.values())  # before the replay: the sum of every recorded child
            gpus = gpus_of(spec.trial)
            for trial in recorded.values():  # the results and hits of its own children
                self.cache.learn(trial, gpus=gpus)
            await self._replay(recorded)
            await self._meter_running()
            self.metrics.policy(search.last_update)
            self._event("Resumed", f"from policy version {search.controller.version}: "
                                   f"{search.counters.created} children created, {len(search.in_flight)} in flight")
        spent = self.meter.usage.spent
        self.metrics.cost_resumed(gpu_seconds=spent.gpu_seconds, cpu_seconds=spent.cpu_seconds)

    async def _replay(self, recorded: dict[int, dict]) -> None:
        """Catch the restored engine up with what happened after its checkpoint
        (`recorded`: the search's NASTrials by index)."""
        search = self.search
        last = max(recorded, default=-1)
        while search.next_index <= last:  # children created since the checkpoint: same RNG, same children
            ticket = await off_loop(search.ask)
            if ticket is None:
                break
            trial = recorded.get(ticket.index)
            if trial is not None and trial["spec"]["architecture"] != ticket.architecture:
                raise SearchFailed("ReplayMismatch", f"NASTrial {trial['metadata']['name']} does not match the "
                                                     "child the restored controller samples for its index")
        for index in sorted(search.in_flight):  # results recorded since the checkpoint
            status = (recorded.get(index) or {}).get("status") or {}
            if status.get("phase") in TERMINAL and isinstance(status.get("result"), dict):
                outcome = await off_loop(search.tell, index, status["result"])
                if outcome is not None and outcome.update is not None:
                    await self._checkpoint()
        jobs = {}
        if self.spec.trial.kind == "Job":
            for job in await self.client.list(names.JOBS, namespace=self.namespace,
                                              label_selector=f"{names.LABEL_SEARCH}={self.name}"):
                label = job["metadata"]["labels"].get(names.LABEL_TRIAL_INDEX, "")
                if not label.isdigit():
                    continue  # a retraining Job (kubenas.operator.retrain), not a child
                index = int(label)
                if job["metadata"]["name"] == self.trial_name(index) and index in search.in_flight:
                    jobs[index] = job
        for index in sorted(search.in_flight):  # adopt the running, recreate the missing
            ticket = search.in_flight[index]
            if index in jobs:
                self.cache.adopt(index, key_of(recorded.get(index)))
                self.events.put_nowait(JobEvent(index, jobs[index], deleted=False))
            elif (result := await self._create_child(ticket, trial=recorded.get(index))) is not None:
                await self._tell([(index, result, (None, None))])

    async def _meter_running(self) -> None:
        """After a restart, with a budget: the running children's elapsed cost before the
        first decision (the pod watch brings it too, but not necessarily first)."""
        if self.spec.trial.kind != "Job" or not self.spec.budget.limited:
            return
        for pod in await self.client.list(names.PODS, namespace=self.namespace,
                                          label_selector=f"{names.LABEL_SEARCH}={self.name}"):
            index = (pod["metadata"].get("labels") or {}).get(names.LABEL_TRIAL_INDEX, "")
            if index.isdigit() and int(index) in self.search.in_flight:
                self.meter.watch_pod(int(index), pod)

    async def _refresh_cache(self, spec: specs.SearchSpec) -> None:
        """The spec.cache.from searches' finished children, read again when due; a missing one is told
        once. Reuse is only a saving: an API error is a warning, and children train meanwhile."""
        try:
            missing = await self.cache.refresh(self.client, namespace=self.namespace, spec=spec)
        except ApiError as error:
            self.logger.warning(f"spec.cache.from not read again: {error}; children train meanwhile")
            return
        if missing:
            self._event("CacheSourceNotFound", f"spec.cache.from: no search {', '.join(missing)} in namespace "
                                               f"{self.namespace}; its children cannot be reused", warning=True)

    async def _step(self) -> None:
        self._refresh_spec()
        await self._drain()
        await self._inspect_waiting()
        decision = self._decide()
        if decision[0] == "Retraining":
            await self._publish(*decision)  # the phase first, then its Jobs
            if await self.retrainer.step(self.spec, self.search):
                self.dirty = True
            decision = self._decide()
        while (decision[0] == "Running" and decision[1] != BUDGET_EXHAUSTED and not self.search.exhausted
               and len(self.search.in_flight) < self.spec.parallelism):
            await self._publish(*decision)  # at most once a second: a long burst shows progress
            await self._refresh_cache(self.spec)  # what spec.cache.from searches finished since (refreshSeconds)
            room = min(self.spec.parallelism - len(self.search.in_flight), self.settings.create_concurrency)
            if (fit := self._budget_room()) is not None:  # inFlight Expected: one child at a time, not per burst
                room = min(room, fit)
            await self._create_children(await off_loop(self._ask, room))
            await self._drain()  # results keep flowing while hundreds are created
            decision = self._decide()  # a failure among them may end the burst (maxFailedTrials)
        await self._publish(*decision)

    async def _create_children(self, tickets: list[Ticket]) -> None:
        """A burst of children, their API writes overlapping. Table children's verdicts
        are told afterwards in index order, as a restart's replay tells them, so the
        policy does not depend on which write the API server answered first; a policy
        update among them is checkpointed before the next asks."""
        outcomes = await asyncio.gather(*(self._create_child(t) for t in tickets), return_exceptions=True)
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        verdicts = [(t.index, outcome, (None, None)) for t, outcome in zip(tickets, outcomes) if isinstance(outcome, dict)]
        if verdicts:
            failpoint("after-result-recorded")
        await self._tell(verdicts)
        if errors:
            raise errors[0]

    async def _inspect_waiting(self) -> None:
        """Children whose Job has no pod yet: its FailedCreate Events say why (quota: the
        child waits, Pending with that reason; Pod Security: no child can ever run, so
        the search fails quoting the admission message). Then every waiting child's
        reason goes to its NASTrial, and a long-unschedulable one to the search. Queued
        children get Kueue's reason from their Workloads."""
        if self.spec.trial.kind != "Job":
            return
        await self._inspect_queued()
        for index in self.waiting.due_for_events([i for i in self.podless if i in self.search.in_flight]):
            events = await self.client.list(names.EVENTS, namespace=self.namespace, label_selector="",
                                            field_selector=f"involvedObject.kind=Job,involvedObject.name="
                                                           f"{self.trial_name(index)},reason=FailedCreate")
            if not events:
                continue
            message = str(max(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
                          .get("message") or "")[:1024]
            if "violates PodSecurity" in message:
                raise SearchFailed("PodSecurity", f"the namespace's Pod Security admission refuses the children's "
                                                  f"pods: {message}")
            self.waiting.note(index, "QuotaExceeded" if "exceeded quota" in message else "FailedCreate", message)
        for index, (reason, message) in self.waiting.changed():
            if index in self.search.in_flight:
                await self._patch_trial(index, {"phase": "Pending", "reason": reason, "message": message})
        stuck = self.waiting.longest("Unschedulable")
        if stuck is not None and stuck[1] >= self.spec.trial.unschedulable_after_seconds:
            if self.waiting.report(stuck[0]):
                self._event("ChildrenUnschedulable", f"child {stuck[0]} has waited {stuck[1]:.0f} s for a node: "
                                                     f"{stuck[2]}", warning=True)
            self.dirty = True

    async def _inspect_queued(self) -> None:
        """Kueue's reason for each queued child (kubenas.operator.workloads), into its NASTrial
        when it changes; an inadmissible queue (one that does not exist) is a Warning Event."""
        if not self.queued or not self.kueue.due():
            return
        jobs = {self.trial_name(index): index for index in self.queued}
        for job, (reason, message) in (await self.kueue.read(self.client, namespace=self.namespace,
                                                              jobs=set(jobs))).items():
            index = jobs[job]
            if index not in self.queued or self.kueue_said.get(index) == (reason, message):
                continue
            self.kueue_said[index] = (reason, message)
            await self._patch_trial(index, {"phase": "Queued", "reason": reason, "message": message})
            if reason == INADMISSIBLE and message not in self.inadmissible_reported:
                self.inadmissible_reported.add(message)
                self.logger.warning(f"child {index} cannot be admitted: {message}")
                self._event("ChildrenInadmissible", f"child {index} (and any child of this queue) waits until this is mended: {message}",
                            warning=True)

    def _ask(self, count: int) -> list[Ticket]:
        """Up to `count` children from the engine (on its thread)."""
        tickets = []
        while len(tickets) < count and (ticket := self.search.ask()) is not None:
            tickets.append(ticket)
        return tickets

    async def _drain(self) -> None:
        while not self.events.empty():
            await self._on_job(self.events.get_nowait())

    def deliver(self, event: JobEvent) -> None:
        """A Job event for this search (from kopf's handler): handled by the next step."""
        self.events.put_nowait(event)
        self.wake.set()

    def deliver_pod(self, index: int, pod: dict) -> None:
        """A child's pod as the watch last saw it (kept after its deletion: the result is in it)."""
        if self.search is None or index not in self.search.in_flight:
            return
        self.meter.watch_pod(index, pod)  # a running child's elapsed cost counts against spec.budget
        self.pods.setdefault(index, {})[pod["metadata"]["name"]] = results.pod_record(pod)
        unschedulable = results.unschedulable(pod)
        if unschedulable is not None:
            self.waiting.note(index, "Unschedulable", unschedulable)
            self.marked_running.discard(index)  # Running again once it is scheduled and its Job says so
        elif index in self.waiting:
            self.waiting.clear(index)
            self.dirty = True  # a ChildrenUnschedulable condition may end
        self.wake.set()

    def _watched_pods(self, index: int, job: dict) -> list[dict] | None:
        """The finished Job's pods from the watch, if it has delivered every pod the Job
        counts as finished (watches of Jobs and of pods are not ordered with each other)."""
        pods = results.pods_of(job, self.pods.get(index, {}).values())
        status = job.get("status") or {}
        finished = int(status.get("succeeded") or 0) + int(status.get("failed") or 0)
        terminated = sum(results.terminated_state(pod) is not None or results.disruption(pod) is not None
                         for pod in pods)
        return pods if finished and terminated >= finished else None

    async def _wait(self) -> None:
        """Until an event, a spec change, or the status or idle interval."""
        if self.events.empty():
            timeout = self.settings.status_interval if self.dirty else self.settings.idle_wake
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
        self.wake.clear()  # events that raced this are in the queue: the next step drains it

    async def _wait_for_new_generation(self) -> None:
        while self.body["metadata"].get("generation") == self.seen_generation:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.idle_wake)
            self.wake.clear()

    # -- spec and phase --------------------------------------------------------------

    def _refresh_spec(self) -> None:
        """Take the live spec's changeable fields (maxTrials, parallelism, suspend,
        maxFailedTrials, the trial template); the space, controller, reward and seed
        are fixed for the search's life."""
        generation = self.body["metadata"].get("generation")
        if generation == self.seen_generation:
            return
        self.seen_generation = generation
        self.dirty = True
        try:
            live = parse_spec(self.body, self.settings)
        except SearchFailed as failed:
            self._event("SpecRejected", f"generation {generation} ignored: {failed.message}", warning=True)
            return
        if fingerprint(live) != self.search.fingerprint():
            self._event("SpecRejected", f"generation {generation}: searchSpace, controller, reward and seed cannot "
                                        "change during a search; the rest of the change is taken", warning=True)
            live = live.model_copy(update={"search_space": self.spec.search_space, "controller": self.spec.controller,
                                           "reward": self.spec.reward, "seed": self.spec.seed})
        if live.suspend != self.spec.suspend:
            self._event("Suspended" if live.suspend else "Resumed",
                        "spec.suspend is true: no new children" if live.suspend else "spec.suspend is false")
        self.spec = live
        self.search.spec = live
        self.search.max_trials = live.max_trials

    def _decide(self) -> tuple[str, str, str]:
        search, spec = self.search, self.spec
        counters = search.counters
        if self.failure is not None:
            return "Failed", self.failure.reason, self.failure.message
        if spec.max_failed_trials is not None and counters.failed > spec.max_failed_trials:
            return "Failed", "MaxFailedTrialsReached", (
                f"{counters.failed} children failed, more than maxFailedTrials={spec.max_failed_trials}; "
                f"no new children ({len(search.in_flight)} still running are recorded)")
        if search.finished:
            if self._retraining():
                return self._retraining_decision("every child done")
            best = search.best
            tail = f"; best {self.trial_name(best.index)} reward {best.reward:.4f}" if best else ""
            tail += self._retrained_tail()
            return "Succeeded", "AllTrialsDone", f"{counters.succeeded} of {search.max_trials} children succeeded{tail}"
        if (spent := self._budget_spent()) is not None:
            if search.in_flight:
                return "Running", BUDGET_EXHAUSTED, f"{spent}: no new children; {len(search.in_flight)} running finish"
            if self._retraining():  # the budget is the search's children's; retraining is spec.retrain's own
                return self._retraining_decision(spent)
            return "Succeeded", BUDGET_EXHAUSTED, (f"{spent}; {counters.succeeded} of {search.max_trials} children "
                                                   f"succeeded{self._retrained_tail()}")
        if spec.suspend:
            return "Suspended", "SuspendedBySpec", f"spec.suspend is true; {len(search.in_flight)} running children finish"
        return "Running", "Searching", (
            f"{counters.created} of {search.max_trials} children created, {len(search.in_flight)} running")

    def _budget_spent(self) -> str | None:
        """spec.budget's verdict: None while it lasts, else why not (the figures)."""
        budget = self.spec.budget
        if not budget.limited:
            return None
        in_flight = self.meter.elapsed(self.search.in_flight) if budget.in_flight == "Expected" else None
        return budget_spent(gpu_hours=budget.gpu_hours, cpu_hours=budget.cpu_hours, usage=self.meter.usage,
                            running=self.meter.running_cost(), running_children=len(self.meter.running),
                            in_flight=in_flight)

    def _budget_room(self) -> int | None:
        """spec.budget.inFlight Expected: how many more children are expected to fit (None: no bound)."""
        budget = self.spec.budget
        if not budget.limited or budget.in_flight != "Expected":
            return None
        return children_that_fit(gpu_hours=budget.gpu_hours, cpu_hours=budget.cpu_hours, usage=self.meter.usage,
                                 in_flight=self.meter.elapsed(self.search.in_flight))

    def _retraining_decision(self, why: str) -> tuple[str, str, str]:
        top_k = self.spec.retrain.top_k
        return "Retraining", "RetrainingBest", (f"{why}; retraining the best {min(top_k, self.search.counters.succeeded)} "
                                                f"(spec.retrain.topK={top_k})")

    def _retraining(self) -> bool:
        """spec.retrain is set and some chosen child has no final verdict yet."""
        if self.spec.retrain is None:
            return False
        if self.retrainer is None:  # its verdicts so far are in the status (a restarted operator)
            self.retrainer = Retrainer(client=self.client, owner=self.owner(), defaults=self.settings.trainer_defaults,
                                       previous=(self.body.get("status") or {}).get("retrain"))
        return not self.retrainer.done(self.spec, self.search)

    def _retrained_tail(self) -> str:
        entries = self.retrainer.entries if self.retrainer is not None and self.spec.retrain else []
        tested = [e for e in entries if e.get("testAccuracy") is not None]
        if not entries:
            return ""
        best = f", #{tested[0]['rank']} test accuracy {tested[0]['testAccuracy']:.4f}" if tested else ""
        return f"; {len(tested)} of {len(entries)} retrained{best}"

    # -- children --------------------------------------------------------------------

    async def _create_child(self, ticket: Ticket, *, trial: dict | None = None) -> dict | None:
        """Create the child's NASTrial and Job. A table child is looked up and its verdict
        recorded at once: that result is returned, for the caller to tell. So is a cache hit's
        (no Job); a child identical to one still running waits for it (no Job either)."""
        decision = self.cache.decide(ticket, self.spec)  # before any await: twins in a burst see each other
        if trial is None:
            body = children.trial_object(search=self.owner(), ticket=ticket)
            if self.spec.cache.enabled:
                body["metadata"]["labels"][LABEL_CACHE_KEY] = self.cache.key(ticket, self.spec)
            try:
                trial = await self.client.create(names.TRIALS, namespace=self.namespace, body=body)
            except ApiError as error:
                if error.status != 409:
                    raise
                trial = await self.client.get(names.TRIALS, namespace=self.namespace, name=body["metadata"]["name"])
                if trial is None or not owned_by(trial, self.uid):
                    raise SearchFailed("NameConflict", f"NASTrial {body['metadata']['name']} exists and belongs to "
                                                       "another search") from None
            self.metrics.created()
        self.trial_uids[ticket.index] = trial["metadata"]["uid"]
        failpoint("after-trial-created")
        if decision.action == "hit":
            await self._record_verdict(ticket.index, decision.entry.result, cached=decision.entry)
            return decision.entry.result  # told by the caller, in index order
        if decision.action == "wait":
            self.cache.trials[ticket.index] = trial
            await self._patch_trial(ticket.index, {
                "phase": "Pending", "reason": WAITING_REASON,
                "message": f"waits for {self.trial_name(decision.source)}, an identical child still running"})
            return None
        if self.evaluate_table is not None:  # Tabular children are table lookups: no Job
            result = await self.evaluate_table(ticket)
            await self._record_verdict(ticket.index, result)
            return result  # told by the caller, in index order
        await self._patch_trial(ticket.index, {"phase": "Pending", "job": trial["metadata"]["name"]})
        job = children.job_object(trial=trial, ticket=ticket, spec=self.spec.trial,
                                  defaults=self.settings.trainer_defaults)
        try:
            await self.client.create(names.JOBS, namespace=self.namespace, body=job)
        except ApiError as error:
            if error.status != 409:  # 409: made before a restart; its events tell how it went
                self.logger.error(f"cannot create Job {job['metadata']['name']}: {error}")
                await self._record(ticket.index, failure("JobRejected", error.message))

    async def _on_job(self, event: JobEvent) -> None:
        index = event.index
        if self.search is None or index not in self.search.in_flight:
            return  # already recorded (events repeat after restarts and relists)
        if event.deleted:
            await self._record(index, failure("JobDeleted", "the child's Job was deleted before it finished"),
                               cost=metering.child_cost(event.job, self.pods.get(index, {}).values()))
        elif results.job_finished(event.job):
            pods = self._watched_pods(index, event.job)
            if pods is None:
                pods = results.pods_of(event.job, await self.client.list(
                    names.PODS, namespace=self.namespace, label_selector=f"job-name={event.job['metadata']['name']}"))
            result, exit_code = results.job_result(event.job, pods)
            await self._record(index, result, exit_code=exit_code, times=results.child_times(event.job, pods),
                               cost=metering.child_cost(event.job, pods))
        elif await self._queued(index, event.job):
            return
        else:
            status = event.job.get("status") or {}
            # Started by the Job controller yet no pod active: its pod could not be made
            # (quota, admission); _inspect_waiting reads why from the Job's Events.
            if status.get("startTime") and not status.get("active"):
                self.podless.add(index)
            else:
                self.podless.discard(index)
            if status.get("active") and index not in self.marked_running and index not in self.waiting:
                self.marked_running.add(index)
                self.dirty = True  # the running gauge and the status follow within the status interval
                await self._patch_trial(index, {"phase": "Running", "startTime": status.get("startTime") or now()})

    async def _queued(self, index: int, job: dict) -> bool:
        """Whether the child's Job waits for Kueue's admission (its NASTrial says Queued
        once); on admission the NASTrial records when, and the child goes on as any other."""
        waiting = queueing.awaiting_admission(job)
        if waiting is not None:
            if index not in self.queued:
                self.queued.add(index)
                self.marked_running.discard(index)  # evicted by Kueue: it waits again
                self.dirty = True
                await self._patch_trial(index, {"phase": "Queued", "reason": waiting[0], "message": waiting[1],
                                                "queuedTime": queueing.waiting_since(job) or now()})
            return True
        if index in self.queued:
            self.queued.discard(index)
            self.kueue_said.pop(index, None)
            self.dirty = True
            await self._patch_trial(index, {"phase": "Pending", "reason": "Admitted", "message": "admitted by Kueue",
                                            "admissionTime": (job.get("status") or {}).get("startTime") or now()})
        return False

    async def _record(self, index: int, result: dict, *, exit_code: int | None = None,
                      times: tuple[float | None, float | None] = (None, None), cost: Cost | None = None) -> None:
        """Record a child's verdict in its NASTrial (durable) and then tell the engine.
        `times`: the child's (start, end), unix seconds, where its pod tells them; `cost`:
        its GPU- and CPU-seconds."""
        await self._record_verdict(index, result, exit_code=exit_code, cost=cost)
        failpoint("after-result-recorded")
        await self._tell([(index, result, times)])

    async def _record_verdict(self, index: int, result: dict, *, exit_code: int | None = None,
                              cost: Cost | None = None, cached: CachedResult | None = None) -> None:
        """The durable half: the child's verdict in its NASTrial's status (`cached`: the
        identical child whose result it reuses)."""
        reward, accuracy, reason = self.search.judge(result)
        succeeded = reason is None
        reuse = {} if cached is None else {"cachedFrom": cached.source, "savedSeconds": cached.seconds,
                                           "savedGpuSeconds": cached.gpu_seconds}
        if cached is not None:
            self.cache.count(seconds=cached.seconds, gpu_seconds=cached.gpu_seconds)
            self.metrics.cache_hit(saved_seconds=cached.seconds, saved_gpu_seconds=cached.gpu_seconds)
        await self._patch_trial(index, {
            **reuse,
            "phase": "Succeeded" if succeeded else "Failed",
            "reason": "Succeeded" if succeeded else reason,
            "message": "" if succeeded else str(result.get("message") or "")[:1024],
            "reward": round(reward, 6) if succeeded else None,
            "validationAccuracy": accuracy,
            "exitCode": exit_code,
            "result": result,
            "completionTime": now(),
            **self.meter.record(index, cost or Cost()),
        })

    async def _tell(self, verdicts: list[tuple[int, dict, tuple[float | None, float | None]]]) -> None:
        """Tell the engine recorded verdicts, in this order; if the policy changed, write
        the checkpoint before returning (so before any child of the new policy exists)."""
        updated = False
        releases = []  # (children that waited for an identical one, its result if reusable)
        for index, result, (start, end) in verdicts:
            self._forget(index)
            trial_uid = self.trial_uids.pop(index, None)
            outcome = await off_loop(self.search.tell, index, result)
            self.dirty = True
            if (cost := self.meter.settle(index, told=outcome is not None)) is not None:
                self.metrics.cost(gpu_seconds=cost.gpu_seconds, cpu_seconds=cost.cpu_seconds)
            if outcome is None:
                continue
            reason = outcome.reason
            duration = end - start if start is not None and end is not None else None
            released, entry = self.cache.finished(index, reason=reason, result=result, seconds=duration,
                                                  gpu_seconds=None if cost is None else cost.gpu_seconds)
            if released:
                releases.append((released, entry))
            self.metrics.finished(reason=reason, reward=outcome.reward if outcome.succeeded else None,
                                  duration=duration, delay=time.time() - end if end is not None else None)
            if not outcome.succeeded:
                self.logger.warning(f"child {index} failed: {reason}: {result.get('message', '')}")
                self._event(reason, f"child {index} failed: {result.get('message', '')}"[:1024], warning=True,
                            target=self._trial_ref(index, trial_uid))
            if outcome.update is not None:
                updated = True
                update = outcome.update
                self.metrics.policy_updated(update)
                if is_milestone(update.version):
                    best = self.search.best
                    self._event("PolicyUpdated", f"policy update {update.version}: mean reward "
                                f"{update.mean_reward:.4f}, baseline {update.baseline:.4f}, entropy {update.entropy:.3f}"
                                + (f"; best so far {best.reward:.4f} ({summarize(best.architecture)})" if best else ""))
        if updated:
            failpoint("in-policy-update")
            await self._checkpoint()
            failpoint("after-checkpoint")
        for released, entry in releases:
            await self._release(released, entry)

    def _forget(self, index: int) -> None:
        """A child with its verdict: none of what was kept about it while in flight stays."""
        self.marked_running.discard(index)
        self.pods.pop(index, None)
        self.waiting.clear(index)
        self.podless.discard(index)
        self.queued.discard(index)
        self.kueue_said.pop(index, None)

    async def _release(self, waiters: list[int], entry: CachedResult | None) -> None:
        """Children that waited for an identical one: its result (recorded, then told), or,
        where it failed, their own turn (the first trains, its twins wait again)."""
        waiters = [index for index in waiters if index in self.search.in_flight]
        trials = {index: self.cache.trials.pop(index, None) for index in waiters}
        if entry is not None:
            for index in waiters:
                await self._record_verdict(index, entry.result, cached=entry)
            await self._tell([(index, entry.result, (None, None)) for index in waiters])
            return
        for index in waiters:
            await self._patch_trial(index, {"reason": None, "message": None})  # waits no more
            result = await self._create_child(self.search.in_flight[index], trial=trials[index])
            if result is not None:
                await self._tell([(index, result, (None, None))])

    async def _patch_trial(self, index: int, status: dict) -> None:
        try:
            await self.client.patch(names.TRIALS, namespace=self.namespace, name=self.trial_name(index),
                                    patch={"status": status}, subresource="status")
        except ApiError as error:
            if error.status != 404:
                raise
            self.logger.warning(f"NASTrial {self.trial_name(index)} is gone; its result is kept in the checkpoint only")

    async def _checkpoint(self) -> None:
        search = self.search
        async with self.checkpoint_lock:  # the state is read inside: a later write never carries an older one
            # Children in flight by index: their tickets are in their NASTrials (and would
            # not fit a ConfigMap at 800 in flight).
            data, version, told = await off_loop(lambda: (search.to_bytes(tickets=False), search.controller.version,
                                                          search.counters.succeeded + search.counters.failed))
            await write_checkpoint(self.client, search=self.owner(), data=data, policy_version=version, told=told)
        self.last_checkpoint = now()

    # -- status and Events -----------------------------------------------------------

    async def _publish(self, phase: str, reason: str, message: str) -> None:
        transition = phase != self.phase
        if not transition and not (self.dirty and time.monotonic() - self.last_status >= self.settings.status_interval):
            return
        status = self.body.get("status") or {}
        patch = {
            "observedGeneration": self.seen_generation,
            "phase": phase,
            "reason": reason,
            "message": message,
            # Retraining is the Running condition's last stretch (reason RetrainingBest).
            "conditions": conditions_for(previous=status.get("conditions") or [],
                                         phase="Running" if phase == "Retraining" else phase, reason=reason,
                                         message=message, generation=self.seen_generation)
            + unschedulable_condition(previous=status.get("conditions") or [], search_name=self.name,
                                      stuck=self.waiting.longest("Unschedulable"), generation=self.seen_generation,
                                      after=self.spec.trial.unschedulable_after_seconds if self.spec else 0),
            "startTime": status.get("startTime") or now(),
            "completionTime": (status.get("completionTime") or now()) if phase in TERMINAL else None,
            "checkpoint": {"configMap": names.checkpoint_name(self.name),
                           "policyVersion": self.search.controller.version if self.search else 0,
                           "updateTime": self.last_checkpoint},
        }
        if self.search is not None:
            queue = queueing.queue_name(self.spec.trial, defaults=self.settings.trainer_defaults) if self.spec else None
            patch.update(search_status(search=self.search, name=self.name, queued=len(self.queued) if queue else None))
            told = self.search.counters.succeeded + self.search.counters.failed
            patch["usage"] = usage_status(usage=self.meter.usage, running=self.meter.running_cost(),
                                          remaining_children=self.search.max_trials - told)
            patch.update(self.cache.status())
            self._observe()
        if self.retrainer is not None:
            patch["retrain"] = self.retrainer.entries
        await self.client.patch(names.SEARCHES, namespace=self.namespace, name=self.name,
                                patch={"status": patch}, subresource="status")
        if transition and self.phase and phase in TERMINAL:
            self._event(reason, message, warning=phase == "Failed")
        elif transition and phase == "Running" and self.phase in TERMINAL:
            self._event("Continued", message)  # maxTrials raised, or maxFailedTrials
        elif transition and phase == "Retraining" and (self.phase or status.get("phase")) != "Retraining":
            self._event("Retraining", message)  # once, not again from a restarted operator
        self.phase = phase
        self.metrics.phase(phase)
        self.dirty = False
        self.last_status = time.monotonic()

    def _observe(self) -> None:
        """The children gauges, from the engine's state (right after a restart too)."""
        search = self.search
        running = len(self.marked_running)
        best = search.best
        self.metrics.children(pending=len(search.in_flight) - running, running=running,
                              succeeded=search.counters.succeeded, failed=search.counters.failed,
                              best=best.reward if best else None)

    async def _fail_permanently(self, failed: SearchFailed) -> None:
        self.failure = failed
        self.logger.error(f"search {self.namespace}/{self.name} failed: {failed.reason}: {failed.message}")
        if self.phase != "Failed":
            self._event(failed.reason, failed.message, warning=True)
        await self._publish("Failed", failed.reason, failed.message)

    def _trial_ref(self, index: int, uid: str | None) -> dict:
        return {"apiVersion": names.TRIALS.api_version, "kind": names.TRIALS.kind,
                "metadata": {"name": self.trial_name(index), "namespace": self.namespace, "uid": uid}}

    def _event(self, reason: str, message: str, *, warning: bool = False, target: dict | None = None) -> None:
        body = target or self.owner()
        # kopf.event, not kopf.info: posting.level stays at WARNING so that kopf's own
        # per-handler log lines do not become an Event per Job change.
        kopf.event(body, type="Warning" if warning else "Normal", reason=reason, message=message)
