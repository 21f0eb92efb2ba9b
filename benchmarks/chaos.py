"""The chaos suite: one Job search on real Kubernetes while the operator, the API server,
etcd, the controller manager and the network between the operator and the API server
fail, in a seeded order; then the checks that nothing was lost, doubled or miscounted.

Faults (the full suite; `tests/test_chaos.py` runs a smaller schedule in `make test`):
- the operator SIGKILLed 5 times;
- kube-apiserver killed and restarted twice; etcd killed with -9 and restarted once;
  kube-controller-manager restarted once;
- through toxiproxy (a real fault proxy, built by `make tools`) between the operator and
  the API server: 300 ms of latency for 20 s, connections reset for 5 s, a 30 s blackhole;
- watch expiry all along: the API server runs without its watch cache and compacts etcd
  every 5 s, so a watch resumed after any of the above meets `410 Gone` and kopf re-lists.

Checks: exactly N NASTrials with indices 0..N-1; each Job created once (the audit log's
201s) with one pod; every child's verdict recorded; policy updates = floor(results/m),
and the checkpoint restores at that version; the status counters equal the NASTrials;
the last operator's memory back near the first one's before the faults.

    python benchmarks/chaos.py [--seed 7] [--children 60] [--in-flight 12] [--trainer-seconds 25]
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubenas import spec as specs  # noqa: E402
from kubenas.localcluster import binaries  # noqa: E402
from kubenas.operator.driver import ticket_of  # noqa: E402
from kubenas.search import Search  # noqa: E402
from tests.cluster_harness import (NAS, OPERATOR_ACCOUNT, TRIALS, Cluster, OperatorProcess, apply,  # noqa: E402
                                   free_port, search_manifest, wait_for)

NAMESPACE = "chaos"
WATCH_EXPIRY = ["--watch-cache=false", "--etcd-compaction-interval=5s"]


@dataclass
class Schedule:
    """What to break: counts of each fault and the network faults' durations (s)."""

    operator_kills: int = 5
    apiserver_restarts: int = 2
    etcd_kills: int = 1
    controller_manager_restarts: int = 1
    latency_seconds: float = 20.0
    reset_seconds: float = 5.0
    blackhole_seconds: float = 30.0
    gap: tuple[float, float] = (2.0, 6.0)  # seconds between faults, drawn from the seed


@dataclass
class Outcome:
    fault: str
    at: float  # seconds since the search was applied
    outcome: str


class Toxiproxy:
    """toxiproxy-server and one proxy, `apiserver`, in front of the API server."""

    def __init__(self, *, upstream: str, log: Path) -> None:
        self.port = free_port()
        self.listen = free_port()
        self.process = subprocess.Popen([binaries.find_toxiproxy(), "-host", "127.0.0.1", "-port", str(self.port)],
                                        stdout=log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self._answers(), timeout=30, what="toxiproxy-server")
        self.call("POST", "/proxies", {"name": "apiserver", "listen": f"127.0.0.1:{self.listen}", "upstream": upstream})

    def _answers(self) -> bool:
        try:
            return self.call("GET", "/version") is not None
        except OSError:
            return False

    def call(self, method: str, path: str, body: dict | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read().decode()
        return json.loads(text) if text.strip().startswith(("{", "[")) else text

    def toxic(self, name: str, kind: str, seconds: float, **attributes: float) -> None:
        """A toxic on both directions for `seconds`, then removed."""
        for stream in ("downstream", "upstream"):
            self.call("POST", "/proxies/apiserver/toxics",
                      {"name": f"{name}-{stream}", "type": kind, "stream": stream, "attributes": attributes})
        time.sleep(seconds)
        for stream in ("downstream", "upstream"):
            self.call("DELETE", f"/proxies/apiserver/toxics/{name}-{stream}")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Run:
    cluster: Cluster
    operator: OperatorProcess
    proxy: Toxiproxy
    name: str
    started: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)

    def trials(self) -> list[dict]:
        return self.cluster.items(TRIALS.format(ns=NAMESPACE), labelSelector=f"kubenas.io/search={self.name}")

    def done(self) -> int:
        return sum((t.get("status") or {}).get("phase") in ("Succeeded", "Failed") for t in self.trials())

    def record(self, fault: str, action: Callable[[], str]) -> None:
        at = time.monotonic() - self.started
        before = self.done()
        outcome = action()
        self.outcomes.append(Outcome(fault, at, f"{outcome}; {before} children done before"))


def _ready(cluster: Cluster) -> bool:
    try:
        code, _, text = cluster.exchange("GET", "/readyz")
    except OSError:  # not listening yet
        return False
    return code == 200 and text == "ok"


