"""The operator at the paper's scale, on real Kubernetes (kubenas.localcluster: etcd,
kube-apiserver, kube-controller-manager and kube-scheduler built by `make tools`, and the
process kubelet).

Prints, for one `kubenas operator` process authenticated as its ServiceAccount:
- table children: a NAS-Bench-201-style search of 12,800 children (the paper's count)
  with 800 in flight, each child a NASTrial looked up in a table (no Job), so the
  operator's own costs show;
- Job children: N children, each a Job whose pod is a local process that writes its
  result at once ("instant pods"), through the real Job controller, scheduler and kubelet;
and for each: children per second, API requests per child from the API server's own
`apiserver_request_total` (all clients), the operator's share by verb and resource from
the audit log, the operator's CPU per child, its event-loop lag and its peak memory; then
the same children made by a bare client (`bare_client.py`: only the writes a child needs,
same credentials and children in flight) on the same control plane, and the ratio of the
two times.

Everything shares this machine's 2 cores (etcd, the API server, the controllers, the
kubelet, the operator and every child), so the figures are a floor for a real cluster.

    python benchmarks/operator_scale.py [--table-trials 12800] [--parallelism 800]
                                        [--job-trials 2000] [--job-parallelism 800] [--controller-qps N]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import itertools
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bare_client import run_bare  # noqa: E402

from kubenas.localcluster import NodeOptions  # noqa: E402
from kubenas_trainer.architecture import NB201_OPERATIONS, cell_string  # noqa: E402
from tests.cluster_harness import (NAS, OPERATOR_ACCOUNT, Cluster, OperatorProcess,  # noqa: E402
                                   apply, free_port, search_manifest, wait_for)

NAMESPACE = "bench"


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


def request_totals(cluster: Cluster) -> collections.Counter:
    """apiserver_request_total summed by (verb, resource/subresource), every client."""
    totals: collections.Counter = collections.Counter()
    for family in text_string_to_metric_families(cluster.local.request("GET", "/metrics", raw=True)):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
                totals[(labels["verb"], resource or "-")] += sample.value
    return totals


def client_name(user: str) -> str:
    """A client's name in the figures: the operator, each controller, the scheduler, the kubelet."""
    if user == f"system:serviceaccount:{NAMESPACE}:{OPERATOR_ACCOUNT}":
        return "operator"
    if user.startswith("system:serviceaccount:kube-system:"):
        return "kcm:" + user.rsplit(":", 1)[1]
    return {"system:kube-scheduler": "scheduler", "kubenas-admin": "this benchmark (polling)"}.get(
        user, "kubelet" if user.startswith("system:node:") else user)


def audited_requests(cluster: Cluster, since: int) -> tuple[collections.Counter, collections.Counter, int]:
    """From audit line `since` on: requests by client, and the operator's by (verb, resource)."""
    events = cluster.audit_events()
    clients: collections.Counter = collections.Counter()
    operator: collections.Counter = collections.Counter()
    for event in events[since:]:
        client = client_name(event["user"]["username"])
        clients[client] += 1
        if client == "operator" and "objectRef" in event:
            ref = event["objectRef"]
            operator[(event["verb"], ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else ""))] += 1
    return clients, operator, len(events)


def loop_lag(metrics_url: str) -> tuple[dict[float, float], float]:
    """The operator's loop-lag histogram (cumulative count per upper bound) and its maximum."""
    buckets, maximum = {}, 0.0
    for family in text_string_to_metric_families(urllib.request.urlopen(metrics_url, timeout=10).read().decode()):
        for sample in family.samples:
            if sample.name == "kubenas_operator_loop_lag_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == "kubenas_operator_loop_lag_max_seconds":
                maximum = sample.value
    return buckets, maximum


