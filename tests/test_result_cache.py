"""The result cache: its key, its hit / wait / train decisions, local mode (the run's own
trials.jsonl, --resume, spec.cache.from) and the operator's driver on a fake API."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path

import pytest

from kubenas import spec as specs
from kubenas.local import run_search
from kubenas.operator.cache import LABEL_CACHE_KEY, WAITING_REASON
from kubenas.operator.driver import SearchDriver
from kubenas.budget import Cost
from kubenas.result_cache import CachedResult, ResultCache, cache_key, gpus_of, reusable, trial_hash
from kubenas.search import Search
from tests.helpers import manifest, succeeded

FAKE_TRAINER = str(Path(__file__).with_name("fake_trainer.py"))

TEMPLATE = {"spec": {"containers": [{"name": "trainer", "image": "trainer:1", "command": ["python", "-m", "t"],
                                     "env": [{"name": "A", "value": "1"}],
                                     "resources": {"limits": {"nvidia.com/gpu": 2, "cpu": "4"}}}]}}


def trial(**changes) -> specs.Trial:
    document = {"kind": "Job", "template": copy.deepcopy(TEMPLATE), **changes}
    return specs.Trial.model_validate(document)


# -- the key ---------------------------------------------------------------------------------


def test_the_key_ignores_key_order_and_is_stable() -> None:
    first = cache_key(architecture={"layers": [{"a": 1, "b": [1, 2]}], "cell": "x"}, trial=trial_hash(trial()))
    second = cache_key(architecture={"cell": "x", "layers": [{"b": [1, 2], "a": 1}]}, trial=trial_hash(trial()))
    assert first == second
    assert len(first) == 40 and int(first, 16) >= 0  # hex, and short enough for a label value
    # The same inputs in a new process give the same key: sha256 of canonical JSON, no hash().
    assert first == cache_key(architecture=json.loads(json.dumps({"cell": "x", "layers": [{"a": 1, "b": [1, 2]}]})),
                              trial=trial_hash(specs.Trial.model_validate(json.loads(json.dumps(
                                  {"kind": "Job", "template": TEMPLATE})))))


def test_the_key_changes_with_the_architecture_and_what_trains_it() -> None:
    base = trial_hash(trial())
    architecture = {"cell": "|none~0|"}
    key = cache_key(architecture=architecture, trial=base)
    assert cache_key(architecture={"cell": "|skip_connect~0|"}, trial=base) != key
    other_image = copy.deepcopy(TEMPLATE)
    other_image["spec"]["containers"][0]["image"] = "trainer:2"
    other_env = copy.deepcopy(TEMPLATE)
    other_env["spec"]["containers"][0]["env"][0]["value"] = "2"
    for template in (other_image, other_env):
        assert cache_key(architecture=architecture, trial=trial_hash(trial(template=template))) != key
    tabular = specs.Trial.model_validate({"kind": "Tabular", "tabular": {"metric": "cifar10-val"}})
    assert trial_hash(tabular) != trial_hash(specs.Trial.model_validate(
        {"kind": "Tabular", "tabular": {"metric": "cifar100-val"}}))
    assert trial_hash(tabular) != base


def test_the_key_ignores_what_never_changes_a_finished_result() -> None:
    """Search name, deadlines, retries, TTL: not part of the key (two searches share)."""
    base = trial_hash(trial())
    assert trial_hash(trial(activeDeadlineSeconds=60, backoffLimit=3, ttlSecondsAfterFinished=5,
                            unschedulableAfterSeconds=10)) == base
    one = specs.parse_manifest(manifest({"trial": {"kind": "Job", "template": TEMPLATE}}, name="one")).spec
    two = specs.parse_manifest(manifest({"trial": {"kind": "Job", "template": TEMPLATE}, "maxTrials": 3,
                                         "seed": 9}, name="two")).spec
    assert trial_hash(one.trial) == trial_hash(two.trial) == base


def test_gpus_of_a_template() -> None:
    assert gpus_of(trial()) == 2
    requests_only = copy.deepcopy(TEMPLATE)
    requests_only["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    assert gpus_of(trial(template=requests_only)) == 1
    assert gpus_of(specs.Trial.model_validate({"kind": "Tabular", "tabular": {}})) == 0


def test_only_successes_are_reused() -> None:
    assert reusable(None)
    for reason in ("NodeLost", "OOMKilled", "DeadlineExceeded", "JobDeleted", "MalformedResult", "TrainerError"):
        assert not reusable(reason)


def test_spec_cache_is_on_by_default_and_names_searches() -> None:
    spec = specs.parse_manifest(manifest()).spec
    assert spec.cache.enabled and spec.cache.from_ == []
    spec = specs.parse_manifest(manifest({"cache": {"enabled": False, "from": ["first", "second-2"]}})).spec
    assert not spec.cache.enabled and spec.cache.from_ == ["first", "second-2"]
    for bad in (["Upper"], ["a", "a"], ["x" * 64]):
        with pytest.raises(specs.SpecError, match="cache.from"):
            specs.parse_manifest(manifest({"cache": {"from": bad}}))


# -- decisions -------------------------------------------------------------------------------


def test_hit_wait_train() -> None:
    cache = ResultCache()
    assert cache.decide(key="k", index=0).action == "train"
    waiting = cache.decide(key="k", index=1)
    assert (waiting.action, waiting.source) == ("wait", 0)
    assert cache.decide(key="k", index=2).action == "wait"
    assert cache.decide(key="other", index=3).action == "train"
    assert cache.waiting() == 2 and cache.is_waiting(1) and not cache.is_waiting(0)
    entry = CachedResult(result=succeeded(0.9), source="s-0", seconds=12.0)
    assert cache.finish(index=0, entry=entry) == [1, 2]
    assert cache.waiting() == 0
    hit = cache.decide(key="k", index=4)
    assert hit.action == "hit" and hit.entry == entry
    # A later identical success does not replace the source that trained first.
    assert cache.finish(index=3, entry=None) == []
    cache.add("k", CachedResult(result=succeeded(0.1), source="s-9"))
    assert cache.lookup("k").source == "s-0"


def test_a_failed_source_releases_its_waiters_to_decide_again() -> None:
    cache = ResultCache()
    cache.decide(key="k", index=0)
    cache.decide(key="k", index=1)
    cache.decide(key="k", index=2)
    assert cache.finish(index=0, entry=None) == [1, 2]
    assert cache.lookup("k") is None
    assert cache.decide(key="k", index=1).action == "train"  # the first of them trains
    assert cache.decide(key="k", index=2).source == 1  # its twin waits again


# -- local mode ------------------------------------------------------------------------------


def table_manifest(*, name: str, operations: list[str], trials: int, **spec) -> dict:
    document = manifest({"searchSpace": {"type": "NB201Cell", "nb201Cell": {"operations": operations}},
                         "controller": {"batchSize": 2}, "trial": {"kind": "Tabular", "tabular": {}},
                         "maxTrials": trials, "parallelism": 4, **spec}, name=name)
    return document


def run_local(document: dict, tmp_path: Path, **options):
    parsed = specs.parse_manifest(document)
    return asyncio.run(run_search(parsed, document, runs_dir=tmp_path / "runs", **options))


def records(tmp_path: Path, name: str) -> list[dict]:
    lines = (tmp_path / "runs" / name / "trials.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["index"])


def test_local_table_children_reuse_the_first_ones_result(tmp_path: Path) -> None:
    """One operation: every child is the same cell. The four asked before any result are
    looked up (a table child never waits), every later one hits child 0's result."""
    result = run_local(table_manifest(name="one", operations=["nor_conv_3x3"], trials=12), tmp_path)
    assert result.phase == "Succeeded" and result.search.counters.succeeded == 12
    lines = records(tmp_path, "one")
    assert [r["index"] for r in lines] == list(range(12))
    assert [r.get("cachedFrom") for r in lines] == [None] * 4 + ["one-0"] * 8
    assert len({r["cacheKey"] for r in lines}) == 1
    assert {r["reward"] for r in lines} == {lines[0]["reward"]}
    assert all(r["result"] == lines[0]["result"] for r in lines)
    best = json.loads((tmp_path / "runs" / "one" / "best.json").read_text())
    assert best["cacheHits"] == 8 == result.cache.hits
    assert result.search.controller.version == 6  # every result reached the policy: 12 results, batches of 2


