"""1,000 fuzzed NeuralArchitectureSearch documents (tests/spec_fuzz.py), valid and invalid,
applied to the real API server with the operator running: the API server refuses some;
every one it accepts either runs or fails `InvalidSpec` naming a field; the operator
never crashes, restarts, or has a handler raise. The counts are printed (-s)."""

from __future__ import annotations

import collections
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster_harness import NAS, Cluster, OperatorProcess, free_port, wait_for
from tests.spec_fuzz import documents

NS = "fuzz"
COUNT = 1000
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(workdir=tmp_path_factory.mktemp("fuzz-cluster")).start()
    try:
        cluster.install_crds()
        cluster.namespace(NS)
        yield cluster
    finally:
        cluster.stop()


def _limit_work(document: dict) -> None:
    """Accepted searches must cost little: Job searches and long table searches start
    suspended (initialised, checkpointed, no children); short table searches run."""
    spec = document["spec"]
    trial = spec.get("trial")
    short_table = isinstance(trial, dict) and trial.get("kind") == "Tabular" and \
        isinstance(spec.get("maxTrials"), int) and 0 < spec["maxTrials"] <= 16
    if not short_table:
        spec["suspend"] = True


def _apply_all(cluster: Cluster) -> list[tuple[object, int, str]]:
    """(the document's name, the HTTP status of its create, the API server's message) each."""
    answers: list[tuple[object, int, str]] = []

    @settings(max_examples=COUNT, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def apply_one(data: st.DataObject) -> None:
        document = data.draw(documents(len(answers)))
        _limit_work(document)
        code, _, text = cluster.exchange("POST", NAS.format(ns=NS), document)
        answers.append((document["metadata"]["name"], code, text))

    apply_one()
    return answers


def _handler_errors(url: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "kubenas_operator_handler_errors_total")


def test_fuzzed_specs_are_refused_run_or_fail_naming_a_field(cluster: Cluster, tmp_path: Path):
    port = free_port()
    operator = OperatorProcess(cluster=cluster, namespace=NS, log=tmp_path / "operator.log",
                               args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]).start()
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        answers = _apply_all(cluster)
        assert len(answers) == COUNT
        accepted = {name for name, code, _ in answers if code == 201}
        refused = [text for _, code, text in answers if code != 201]
        assert all(code in (400, 422) for _, code, _ in answers if code != 201), \
            collections.Counter(code for _, code, _ in answers)
        assert accepted and refused  # the fuzzer reaches both sides

        def outcomes() -> dict[str, dict]:
            found = {item["metadata"]["name"]: item.get("status") or {} for item in cluster.items(NAS.format(ns=NS))}
            return {name: status for name, status in found.items()
                    if status.get("phase") in ("Suspended", "Running", "Succeeded", "Failed")}

        done = wait_for(lambda: (seen := outcomes()).keys() >= accepted and seen, timeout=600,
                        what=lambda: f"every accepted search to run or fail ({len(outcomes())}/{len(accepted)})",
                        operator=operator, interval=2.0)
        assert operator.process.poll() is None, "the operator exited"
        assert _handler_errors(metrics) == 0, operator.tail()
        failed = {name: status for name, status in done.items() if status["phase"] == "Failed"}
        assert all(status["reason"] == "InvalidSpec" and "spec." in status["message"]
                   for status in failed.values()), {n: (s["reason"], s["message"]) for n, s in failed.items()
                                                    if s["reason"] != "InvalidSpec" or "spec." not in s["message"]}
        phases = collections.Counter(status["phase"] for status in done.values())
        print(f"\n{COUNT} fuzzed documents: {len(refused)} refused by the API server (schema, CEL), "
              f"{len(accepted)} accepted; of those {len(failed)} failed InvalidSpec naming a field, "
              + ", ".join(f"{count} {phase}" for phase, count in sorted(phases.items()) if phase != "Failed")
              + "; operator handler errors: 0, restarts: 0")
    finally:
        operator.stop()