def quantile(buckets: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile q."""
    total = buckets[float("inf")]
    return next(bound for bound, count in sorted(buckets.items()) if count >= q * total)


def torch_floor_mib() -> float:
    """Peak memory of a Python that only imports torch: this machine's PyTorch build
    (PyPI's, with CUDA) costs the operator this much before it does anything."""
    out = subprocess.run([sys.executable, "-c", "import torch, pathlib; print(next(l.split()[1] for l in "
                          "pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM:')))"],
                         capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


def run_bare_and_compare(cluster: Cluster, operator: OperatorProcess, document: dict, *, seconds: float) -> None:
    """The same children by a bare client, on the same control plane, right after."""
    spec = document["spec"]
    name = "bare-" + document["metadata"]["name"]
    before = request_totals(cluster)
    bare = asyncio.run(run_bare(kubeconfig=operator.kubeconfig, namespace=NAMESPACE, name=name, search=document,
                                count=spec["maxTrials"], parallelism=spec["parallelism"]))
    everyone = request_totals(cluster) - before
    children = spec["maxTrials"]
    print(f"  bare client (only the writes a child needs, {spec['parallelism']} in flight): {bare:.1f} s = "
          f"{children / bare:,.1f} children/s; {sum(everyone.values()) / children:.2f} API requests per child, "
          f"every client")
    print(f"  ratio, operator time / bare client time: {seconds / bare:.2f}")


def run_search(cluster: Cluster, operator: OperatorProcess, document: dict, *, timeout: float) -> float:
    name = document["metadata"]["name"]
    path = f"{NAS.format(ns=NAMESPACE)}/{name}"
    before, audit_mark = request_totals(cluster), len(cluster.audit_events())
    cpu_before = operator_cpu_seconds(operator)
    lag_before, _ = loop_lag(operator.metrics_url)
    start = time.monotonic()
    apply(cluster, document)
    status = wait_for(lambda: ((cluster.get(path) or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")
                      and cluster.get(path)["status"], timeout=timeout, what=f"{name} to finish", operator=operator,
                      interval=1.0)
    seconds = time.monotonic() - start
    children = status["trials"]["succeeded"] + status["trials"]["failed"]
    after = request_totals(cluster)
    everyone = after - before
    clients, mine, _ = audited_requests(cluster, audit_mark)
    cpu = operator_cpu_seconds(operator) - cpu_before
    print(f"{name}: {children:,} children ({status['trials']['failed']} failed) in {seconds:.1f} s = "
          f"{children / seconds:,.1f} children/s; {status['controller']['policyUpdates']:,} policy updates; "
          f"operator CPU {cpu / children * 1000:.1f} ms per child; operator peak memory so far "
          f"{peak_rss_mib(operator.process.pid):.0f} MiB")
    print(f"  API requests per child, every client (apiserver_request_total): {sum(everyone.values()) / children:.2f}")
    for (verb, resource), count in everyone.most_common(12):
        print(f"    {verb:>7} {resource:<40} {count / children:6.2f}")
    lag_after, lag_max = loop_lag(operator.metrics_url)
    lag = {bound: lag_after[bound] - lag_before.get(bound, 0) for bound in lag_after}
    print(f"  operator event-loop lag (50 ms probes): p50 <= {quantile(lag, 0.5) * 1000:g} ms, "
          f"p99 <= {quantile(lag, 0.99) * 1000:g} ms (histogram bounds), max since start {lag_max * 1000:.0f} ms")
    print("  by client (audit log):", ", ".join(f"{name} {count / children:.2f}" for name, count in clients.most_common()))
    print(f"  the operator's own requests per child (audit log): {sum(mine.values()) / children:.2f}")
    for (verb, resource), count in mine.most_common(12):
        print(f"    {verb:>7} {resource:<40} {count / children:6.2f}")
    return seconds


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).read()
        return True
    except OSError:
        return False


def operator_cpu_seconds(operator: OperatorProcess) -> float:
    fields = Path(f"/proc/{operator.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table-trials", type=int, default=12800)
    parser.add_argument("--parallelism", type=int, default=800)
    parser.add_argument("--job-trials", type=int, default=2000)
    parser.add_argument("--job-parallelism", type=int, default=800)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare client's runs")
    parser.add_argument("--controller-qps", type=int, default=None,
                        help="kube-controller-manager's --kube-api-qps (burst: twice it); Kubernetes' default is 20, "
                             "which bounds the Job controller's requests (about 6 per child)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubenas-scale-") as scratch:
        workdir = Path(scratch)
        started = time.monotonic()
        node = NodeOptions(cpu="2000", memory="1Ti", pods=max(250, 2 * args.job_trials + 100))  # finished pods stay until GC
        qps = [f"--kube-api-qps={args.controller_qps}", f"--kube-api-burst={2 * args.controller_qps}"] \
            if args.controller_qps else []
        cluster = Cluster(workdir=workdir / "cluster", node=node, controller_manager_args=qps).start()
        print(f"control plane ready in {time.monotonic() - started:.1f} s; kube-controller-manager "
              f"--kube-api-qps={args.controller_qps or '20 (default)'}")
        cluster.install_crds()
        cluster.namespace(NAMESPACE)
        port = free_port()
        operator = OperatorProcess(cluster=cluster, namespace=NAMESPACE, log=workdir / "operator.log",
                                   args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                                         "--tabular-dir", str(workdir)]).start()
        operator.metrics_url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: _answers(operator.metrics_url), timeout=60, what="the operator's metrics", operator=operator)
        try:
            if args.table_trials:
                table = search_manifest("table", namespace=NAMESPACE, maxTrials=args.table_trials,
                                        parallelism=args.parallelism, controller={"batchSize": 8, "learningRate": 0.01})
                table["spec"]["searchSpace"] = {"type": "NB201Cell"}
                table["spec"]["trial"] = {"kind": "Tabular", "tabular": {"path": write_table(workdir / "t.csv").name}}
                seconds = run_search(cluster, operator, table, timeout=3600)
                if not args.no_bare:
                    run_bare_and_compare(cluster, operator, table, seconds=seconds)
            if args.job_trials:
                jobs = search_manifest("jobs", namespace=NAMESPACE, maxTrials=args.job_trials,
                                       parallelism=args.job_parallelism, controller={"batchSize": 8})
                seconds = run_search(cluster, operator, jobs, timeout=3600)
                if not args.no_bare:
                    run_bare_and_compare(cluster, operator, jobs, seconds=seconds)
            peak, floor = peak_rss_mib(operator.process.pid), torch_floor_mib()
            print(f"operator peak memory (VmHWM): {peak:.0f} MiB; `import torch` alone: {floor:.0f} MiB; "
                  f"the operator above that: {peak - floor:.0f} MiB")
        finally:
            operator.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