def test_local_the_cache_changes_no_child_of_a_table_search(tmp_path: Path) -> None:
    """REINFORCE unchanged: hits are told like the lookups they replace (same result, same
    order), so the cache on and off sample the same children with the same rewards."""
    runs, lines = {}, {}
    for enabled in (True, False):
        name = f"cache-{str(enabled).lower()}"
        runs[enabled] = run_local(table_manifest(name=name, operations=["none", "nor_conv_3x3"],
                                                 trials=60, cache={"enabled": enabled}), tmp_path)
        lines[enabled] = [(r["index"], r["architecture"], r["reward"]) for r in records(tmp_path, name)]
    assert runs[True].cache.hits >= 10 and runs[False].cache.hits == 0
    assert lines[True] == lines[False]
    on, off = runs[True].search.controller.policy.state_dict(), runs[False].search.controller.policy.state_dict()
    assert all(on[key].equal(off[key]) for key in on)


def test_local_job_twins_wait_for_the_running_one(tmp_path: Path) -> None:
    """A space of one architecture, children as subprocesses: one trains; the one asked
    beside it waits for it; all others hit. One subprocess in all."""
    document = manifest({
        "searchSpace": {"type": "MacroCNN", "macroCNN": {
            "filterHeights": [1], "filterWidths": [1], "numFilters": [8], "skipConnections": False,
            "depth": {"initialLayers": 1, "increment": 0, "maxLayers": 1}, "imageSize": [8, 8]}},
        "controller": {"batchSize": 2}, "maxTrials": 6, "parallelism": 2,
        "trial": {"kind": "Job", "template": {"spec": {"containers": [{
            "name": "trainer", "command": ["python", FAKE_TRAINER],
            "env": [{"name": "FAKE_SECONDS", "value": "0.5"}]}]}}}}, name="jobs")
    result = run_local(document, tmp_path, parallelism=2)
    assert result.phase == "Succeeded" and result.search.counters.succeeded == 6
    lines = records(tmp_path, "jobs")
    assert [r.get("cachedFrom") for r in lines] == [None] + ["jobs-0"] * 5
    assert [p.name for p in (tmp_path / "runs" / "jobs" / "trials").iterdir()] == ["000000"]  # one subprocess
    assert all(r["savedSeconds"] == lines[0]["seconds"] > 0.5 for r in lines[1:])
    assert result.cache.hits == 5 and result.cache.saved_seconds == pytest.approx(5 * lines[0]["seconds"])


