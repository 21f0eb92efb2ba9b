"""The floor the operator is measured against: a bare client making only the writes a
child needs, with the same client library, credentials and children in flight.

- table children: create a NASTrial, patch its status with the result;
- Job children: create a NASTrial, create its Job, wait for the Job to finish (one watch
  for all of them, no request per child), patch the NASTrial's status.

No engine, no policy, no kopf. Its objects carry the label `kubenas-bench=<name>` and not
the operator's labels, so the operator running beside it ignores them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import aiohttp

from kubenas import spec as specs
from kubenas.operator import children, names
from kubenas.operator.connection import load_connection
from kubenas.operator.kube import KubeClient
from kubenas.search import Search

LABEL = "kubenas-bench"


def _relabel(document: dict, labels: dict[str, str]) -> None:
    document["metadata"]["labels"] = dict(labels)
    template = (document.get("spec") or {}).get("template")
    if template is not None:
        template.setdefault("metadata", {})["labels"] = dict(labels)


async def _watch_jobs(client: KubeClient, *, namespace: str, selector: str,
                      finished: dict[str, asyncio.Future]) -> None:
    """Resolve `finished[job name]` when that Job completes or fails."""
    path = names.JOBS.path(namespace=namespace)
    resource_version = (await client.request("GET", path, params={"labelSelector": selector, "limit": "1"}))[
        "metadata"]["resourceVersion"]
    while True:
        params = {"watch": "1", "labelSelector": selector, "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
        async with client.session.get(client.server + path, params=params,
                                      timeout=aiohttp.ClientTimeout(total=None, sock_read=330)) as response:
            async for line in response.content:
                event = json.loads(line)
                job = event["object"]
                resource_version = job["metadata"].get("resourceVersion", resource_version)
                conditions = (job.get("status") or {}).get("conditions") or []
                if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions):
                    future = finished.get(job["metadata"]["name"])
                    if future is not None and not future.done():
                        future.set_result(job)


async def run_bare(*, kubeconfig: Path, namespace: str, name: str, search: dict, count: int,
                   parallelism: int) -> float:
    """Seconds for `count` children of the search document `search` (its trial kind and
    template), `parallelism` at a time."""
    spec = specs.parse_manifest(search).spec
    ticket = Search(spec).ask()  # one architecture for every child: the writes are what is measured
    labels = {LABEL: name}
    connection = load_connection(kubeconfig=str(kubeconfig))
    client = connection.client()
    finished: dict[str, asyncio.Future] = {}
    jobs = spec.trial.kind == "Job"
    watcher = asyncio.create_task(_watch_jobs(client, namespace=namespace, selector=f"{LABEL}={name}",
                                              finished=finished)) if jobs else None
    slots = asyncio.Semaphore(parallelism)
    owner = {"apiVersion": names.SEARCHES.api_version, "kind": names.SEARCHES.kind,
             "metadata": {"name": name, "namespace": namespace, "uid": "none"}}

    async def child(index: int) -> None:
        async with slots:
            mine = dataclasses.replace(ticket, index=index)
            body = children.trial_object(search=owner, ticket=mine)
            del body["metadata"]["ownerReferences"]
            _relabel(body, labels)
            trial = await client.create(names.TRIALS, namespace=namespace, body=body)
            result = {"status": "Succeeded", "validationAccuracy": [0.9]}
            if jobs:
                job = children.job_object(trial=trial, ticket=mine, spec=spec.trial)
                _relabel(job, labels)
                future = finished[job["metadata"]["name"]] = asyncio.get_running_loop().create_future()
                await client.create(names.JOBS, namespace=namespace, body=job)
                await future
            await client.patch(names.TRIALS, namespace=namespace, name=trial["metadata"]["name"], subresource="status",
                               patch={"status": {"phase": "Succeeded", "reason": "Succeeded", "reward": 0.9,
                                                 "validationAccuracy": 0.9, "result": result,
                                                 "completionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})

    started = time.monotonic()
    try:
        await asyncio.gather(*(child(index) for index in range(count)))
        return time.monotonic() - started
    finally:
        if watcher is not None:
            watcher.cancel()
        await client.close()

