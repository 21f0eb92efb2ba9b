"""The hand-written parts of the CRDs: both status schemas and the NASTrial spec. The
operator writes these objects, no user does; every field is described for
`kubectl explain`."""

from __future__ import annotations

from typing import Any

from kubenas.spec import MAX_RETRAIN_TOP_K


def _typed(type_: str, description: str, **constraints: Any) -> dict:
    return {"type": type_, "description": description, **constraints}


def _time(description: str) -> dict:
    return _typed("string", description, format="date-time")


def _count(description: str) -> dict:
    return _typed("integer", description, minimum=0)


def _object(description: str, properties: dict[str, dict], **extra: Any) -> dict:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _preserved_object(description: str) -> dict:
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}


def _conditions_schema() -> dict:
    """The standard metav1.Condition list, as every Kubernetes API has it."""
    condition = _object(
        "One aspect of the object's state (metav1.Condition).",
        {
            "type": _typed(
                "string",
                "Type of the condition, in CamelCase.",
                maxLength=316,
                pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            ),
            "status": _typed("string", "Status of the condition.", enum=["True", "False", "Unknown"]),
            "reason": _typed(
                "string",
                "Machine-readable reason of the last transition, in CamelCase.",
                minLength=1,
                maxLength=1024,
                pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            ),
            "message": _typed("string", "Human-readable details of the last transition.", maxLength=32768),
            "lastTransitionTime": _time("When the condition last changed status."),
            "observedGeneration": _typed(
                "integer", "The metadata.generation the condition was set from.", format="int64", minimum=0
            ),
        },
        required=["type", "status", "reason", "message", "lastTransitionTime"],
    )
    return {
        "type": "array",
        "description": "Standard conditions of the object, one per type.",
        "items": condition,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    }


_VALIDATION_ACCURACY = "The validation accuracy its reward was computed from (a fraction)."


def _ranked_trial_schema(description: str) -> dict:
    return _object(
        description,
        {
            "trial": _typed("string", "Name of the NASTrial."),
            "index": _count("Its index in the search (sampling order, from 0)."),
            "reward": _typed("number", "Its reward."),
            "validationAccuracy": _typed("number", _VALIDATION_ACCURACY),
            "architecture": _typed("string", "Short summary of its architecture."),
        },
    )


def nas_status_schema() -> dict:
    return _object(
        "Observed state of the search, written by the operator.",
        {
            "observedGeneration": _typed(
                "integer", "The metadata.generation this status describes.", format="int64", minimum=0
            ),
            "phase": _typed(
                "string",
                "Pending: accepted, no child yet; Running: sampling and training children; Suspended: spec.suspend, "
                "no new children; Retraining: every child done (or spec.budget spent), spec.retrain's Jobs "
                "running; Succeeded: spec.maxTrials children finished (or spec.budget spent: reason "
                "BudgetExhausted), and retrained; Failed: see reason and message.",
                enum=["Pending", "Running", "Suspended", "Retraining", "Succeeded", "Failed"],
            ),
            "reason": _typed("string", "Machine-readable cause of the phase, in CamelCase."),
            "message": _typed("string", "Human-readable details of the phase."),
            "conditions": _conditions_schema(),
            "progress": _typed("string", "Children that succeeded out of spec.maxTrials, as `succeeded/maxTrials`."),
            "trials": _object(
                "Children (NASTrials) by state.",
                {
                    "created": _count("Children created so far."),
                    "running": _count("Children running now."),
                    "queued": _count("Children whose Job waits for Kueue's admission (spec.trial.queueName)."),
                    "succeeded": _count("Children that succeeded."),
                    "failed": _count("Children that failed."),
                },
            ),
            "best": _ranked_trial_schema("The child with the highest reward so far."),
            "top": {
                "type": "array",
                "description": "The children with the highest rewards, best first.",
                "maxItems": 10,
                "items": _ranked_trial_schema("A child and its reward."),
            },
            "controller": _object(
                "The policy that samples the children.",
                {
                    "policyVersion": _count("Version of the policy that samples new children (one per update)."),
                    "policyUpdates": _count("Policy updates (REINFORCE steps) applied so far."),
                    "baseline": _typed("number", "Exponential moving average of the rewards, the REINFORCE baseline."),
                    "meanReward": _typed("number", "Mean reward of the last update's children."),
                    "entropy": _typed("number", "Entropy of the policy's decisions at the last update."),
                    "loss": _typed("number", "REINFORCE loss of the last update."),
                    "gradNorm": _typed("number", "Norm of the last update's policy gradient."),
                    "lastUpdateTime": _time("When the policy was last updated."),
                },
            ),
            "checkpoint": _object(
                "Where the controller's state is saved, to resume after an operator restart.",
                {
                    "configMap": _typed("string", "Name of the ConfigMap holding the saved state."),
                    "policyVersion": _count("Version of the saved policy."),
                    "updateTime": _time("When the state was last saved."),
                },
            ),
            "usage": _object(
                "Compute spent, in GPU- and CPU-hours: each child's GPUs (CPUs) requested times its trainer "
                "container's run time (see spec.budget).",
                {
                    "gpuHours": _typed("number", "GPU-hours of the finished children (their NASTrials' gpuSeconds)."),
                    "cpuHours": _typed("number", "CPU-hours of the finished children (their NASTrials' cpuSeconds)."),
                    "runningGpuHours": _typed("number", "GPU-hours the running children have used so far."),
                    "runningCpuHours": _typed("number", "CPU-hours the running children have used so far."),
                    "expectedRemainingGpuHours": _typed(
                        "number", "The children not finished yet (of spec.maxTrials) at the mean GPU-hours per "
                        "finished child."),
                    "expectedRemainingCpuHours": _typed(
                        "number", "The children not finished yet (of spec.maxTrials) at the mean CPU-hours per "
                        "finished child."),
                    "childrenMeasured": _count("Finished children in the sums."),
                },
            ),
            "retrain": _retrain_schema(),
            "cacheHits": _count("Children that reused an identical finished child's result (spec.cache) instead of "
                                "training; included in trials."),
            "cacheSavedSeconds": _typed("number", "Training time those children saved: their sources' durations, "
                                                  "in seconds.", minimum=0),
            "cacheSavedGpuSeconds": _typed("number", "GPU time those children saved: their sources' GPU-seconds "
                                                     "(duration times the GPUs the template asks for).", minimum=0),
            "startTime": _time("When the search started."),
            "completionTime": _time("When the search succeeded or failed."),
        },
    )