def check_cached(lines: list[dict], *, in_flight: int) -> int:
    """Every hit names an earlier trained twin; a child trained although a twin was
    trained before was asked while that twin was in flight. Returns the hits."""
    by_index = {r["index"]: r for r in lines}
    first_trained: dict[str, int] = {}
    for record in lines:
        architecture = json.dumps(record["architecture"], sort_keys=True)
        if record.get("cachedFrom"):
            source = by_index[int(record["cachedFrom"].rsplit("-", 1)[1])]
            assert source["architecture"] == record["architecture"] and not source.get("cachedFrom")
            assert source["index"] < record["index"] and source["reward"] == record["reward"]
        elif architecture in first_trained:
            assert record["index"] - first_trained[architecture] < in_flight
        else:
            first_trained[architecture] = record["index"]
    return sum(1 for r in lines if r.get("cachedFrom"))


def test_local_hits_are_the_repeats_and_resume_keeps_the_cache(tmp_path: Path) -> None:
    document = table_manifest(name="few", operations=["none", "skip_connect"], trials=40)
    first = run_local(document, tmp_path)
    lines = records(tmp_path, "few")
    assert check_cached(lines, in_flight=4) == first.cache.hits > 0
    # Raising maxTrials and resuming: the cache comes back from trials.jsonl.
    document["spec"]["maxTrials"] = 80
    result = run_local(document, tmp_path, resume=True)
    lines = records(tmp_path, "few")
    assert len(lines) == 80
    assert check_cached(lines, in_flight=4) == result.cache.hits > first.cache.hits
    # Children of the resumed run reuse results of the first run's: read from trials.jsonl.
    assert any(int(r["cachedFrom"].rsplit("-", 1)[1]) < 40 for r in lines[40:] if r.get("cachedFrom"))


