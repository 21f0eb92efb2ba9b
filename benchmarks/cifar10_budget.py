"""The GPU-hours accounting of examples/cifar10-paper.yaml, scaled down, on the local
cluster (real Kubernetes, the process kubelet: its node offers 8 nvidia.com/gpu).

The paper's spec as the file has it (space, controller, reward, maxTrials 12,800 and
each child's resources: 1 nvidia.com/gpu, 4 CPUs requested), scaled down: a
`spec.budget.gpuHours` of `--gpu-hours` ends it after a few children (BudgetExhausted),
`--parallelism` at a time, each child the real trainer for `--epochs` on CIFAR-shaped
synthetic data (32×32×3, 10 classes; CIFAR-10 itself is not on this machine) on the CPU;
status.usage then shows what they cost and the expectation for the other children.
The node's GPUs are a count, not devices: the figures are what the operator accounts
for children that *request* a GPU, from their containers' run time here; they say
nothing of how long a real 50-epoch CIFAR-10 child takes on a GPU.

    .venv/bin/python benchmarks/cifar10_budget.py [--gpu-hours 0.02] [--parallelism 4]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.cluster_harness import (NAS, RESTRICTED_CONTAINER, RESTRICTED_POD, TRIALS, Cluster,  # noqa: E402
                                   OperatorProcess, apply, wait_for)

NAMESPACE = "budget-bench"


def scaled_down(*, gpu_hours: float, parallelism: int, epochs: int) -> dict:
    document = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "cifar10-paper.yaml").read_text()))
    document["metadata"]["namespace"] = NAMESPACE
    spec = document["spec"]
    spec.update(parallelism=parallelism, budget={"gpuHours": gpu_hours})
    pod = spec["trial"]["template"]["spec"]
    pod.pop("volumes")  # no CIFAR-10 volume: synthetic data
    pod["securityContext"] = RESTRICTED_POD
    trainer = pod["containers"][0]
    trainer.pop("volumeMounts")
    trainer["securityContext"] = RESTRICTED_CONTAINER
    trainer["args"] = ["--dataset", "synthetic", "--synthetic-samples", "1024", "--epochs", str(epochs),
                       "--device", "cpu", "--threads", "1"]
    return document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-hours", type=float, default=0.02)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    document = scaled_down(gpu_hours=args.gpu_hours, parallelism=args.parallelism, epochs=args.epochs)
    name = document["metadata"]["name"]
    with tempfile.TemporaryDirectory() as workdir:
        cluster = Cluster(workdir=Path(workdir)).start()
        operator = None
        try:
            cluster.install_crds()
            cluster.namespace(NAMESPACE)
            operator = OperatorProcess(cluster=cluster, namespace=NAMESPACE, log=Path(workdir) / "operator.log").start()
            started = time.monotonic()
            apply(cluster, document)
            path = f"{NAS.format(ns=NAMESPACE)}/{name}"
            wait_for(lambda: (cluster.get(path).get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                     timeout=1800, what="the search to end", operator=operator)
            seconds = time.monotonic() - started
            status = cluster.get(path)["status"]
            trials = cluster.items(TRIALS.format(ns=NAMESPACE), labelSelector=f"kubenas.io/search={name}")
        finally:
            if operator is not None:
                operator.stop()
            cluster.stop()
    per_child = sorted(t["status"].get("gpuSeconds", 0) for t in trials)
    print(json.dumps({"phase": status["phase"], "reason": status["reason"], "trials": status["trials"],
                      "usage": status["usage"], "childGpuSeconds": per_child, "wallSeconds": round(seconds)},
                     indent=2))
    usage = status["usage"]
    print(f"{name} scaled down: {len(trials)} of 12,800 children in {seconds:.0f} s ({status['reason']}); status.usage: "
          f"{usage['gpuHours']:.4f} GPU-hours, {usage['cpuHours']:.4f} CPU-hours; expected for the other "
          f"{12800 - len(trials):,} children at this mean: {usage['expectedRemainingGpuHours']:.1f} GPU-hours")
    return 0 if (status["phase"], status["reason"]) == ("Succeeded", "BudgetExhausted") else 1


if __name__ == "__main__":
    sys.exit(main())
