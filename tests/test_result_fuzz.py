"""Fuzzed result documents: whatever a child writes, the verdict is a success with a
finite reward or a named failure, nothing raises, and no NaN or infinity reaches the
policy (its weights stay finite)."""

from __future__ import annotations

import json
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubenas.evaluators import MAX_RESULT_BYTES, judge_output
from kubenas.search import Search
from tests.helpers import nb201_spec

SCALARS = st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.text(max_size=20)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                      max_leaves=12)
ACCURACIES = st.lists(st.floats() | st.integers(min_value=-5, max_value=5) | st.booleans() | st.text(max_size=3)
                      | st.none(), min_size=0, max_size=5)
DOCUMENTS = st.fixed_dictionaries(
    {}, optional={"apiVersion": VALUES, "kind": VALUES, "status": st.sampled_from(["Succeeded", "Failed", "x"]) | VALUES,
                  "validationAccuracy": ACCURACIES | VALUES, "reason": VALUES, "message": VALUES})


def _texts() -> st.SearchStrategy[str]:
    nested = st.integers(min_value=1, max_value=5000).map(lambda depth: "[" * depth + "]" * depth)
    big = st.integers(min_value=MAX_RESULT_BYTES - 64, max_value=3 * MAX_RESULT_BYTES).map(
        lambda size: json.dumps({"status": "Succeeded", "validationAccuracy": [0.5], "pad": "x" * size}))
    return (DOCUMENTS.map(lambda d: json.dumps(d, allow_nan=True)) | VALUES.map(lambda v: json.dumps(v, allow_nan=True))
            | st.text(max_size=200) | nested | big
            | st.sampled_from(['{"status": "Succeeded", "validationAccuracy": [NaN]}',
                               '{"status": "Succeeded", "validationAccuracy": [Infinity]}',
                               '{"status": "Succeeded", "validationAccuracy": [1e999]}',
                               '{"status": "Succeeded", "validationAccuracy": [-0.5]}',
                               '{"status": "Succeeded", "validationAccuracy": [true]}',
                               '{"status": "Succeeded", "validationAccuracy": "0.9"}',
                               '{"status": "Succeeded"}', '{"status": "Succeeded", "validationAccuracy": []}']))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts(), exit_code=st.sampled_from([0, 0, 0, 1, 137]))
def test_every_written_result_gets_a_verdict(text: str, exit_code: int) -> None:
    search = Search(nb201_spec(maxTrials=1))
    verdict = judge_output(text, exit_code=exit_code, source="result.json")
    reward, accuracy, reason = search.judge(verdict)
    assert math.isfinite(reward) and 0.0 <= reward <= 1.0
    if reason is None:
        assert exit_code == 0 and len(text.encode()) <= MAX_RESULT_BYTES
        assert accuracy is not None and math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0
    else:
        assert isinstance(reason, str) and reason


def test_bad_accuracies_are_malformed_not_rewards() -> None:
    search = Search(nb201_spec(maxTrials=1))
    for accuracies in ([float("nan")], [float("inf")], [-0.1], [1.5], [1e308], [True], ["0.9"], [None], [], "0.9"):
        verdict = {"status": "Succeeded", "validationAccuracy": accuracies}
        assert search.judge(verdict)[2] == "MalformedResult", accuracies
    assert judge_output("[" * 100_000 + "]" * 100_000, exit_code=0, source="x")["reason"] == "MalformedResult"
    oversized = json.dumps({"status": "Succeeded", "validationAccuracy": [0.9], "pad": "x" * MAX_RESULT_BYTES})
    assert judge_output(oversized, exit_code=0, source="x")["reason"] == "MalformedResult"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_texts(), min_size=16, max_size=16))
def test_the_policy_stays_finite_whatever_the_children_write(texts: list[str]) -> None:
    search = Search(nb201_spec(maxTrials=16, controller={"batchSize": 4, "learningRate": 0.5}))
    for text in texts:
        ticket = search.ask()
        search.tell(ticket.index, judge_output(text, exit_code=0, source="result.json"))
    assert search.controller.version == 4  # every result counted (a failure as reward 0)
    assert all(torch.isfinite(p).all() for p in search.controller.policy.parameters())
    assert search.controller.baseline is not None and math.isfinite(search.controller.baseline)