def faults(run: Run, schedule: Schedule) -> list[tuple[str, Callable[[], str]]]:
    cluster, local = run.cluster, run.cluster.local

    def kill_operator() -> str:
        run.operator.kill()
        run.operator.start()
        return "SIGKILLed and started again"

    def restart_apiserver() -> str:
        started = time.monotonic()
        local.restart("kube-apiserver")
        wait_for(lambda: _ready(cluster), timeout=120, what="kube-apiserver /readyz after its restart")
        return f"killed; ready again after {time.monotonic() - started:.1f} s"

    def kill_etcd() -> str:
        started = time.monotonic()
        local.components["etcd"].kill(signal.SIGKILL)
        time.sleep(1.0)
        local.components["etcd"].start()
        wait_for(lambda: _ready(cluster), timeout=120, what="the API server ready after etcd's restart")
        return f"kill -9, restarted; API ready after {time.monotonic() - started:.1f} s"

    def restart_controller_manager() -> str:
        local.restart("kube-controller-manager")
        return "killed and started again"

    def latency() -> str:
        run.proxy.toxic("latency", "latency", schedule.latency_seconds, latency=300)
        return f"300 ms each way for {schedule.latency_seconds:g} s"

    def reset() -> str:
        run.proxy.toxic("reset", "reset_peer", schedule.reset_seconds, timeout=0)
        return f"every connection reset for {schedule.reset_seconds:g} s"

    def blackhole() -> str:
        run.proxy.toxic("blackhole", "timeout", schedule.blackhole_seconds, timeout=0)
        return f"no byte through for {schedule.blackhole_seconds:g} s"

    return ([("operator SIGKILL", kill_operator)] * schedule.operator_kills
            + [("kube-apiserver restart", restart_apiserver)] * schedule.apiserver_restarts
            + [("etcd kill -9", kill_etcd)] * schedule.etcd_kills
            + [("kube-controller-manager restart", restart_controller_manager)] * schedule.controller_manager_restarts
            + ([("network: latency", latency)] if schedule.latency_seconds else [])
            + ([("network: resets", reset)] if schedule.reset_seconds else [])
            + ([("network: blackhole", blackhole)] if schedule.blackhole_seconds else []))