def test_local_cache_from_another_run_and_off_switch(tmp_path: Path) -> None:
    run_local(table_manifest(name="first", operations=["nor_conv_1x1"], trials=4), tmp_path)
    second = run_local(table_manifest(name="second", operations=["nor_conv_1x1"], trials=4,
                                      cache={"from": ["first"]}), tmp_path)
    assert [r["cachedFrom"] for r in records(tmp_path, "second")] == ["first-0"] * 4  # nothing looked up
    assert second.cache.hits == 4
    # Another metric column is another trial definition: nothing to reuse.
    other = run_local(table_manifest(name="third", operations=["nor_conv_1x1"], trials=6, cache={"from": ["first"]},
                                     trial={"kind": "Tabular", "tabular": {"metric": "cifar100-val"}}), tmp_path)
    assert [r.get("cachedFrom") for r in records(tmp_path, "third")] == [None] * 4 + ["third-0"] * 2
    assert other.cache.hits == 2
    off = run_local(table_manifest(name="off", operations=["nor_conv_1x1"], trials=4,
                                   cache={"enabled": False, "from": ["first"]}), tmp_path)
    assert off.cache.hits == 0 and all("cachedFrom" not in r for r in records(tmp_path, "off"))


# -- the operator's driver on a fake API -----------------------------------------------------


class FakeApi:
    """Records creates and status patches; every object exists once created."""

    def __init__(self) -> None:
        self.created: dict[str, list[dict]] = {}
        self.status: dict[str, dict] = {}

    async def create(self, resource, *, namespace: str, body: dict) -> dict:
        self.created.setdefault(resource.plural, []).append(body)
        return {**body, "metadata": {**body["metadata"], "uid": f"uid-{body['metadata']['name']}"}}

    async def patch(self, resource, *, namespace: str, name: str, patch: dict, subresource: str | None = None) -> dict:
        self.status.setdefault(name, {}).update(patch.get("status") or {})
        return {}

    async def list(self, resource, **_: object) -> list[dict]:
        return []  # no search of cache.from exists


JOB_SEARCH = {
    "apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
    "metadata": {"name": "twins", "namespace": "team", "uid": "search-uid", "generation": 1},
    "spec": {"searchSpace": {"type": "NB201Cell", "nb201Cell": {"operations": ["skip_connect"]}},
             "controller": {"batchSize": 2}, "maxTrials": 6, "parallelism": 3, "seed": 1,
             "trial": {"kind": "Job", "template": TEMPLATE}},
}


def driver_of(body: dict) -> tuple[SearchDriver, FakeApi]:
    api = FakeApi()
    driver = SearchDriver(client=api, body=body, logger=logging.getLogger("test"))
    spec = specs.parse_manifest(body).spec
    driver.search, driver.spec = Search(spec), spec
    driver._event = lambda *args, **kwargs: None  # kopf posts Events only inside its own loop
    return driver, api


async def test_driver_twins_wait_for_the_running_one_then_reuse_its_result() -> None:
    driver, api = driver_of(JOB_SEARCH)
    await driver._create_children(driver._ask(3))
    assert [job["metadata"]["name"] for job in api.created["jobs"]] == ["twins-0"]  # one Job for three twins
    keys = {t["metadata"]["labels"][LABEL_CACHE_KEY] for t in api.created["nastrials"]}
    assert len(api.created["nastrials"]) == 3 and len(keys) == 1
    assert api.status["twins-1"]["reason"] == api.status["twins-2"]["reason"] == WAITING_REASON
    # 30 s on the template's 2 GPUs, as the meter reckons it from the pod
    await driver._record(0, succeeded([0.4, 0.8]), times=(100.0, 130.0), cost=Cost(60.0, 30.0))
    for name in ("twins-1", "twins-2"):
        assert api.status[name]["phase"] == "Succeeded" and api.status[name]["cachedFrom"] == "twins-0"
        assert api.status[name]["savedSeconds"] == 30.0 and api.status[name]["savedGpuSeconds"] == 60.0
    assert not driver.search.in_flight and driver.search.counters.succeeded == 3
    assert driver.search.controller.version == 1  # results of hits reach the policy
    # Later twins hit at once: no Job, told straight away.
    await driver._create_children(driver._ask(3))
    assert len(api.created["jobs"]) == 1 and driver.search.finished
    assert driver.cache.status() == {"cacheHits": 5, "cacheSavedSeconds": 150.0, "cacheSavedGpuSeconds": 300.0}


