"""A burst of table children: their API writes overlap, answered in any order, yet the
engine is told in index order (as a restart's replay tells them) and the checkpoint is
written once, after the burst's policy updates and before any later child."""

from __future__ import annotations

import asyncio
import logging
import random

from kubenas import spec as specs
from kubenas.operator import names
from kubenas.operator.driver import SearchDriver
from kubenas.search import Search

TABLE_SPEC = {
    "apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
    "metadata": {"name": "burst", "namespace": "team", "uid": "search-uid", "generation": 1},
    "spec": {"searchSpace": {"type": "NB201Cell"}, "controller": {"batchSize": 4}, "maxTrials": 64,
             "parallelism": 16, "seed": 3, "trial": {"kind": "Tabular", "tabular": {}}},
}


class ShuffledApi:
    """Answers each write after a random delay, so they complete out of order."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.calls: list[tuple[str, str, str]] = []

    async def _answer(self, verb: str, resource, name: str) -> None:
        await asyncio.sleep(self.random.uniform(0, 0.01))
        self.calls.append((verb, resource.plural, name))

    async def create(self, resource, *, namespace: str, body: dict) -> dict:
        await self._answer("create", resource, body["metadata"]["name"])
        return {**body, "metadata": {**body["metadata"], "uid": f"uid-{body['metadata']['name']}"}}

    async def patch(self, resource, *, namespace: str, name: str, patch: dict, subresource: str | None = None) -> dict:
        await self._answer("patch", resource, name)
        return {}


async def _run(seed: int) -> tuple[list[int], list[tuple[str, str, str]], Search]:
    driver = SearchDriver(client=ShuffledApi(seed), body=TABLE_SPEC, logger=logging.getLogger("test"))
    spec = specs.parse_manifest(TABLE_SPEC).spec
    from kubenas.evaluators import TabularEvaluator

    driver.evaluate_table = TabularEvaluator(spec.trial.tabular)
    driver.search, driver.spec = Search(spec), spec
    driver._event = lambda *args, **kwargs: None  # kopf posts Events only inside its own loop
    told: list[int] = []
    tell = driver.search.tell
    driver.search.tell = lambda index, result: told.append(index) or tell(index, result)
    tickets = driver._ask(16)
    await driver._create_children(tickets)
    return told, driver.client.calls, driver.search


async def test_burst_tells_in_index_order_and_checkpoints_once_at_its_end() -> None:
    told, calls, search = await _run(seed=1)
    assert told == list(range(16))
    assert search.controller.version == 4  # 16 results, a batch of 4
    checkpoint = [i for i, (_, plural, _) in enumerate(calls) if plural == names.CONFIGMAPS.plural]
    assert len(checkpoint) == 1 and checkpoint[0] == len(calls) - 1  # one write, after every verdict
    assert sum(verb == "patch" and plural == names.TRIALS.plural for verb, plural, _ in calls) == 16


async def test_the_policy_does_not_depend_on_which_write_was_answered_first() -> None:
    first, second = await _run(seed=1), await _run(seed=2)
    assert [c for c in first[1] if c[0] == "create"] != [c for c in second[1] if c[0] == "create"]
    a, b = first[2].controller.policy.state_dict(), second[2].controller.policy.state_dict()
    assert all(a[key].equal(b[key]) for key in a)