def _retrain_schema() -> dict:
    entry = _object(
        "One retrained child.",
        {
            "rank": _count("Its rank in the search (1: the highest reward)."),
            "trial": _typed("string", "Name of the NASTrial retrained."),
            "index": _count("Its index in the search."),
            "job": _typed("string", "Name of the Job that retrains it."),
            "phase": _typed("string", "Pending, Running, Succeeded or Failed.",
                            enum=["Pending", "Running", "Succeeded", "Failed"]),
            "reason": _typed("string", "Why it failed (a named reason), or Succeeded."),
            "message": _typed("string", "Details of a failure."),
            "reward": _typed("number", "Its reward in the search."),
            "validationAccuracy": _typed("number", "Validation accuracy of the retrained weights (the last epoch's)."),
            "testAccuracy": _typed("number", "Test accuracy of the retrained weights, measured once at the end."),
            "modelPath": _typed("string", "Where its state_dict was saved (spec.retrain.modelDir), if anywhere."),
        },
    )
    return {"type": "array", "description": "spec.retrain: the retrained children, by rank.",
            "maxItems": MAX_RETRAIN_TOP_K,
            "items": entry}


def nastrial_spec_schema() -> dict:
    return _object(
        "The child architecture, as sampled; written by the operator.",
        {
            "search": _typed("string", "Name of the NeuralArchitectureSearch that sampled this child.", minLength=1),
            "index": _count("Index of the child in its search (sampling order, from 0)."),
            "architecture": _preserved_object("The architecture, as the JSON document the trainer reads."),
            "summary": _typed("string", "Short human-readable summary of the architecture."),
            "actions": {
                "type": "array",
                "description": (
                    "The controller's choices that produced the architecture, one per decision: the index of "
                    "the option chosen, or for an anchor (skip-connection) decision one 0/1 per earlier layer."
                ),
                # int or list of ints: structural schemas cannot say "one of two types"
                "items": {"x-kubernetes-preserve-unknown-fields": True,
                          "description": "An option index, or a list of 0/1 (anchor decisions)."},
            },
            "logProb": _typed("number", "Log-probability of those choices under the policy that made them."),
            "policyVersion": _count("Version of the policy that made them."),
        },
        required=["search", "index", "architecture", "actions", "logProb", "policyVersion"],
    )


def nastrial_status_schema() -> dict:
    return _object(
        "Observed state of the child, written by the operator.",
        {
            "phase": _typed(
                "string",
                "Pending: Job not running yet (reason WaitingForIdentical: no Job, waits for an identical child "
                "still running); Queued: its Job waits, suspended, for Kueue's admission; Running; "
                "Succeeded: reward known; Failed: see reason and message.",
                enum=["Pending", "Queued", "Running", "Succeeded", "Failed"],
            ),
            "reason": _typed("string", "Machine-readable cause of the phase, in CamelCase."),
            "message": _typed("string", "Human-readable details of the phase."),
            "job": _typed("string", "Name of the Job that trains the child."),
            "reward": _typed("number", "Reward of the child."),
            "validationAccuracy": _typed("number", _VALIDATION_ACCURACY),
            "exitCode": _typed("integer", "Exit code of the trainer container.", format="int32"),
            "result": _preserved_object("The trainer's result document (under 4 KiB)."),
            "cachedFrom": _typed("string", "The NASTrial (this search's or a spec.cache.from search's) whose result "
                                           "this child reused instead of training: no Job ran for it."),
            "savedSeconds": _typed("number", "Training time the reuse saved (the source's duration), in seconds.",
                                   minimum=0),
            "savedGpuSeconds": _typed("number", "GPU time the reuse saved (the source's), in GPU-seconds.", minimum=0),
            "startTime": _time("When the child started running."),
            "queuedTime": _time("When the child's Job began waiting for Kueue's admission."),
            "admissionTime": _time("When Kueue admitted the child's Job (its deadline counts from then)."),
            "completionTime": _time("When the child succeeded or failed."),
            "gpuSeconds": _typed("number", "GPUs its trainer container requested (nvidia.com/gpu) times its run "
                                           "time, retries included.", minimum=0),
            "cpuSeconds": _typed("number", "CPUs its trainer container requested (cpu request, else limit, else 1) "
                                           "times its run time, retries included.", minimum=0),
            "observedGeneration": _typed(
                "integer", "The metadata.generation this status describes.", format="int64", minimum=0
            ),
        },
    )


STANDARD_FIELDS = {  # apiVersion and kind at every object's root
    "apiVersion": _typed(
        "string",
        "APIVersion defines the versioned schema of this representation of an object. Servers should convert "
        "recognized schemas to the latest internal value, and may reject unrecognized values. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
    ),
    "kind": _typed(
        "string",
        "Kind is a string value representing the REST resource this object represents. Servers may infer this from "
        "the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
    ),
}
