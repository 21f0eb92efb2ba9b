"""One child = a NASTrial (owned by the search) + a batch/v1 Job (owned by the trial).

The Job is built with the `kubernetes` client's typed models, so a malformed pod
template (a container without a name, a string where a list belongs) fails here with
the field named, before it reaches the API server.
"""

from __future__ import annotations

import json

from kubernetes import client as k8s

from kubenas import spec as specs
from kubenas.operator import names, queueing
from kubenas.operator.trainer_defaults import TrainerDefaults
from kubenas.search import Ticket
from kubenas.spaces import summarize

TERMINATION_LOG = "/dev/termination-log"
_serializer = k8s.ApiClient()  # (de)serialises models only; it never connects


class TemplateError(ValueError):
    """The pod template cannot make a Job; the message names the field."""


def _quantities_as_strings(raw: dict) -> dict:
    """`nvidia.com/gpu: 1` is a valid quantity in YAML; the typed models want "1"."""
    for container in (raw.get("spec") or {}).get("containers") or []:
        for section in ("limits", "requests"):
            amounts = (container.get("resources") or {}).get(section)
            if isinstance(amounts, dict):
                container["resources"][section] = {k: v if isinstance(v, str) else str(v) for k, v in amounts.items()}
    return raw


def typed_template(template: specs.PodTemplate, *, defaults: TrainerDefaults | None = None) -> k8s.V1PodTemplateSpec:
    raw = template.model_dump(mode="json", by_alias=True, exclude_none=True)
    raw = _quantities_as_strings(defaults.apply(raw) if defaults else raw)
    try:
        model = _serializer._ApiClient__deserialize(raw, "V1PodTemplateSpec")
    except (ValueError, TypeError, AttributeError) as error:
        problems = getattr(error, "errors", None)  # the client's models are pydantic models
        if callable(problems):
            where = type(error).__name__ if not hasattr(error, "title") else error.title
            detail = "; ".join(f"{where}.{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems())
        else:
            detail = str(error)
        raise TemplateError(f"spec.trial.template: {detail}") from None
    if not model.spec or not model.spec.containers:
        raise TemplateError("spec.trial.template.spec.containers: Required value: at least one container")
    return model


def check_template(trial: specs.Trial, *, namespace: str | None = None, defaults: TrainerDefaults | None = None,
                   operator_account: tuple[str, str] | None = None) -> None:
    """Raise TemplateError when children could not be built from this trial spec, or
    would run as the operator's own service account (namespace, name)."""
    if trial.kind == "Job":
        _check_account(typed_template(trial.template, defaults=defaults), namespace=namespace,
                       operator_account=operator_account)


def _check_account(template: k8s.V1PodTemplateSpec, *, namespace: str | None,
                   operator_account: tuple[str, str] | None) -> None:
    pod = template.spec
    account = pod.service_account_name or pod.service_account  # the second: its deprecated alias
    if operator_account is not None and (namespace, account) == operator_account:
        raise TemplateError("spec.trial.template.spec.serviceAccountName: children may not run as the operator's "
                            "own service account")


def trial_object(*, search: dict, ticket: Ticket) -> dict:
    name = search["metadata"]["name"]
    return {
        "apiVersion": names.TRIALS.api_version,
        "kind": names.TRIALS.kind,
        "metadata": {
            "name": names.trial_name(name, ticket.index),
            "namespace": search["metadata"]["namespace"],
            "labels": names.child_labels(name, ticket.index),
            "ownerReferences": [names.owner_reference(search)],
        },
        "spec": {
            "search": name,
            "index": ticket.index,
            "architecture": ticket.architecture,
            "summary": summarize(ticket.architecture),
            "actions": ticket.actions,
            "logProb": ticket.log_prob,
            "policyVersion": ticket.policy_version,
        },
    }


def job_object(*, trial: dict, ticket: Ticket, spec: specs.Trial, defaults: TrainerDefaults | None = None) -> dict:
    """The child's Job: the pod template (with the operator's trainer defaults filled
    in) with the architecture passed to the trainer (env KUBENAS_ARCHITECTURE), its
    result read back from the termination message; named as and owned by its NASTrial."""
    return trainer_job(name=trial["metadata"]["name"], namespace=trial["metadata"]["namespace"], owner=trial,
                       labels=names.child_labels(trial["spec"]["search"], ticket.index), ticket=ticket, spec=spec,
                       defaults=defaults)


def trainer_job(*, name: str, namespace: str, owner: dict, labels: dict[str, str], ticket: Ticket,
                spec: specs.Trial, defaults: TrainerDefaults | None = None) -> dict:
    """A Job running the trainer on `ticket`'s architecture (a child's, or a retraining's),
    its pods labelled `labels` too."""
    queue = queueing.queue_name(spec, defaults=defaults)  # Kueue: created suspended, unsuspended at admission
    template = typed_template(spec.template, defaults=defaults)
    template.metadata = template.metadata or k8s.V1ObjectMeta()
    template.metadata.labels = {**(template.metadata.labels or {}), **labels}
    pod = template.spec
    pod.restart_policy = "Never"  # retries are the Job's (backoffLimit), each a fresh pod
    # The template's service account (or the namespace's default), never the operator's
    # (check_template); no API token in the pod unless the template asks for one.
    if pod.automount_service_account_token is None:
        pod.automount_service_account_token = False
    # The deadline is the pod's, counted from its start on a node: a Job's would count from
    # the Job's start, so a child waiting for quota or a node would spend it waiting.
    if pod.active_deadline_seconds is None:
        pod.active_deadline_seconds = spec.active_deadline_seconds
    trainer = pod.containers[0]
    trainer.termination_message_path = trainer.termination_message_path or TERMINATION_LOG
    trainer.termination_message_policy = "FallbackToLogsOnError"  # a crash still says why
    ours = {
        "KUBENAS_ARCHITECTURE": json.dumps(ticket.architecture, separators=(",", ":")),
        "KUBENAS_TRIAL_INDEX": str(ticket.index),
        "KUBENAS_RESULT_FILE": trainer.termination_message_path,
    }
    # Ours first, so the template's own variables may refer to them with $(NAME).
    trainer.env = [k8s.V1EnvVar(name=k, value=v) for k, v in ours.items()] + [
        e for e in (trainer.env or []) if e.name not in ours
    ]
    job = k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={**labels, queueing.QUEUE_LABEL: queue} if queue else labels,
        ),
        spec=k8s.V1JobSpec(
            suspend=True if queue else None,
            template=template,
            backoff_limit=spec.backoff_limit,
            ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
        ),
    )
    document = _serializer.sanitize_for_serialization(job)
    document["metadata"]["ownerReferences"] = [names.owner_reference(owner)]
    return document

