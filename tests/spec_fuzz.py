"""A Hypothesis strategy of NeuralArchitectureSearch documents, valid and invalid: every
field of the spec drawn from valid values, values at and past its bounds, wrong types and
junk, plus hostile names, unicode arguments and templates with 100 env vars.

Shared by tests/test_spec_fuzz.py (a fast subset in `make test`) and
benchmarks/chaos.py's fuzzing run.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.cluster_harness import FAKE_TRAINER, RESTRICTED_CONTAINER, RESTRICTED_POD

JUNK = st.sampled_from([None, "", "x", -1, 0, 1.5, True, [], {}, [1, "a"], {"a": 1}, "ünï😀", 2**63, -(2**63), 1e308])


def _tree(clean: bool) -> dict[str, Any]:
    """The strategies; `clean`: valid values only, so that half the documents are
    accepted and reach the operator (a field drawn bad in most documents would leave
    almost nothing for it)."""
    def either(valid: st.SearchStrategy, invalid: st.SearchStrategy | None = None) -> st.SearchStrategy:
        """Mostly valid values (so that deep fields are reached), sometimes bad ones."""
        if clean:
            return valid
        bad = JUNK if invalid is None else st.one_of(invalid, JUNK)
        return st.one_of(valid, valid, valid, bad)

    def ints(low: int, high: int, *edges: int) -> st.SearchStrategy:
        return either(st.integers(low, high) | st.sampled_from([low, high]),
                      st.sampled_from([low - 1, high + 1, 2**31, 2**63 - 1, 2**64, *edges]))

    def optional(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
        return st.fixed_dictionaries({}, optional=fields)

    def odd_sizes() -> st.SearchStrategy:
        return either(st.lists(st.sampled_from([1, 3, 5, 7]), min_size=1, max_size=4, unique=True),
                      st.lists(st.integers(-3, 12), max_size=5))

    MACRO = optional({
        "filterHeights": odd_sizes(),
        "filterWidths": odd_sizes(),
        "numFilters": either(st.lists(st.integers(1, 64), min_size=1, max_size=4, unique=True),
                             st.lists(st.integers(-5, 100), max_size=4)),
        "strides": optional({"enabled": either(st.booleans()),
                             "heights": either(st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True)),
                             "widths": either(st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True))}),
        "skipConnections": either(st.booleans()),
        "depth": optional({"initialLayers": ints(1, 6), "increment": ints(0, 4), "everyTrials": ints(1, 100),
                           "maxLayers": ints(1, 8)}),
        "imageSize": either(st.lists(st.integers(1, 64), min_size=2, max_size=2), st.lists(st.integers(-1, 64), max_size=3)),
        "minFeatureSize": ints(1, 8),
    })
    OPERATIONS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    SPACE = st.one_of(
        st.fixed_dictionaries({"type": st.just("MacroCNN")}, optional={"macroCNN": either(MACRO)}),
        st.fixed_dictionaries({"type": st.just("NB201Cell")}, optional={"nb201Cell": optional({
            "operations": either(st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=5, unique=True),
                                 st.lists(st.sampled_from([*OPERATIONS, "conv_9x9"]), max_size=6))})}),
        st.fixed_dictionaries({"type": either(st.sampled_from(["MacroCNN", "NB201Cell"]), st.just("RNNCell"))}),
    )
    CONTROLLER = optional({
        "strategy": either(st.sampled_from(["reinforce", "evolution", "random"]), st.just("bayesian")),
        "lstmLayers": ints(1, 3, 8, 9),
        "lstmSize": ints(1, 64, 256, 257, 4096),
        "initRange": either(st.floats(0.001, 0.5), st.sampled_from([0, -0.1])),
        "learningRate": either(st.floats(1e-6, 1.0), st.sampled_from([0, -1, 1e30])),
        "batchSize": ints(1, 16),
        "baselineDecay": either(st.floats(0, 0.999), st.sampled_from([1, 1.5, -0.1])),
        "entropyWeight": either(st.floats(0, 1), st.sampled_from([-1])),
        "gradClipNorm": either(st.floats(0.1, 10) | st.none(), st.sampled_from([0, -1])),
        "failedTrials": either(st.sampled_from(["zeroReward", "exclude"]), st.just("ignore")),
        "evolution": optional({"populationSize": ints(2, 30), "sampleSize": ints(1, 2, 30)}),
    })
    REWARD = optional({
        "aggregate": either(st.sampled_from(["last", "max"]), st.just("median")),
        "lastEpochs": ints(1, 5),
        "power": either(st.floats(0.1, 10), st.sampled_from([0, -3])),
    })
    NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"

    def container(index: int) -> st.SearchStrategy[dict]:
        env = either(st.sampled_from([[], [{"name": f"VAR_{k}", "value": "ü" * (k % 5)} for k in range(100)]]),
                     st.sampled_from([[{"name": "bad name", "value": 1}], [{"value": "no name"}]]))
        args = either(st.lists(st.text(max_size=12), max_size=3))
        return st.fixed_dictionaries({
            "name": either(st.just("trainer"), st.sampled_from(["", "Trainer_1", "x" * 70])),
            "image": st.just("kubenas/fake-trainer"),
            "command": st.just(["python", FAKE_TRAINER]),
            "args": args,
            "env": env,
            "securityContext": st.just(RESTRICTED_CONTAINER),
        }, optional={"resources": either(st.just({"limits": {"cpu": "1"}}), st.just({"limits": {"cpu": "lots"}}))})

    def trial(index: int) -> st.SearchStrategy[dict]:
        template = st.fixed_dictionaries({"spec": st.fixed_dictionaries({
            "securityContext": st.just(RESTRICTED_POD),
            "containers": either(st.lists(container(index), min_size=1, max_size=2), st.just([])),
        }, optional={"serviceAccountName": either(st.sampled_from(["default", "kubenas-operator"]),
                                                  st.just("Not Valid"))})})
        job = st.fixed_dictionaries({"kind": st.just("Job"), "template": either(template)}, optional={
            "backoffLimit": ints(0, 3), "activeDeadlineSeconds": ints(1, 600), "ttlSecondsAfterFinished": ints(0, 600)})
        tabular = st.fixed_dictionaries({"kind": st.just("Tabular"), "tabular": either(optional({
            "path": either(st.sampled_from(["builtin:nb201-12epoch"]),
                           st.sampled_from(["builtin:nope", "/etc/passwd", "table.csv", "../../x", ""])),
            "metric": either(st.sampled_from(["cifar10-val", "cifar100-test"]), st.just("accuracy"))}))})
        if clean:
            return st.one_of(job, tabular)
        return st.one_of(job, tabular, st.fixed_dictionaries({"kind": JUNK}),
                         st.fixed_dictionaries({"kind": st.sampled_from(["Job", "Tabular"])}))  # settings missing

    def name(index: int) -> st.SearchStrategy[str]:
        """Unique per index; sometimes at or past the 63-character limit, or not a DNS label."""
        stem = f"fz-{index}-"
        return either(
            st.text(NAME_CHARS[:36], min_size=1, max_size=8).map(lambda s: stem + s)
            | st.just((stem + "a" * 63)[:63]),  # exactly the limit
            st.just(stem + "a" * 64)  # past it
            | st.sampled_from(["Upper", "ünï", "under_score", "dot.ted", "-lead"]).map(lambda s: stem + s),
        )

    return {"space": SPACE, "controller": CONTROLLER, "reward": REWARD, "trial": trial, "name": name,
            "either": either, "ints": ints, "optional": optional}


TREES = {clean: _tree(clean) for clean in (True, False)}


@st.composite
def documents(draw: st.DrawFn, index: int) -> dict[str, Any]:
    tree = TREES[draw(st.booleans())]
    either, ints, optional = tree["either"], tree["ints"], tree["optional"]
    spec = draw(optional({
        "searchSpace": either(tree["space"]), "controller": either(tree["controller"]),
        "reward": either(tree["reward"]), "maxTrials": ints(1, 16, 12800), "parallelism": ints(1, 8, 800),
        "maxFailedTrials": ints(0, 4), "seed": ints(0, 10**6),
    }))
    spec["trial"] = draw(either(tree["trial"](index)))
    if tree is TREES[True] and spec["trial"]["kind"] == "Tabular":
        spec["searchSpace"] = {"type": "NB201Cell"}  # a table scores NB201 cells only
    if not draw(st.integers(0, 9)):
        spec["unknownField"] = 1  # pruned by the API server (structural schema)
    return {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
            "metadata": {"name": draw(tree["name"](index))}, "spec": spec}