def check(run: Run, *, children: int, batch: int, document: dict) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for each of the suite's checks."""
    cluster, results = run.cluster, []
    found = cluster.get(f"{NAS.format(ns=NAMESPACE)}/{run.name}")
    status = found.get("status") or {}
    trials = run.trials()
    indices = sorted(t["spec"]["index"] for t in trials)
    results.append(("NASTrials: exactly indices 0..N-1", indices == list(range(children)),
                    f"{len(trials)} NASTrials"))
    user = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_ACCOUNT}"
    creates = collections.Counter(
        e["objectRef"]["name"] for e in cluster.audit_events()
        if e["user"]["username"] == user and e["verb"] == "create" and (e.get("objectRef") or {}).get("resource") == "jobs"
        and (e.get("responseStatus") or {}).get("code") == 201)
    results.append(("each Job created once", len(creates) == children and set(creates.values()) == {1},
                    f"{len(creates)} Jobs, {sum(creates.values())} creates"))
    pods = collections.Counter(p["metadata"]["labels"].get("job-name") for p in cluster.items(
        f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=f"kubenas.io/search={run.name}"))
    results.append(("one pod per child (none ran twice)", len(pods) == children and set(pods.values()) == {1},
                    f"{sum(pods.values())} pods"))
    verdicts = [t for t in trials if (t.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                and isinstance(t["status"].get("result"), dict)]
    results.append(("every verdict recorded", len(verdicts) == children, f"{len(verdicts)} verdicts"))
    counters = status.get("trials") or {}
    succeeded = sum(t["status"]["phase"] == "Succeeded" for t in verdicts)
    results.append(("status counters equal the NASTrials",
                    counters == {"created": children, "running": 0, "succeeded": succeeded,
                                 "failed": len(verdicts) - succeeded}, str(counters)))
    updates = (status.get("controller") or {}).get("policyUpdates")
    results.append(("policy updates = floor(results / m)", updates == children // batch,
                    f"{updates} updates, m = {batch}"))
    policy = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{run.name}-policy")
    spec = specs.parse_manifest(document).spec
    restored = Search.restore(spec, base64.b64decode(policy["binaryData"]["checkpoint.pt"]),
                              in_flight={t["spec"]["index"]: ticket_of(t) for t in trials})
    results.append(("checkpoint restores at that version", restored.controller.version == updates,
                    f"version {restored.controller.version}, {restored.counters.succeeded} results"))
    return results


def run_suite(*, seed: int, children: int, in_flight: int, trainer_seconds: float, schedule: Schedule,
              workdir: Path, say: Callable[[str], None] = print) -> tuple[list[Outcome], list[tuple[str, bool, str]], dict]:
    cluster = Cluster(workdir=workdir / "cluster", apiserver_args=WATCH_EXPIRY).start()
    proxy = None
    operator = None
    try:
        cluster.install_crds()
        cluster.namespace(NAMESPACE)
        proxy = Toxiproxy(upstream=cluster.url.removeprefix("https://"), log=workdir / "toxiproxy.log")
        kubeconfig = cluster.operator_kubeconfig(NAMESPACE)
        config = yaml.safe_load(kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.listen}"
        proxied = workdir / "operator-through-toxiproxy.kubeconfig"
        proxied.write_text(yaml.safe_dump(config))
        operator = OperatorProcess(cluster=cluster, namespace=NAMESPACE, log=workdir / "operator.log",
                                   kubeconfig=proxied).start()
        batch = 4
        document = search_manifest("chaos", namespace=NAMESPACE, env={"FAKE_SECONDS": str(trainer_seconds)},
                                   maxTrials=children, parallelism=in_flight, controller={"batchSize": batch},
                                   seed=seed)
        run = Run(cluster=cluster, operator=operator, proxy=proxy, name="chaos")
        apply(cluster, document)
        wait_for(lambda: run.done() >= min(3, children), timeout=120, what="the first children", operator=operator)
        memory_before = rss_mib(operator.process.pid)
        random_ = random.Random(seed)
        plan = faults(run, schedule)
        random_.shuffle(plan)
        say(f"chaos: seed {seed}, {len(plan)} faults in this order: " + ", ".join(name for name, _ in plan))
        for name, action in plan:
            time.sleep(random_.uniform(*schedule.gap))
            run.record(name, action)
            say(f"  {run.outcomes[-1].at:6.1f} s  {name}: {run.outcomes[-1].outcome}")
        wait_for(lambda: ((cluster.get(f"{NAS.format(ns=NAMESPACE)}/chaos") or {}).get("status") or {})
                 .get("phase") == "Succeeded", timeout=600, what="the search to succeed after the faults",
                 operator=operator, interval=1.0)
        elapsed = time.monotonic() - run.started
        time.sleep(2.0)
        user = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_ACCOUNT}"
        lists = collections.Counter(e["objectRef"]["resource"] for e in cluster.audit_events()
                                    if e["user"]["username"] == user and e["verb"] == "list" and "objectRef" in e
                                    and e["objectRef"]["resource"] in ("neuralarchitecturesearches", "jobs", "pods"))
        gone = sum(1 for e in cluster.audit_events() if e["user"]["username"] == user and e["verb"] == "watch"
                   and (e.get("responseStatus") or {}).get("code") == 410)
        figures = {"seconds": elapsed, "memory_before_mib": memory_before,
                   "memory_after_mib": rss_mib(operator.process.pid),
                   "relists": sum(lists.values()) - len(lists), "gone": gone}
        results = check(run, children=children, batch=batch, document=document)
        results.append(("operator memory back near its level before the faults",
                        figures["memory_after_mib"] <= figures["memory_before_mib"] + 100,
                        f"{figures['memory_before_mib']:.0f} MiB before, {figures['memory_after_mib']:.0f} MiB after"))
        return run.outcomes, results, figures
    finally:
        if operator is not None:
            operator.stop()
        if proxy is not None:
            proxy.stop()
        cluster.stop()


def print_report(outcomes: list[Outcome], results: list[tuple[str, bool, str]], figures: dict) -> bool:
    print("\n| fault | at (s) | outcome |\n|---|---|---|")
    for item in outcomes:
        print(f"| {item.fault} | {item.at:.1f} | {item.outcome} |")
    print("\n| check | passed | detail |\n|---|---|---|")
    for name, passed, detail in results:
        print(f"| {name} | {'yes' if passed else 'NO'} | {detail} |")
    print(f"\nsearch finished {figures['seconds']:.0f} s after it was applied; the operator's re-lists of its "
          f"watched resources (lists after the first of each): {figures['relists']}; its watches answered "
          f"410 Gone: {figures['gone']}")
    return all(passed for _, passed, _ in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--children", type=int, default=60)
    parser.add_argument("--in-flight", type=int, default=12)
    parser.add_argument("--trainer-seconds", type=float, default=25.0,
                        help="each child's run: long enough that the faults fall inside the search")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubenas-chaos-") as scratch:
        outcomes, results, figures = run_suite(seed=args.seed, children=args.children, in_flight=args.in_flight,
                                               trainer_seconds=args.trainer_seconds, schedule=Schedule(),
                                               workdir=Path(scratch))
    return 0 if print_report(outcomes, results, figures) else 1


if __name__ == "__main__":
    sys.exit(main())
