"""The operator at the paper's scale, on the emulated cluster (`kubenas.testing`).

Prints, for one `kubenas operator` process:
- table children: a NAS-Bench-201-style search of 12,800 children (the paper's count)
  with 800 in flight, each child a NASTrial looked up in a table (no Job), so the
  operator's own costs show: children recorded per second, status writes, peak memory;
- Job children: N children, each a Job whose pod is a local process (a stand-in
  trainer that sleeps), through the Job controller and kubelet.

The emulated API server shares this machine's cores with the operator and every
child process, so the figures are a floor for a real cluster, not a forecast.

    python benchmarks/operator_scale.py [--table-trials 12800] [--parallelism 800] [--job-trials 300]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubenas_trainer.architecture import NB201_OPERATIONS, cell_string  # noqa: E402
from tests.cluster_harness import (CRDS, NAS, ClusterThread, OperatorProcess, apply,  # noqa: E402
                                   search_manifest, wait_for)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_table(path: Path) -> Path:
    rows = ["cellstr,cifar10-val"] + [
        f"{cell_string(edges)},{40 + 10 * edges.count('nor_conv_3x3') + edges.count('skip_connect'):.2f}"
        for edges in itertools.product(NB201_OPERATIONS, repeat=6)]
    path.write_text("\n".join(rows) + "\n")
    return path


def run_search(cluster: ClusterThread, operator: OperatorProcess, document: dict, *, timeout: float) -> tuple[float, dict]:
    name = document["metadata"]["name"]
    path = f"{NAS.format(ns='bench')}/{name}"
    start = time.monotonic()
    apply(cluster, document)
    status = wait_for(lambda: ((cluster.get(path) or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")
                      and cluster.get(path)["status"], timeout=timeout, what=f"{name} to finish", operator=operator,
                      interval=1.0)
    return time.monotonic() - start, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table-trials", type=int, default=12800)
    parser.add_argument("--parallelism", type=int, default=800)
    parser.add_argument("--job-trials", type=int, default=300)
    parser.add_argument("--job-parallelism", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubenas-scale-") as scratch:
        workdir = Path(scratch)
        cluster = ClusterThread(workdir=workdir).start()
        cluster.kubectl("apply", "-f", str(CRDS))
        apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        operator = OperatorProcess(cluster=cluster, namespace="bench", log=workdir / "operator.log").start()
        try:
            table = search_manifest("table", namespace="bench", maxTrials=args.table_trials,
                                    parallelism=args.parallelism, controller={"batchSize": 8, "learningRate": 0.01})
            table["spec"]["searchSpace"] = {"type": "NB201Cell"}
            table["spec"]["trial"] = {"kind": "Tabular", "tabular": {"path": str(write_table(workdir / "t.csv"))}}
            seconds, status = run_search(cluster, operator, table, timeout=3600)
            print(f"table children: {status['trials']['succeeded']:,} recorded in {seconds:.1f} s "
                  f"({status['trials']['succeeded'] / seconds:,.0f}/s), parallelism {args.parallelism}, "
                  f"{status['controller']['policyUpdates']:,} policy updates (each checkpointed), "
                  f"best reward {status['best']['reward']:.4f}")
            jobs = search_manifest("jobs", namespace="bench", env={"FAKE_SECONDS": "2"}, maxTrials=args.job_trials,
                                   parallelism=args.job_parallelism, controller={"batchSize": 8})
            seconds, status = run_search(cluster, operator, jobs, timeout=3600)
            print(f"Job children: {status['trials']['succeeded']:,} (2 s each) in {seconds:.1f} s "
                  f"({status['trials']['succeeded'] / seconds:.1f}/s), parallelism {args.job_parallelism}; "
                  f"failed {status['trials']['failed']}")
            print(f"operator peak memory (VmHWM): {peak_rss_mib(operator.process.pid):.0f} MiB")
        finally:
            operator.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
