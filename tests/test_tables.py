"""Server-side printing of the emulated API server: Tables as kubectl receives them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kubenas.testing.tables import CREATION_TIMESTAMP_DESCRIPTION, builtin_columns, human_duration, parse_timestamp, to_table

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(**elapsed: float) -> str:
    return (NOW - timedelta(**elapsed)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("elapsed", "shown"),
    [
        (timedelta(seconds=-3), "<invalid>"),
        (timedelta(seconds=-2), "<invalid>"),
        (timedelta(seconds=-1.5), "0s"),  # clock skew up to 2s is "now"
        (timedelta(0), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(minutes=2), "2m"),
        (timedelta(minutes=3, seconds=12), "3m12s"),
        (timedelta(minutes=9, seconds=59), "9m59s"),
        (timedelta(minutes=10, seconds=30), "10m"),
        (timedelta(hours=2, minutes=3), "123m"),
        (timedelta(hours=2, minutes=59, seconds=59), "179m"),
        (timedelta(hours=3), "3h"),
        (timedelta(hours=3, minutes=3), "3h3m"),
        (timedelta(hours=7, minutes=59), "7h59m"),
        (timedelta(hours=8, minutes=30), "8h"),
        (timedelta(hours=47), "47h"),
        (timedelta(hours=48), "2d"),
        (timedelta(days=3, hours=4), "3d4h"),
        (timedelta(days=7, hours=23), "7d23h"),
        (timedelta(days=8, hours=5), "8d"),
        (timedelta(days=400), "400d"),
        (timedelta(days=729), "729d"),
        (timedelta(days=730), "2y"),
        (timedelta(days=800), "2y70d"),
        (timedelta(days=365 * 8), "8y"),
    ],
)
def test_human_duration_follows_kubernetes_boundaries(elapsed: timedelta, shown: str) -> None:
    assert human_duration(elapsed) == shown


def test_timestamps_parse_as_rfc3339_only() -> None:
    assert parse_timestamp("2024-06-01T12:00:00Z") == NOW
    assert parse_timestamp("2024-06-01T14:00:00.25+02:00") == NOW + timedelta(microseconds=250000)
    assert [parse_timestamp(text) for text in ("2024-06-01", "2024-06-01T12:00:00", "2024-13-01T00:00:00Z", "soon")] == [None] * 4


SEARCH_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Trials", "type": "integer", "jsonPath": ".status.trials", "description": "Finished children."},
    {"name": "Best", "type": "number", "jsonPath": ".status.best.reward", "format": "float"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "First", "type": "string", "jsonPath": ".status.conditions[0].type", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def search(name: str, **status: object) -> dict:
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NeuralArchitectureSearch",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=3, seconds=12)},
        "spec": {"maxTrials": 10},
        "status": status,
    }


def test_a_table_from_printer_columns() -> None:
    conditions = [{"type": "Progressing", "status": "True"}, {"type": "Ready", "status": "False"}]
    running = search("s1", phase="Running", trials=4.0, best={"reward": 1}, conditions=conditions)
    table = to_table([running, search("s2")], columns=SEARCH_COLUMNS, kind="NeuralArchitectureSearch", now=NOW)
    assert (table["kind"], table["apiVersion"], table["metadata"]) == ("Table", "meta.k8s.io/v1", {})
    definitions = table["columnDefinitions"]
    assert [(d["name"], d["type"], d["format"], d["priority"]) for d in definitions] == [
        ("Name", "string", "name", 0),
        ("Phase", "string", "", 0),
        ("Trials", "integer", "", 0),
        ("Best", "number", "float", 0),
        ("Ready", "string", "", 0),
        ("First", "string", "", 1),
        ("Age", "date", "", 0),
    ]
    assert definitions[1]["description"] == "Custom resource definition column (in JSONPath format): .status.phase"
    assert definitions[2]["description"] == "Finished children."
    assert [row["cells"] for row in table["rows"]] == [
        ["s1", "Running", 4, 1.0, "False", "Progressing", "3m12s"],
        ["s2", None, None, None, None, None, "3m12s"],  # missing fields are null cells: kubectl prints <none>
    ]
    cells = table["rows"][0]["cells"]
    assert type(cells[2]) is int and type(cells[3]) is float


def test_cells_take_the_columns_type_or_none() -> None:
    columns = [
        {"name": "AsString", "type": "string", "jsonPath": ".spec"},
        {"name": "Number", "type": "string", "jsonPath": ".status.reward"},
        {"name": "Flag", "type": "boolean", "jsonPath": ".status.done"},
        {"name": "Mismatch", "type": "integer", "jsonPath": ".status.phase"},
        {"name": "Null", "type": "string", "jsonPath": ".status.none"},
        {"name": "Bad date", "type": "date", "jsonPath": ".status.phase"},
        {"name": "No date", "type": "date", "jsonPath": ".status.empty"},
    ]
    obj = {"metadata": {"name": "x"}, "spec": {"b": 1, "a": [True]}, "status": {"reward": 0.93, "done": True, "phase": "Done", "none": None, "empty": ""}}
    row = to_table([obj], columns=columns, kind="K", now=NOW)["rows"][0]
    assert row["cells"] == ["x", '{"a":[true],"b":1}', "0.93", True, None, "<no value>", "<invalid>", "<unknown>"]


def test_without_printer_columns_a_crd_shows_name_and_age() -> None:
    table = to_table([search("s1")], columns=[], kind="NeuralArchitectureSearch", now=NOW)
    assert [(d["name"], d["type"]) for d in table["columnDefinitions"]] == [("Name", "string"), ("Age", "date")]
    assert table["columnDefinitions"][1]["description"] == CREATION_TIMESTAMP_DESCRIPTION
    assert table["rows"][0]["cells"] == ["s1", "3m12s"]


def test_rows_carry_the_object_as_asked() -> None:
    obj = search("s1", phase="Running")
    by_metadata = to_table([obj], columns=[], kind="K", now=NOW)["rows"][0]["object"]
    assert by_metadata == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
    assert by_metadata["metadata"] is not obj["metadata"]
    assert to_table([obj], columns=[], kind="K", include_object="Object", now=NOW)["rows"][0]["object"] == obj
    assert to_table([obj], columns=[], kind="K", include_object="None", now=NOW)["rows"][0]["object"] is None
    with pytest.raises(ValueError, match='unrecognized includeObject value: "All"'):
        to_table([obj], columns=[], kind="K", include_object="All")


def test_unparseable_json_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="unrecognized column definition"):
        to_table([], columns=[{"name": "X", "type": "string", "jsonPath": ".status[phase"}], kind="K")


def test_pods_print_like_kubectl() -> None:
    def pod(name: str, phase: str, statuses: list[dict], **metadata: str) -> dict:
        return {
            "metadata": {"name": name, "creationTimestamp": ago(seconds=45), **metadata},
            "spec": {"containers": [{"name": "trainer"}], "nodeName": "fake-node"},
            "status": {"phase": phase, "containerStatuses": statuses},
        }

    running = pod("p1", "Running", [{"name": "trainer", "ready": True, "restartCount": 2, "state": {"running": {}}}])
    crash_loop = {"waiting": {"reason": "CrashLoopBackOff"}}
    crashed = pod("p2", "Running", [{"name": "trainer", "ready": False, "restartCount": 5, "state": crash_loop}])
    failed = pod("p3", "Failed", [{"name": "trainer", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}])
    completed = {"terminated": {"reason": "Completed", "exitCode": 0}}
    finished = pod("p4", "Succeeded", [{"name": "trainer", "ready": False, "restartCount": 0, "state": completed}])
    deleting = pod("p5", "Running", [{"name": "trainer", "ready": True, "state": {"running": {}}}], deletionTimestamp=ago(seconds=1))
    table = to_table([running, crashed, failed, finished, deleting], columns=builtin_columns("Pod"), kind="Pod", now=NOW)
    assert [d["name"] for d in table["columnDefinitions"]] == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]
    assert [row["cells"] for row in table["rows"]] == [
        ["p1", "1/1", "Running", "2", "45s", None, "fake-node"],
        ["p2", "0/1", "CrashLoopBackOff", "5", "45s", None, "fake-node"],
        ["p3", "0/1", "ExitCode:3", "0", "45s", None, "fake-node"],
        ["p4", "0/1", "Completed", "0", "45s", None, "fake-node"],
        ["p5", "1/1", "Terminating", "0", "45s", None, "fake-node"],
    ]


def test_jobs_print_like_kubectl() -> None:
    def job(name: str, conditions: list[dict], **status: object) -> dict:
        metadata = {"name": name, "creationTimestamp": ago(minutes=5)}
        return {"metadata": metadata, "spec": {"completions": 1}, "status": {"conditions": conditions, **status}}

    done = job("j1", [{"type": "Complete", "status": "True"}], succeeded=1, startTime=ago(minutes=5), completionTime=ago(minutes=2))
    failed = job("j2", [{"type": "Failed", "status": "True"}], failed=1, startTime=ago(minutes=5))
    running = job("j3", [], startTime=ago(minutes=4))
    rows = to_table([done, failed, running], columns=builtin_columns("Job"), kind="Job", now=NOW)["rows"]
    assert [row["cells"] for row in rows] == [
        ["j1", "Complete", "1/1", "3m", "5m"],
        ["j2", "Failed", "0/1", "5m", "5m"],
        ["j3", "Running", "0/1", "4m", "5m"],
    ]


def test_events_namespaces_config_maps_and_crds() -> None:
    event = {
        "metadata": {"name": "s1.17a", "creationTimestamp": ago(minutes=1)},
        "involvedObject": {"kind": "NeuralArchitectureSearch", "name": "s1"},
        "type": "Normal",
        "reason": "TrialSucceeded",
        "message": "trial 3 reward 0.91",
        "firstTimestamp": ago(minutes=1),
    }
    assert to_table([event], columns=builtin_columns("Event"), kind="Event", now=NOW)["rows"][0]["cells"] == [
        "s1.17a", "60s", "Normal", "TrialSucceeded", "neuralarchitecturesearch/s1", "trial 3 reward 0.91"
    ]
    namespace = {"metadata": {"name": "default", "creationTimestamp": ago(days=3, hours=4)}, "status": {"phase": "Active"}}
    assert to_table([namespace], columns=builtin_columns("Namespace"), kind="Namespace", now=NOW)["rows"][0]["cells"] == ["default", "Active", "3d4h"]
    config_map = {"metadata": {"name": "c", "creationTimestamp": ago(hours=9)}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}
    assert to_table([config_map], columns=builtin_columns("ConfigMap"), kind="ConfigMap", now=NOW)["rows"][0]["cells"] == ["c", 3, "9h"]
    crd = {"metadata": {"name": "nas.kubenas.io", "creationTimestamp": "2024-06-01T14:00:00+02:00"}}
    assert to_table([crd], columns=builtin_columns("CustomResourceDefinition"), kind="CustomResourceDefinition", now=NOW)["rows"][0]["cells"] == [
        "nas.kubenas.io", "2024-06-01T12:00:00Z"
    ]


def test_other_kinds_get_age_and_columns_are_fresh_copies() -> None:
    assert [column["name"] for column in builtin_columns("Secret")] == ["Age"]
    builtin_columns("Pod")[0]["name"] = "changed"
    assert builtin_columns("Pod")[0]["name"] == "Ready"
