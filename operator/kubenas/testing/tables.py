"""Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` asks the API server for.

`to_table` renders objects through printer columns as apiextensions-apiserver's table
convertor does for custom resources; `builtin_columns` gives columns in the same shape
that approximate kubectl's printers for the built-in kinds the emulated cluster serves.
Pure functions: the caller fills in the Table's `metadata.resourceVersion`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kubenas.testing.schema import go_float, go_json, go_quote

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a "
    "client to request the generation of an appropriate name automatically. Name is primarily intended for creation "
    "idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
CREATION_TIMESTAMP_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed "
    "to be set in happens-before order across separate operations. Clients may not set this value. It is represented in "
    "RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)

_NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0}
_AGE_COLUMN = {"name": "Age", "type": "date", "description": CREATION_TIMESTAMP_DESCRIPTION, "jsonPath": ".metadata.creationTimestamp"}
_INCLUDE_OBJECT = ("None", "Metadata", "Object")


def to_table(
    objects: list[dict],
    *,
    columns: list[dict],
    kind: str,
    include_object: str = "Metadata",
    now: datetime | None = None,
) -> dict:
    """A `Table` of `objects` (all of `kind`) with a Name column, then `columns`.

    `columns` are printer columns (`name`, `type`, `jsonPath`, optional `format`,
    `description`, `priority`): a CRD version's additionalPrinterColumns, where none means
    Age alone as apiextensions-apiserver serves, or `builtin_columns(kind)`, whose derived
    cells `kind` selects. Each row's `object` is, per `include_object`, the object's
    metadata as a PartialObjectMetadata ("Metadata"), the object itself ("Object") or null
    ("None"). A path that finds nothing gives a null cell, which kubectl prints `<none>`.
    `now` (default: the current time) dates the ages. ValueError for an unknown
    `include_object` (the API server answers 400) or an unparseable jsonPath.
    """
    if include_object not in _INCLUDE_OBJECT:
        raise ValueError(f"unrecognized includeObject value: {go_quote(include_object)}")
    printer_columns = columns or [_AGE_COLUMN]
    paths = [_parse_jsonpath(column["jsonPath"]) for column in printer_columns]
    now = now or datetime.now(timezone.utc)
    rows = []
    for obj in objects:
        cells = [(obj.get("metadata") or {}).get("name", "")]
        for column, path in zip(printer_columns, paths):
            derive = _DERIVED_CELLS.get((kind, column["name"]))
            cells.append(derive(obj, now) if derive else _cell(obj, column["type"], path, now))
        rows.append({"cells": cells, "object": _row_object(obj, include_object)})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [dict(_NAME_COLUMN)] + [_column_definition(column) for column in printer_columns],
        "rows": rows,
    }


def _column_definition(column: dict) -> dict:
    return {
        "name": column["name"],
        "type": column["type"],
        "format": column.get("format", ""),
        "description": column.get("description") or f"Custom resource definition column (in JSONPath format): {column['jsonPath']}",
        "priority": column.get("priority", 0),
    }


def _row_object(obj: dict, include_object: str) -> dict | None:
    if include_object == "Object":
        return copy.deepcopy(obj)
    if include_object == "Metadata":
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": copy.deepcopy(obj.get("metadata") or {})}
    return None


def _cell(obj: dict, column_type: str, path: list[_Step], now: datetime) -> Any:
    """cellForJSONValue: the first match, as the column's type; null when it does not fit."""
    found = _evaluate(path, obj)
    if not found:
        return None
    value = found[0]
    if column_type == "string":
        return _printed(value)
    if value is None:
        return None
    if column_type == "integer" and _is_number(value):
        return int(value)
    if column_type == "number" and _is_number(value):
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        if value in ("", "null"):
            return "<unknown>"
        moment = parse_timestamp(value)
        return "<invalid>" if moment is None else human_duration(now - moment)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _printed(value: Any) -> str:
    """How client-go's jsonpath prints a value: objects and arrays as JSON, scalars with %v."""
    if value is None:
        return "<no value>"
    if isinstance(value, (dict, list)):
        return go_json(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


# ---------------------------------------------------------------------------------------
# The JSONPath of printer columns: .field, ['field'], [index], [*], [?(@.path == literal)].


@dataclass(frozen=True)
class _Step:
    kind: str  # "field", "index", "all" or "filter"
    key: str | int = ""
    subpath: tuple[_Step, ...] = ()
    operator: str = ""
    literal: Any = None


_FILTER = re.compile(r"^@(?P<path>[^=!]*?)\s*(?:(?P<operator>==|!=)\s*(?P<literal>.+?))?\s*$")


def _parse_jsonpath(text: str) -> list[_Step]:
    source = text[1:-1] if text.startswith("{") and text.endswith("}") else text
    steps: list[_Step] = []
    i = 0
    while i < len(source):
        if source[i] == ".":
            end = i + 1
            while end < len(source) and source[end] not in ".[":
                end += 1
            if end == i + 1:
                raise ValueError(f"unrecognized column definition {go_quote(text)}")
            steps.append(_Step("field", source[i + 1 : end]))
            i = end
        elif source.startswith("[?(", i):
            end = source.find(")]", i)
            if end < 0:
                raise ValueError(f"unrecognized column definition {go_quote(text)}")
            steps.append(_filter_step(source[i + 3 : end], text))
            i = end + 2
        elif source[i] == "[":
            end = source.find("]", i)
            if end < 0:
                raise ValueError(f"unrecognized column definition {go_quote(text)}")
            steps.append(_bracket_step(source[i + 1 : end].strip(), text))
            i = end + 1
        else:
            raise ValueError(f"unrecognized column definition {go_quote(text)}")
    return steps


def _bracket_step(inside: str, text: str) -> _Step:
    if inside == "*":
        return _Step("all")
    if len(inside) >= 2 and inside[0] == inside[-1] and inside[0] in "'\"":
        return _Step("field", inside[1:-1])
    if re.fullmatch(r"-?\d+", inside):
        return _Step("index", int(inside))
    raise ValueError(f"unrecognized column definition {go_quote(text)}")


def _filter_step(inside: str, text: str) -> _Step:
    match = _FILTER.match(inside.strip())
    if not match:
        raise ValueError(f"unrecognized column definition {go_quote(text)}")
    literal = match["literal"]
    if literal is not None:
        literal = _parse_literal(literal, text)
    return _Step("filter", subpath=tuple(_parse_jsonpath(match["path"])), operator=match["operator"] or "", literal=literal)


def _parse_literal(text: str, path: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError(f"unrecognized column definition {go_quote(path)}") from None


def _evaluate(path: list[_Step] | tuple[_Step, ...], value: Any) -> list[Any]:
    """Every match of `path` in `value`; missing keys and out-of-range indices match nothing."""
    current = [value]
    for step in path:
        found: list[Any] = []
        for item in current:
            if item is None:  # nothing is inside null
                continue
            if step.kind == "field" and isinstance(item, dict) and step.key in item:
                found.append(item[step.key])
            elif step.kind == "index" and isinstance(item, list) and -len(item) <= int(step.key) < len(item):
                found.append(item[int(step.key)])
            elif step.kind == "all" and isinstance(item, (list, dict)):
                found += item if isinstance(item, list) else [item[key] for key in sorted(item)]
            elif step.kind == "filter" and isinstance(item, list):
                found += [element for element in item if _passes(step, element)]
        current = found
    return current


def _passes(step: _Step, element: Any) -> bool:
    found = _evaluate(step.subpath, element)
    if not found:
        return False
    if not step.operator:
        return True
    left, right = found[0], step.literal
    same = (_is_number(left) and _is_number(right) and left == right) or (isinstance(left, str) and left == right)
    return same if step.operator == "==" else not same


# ---------------------------------------------------------------------------------------
# Time


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 timestamp as Go's time.Parse(time.RFC3339) reads it, or None."""
    match = _RFC3339.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    offset = timedelta(0) if zone == "Z" else (1 if zone[0] == "+" else -1) * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), int((fraction or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone(offset))


def human_duration(elapsed: timedelta) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration: ~2-3 significant figures, and
    "0s" for up to 2 seconds in the future (clock skew), "<invalid>" beyond."""
    micros = elapsed // timedelta(microseconds=1)
    seconds = int(micros / 1_000_000)  # Go truncates toward zero
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m" if seconds % 60 == 0 else f"{minutes}m{seconds % 60}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24 % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _since(timestamp: str | None, now: datetime) -> str:
    """translateTimestampSince: the age of a timestamp, "<unknown>" without one."""
    moment = parse_timestamp(timestamp) if timestamp else None
    return "<unknown>" if moment is None else human_duration(now - moment)


# ---------------------------------------------------------------------------------------
# Built-in kinds


def builtin_columns(kind: str) -> list[dict]:
    """Printer columns approximating kubectl's for a built-in kind; `Age` alone for others.

    Cells that are no plain JSONPath come from named functions `to_table` applies for the
    same `kind` (their jsonPath names the field they read): Pod Ready (`_pod_ready`,
    ready/total containers), Status (`_pod_status`: a container's waiting or terminated
    reason, else the pod's reason or phase; Terminating when deleted; init containers not
    considered), Restarts (`_pod_restarts`: the sum, without kubectl's "(5m ago)"); Job
    Status (`_job_status`, from conditions), Completions (`_job_completions`, "1/1"),
    Duration (`_job_duration`); ConfigMap Data (`_config_map_data`, the count of keys);
    Event Last Seen (`_event_last_seen`) and Object (`_event_object`, "kind/name");
    CustomResourceDefinition Created At (`_crd_created_at`, RFC 3339). Unlike kubectl,
    Events get a Name column first, as every Table here.
    """
    return copy.deepcopy(_BUILTIN_COLUMNS.get(kind, [_AGE_COLUMN]))


def _column(name: str, column_type: str, json_path: str, description: str, priority: int = 0) -> dict:
    return {"name": name, "type": column_type, "jsonPath": json_path, "description": description, "priority": priority}


_BUILTIN_COLUMNS: dict[str, list[dict]] = {
    "Pod": [
        _column("Ready", "string", ".status.containerStatuses", "The aggregate readiness state of this pod for accepting traffic."),
        _column("Status", "string", ".status.phase", "The aggregate status of the containers in this pod."),
        _column("Restarts", "string", ".status.containerStatuses", "The number of times the containers in this pod have been restarted."),
        _AGE_COLUMN,
        _column("IP", "string", ".status.podIP", "IP address allocated to the pod.", priority=1),
        _column("Node", "string", ".spec.nodeName", "The node the pod is bound to.", priority=1),
    ],
    "Job": [
        _column("Status", "string", ".status.conditions", "Status of the job."),
        _column("Completions", "string", ".status.succeeded", "The number of pods which reached phase Succeeded."),
        _column("Duration", "string", ".status.startTime", "Time required to complete the job."),
        _AGE_COLUMN,
    ],
    "ConfigMap": [
        _column("Data", "integer", ".data", "Data contains the configuration data."),
        _AGE_COLUMN,
    ],
    "Event": [
        _column("Last Seen", "string", ".lastTimestamp", "The time at which the most recent occurrence of this event was recorded."),
        _column("Type", "string", ".type", "Type of this event (Normal, Warning), new types could be added in the future"),
        _column(
            "Reason",
            "string",
            ".reason",
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        _column("Object", "string", ".involvedObject", "The object that this event is about."),
        _column("Message", "string", ".message", "A human-readable description of the status of this operation."),
    ],
    "Namespace": [
        _column("Status", "string", ".status.phase", "The status of the namespace"),
        _AGE_COLUMN,
    ],
    "CustomResourceDefinition": [
        _column("Created At", "date", ".metadata.creationTimestamp", CREATION_TIMESTAMP_DESCRIPTION),
    ],
}


def _container_statuses(pod: dict) -> list[dict]:
    return (pod.get("status") or {}).get("containerStatuses") or []


def _pod_ready(pod: dict, now: datetime) -> str:
    ready = sum(1 for status in _container_statuses(pod) if status.get("ready") and "running" in (status.get("state") or {}))
    return f"{ready}/{len((pod.get('spec') or {}).get('containers') or [])}"


def _pod_status(pod: dict, now: datetime) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    running = False
    for container in reversed(_container_statuses(pod)):  # so that the first container has the last word
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None and terminated.get("reason"):
            reason = terminated["reason"]
        elif terminated is not None:
            signal = terminated.get("signal", 0)
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif container.get("ready") and "running" in state:
            running = True
    if reason == "Completed" and running:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        reason = "Running" if ready else "NotReady"
    deleted = (pod.get("metadata") or {}).get("deletionTimestamp")
    if deleted and status.get("reason") == "NodeLost":
        return "Unknown"
    if deleted and status.get("phase") not in ("Succeeded", "Failed"):
        return "Terminating"
    return reason


def _pod_restarts(pod: dict, now: datetime) -> str:
    return str(sum(status.get("restartCount", 0) for status in _container_statuses(pod)))


def _has_condition(obj: dict, condition_type: str) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == condition_type and c.get("status") == "True" for c in conditions)


def _job_status(job: dict, now: datetime) -> str:
    if _has_condition(job, "Complete"):
        return "Complete"
    if _has_condition(job, "Failed"):
        return "Failed"
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    for condition in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _has_condition(job, condition):
            return condition
    return "Running"


def _job_completions(job: dict, now: datetime) -> str:
    spec, succeeded = job.get("spec") or {}, (job.get("status") or {}).get("succeeded", 0)
    if spec.get("completions") is not None:
        return f"{succeeded}/{spec['completions']}"
    parallelism = spec.get("parallelism") or 0
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def _job_duration(job: dict, now: datetime) -> str:
    status = job.get("status") or {}
    started = parse_timestamp(status.get("startTime") or "")
    if started is None:
        return ""
    completed = parse_timestamp(status.get("completionTime") or "")
    return human_duration((completed or now) - started)


def _config_map_data(config_map: dict, now: datetime) -> int:
    return len(config_map.get("data") or {}) + len(config_map.get("binaryData") or {})


def _event_last_seen(event: dict, now: datetime) -> str:
    series = event.get("series") or {}
    if series.get("lastObservedTime"):
        return _since(series["lastObservedTime"], now)
    first_seen = event.get("firstTimestamp") or event.get("eventTime")
    return _since(event.get("lastTimestamp") or first_seen, now)


def _event_object(event: dict, now: datetime) -> str:
    involved = event.get("involvedObject") or {}
    kind = (involved.get("kind") or "").lower()
    return f"{kind}/{involved['name']}" if involved.get("name") else kind


def _crd_created_at(crd: dict, now: datetime) -> str:
    created = parse_timestamp((crd.get("metadata") or {}).get("creationTimestamp") or "")
    moment = created.astimezone(timezone.utc) if created else datetime(1, 1, 1, tzinfo=timezone.utc)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%SZ}"  # strftime's %Y does not pad year 1


_DERIVED_CELLS: dict[tuple[str, str], Callable[[dict, datetime], Any]] = {
    ("Pod", "Ready"): _pod_ready,
    ("Pod", "Status"): _pod_status,
    ("Pod", "Restarts"): _pod_restarts,
    ("Job", "Status"): _job_status,
    ("Job", "Completions"): _job_completions,
    ("Job", "Duration"): _job_duration,
    ("ConfigMap", "Data"): _config_map_data,
    ("Event", "Last Seen"): _event_last_seen,
    ("Event", "Object"): _event_object,
    ("CustomResourceDefinition", "Created At"): _crd_created_at,
}