async def test_driver_a_failed_twin_is_not_reused_and_the_next_one_trains() -> None:
    driver, api = driver_of(JOB_SEARCH)
    await driver._create_children(driver._ask(3))
    await driver._record(0, {"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Failed",
                             "reason": "NodeLost", "message": "node gone"})
    assert [job["metadata"]["name"] for job in api.created["jobs"]] == ["twins-0", "twins-1"]
    assert api.status["twins-2"]["reason"] == WAITING_REASON and "twins-1" in api.status["twins-2"]["message"]
    assert api.status["twins-1"]["reason"] is None and api.status["twins-1"]["phase"] == "Pending"  # waits no more
    await driver._record(1, succeeded(0.7))
    assert api.status["twins-2"]["cachedFrom"] == "twins-1"
    assert driver.cache.hits == 1 and driver.search.counters.failed == 1


async def test_driver_with_the_cache_off_trains_every_twin() -> None:
    body = copy.deepcopy(JOB_SEARCH)
    body["spec"]["cache"] = {"enabled": False}
    driver, api = driver_of(body)
    await driver._create_children(driver._ask(3))
    assert len(api.created["jobs"]) == 3
    assert all(LABEL_CACHE_KEY not in t["metadata"]["labels"] for t in api.created["nastrials"])


async def test_driver_table_twins_are_looked_up_together_and_hit_later() -> None:
    body = copy.deepcopy(JOB_SEARCH)
    body["spec"]["trial"] = {"kind": "Tabular", "tabular": {}}
    driver, api = driver_of(body)
    from kubenas.evaluators import TabularEvaluator

    driver.evaluate_table = TabularEvaluator(driver.spec.trial.tabular)
    await driver._create_children(driver._ask(3))  # asked together: each looked up, none waits
    assert not any(api.status[f"twins-{i}"].get("cachedFrom") for i in range(3))
    await driver._create_children(driver._ask(3))
    assert [api.status[f"twins-{i}"]["cachedFrom"] for i in range(3, 6)] == ["twins-0"] * 3
    assert "jobs" not in api.created and driver.search.finished
    assert driver.cache.status() == {"cacheHits": 3, "cacheSavedSeconds": 0.0, "cacheSavedGpuSeconds": 0.0}


def test_a_restarted_driver_counts_and_reuses_from_the_nastrials() -> None:
    from kubenas.operator.cache import ClusterCache

    def nastrial(index: int, phase: str, **status) -> dict:
        return {"metadata": {"name": f"twins-{index}", "labels": {LABEL_CACHE_KEY: "k"}},
                "spec": {"search": "twins", "index": index},
                "status": {"phase": phase, "result": succeeded(0.5), **status}}

    cache = ClusterCache(search="twins")
    for trial in (nastrial(0, "Failed"),
                  nastrial(1, "Succeeded", startTime="2026-01-01T00:00:00Z", completionTime="2026-01-01T00:00:30Z"),
                  nastrial(2, "Succeeded", cachedFrom="twins-1", savedSeconds=30.0, savedGpuSeconds=60.0),
                  nastrial(3, "Pending", reason=WAITING_REASON)):
        cache.learn(trial, gpus=2)
    assert cache.status() == {"cacheHits": 1, "cacheSavedSeconds": 30.0, "cacheSavedGpuSeconds": 60.0}
    entry = cache.cache.lookup("k")
    assert (entry.source, entry.seconds, entry.gpu_seconds) == ("twins-1", 30.0, 60.0)  # the trained one


# -- spec.cache.from read again while the search runs (refreshSeconds) -----------------------


def test_spec_cache_refresh_seconds_defaults_to_30_within_5_and_3600() -> None:
    assert specs.parse_manifest(manifest()).spec.cache.refresh_seconds == 30
    assert specs.parse_manifest(manifest({"cache": {"refreshSeconds": 5}})).spec.cache.refresh_seconds == 5
    for bad in (4, 3601):
        with pytest.raises(specs.SpecError, match="refreshSeconds"):
            specs.parse_manifest(manifest({"cache": {"refreshSeconds": bad}}))


def table_record(index: int, key: str, accuracy: float, **fields) -> dict:
    """A trained child's line of a local run's trials.jsonl, as far as the cache reads it."""
    return {"index": index, "status": "Succeeded", "cacheKey": key, "result": succeeded(accuracy), "seconds": 12.0,
            **fields}


