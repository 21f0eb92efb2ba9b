"""Lint and install the kubenas chart with the real Helm library (helm-sdkpy), for
tests/test_helm_chart.py.

helm-sdkpy needs Python >= 3.12, so this runs in the Helm venv (`make tools`), not in the
test's interpreter: `.helm-venv/bin/python tests/helm_check.py JOB.json` prints one JSON
document. JOB.json:

    {"chart": "helm/kubenas", "kubeconfig": "/tmp/kubeconfig", "lint": true,
     "installs": [{"release": "kubenas", "namespace": "kubenas-system",
                   "values_file": "helm/kubenas/ci/all-on-values.yaml", "create_namespace": true}]}

(an install may name its own "kubeconfig": one call can install into several clusters),
and the answer: {"lint": {...} | {"error": "..."}, "installs": [{"release": ..., "namespace": ...,
"result": {...}} | {..., "error": "..."}]}, where a result holds the rendered `manifest`.
Releases live in memory (HELM_DRIVER=memory): the emulated cluster stores no release Secrets.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

if os.environ.get("HELM_DRIVER") != "memory":
    # The Go library reads the environment the process started with (os.environ changes made
    # here do not reach it), so start again with the driver set.
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "HELM_DRIVER": "memory"})

import helm_sdkpy  # noqa: E402
import yaml  # noqa: E402


async def lint(*, chart: str, kubeconfig: str) -> dict[str, Any]:
    config = helm_sdkpy.Configuration(namespace="default", kubeconfig=kubeconfig)
    try:
        return {"result": await helm_sdkpy.Lint(config).run(chart)}
    except helm_sdkpy.HelmError as error:
        return {"error": str(error)}


async def install(*, chart: str, kubeconfig: str, release: str, namespace: str, values_file: str | None = None,
                  values: dict[str, Any] | None = None, create_namespace: bool = False,
                  label: str | None = None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    if values_file:
        merged = yaml.safe_load(Path(values_file).read_text()) or {}
    merged.update(values or {})  # top-level keys of `values` replace the file's
    answer: dict[str, Any] = {"label": label, "release": release, "namespace": namespace}
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    try:
        # wait=False: the emulated cluster runs no Deployments, so nothing would become ready.
        answer["result"] = await helm_sdkpy.Install(config).run(
            release, chart, values=merged or None, wait=False, create_namespace=create_namespace, timeout=60,
        )
    except helm_sdkpy.HelmError as error:
        answer["error"] = str(error)
    return answer


async def main(job: dict[str, Any]) -> dict[str, Any]:
    chart, kubeconfig = job["chart"], job["kubeconfig"]
    report: dict[str, Any] = {"helm_sdkpy": helm_sdkpy.__version__}
    if job.get("lint"):
        report["lint"] = await lint(chart=chart, kubeconfig=kubeconfig)
    # One after another: they share the cluster, and some install into the same namespaces.
    report["installs"] = [
        await install(chart=chart, **{"kubeconfig": kubeconfig, **spec}) for spec in job.get("installs", [])
    ]
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(Path(sys.argv[1]).read_text()))), default=str))
