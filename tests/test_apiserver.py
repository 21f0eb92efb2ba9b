"""The emulated API server (kubenas.testing) over real HTTP: what a Kubernetes API server
does that kopf, the kubernetes client and kubectl rely on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest

from kubenas.testing.apiserver import ApiServer
from kubenas.testing.cluster import DevCluster
from kubenas.testing.contract import ApiError
from kubenas.testing.store import Store

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wdg"], "categories": ["all"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "description": "How big the widget is."},
                                    "color": {"type": "string", "default": "blue"},
                                },
                            },
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


class Logs:
    """A PodLogs whose lines tell which pod and container they came from."""

    def read_log(self, *, namespace: str, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        lines = [f"{namespace}/{name} {container} line {n}" for n in range(3)]
        return "".join(line + "\n" for line in lines[-tail_lines if tail_lines else 0 :])


class Client:
    def __init__(self, *, session: aiohttp.ClientSession, store: Store, server: ApiServer) -> None:
        self.session, self.store, self.server = session, store, server

    async def call(
        self, method: str, path: str, body: Any = None, *, headers: dict | None = None, **params: str
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method, path, data=data, params=params, headers=headers or {"Content-Type": "application/json"}
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if response.content_type == "application/json" else text

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, answer = await self.call(method, path, body, **kwargs)
        assert status < 300, (status, answer)
        return answer

    async def watch(self, path: str, *, count: int, **params: str) -> list[dict]:
        """The first `count` events of a watch (fewer if it ends first)."""
        events: list[dict] = []
        async with asyncio.timeout(5), self.session.get(path, params={"watch": "true", **params}) as response:
            assert response.headers["Content-Type"].startswith("application/json")
            async for line in response.content:
                events.append(json.loads(line))
                if len(events) == count:
                    break
        return events


@contextlib.asynccontextmanager
async def serving(*, history_limit: int = 10_000, request_history: int = 300) -> AsyncIterator[Client]:
    store = Store(history_limit=history_limit)
    api_server = ApiServer(store=store, pod_logs=Logs(), request_history=request_history)
    async with kmock.Server(api_server) as server, aiohttp.ClientSession(str(server.url)) as session:
        try:
            yield Client(session=session, store=store, server=api_server)
        finally:
            store.close()


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    async with serving() as client:
        yield client


def configmap(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def owned_by(obj: dict) -> list[dict]:
    meta = obj["metadata"]
    return [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"]}]


async def test_create_fills_server_metadata(api: Client) -> None:
    created = await api.ok("POST", CONFIGMAPS, configmap("one"))
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["generation"] == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert await api.ok("GET", f"{CONFIGMAPS}/one") == created
    generated = await api.ok("POST", CONFIGMAPS, {"metadata": {"generateName": "trial-"}, "data": {}})
    assert re.fullmatch(r"trial-[a-z0-9]{5}", generated["metadata"]["name"])
    assert int(generated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, answer = await api.call("POST", CONFIGMAPS, configmap("one"))
    assert (status, answer["reason"]) == (409, "AlreadyExists")
    status, answer = await api.call("POST", "/api/v1/namespaces/nowhere/configmaps", configmap("two"))
    assert (status, answer["reason"], answer["message"]) == (404, "NotFound", 'namespaces "nowhere" not found')


async def test_generation_counts_changes_outside_metadata_and_status(api: Client) -> None:
    await api.ok("POST", CONFIGMAPS, configmap("gen"))
    labelled = await api.ok("PATCH", f"{CONFIGMAPS}/gen", {"metadata": {"labels": {"a": "b"}}}, headers=MERGE)
    assert labelled["metadata"]["generation"] == 1
    changed = await api.ok("PATCH", f"{CONFIGMAPS}/gen", {"data": {"k": "other"}}, headers=MERGE)
    assert changed["metadata"]["generation"] == 2
    unchanged = await api.ok("PATCH", f"{CONFIGMAPS}/gen", {"data": {"k": "other"}}, headers=MERGE)
    assert unchanged["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]  # a no-op write


async def test_stale_resource_version_conflicts(api: Client) -> None:
    created = await api.ok("POST", CONFIGMAPS, configmap("stale"))
    await api.ok("PATCH", f"{CONFIGMAPS}/stale", {"data": {"k": "new"}}, headers=MERGE)
    status, answer = await api.call("PUT", f"{CONFIGMAPS}/stale", created)
    assert (status, answer["reason"]) == (409, "Conflict")
    stale_patch = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"k": "x"}}
    status, _ = await api.call("PATCH", f"{CONFIGMAPS}/stale", stale_patch, headers=MERGE)
    assert status == 409
    current = await api.ok("GET", f"{CONFIGMAPS}/stale")
    replaced = await api.ok("PUT", f"{CONFIGMAPS}/stale", current | {"data": {"k": "replaced"}})
    assert replaced["data"] == {"k": "replaced"} and replaced["metadata"]["uid"] == created["metadata"]["uid"]


async def test_json_patch_test_operation_failing_is_422(api: Client) -> None:
    await api.ok("POST", CONFIGMAPS, configmap("jp"))
    headers = {"Content-Type": "application/json-patch+json"}
    failing = [{"op": "test", "path": "/data/k", "value": "not-v"}, {"op": "replace", "path": "/data/k", "value": "w"}]
    status, answer = await api.call("PATCH", f"{CONFIGMAPS}/jp", failing, headers=headers)
    assert (status, answer["reason"]) == (422, "Invalid")
    passing = [{"op": "test", "path": "/data/k", "value": "v"}, {"op": "add", "path": "/data/n", "value": "1"}]
    assert (await api.ok("PATCH", f"{CONFIGMAPS}/jp", passing, headers=headers))["data"] == {"k": "v", "n": "1"}


async def test_strategic_merge_patch_merges_containers_by_name(api: Client) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}, {"name": "b", "image": "y"}]
        },
    }
    await api.ok("POST", "/api/v1/namespaces/default/pods", pod)
    patch = {
        "spec": {"containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]}]},
        "metadata": {"finalizers": ["f"]},
    }
    patched = await api.ok(
        "PATCH",
        "/api/v1/namespaces/default/pods/p",
        patch,
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert [c["name"] for c in patched["spec"]["containers"]] == ["a", "b"]
    assert patched["spec"]["containers"][0]["env"] == [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]


async def test_watch_resumes_from_a_resource_version_and_410s_when_expired() -> None:
    async with serving(history_limit=5) as api:
        first = await api.ok("POST", CONFIGMAPS, configmap("w0"))
        await api.ok("POST", CONFIGMAPS, configmap("w1"))
        events = await api.watch(CONFIGMAPS, count=1, resourceVersion=first["metadata"]["resourceVersion"])
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w1")]
        for n in range(2, 8):
            await api.ok("POST", CONFIGMAPS, configmap(f"w{n}"))
        [error] = await api.watch(CONFIGMAPS, count=1, resourceVersion=first["metadata"]["resourceVersion"])
        assert error["type"] == "ERROR" and error["object"]["code"] == 410 and error["object"]["reason"] == "Expired"
        ended = await api.watch(
            CONFIGMAPS,
            count=100,
            resourceVersion=api.store.resource_version,
            timeoutSeconds="0.2",
            allowWatchBookmarks="true",
        )
        assert [e["type"] for e in ended] == ["BOOKMARK"]


async def test_watch_without_version_lists_then_follows(api: Client) -> None:
    await api.ok("POST", CONFIGMAPS, configmap("old"))

    async def change_later() -> None:
        await asyncio.sleep(0.1)
        await api.ok("PATCH", f"{CONFIGMAPS}/old", {"data": {"k": "2"}}, headers=MERGE)

    changing = asyncio.create_task(change_later())
    events = await api.watch(CONFIGMAPS, count=2)
    await changing
    assert [(e["type"], e["object"]["data"]["k"]) for e in events] == [("ADDED", "v"), ("MODIFIED", "2")]


async def test_label_and_field_selectors_on_list_and_watch(api: Client) -> None:
    await api.ok("POST", CONFIGMAPS, configmap("a", app="web", tier="front"))
    await api.ok("POST", CONFIGMAPS, configmap("b", app="db"))
    await api.ok("POST", CONFIGMAPS, configmap("c"))

    async def names(**params: str) -> list[str]:
        return [item["metadata"]["name"] for item in (await api.ok("GET", CONFIGMAPS, **params))["items"]]

    assert await names(labelSelector="app=web") == ["a"]
    assert await names(labelSelector="app==db") == ["b"]
    assert await names(labelSelector="app!=web") == ["b", "c"]
    assert await names(labelSelector="app in (web, db),!tier") == ["b"]
    assert await names(labelSelector="app notin (web)") == ["b", "c"]
    assert await names(labelSelector="tier") == ["a"]
    assert await names(fieldSelector="metadata.name=b") == ["b"]
    assert await names(fieldSelector="metadata.name!=b,metadata.namespace=default") == ["a", "c"]
    assert await names(fieldSelector="data.k=v", labelSelector="app") == ["a", "b"]
    status, answer = await api.call("GET", CONFIGMAPS, labelSelector="app in web")
    assert (status, answer["reason"]) == (400, "BadRequest")

    async def relabel() -> None:
        await asyncio.sleep(0.1)
        await api.ok("PATCH", f"{CONFIGMAPS}/c", {"metadata": {"labels": {"app": "web"}}}, headers=MERGE)
        await api.ok("PATCH", f"{CONFIGMAPS}/a", {"metadata": {"labels": {"app": "old"}}}, headers=MERGE)

    relabelling = asyncio.create_task(relabel())
    events = await api.watch(CONFIGMAPS, count=3, labelSelector="app=web")
    await relabelling
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "c"),
        ("DELETED", "a"),
    ]
    [event] = await api.watch(CONFIGMAPS, count=1, fieldSelector="metadata.name=b")
    assert event["object"]["metadata"]["name"] == "b"


async def test_status_subresource_isolation(api: Client) -> None:
    await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    created = await api.ok(
        "POST",
        WIDGETS,
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 1},
            "status": {"phase": "Made-up"},
        },
    )
    assert "status" not in created
    main = await api.ok("PATCH", f"{WIDGETS}/w", {"spec": {"size": 2}, "status": {"phase": "Ignored"}}, headers=MERGE)
    assert main["spec"]["size"] == 2 and "status" not in main
    status = await api.ok("PATCH", f"{WIDGETS}/w/status", {"spec": {"size": 9}, "status": {"phase": "Ready"}}, headers=MERGE)
    assert status["spec"]["size"] == 2 and status["status"] == {"phase": "Ready"}
    assert status["metadata"]["generation"] == 2  # status does not count
    replaced = await api.ok("PUT", f"{WIDGETS}/w", status | {"spec": {"size": 3}, "status": {"phase": "Lost"}})
    assert replaced["status"] == {"phase": "Ready"}
    job = {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": []}}}, "status": {"active": 5}}
    assert "active" not in (await api.ok("POST", "/apis/batch/v1/namespaces/default/jobs", job)).get("status", {})
    status_code, _ = await api.call("PATCH", f"{CONFIGMAPS}/none/status", {}, headers=MERGE)
    assert status_code == 404


async def test_owner_references_cascade_orphan_and_dangling(api: Client) -> None:
    root = await api.ok("POST", CONFIGMAPS, configmap("root"))
    child = await api.ok(
        "POST", CONFIGMAPS, configmap("child") | {"metadata": {"name": "child", "ownerReferences": owned_by(root)}}
    )
    await api.ok(
        "POST",
        CONFIGMAPS,
        configmap("grandchild") | {"metadata": {"name": "grandchild", "ownerReferences": owned_by(child)}},
    )
    await api.ok("DELETE", f"{CONFIGMAPS}/root")
    assert [item["metadata"]["name"] for item in (await api.ok("GET", CONFIGMAPS))["items"]] == []

    parent = await api.ok("POST", CONFIGMAPS, configmap("parent"))
    await api.ok("POST", CONFIGMAPS, configmap("kept") | {"metadata": {"name": "kept", "ownerReferences": owned_by(parent)}})
    await api.ok("DELETE", f"{CONFIGMAPS}/parent", {"propagationPolicy": "Orphan"})
    assert "ownerReferences" not in (await api.ok("GET", f"{CONFIGMAPS}/kept"))["metadata"]

    dangling = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}]
    await api.ok("POST", CONFIGMAPS, configmap("stray") | {"metadata": {"name": "stray", "ownerReferences": dangling}})
    await asyncio.sleep(0.05)
    status, _ = await api.call("GET", f"{CONFIGMAPS}/stray")
    assert status == 404


async def test_foreground_deletion_waits_for_dependents(api: Client) -> None:
    owner = await api.ok("POST", CONFIGMAPS, configmap("owner"))
    held = configmap("held") | {
        "metadata": {"name": "held", "ownerReferences": owned_by(owner), "finalizers": ["example.com/hold"]}
    }
    await api.ok("POST", CONFIGMAPS, held)
    status, marked = await api.call("DELETE", f"{CONFIGMAPS}/owner", {"propagationPolicy": "Foreground"})
    assert (
        status == 202
        and marked["metadata"]["finalizers"] == ["foregroundDeletion"]
        and marked["metadata"]["deletionTimestamp"]
    )
    assert (await api.ok("GET", f"{CONFIGMAPS}/held"))["metadata"]["deletionTimestamp"]
    await api.ok("PATCH", f"{CONFIGMAPS}/held", {"metadata": {"finalizers": None}}, headers=MERGE)
    for path in (f"{CONFIGMAPS}/held", f"{CONFIGMAPS}/owner"):
        assert (await api.call("GET", path))[0] == 404


async def test_finalizers_hold_deletion_until_removed(api: Client) -> None:
    await api.ok("POST", CONFIGMAPS, configmap("fin") | {"metadata": {"name": "fin", "finalizers": ["example.com/x"]}})
    status, marked = await api.call("DELETE", f"{CONFIGMAPS}/fin")
    assert status == 202 and marked["metadata"]["deletionTimestamp"]
    status, answer = await api.call(
        "PATCH", f"{CONFIGMAPS}/fin", {"metadata": {"finalizers": ["example.com/x", "new"]}}, headers=MERGE
    )
    assert (status, answer["reason"]) == (422, "Invalid")
    released = await api.ok("PATCH", f"{CONFIGMAPS}/fin", {"metadata": {"finalizers": []}}, headers=MERGE)
    assert released["metadata"]["finalizers"] == []
    events = await api.watch(CONFIGMAPS, count=2, resourceVersion=marked["metadata"]["resourceVersion"])
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


async def test_crd_registers_its_resource_for_discovery(api: Client) -> None:
    crd = await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert (
        conditions == {"NamesAccepted": "True", "Established": "True"}
        and crd["status"]["acceptedNames"]["listKind"] == "WidgetList"
    )
    resources = {r["name"]: r for r in (await api.ok("GET", "/apis/example.com/v1"))["resources"]}
    assert (
        resources["widgets"]["shortNames"] == ["wdg"]
        and resources["widgets"]["categories"] == ["all"]
        and resources["widgets"]["namespaced"]
    )
    assert resources["widgets/status"]["verbs"] == ["get", "patch", "update"]
    assert (await api.ok("GET", "/apis/example.com"))["preferredVersion"]["version"] == "v1"
    assert "example.com" in [g["name"] for g in (await api.ok("GET", "/apis"))["groups"]]
    aggregated_accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    async with api.session.get("/apis", headers={"Accept": aggregated_accept}) as response:
        assert response.headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        groups = {item["metadata"]["name"]: item for item in (await response.json(content_type=None))["items"]}
    assert [r["resource"] for r in groups["example.com"]["versions"][0]["resources"]] == ["widgets"]
    index = await api.ok("GET", "/openapi/v3")
    document = await api.ok("GET", index["paths"]["apis/example.com/v1"]["serverRelativeURL"])
    [widget] = [
        s
        for s in document["components"]["schemas"].values()
        if {"group": "example.com", "version": "v1", "kind": "Widget"} in s.get("x-kubernetes-group-version-kind", [])
    ]
    assert widget["properties"]["spec"]["properties"]["size"]["description"] == "How big the widget is."


async def test_custom_resources_are_pruned_defaulted_and_validated(api: Client) -> None:
    await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    status, answer = await api.call("POST", WIDGETS, {"metadata": {"name": "bad"}, "spec": {"size": 0}})
    assert (status, answer["reason"]) == (422, "Invalid")
    assert (
        answer["message"]
        == 'Widget.example.com "bad" is invalid: spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1'
    )
    assert answer["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 0: spec.size in body should be greater than or equal to 1",
            "field": "spec.size",
        }
    ]
    status, answer = await api.call(
        "POST", WIDGETS, {"metadata": {"name": "odd"}, "spec": {"size": 1, "shape": "x"}}, fieldValidation="Strict"
    )
    assert (status, answer["message"]) == (
        400,
        'Widget in version "v1" cannot be handled as a Widget: strict decoding error: unknown field "spec.shape"',
    )
    async with api.session.post(WIDGETS, json={"metadata": {"name": "ok"}, "spec": {"size": 1, "shape": "x"}}) as response:
        created = await response.json()
        assert response.headers.getall("Warning") == ['299 - "unknown field \\"spec.shape\\""']
    assert created["spec"] == {"size": 1, "color": "blue"}
    assert (await api.call("POST", WIDGETS, {"metadata": {"name": "dry"}, "spec": {"size": 1}}, dryRun="All"))[0] == 201
    assert (await api.call("GET", f"{WIDGETS}/dry"))[0] == 404


async def test_crd_without_structural_schema_is_rejected(api: Client) -> None:
    crd = json.loads(json.dumps(WIDGET_CRD))
    del crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["type"]
    status, answer = await api.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert (status, answer["reason"]) == (422, "Invalid")
    assert "spec.versions[0].schema.openAPIV3Schema" in answer["message"]
    assert (await api.call("GET", "/apis/example.com/v1"))[0] == 404


async def test_deleting_a_crd_deletes_its_custom_resources(api: Client) -> None:
    await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    await api.ok("POST", WIDGETS, {"metadata": {"name": "w", "finalizers": ["example.com/x"]}, "spec": {"size": 1}})
    await api.ok("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert (await api.call("GET", WIDGETS))[0] == 404
    await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    assert (await api.ok("GET", WIDGETS))["items"] == []


async def test_tables_logs_and_job_deletion_defaults(api: Client) -> None:
    await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    await api.ok("POST", WIDGETS, {"metadata": {"name": "w"}, "spec": {"size": 4}})
    table = await api.ok("GET", WIDGETS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    assert table["kind"] == "Table" and [c["name"] for c in table["columnDefinitions"]][:2] == ["Name", "Size"]
    assert table["rows"][0]["cells"][:2] == ["w", 4]
    await api.ok(
        "POST", "/api/v1/namespaces/default/pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    )
    assert (
        await api.ok("GET", "/api/v1/namespaces/default/pods/p/log", container="c", tailLines="1") == "default/p c line 2\n"
    )
    await api.ok("POST", "/apis/batch/v1/namespaces/default/jobs", {"metadata": {"name": "j"}, "spec": {}})
    async with api.session.delete("/apis/batch/v1/namespaces/default/jobs/j") as response:
        assert "child pods are preserved" in response.headers["Warning"]


async def test_slow_watchers_are_closed_with_gone_and_histories_stay_bounded() -> None:
    store = Store(history_limit=1_000, watch_queue_size=10)
    watch = store.watch("v1/configmaps", namespace="default")
    await store.create("v1/configmaps", configmap("first"), namespace="default")
    assert (await anext(watch))["type"] == "ADDED"
    for n in range(20_000):
        await store.create("v1/configmaps", configmap(f"c{n}"), namespace="default")
    with pytest.raises(ApiError) as gone:
        async for _ in watch:
            pass
    assert gone.value.status == 410
    assert len(store.watches.history) == 1_000
    async with serving(request_history=50) as api:
        for _ in range(150):
            await api.ok("GET", "/api/v1")
            await api.ok("GET", "/api/v1/namespaces")
        assert len(api.server._requests) <= 100 and all(len(reaction._requests) <= 100 for reaction in api.server._payloads)


async def test_dev_cluster_kubeconfig_serves_the_kubernetes_client(tmp_path: Path) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    async with DevCluster(port=0, workdir=tmp_path / "nodes") as cluster:
        cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="kube-system")

        def list_namespaces() -> list[str]:
            client = kubernetes.config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
            return [ns.metadata.name for ns in kubernetes.client.CoreV1Api(client).list_namespace().items]

        assert await asyncio.to_thread(list_namespaces) == ["default", "kube-public", "kube-system"]