def append_lines(path: Path, *records: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)


def test_trials_tail_parses_only_new_lines_and_reads_a_torn_line_again(tmp_path: Path) -> None:
    from kubenas.local_cache import TrialsTail

    path = tmp_path / "trials.jsonl"
    tail = TrialsTail(path)
    assert tail.new_records() == []  # no file yet
    append_lines(path, table_record(0, "a", 0.1))
    whole = json.dumps(table_record(1, "b", 0.2)) + "\n"
    with path.open("a") as handle:
        handle.write("not json\n" + whole[:10])  # a foreign line, then a line half written
    assert [r["index"] for r in tail.new_records()] == [0]
    with path.open("a") as handle:
        handle.write(whole[10:])
    assert [r["index"] for r in tail.new_records()] == [1]  # the torn line, whole now, is not lost
    assert tail.new_records() == []  # nothing parsed twice
    # Another file in its place (the other run restarted): read from its start.
    replacement = tmp_path / "new.jsonl"
    append_lines(replacement, table_record(0, "c", 0.3))
    replacement.replace(path)
    assert [r["cacheKey"] for r in tail.new_records()] == ["c"]


def local_cache_of(tmp_path: Path, *, refresh_seconds: int = 30):
    from kubenas.local_cache import LocalCache

    spec = specs.parse_manifest(table_manifest(name="second", operations=["nor_conv_1x1"], trials=4, cache={
        "from": ["first"], "refreshSeconds": refresh_seconds})).spec
    return LocalCache(spec=spec, name="second", runs_dir=tmp_path / "runs", recorded={})


