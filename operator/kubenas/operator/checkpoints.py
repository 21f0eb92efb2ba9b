"""The policy checkpoint lives in the cluster: a ConfigMap (binaryData) owned by the
search, written after every policy update. Deleting the search deletes it."""

from __future__ import annotations

import base64

from kubenas.operator import names
from kubenas.operator.kube import ApiError, KubeClient

KEY = "checkpoint.pt"


def owned_by(obj: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


async def read_checkpoint(client: KubeClient, *, search: dict) -> bytes | None:
    """The search's checkpoint, or None (a new search, or one left by an earlier search
    of the same name that garbage collection has not removed yet)."""
    meta = search["metadata"]
    config_map = await client.get(names.CONFIGMAPS, namespace=meta["namespace"], name=names.checkpoint_name(meta["name"]))
    if config_map is None or not owned_by(config_map, meta["uid"]):
        return None
    encoded = (config_map.get("binaryData") or {}).get(KEY)
    return base64.b64decode(encoded) if encoded else None


async def write_checkpoint(client: KubeClient, *, search: dict, data: bytes, policy_version: int, told: int) -> None:
    meta = search["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.checkpoint_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {**names.search_labels(meta["name"]), names.LABEL_COMPONENT: "policy-checkpoint"},
            "ownerReferences": [names.owner_reference(search)],
        },
        "data": {"policyVersion": str(policy_version), "resultsTold": str(told)},
        "binaryData": {KEY: base64.b64encode(data).decode()},
    }
    # A patch first: every write after a search's first finds the ConfigMap (ours, or a
    # stale one of a deleted namesake, which the patch re-owns), so one request, not two,
    # and the checkpoint's bytes are sent once.
    try:
        await client.patch(names.CONFIGMAPS, namespace=meta["namespace"], name=body["metadata"]["name"], patch=body)
    except ApiError as error:
        if error.status != 404:
            raise
        await client.create(names.CONFIGMAPS, namespace=meta["namespace"], body=body)