def test_local_cache_reads_other_runs_again_once_per_refresh_seconds(tmp_path: Path, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("kubenas.local_cache.monotonic", lambda: clock[0])
    cache = local_cache_of(tmp_path)
    ticket = Search(specs.parse_manifest(table_manifest(name="second", operations=["nor_conv_1x1"],
                                                        trials=4)).spec).ask()
    key = cache.key(ticket)
    assert cache.decide(ticket).action == "train"  # runs/first has nothing yet
    append_lines(tmp_path / "runs" / "first" / "trials.jsonl", table_record(0, key, 0.9))
    clock[0] += 29.9
    assert cache.decide(ticket).action == "train"  # read at 1000.0: not again before 1030.0
    clock[0] += 0.1
    hit = cache.decide(ticket)
    assert hit.action == "hit" and hit.entry.source == "first-0" and hit.entry.seconds == 12.0
    # Read again: the first entry of a key stays; reading counts no hit (hits are counted when reused).
    append_lines(tmp_path / "runs" / "first" / "trials.jsonl", table_record(1, key, 0.1))
    clock[0] += 30
    assert cache.decide(ticket).entry.source == "first-0" and cache.hits == 0


def test_local_cache_reads_nothing_again_without_other_runs(tmp_path: Path, monkeypatch) -> None:
    from kubenas.local_cache import LocalCache

    clock = [1000.0]
    monkeypatch.setattr("kubenas.local_cache.monotonic", lambda: clock[0])
    for cache_spec in ({}, {"from": ["second"]}, {"enabled": False, "from": ["first"]}):  # none, only itself, off
        spec = specs.parse_manifest(table_manifest(name="second", operations=["nor_conv_1x1"], trials=4,
                                                   cache=cache_spec)).spec
        cache = LocalCache(spec=spec, name="second", runs_dir=tmp_path / "runs", recorded={})
        assert not cache.refresh_due(clock[0] + 3600)
    assert local_cache_of(tmp_path).refresh_due(clock[0] + 30)


def test_local_a_run_reuses_a_child_the_other_run_finished_after_its_cache_was_built(
        tmp_path: Path, monkeypatch) -> None:
    """Two runs side by side: `first` finishes a child after `second`'s cache is built;
    `second` reuses it once refreshSeconds have passed, not before."""
    from kubenas import local
    from kubenas.local_cache import LocalCache

    run_local(table_manifest(name="first", operations=["nor_conv_1x1"], trials=1), tmp_path)
    first_trials = tmp_path / "runs" / "first" / "trials.jsonl"
    finished_later = first_trials.read_text()
    clock = [1000.0]
    monkeypatch.setattr("kubenas.local_cache.monotonic", lambda: clock[0])

    def built_then_first_finishes(*, seconds: float):
        def build(**arguments):
            first_trials.unlink(missing_ok=True)  # as if first had not finished it yet when the cache was built
            cache = LocalCache(**arguments)
            first_trials.write_text(finished_later)
            clock[0] += seconds
            return cache
        return build

    for name, seconds, reused in (("early", 10.0, [None] * 4), ("second", 30.0, ["first-0"] * 4)):
        monkeypatch.setattr(local, "LocalCache", built_then_first_finishes(seconds=seconds))
        result = run_local(table_manifest(name=name, operations=["nor_conv_1x1"], trials=4, cache={"from": ["first"]}),
                           tmp_path)
        assert [r.get("cachedFrom") for r in records(tmp_path, name)] == reused
        assert result.cache.hits == reused.count("first-0")


def nastrial_of(search: dict, index: int, key: str, **status) -> dict:
    """A finished NASTrial of `search` (owned by it, labelled with its cache key)."""
    name = search["metadata"]["name"]
    return {"metadata": {"name": f"{name}-{index}", "labels": {"kubenas.io/search": name, LABEL_CACHE_KEY: key},
                         "ownerReferences": [{"kind": "NeuralArchitectureSearch", "uid": search["metadata"]["uid"]}]},
            "spec": {"search": name, "index": index},
            "status": {"phase": "Succeeded", "result": succeeded(0.9), "startTime": "2026-01-01T00:00:00Z",
                       "completionTime": "2026-01-01T00:00:40Z", **status}}


class OtherSearchesApi(FakeApi):
    """FakeApi where other searches and their NASTrials exist (as a test adds them); counts lists."""

    def __init__(self) -> None:
        super().__init__()
        self.searches: list[dict] = []
        self.trials: list[dict] = []
        self.lists = 0

    async def list(self, resource, *, namespace: str, label_selector: str, field_selector: str | None = None,
                   **_: object) -> list[dict]:
        self.lists += 1
        if resource.plural == "neuralarchitecturesearches":
            wanted = (field_selector or "").removeprefix("metadata.name=")
            return [s for s in self.searches if s["metadata"]["name"] == wanted]
        if resource.plural == "nastrials":
            wanted = label_selector.split(",")[0].removeprefix("kubenas.io/search=")
            return [t for t in self.trials if t["metadata"]["labels"]["kubenas.io/search"] == wanted]
        return []


FIRST = {"metadata": {"name": "first", "namespace": "team", "uid": "first-uid"}}


async def test_cluster_cache_refresh_is_due_once_per_refresh_seconds_and_tells_a_missing_search_once() -> None:
    from kubenas.operator.cache import ClusterCache

    api = OtherSearchesApi()
    spec = specs.parse_manifest(manifest({"cache": {"from": ["first", "twins"], "refreshSeconds": 60}},
                                         name="twins")).spec
    cache = ClusterCache(search="twins")
    assert cache.sources(spec) == ["first"]  # never itself
    assert cache.refresh_due(spec, 0.0)  # never read
    assert await cache.refresh(api, namespace="team", spec=spec, now=100.0) == ["first"]
    assert api.lists == 1
    assert await cache.refresh(api, namespace="team", spec=spec, now=159.9) == [] and api.lists == 1  # not due
    assert await cache.refresh(api, namespace="team", spec=spec, now=160.0) == []  # still missing: told once
    assert api.lists == 2
    # The search appears later: its finished children are read. Those it reused are
    # learned with their own source, but as its hits, not ours.
    api.searches.append(FIRST)
    api.trials += [nastrial_of(FIRST, 0, "a"),
                   nastrial_of(FIRST, 1, "b", cachedFrom="zeroth-3", savedSeconds=50.0, savedGpuSeconds=100.0),
                   nastrial_of(FIRST, 2, "c", phase="Running")]
    for now in (220.0, 280.0, 340.0):  # read three times: the same entries, no hit counted
        assert await cache.refresh(api, namespace="team", spec=spec, now=now) == []
        assert cache.cache.lookup("a").source == "first-0" and cache.cache.lookup("b").source == "zeroth-3"
        assert cache.cache.lookup("c") is None
        assert cache.status() == {"cacheHits": 0, "cacheSavedSeconds": 0.0, "cacheSavedGpuSeconds": 0.0}
    assert api.lists == 2 + 3 * 2
    # No other search to read, or the cache off: never due.
    for cache_spec in ({}, {"from": ["twins"]}, {"enabled": False, "from": ["first"]}):
        other = specs.parse_manifest(manifest({"cache": cache_spec}, name="twins")).spec
        assert not ClusterCache(search="twins").refresh_due(other, 0.0)


async def test_driver_reuses_a_child_another_search_finished_after_start_once_refresh_seconds_pass(
        monkeypatch) -> None:
    """`second` names `first`, which does not exist yet: one warning however often it is
    read. `first` appears with a finished twin of second's children; second's next child
    after refreshSeconds reuses it (no Job), not the one before."""
    clock = [1000.0]
    monkeypatch.setattr("kubenas.operator.cache.monotonic", lambda: clock[0])
    body = copy.deepcopy(JOB_SEARCH)
    body["metadata"]["name"] = "second"
    body["spec"].update(maxTrials=4, parallelism=1, cache={"from": ["first"], "refreshSeconds": 30})
    api = OtherSearchesApi()
    driver = SearchDriver(client=api, body=body, logger=logging.getLogger("test"))
    spec = specs.parse_manifest(body).spec
    driver.search, driver.spec = Search(spec), spec
    driver.seen_generation = body["metadata"]["generation"]
    events: list[str] = []
    driver._event = lambda reason, *args, **kwargs: events.append(reason)
    node_lost = {"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Failed", "reason": "NodeLost",
                 "message": "node gone"}

    async def step_at(now: float) -> None:
        clock[0] = now
        await driver._step()

    await step_at(1000.0)  # read: first is missing
    await driver._record(0, node_lost)  # nothing reusable of second's own
    await step_at(1030.0)  # read again: still missing, not told again
    await driver._record(1, node_lost)
    assert events.count("CacheSourceNotFound") == 1
    key = api.created["nastrials"][0]["metadata"]["labels"][LABEL_CACHE_KEY]
    api.searches.append(FIRST)
    api.trials.append(nastrial_of(FIRST, 0, key))
    await step_at(1059.9)  # not read again yet: child 2 trains
    await driver._record(2, node_lost)
    await step_at(1060.0)  # read: child 3 reuses first-0
    assert [job["metadata"]["name"] for job in api.created["jobs"]] == ["second-0", "second-1", "second-2"]
    assert api.status["second-3"]["phase"] == "Succeeded" and api.status["second-3"]["cachedFrom"] == "first-0"
    assert api.status["second-3"]["savedSeconds"] == 40.0 and api.status["second-3"]["savedGpuSeconds"] == 80.0
    assert driver.cache.status() == {"cacheHits": 1, "cacheSavedSeconds": 40.0, "cacheSavedGpuSeconds": 80.0}
    assert events.count("CacheSourceNotFound") == 1 and driver.search.finished


async def test_a_failed_reread_of_cache_from_is_a_warning_and_children_still_train(monkeypatch, caplog) -> None:
    """Reuse is only a saving: an API error reading the other searches in a step does not
    stop the driver (it would restart it), the child trains."""
    from kubenas.operator.kube import ApiError

    class BrokenListsApi(OtherSearchesApi):
        async def list(self, resource, **kwargs):
            if resource.plural == "neuralarchitecturesearches":
                raise ApiError(500, "InternalError", "etcdserver: request timed out")
            return await super().list(resource, **kwargs)

    monkeypatch.setattr("kubenas.operator.cache.monotonic", lambda: 1000.0)
    body = copy.deepcopy(JOB_SEARCH)
    body["spec"].update(maxTrials=2, parallelism=1, cache={"from": ["first"]})
    api = BrokenListsApi()
    driver = SearchDriver(client=api, body=body, logger=logging.getLogger("test"))
    spec = specs.parse_manifest(body).spec
    driver.search, driver.spec = Search(spec), spec
    driver.seen_generation = body["metadata"]["generation"]
    with caplog.at_level(logging.WARNING):
        await driver._step()
    assert [job["metadata"]["name"] for job in api.created["jobs"]] == [f"{body['metadata']['name']}-0"]
    assert "spec.cache.from not read again" in caplog.text and "etcdserver" in caplog.text
