"""Monitoring: the alert rules (promtool's checks and unit tests), the Grafana dashboard
(shape, queries) and, live, the operator's /metrics scraped by a real Prometheus server
while it runs a search on the local cluster (real Kubernetes): every dashboard query returns data and
the rules evaluate."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import tools
from tests.cluster_harness import (CRDS, NAS, Cluster, OperatorProcess, apply, free_port, search_manifest, stop_process,
                                   wait_for)

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "kubenas-alerts.yaml"
RULE_TESTS = MONITORING / "kubenas-alerts.test.yaml"
DASHBOARD = ROOT / "helm" / "kubenas" / "dashboards" / "kubenas.json"  # canonical; the chart embeds it
DASHBOARD_COPY = MONITORING / "kubenas-dashboard.json"

# The alerts agreed for the project (notes: "Alerts"): expression, `for`, severity.
ALERTS = {
    "KubenasSearchFailed": ('kubenas_search_phase{phase="Failed"} == 1', None, "warning"),
    "KubenasChildrenFailing": ("sum by (namespace, search) (rate(kubenas_children_failed_total[10m])) * 60 > 1",
                               "10m", "warning"),
    "KubenasNoChildFinished": ("kubenas_children_running > 0 and on (namespace, search) "
                               "(time() - kubenas_child_last_finished_timestamp_seconds) > 3600", None, "warning"),
    "KubenasOperatorDown": ('absent(up{job="kubenas-operator"} == 1)', "5m", "critical"),
}
PANELS = {"Reward per child", "Children by phase", "Children finished per minute", "Child duration",
          "Failures by reason", "Policy entropy", "Best reward", "Children created", "Running", "Policy updates",
          "Result delay", "GPU-hours over time", "Cache hits", "GPU-hours saved by the cache"}


def promtool(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([tools.executable("promtool"), *args], capture_output=True, text=True, timeout=60,
                          input=input, cwd=cwd)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(board: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in board["panels"] for target in panel.get("targets", [])]


def substitute(expr: str, *, namespace: str, search: str, window: str) -> str:
    """What Grafana sends for one namespace and one search selected."""
    for name, value in (("$__rate_interval", window), ("$__interval", window), ("$__range", window),
                        ("$namespace", re.escape(namespace)), ("$search", re.escape(search))):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


# -- the alert rules ---------------------------------------------------------------


def test_promtool_checks_the_rules_file():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_the_rules_are_the_agreed_alerts():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [g["name"] for g in groups] == ["kubenas"]
    rules = groups[0]["rules"]
    assert [r["alert"] for r in rules] == list(ALERTS)
    for rule in rules:
        expr, for_, severity = ALERTS[rule["alert"]]
        assert " ".join(rule["expr"].split()) == expr, rule["alert"]
        assert rule.get("for") == for_, rule["alert"]
        assert rule["labels"] == {"severity": severity}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        if "search" in expr:  # per-search alerts name the search
            for text in rule["annotations"].values():
                assert "{{ $labels.namespace }}/{{ $labels.search }}" in text, rule["alert"]


def test_promtool_unit_tests_of_the_rules_pass():
    done = promtool("test", "rules", RULE_TESTS.name, cwd=MONITORING)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_show_every_alert_firing_and_silent():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for alert in ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{alert}: no case where it stays silent"


# -- the dashboard -------------------------------------------------------------------


def test_the_dashboard_copies_are_identical_json():
    assert DASHBOARD_COPY.read_bytes() == DASHBOARD.read_bytes(), \
        f"{DASHBOARD_COPY.relative_to(ROOT)} must be a copy of {DASHBOARD.relative_to(ROOT)}"
    board = dashboard()
    assert board["uid"] == "kubenas"
    assert board["title"] == "kubenas — neural architecture search"
    assert board["schemaVersion"] >= 36


def test_the_dashboard_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "search"}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["query"] == "label_values(kubenas_children_created_total, namespace)"
    assert variables["search"]["query"] == \
        'label_values(kubenas_children_created_total{namespace=~"$namespace"}, search)'
    for name in ("namespace", "search"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["multi"] is True and variables[name]["includeAll"] is True


def test_every_panel_is_described_and_queries_the_selected_searches():
    board = dashboard()
    panels = board["panels"]
    assert PANELS <= {p["title"] for p in panels}
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        title = panel.get("title")
        assert title and panel.get("description"), f"panel {panel['id']}: a title and a description"
        assert panel.get("targets"), f"{title}: no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        for target in panel["targets"]:
            expr = target["expr"]
            assert "kubenas_" in expr, f"{title}: {expr}"
            # Every selector of a kubenas_ metric filters on both variables.
            selectors = re.findall(r"(kubenas_\w+)(\{[^}]*\})?", expr)
            for metric, labels in selectors:
                assert 'namespace=~"$namespace"' in labels and 'search=~"$search"' in labels, f"{title}: {metric}"
            windows = re.findall(r"\[([^\]]+)\]", expr)
            assert all(w == "$__rate_interval" for w in windows), f"{title}: rate windows {windows}"
    # Panels do not overlap on the 24-column grid.
    cells = [(x, y) for p in panels for g in [p["gridPos"]]
             for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])]
    assert len(cells) == len(set(cells)) and max(x for x, _ in cells) < 24


def test_every_dashboard_query_is_valid_promql(tmp_path: Path):
    # promtool parses expressions in rules files: one recording rule per query.
    rules = [{"record": f"kubenas:dashboard_query:{i}",
              "expr": substitute(target["expr"], namespace="ns", search="s", window="1m")}
             for i, (_, target) in enumerate(targets(dashboard()))]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# -- live: the operator's metrics in a real Prometheus ---------------------------------

NS = "monitoring"
SEARCH = "watched"
MAX_TRIALS = 8  # failodd: children 1, 3, 5, 7 fail (InvalidArchitecture), the others succeed; 1 s each


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


class Prometheus:
    """Debian's Prometheus server scraping the operator every second, with the alert rules."""

    def __init__(self, *, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "kubenas-operator", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.command = [tools.executable("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                        "--log.level=warn"]
        self.process: subprocess.Popen | None = None

    def start(self) -> Prometheus:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, what=lambda: f"Prometheus to be ready: {self.log.read_text()[-2000:]}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-2000:]
        try:
            return "Ready" in http_get(self.url + "/-/ready")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)

    def api(self, path: str, **params: str) -> Any:
        answer = json.loads(http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def by_label(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(expr)}

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@dataclass
class Stack:
    cluster: Cluster
    operator: OperatorProcess
    prometheus: Prometheus
    metrics_url: str
    scrape_during: str  # /metrics while children ran
    scrape_after: str  # /metrics once the search was done
    status: dict  # the search's final status


def search_status(cluster: Cluster) -> dict:
    return (cluster.get(f"{NAS.format(ns=NS)}/{SEARCH}") or {}).get("status") or {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tools.executable("prometheus")
    tools.executable("promtool")
    workdir = tmp_path_factory.mktemp("monitoring")
    cluster = Cluster(workdir=workdir).start()  # checks the built kubectl, which applies the CRDs and the search
    operator = prometheus = None
    try:
        cluster.kubectl("apply", "-f", str(CRDS))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
        cluster.namespace(NS)  # Pod Security "restricted", which the search's pods meet
        port = free_port()
        # Prometheus first: its discovery hands over the first targets after ~5 s, while
        # the operator starts (PyTorch loads).
        prometheus = Prometheus(workdir=workdir, target=f"127.0.0.1:{port}").start()
        operator = OperatorProcess(cluster=cluster, namespace=NS, log=workdir / "operator.log",
                                   args=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]).start()
        metrics_url = f"http://127.0.0.1:{port}/metrics"

        def metrics() -> str:
            try:
                return http_get(metrics_url)
            except OSError:
                return ""

        wait_for(metrics, timeout=60, what="the operator's /metrics", operator=operator)
        # Scraped before the search starts: Prometheus sees every series from its first value.
        wait_for(lambda: prometheus.value('up{job="kubenas-operator"}') == 1, timeout=30,
                 what="Prometheus to scrape the operator", operator=operator)
        apply(cluster, search_manifest(SEARCH, namespace=NS, env={"FAKE_MODE": "failodd", "FAKE_SECONDS": "1"},
                                       maxTrials=MAX_TRIALS, maxFailedTrials=MAX_TRIALS))
        # A scrape with children running and some results in: every kind of series present.
        scrape_during = wait_for(
            lambda: (lambda text: text if re.search(r"^kubenas_children_running\{[^}]*\} [1-9]", text, re.M)
                     and "kubenas_child_duration_seconds_count{" in text else "")(metrics()),
            timeout=60, what="a scrape while children run, after one finished", operator=operator, interval=0.1)
        status = wait_for(lambda: (lambda s: s if s.get("phase") == "Succeeded" else None)(search_status(cluster)),
                          timeout=90, what=lambda: f"the search to succeed: {search_status(cluster)}",
                          operator=operator)
        scrape_after = metrics()
        # Prometheus has scraped the final values (and a few samples since, for rate()).
        selector = f'namespace="{NS}", search="{SEARCH}"'
        wait_for(lambda: prometheus.value(f'kubenas_search_phase{{{selector}, phase="Succeeded"}}') == 1
                 and prometheus.value(f"kubenas_children_created_total{{{selector}}}") == MAX_TRIALS
                 and prometheus.value(f'kubenas_children{{{selector}, phase="Running"}}') == 0,
                 timeout=30, what="Prometheus to scrape the final values")
        time.sleep(2.5)  # two more scrapes and rule evaluations
        yield Stack(cluster=cluster, operator=operator, prometheus=prometheus, metrics_url=metrics_url,
                    scrape_during=scrape_during, scrape_after=scrape_after, status=status)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if operator is not None:
            operator.stop()
        cluster.stop()


def test_the_operator_metrics_pass_promtool_lint(stack: Stack):
    for text in (stack.scrape_during, stack.scrape_after):
        done = promtool("check", "metrics", input=text)
        assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), \
            done.stdout + done.stderr


def test_prometheus_scrapes_the_operator(stack: Stack):
    active = stack.prometheus.api("targets")["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in active] == [("kubenas-operator", "up")], active
    assert stack.prometheus.value('up{job="kubenas-operator"}') == 1


def test_the_rules_load_and_evaluate_without_error(stack: Stack):
    groups = stack.prometheus.api("rules")["groups"]
    assert [g["name"] for g in groups] == ["kubenas"]
    rules = groups[0]["rules"]
    assert [r["name"] for r in rules] == list(ALERTS)
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule["lastEvaluation"] > "2000", rule  # evaluated, not just loaded
        # A search that succeeded with an operator that is up: nothing fires, nothing pending.
        assert rule["state"] == "inactive" and rule["alerts"] == [], rule


def test_the_metrics_agree_with_the_search_status(stack: Stack):
    value = stack.prometheus.value
    selector = f'namespace="{NS}", search="{SEARCH}"'
    trials = stack.status["trials"]
    assert trials == {"created": MAX_TRIALS, "running": 0, "succeeded": MAX_TRIALS // 2, "failed": MAX_TRIALS // 2}
    assert value(f"kubenas_children_created_total{{{selector}}}") == MAX_TRIALS
    assert value(f"kubenas_children_succeeded_total{{{selector}}}") == trials["succeeded"]
    failed = stack.prometheus.by_label(f"kubenas_children_failed_total{{{selector}}}", "reason")
    assert failed == {"InvalidArchitecture": trials["failed"]}
    assert value(f"kubenas_children_running{{{selector}}}") == 0
    by_phase = stack.prometheus.by_label(f"kubenas_children{{{selector}}}", "phase")
    assert by_phase == {"Pending": 0, "Running": 0, "Succeeded": trials["succeeded"], "Failed": trials["failed"]}
    assert value(f"max_over_time(kubenas_children_running{{{selector}}}[1h])") > 0
    phases = stack.prometheus.by_label(f"kubenas_search_phase{{{selector}}}", "phase")
    assert phases == {"Pending": 0, "Running": 0, "Suspended": 0, "Retraining": 0, "Succeeded": 1, "Failed": 0}
    assert value(f"kubenas_best_reward{{{selector}}}") == pytest.approx(stack.status["best"]["reward"], abs=1e-6)
    controller = stack.status["controller"]
    assert value(f"kubenas_policy_updates_total{{{selector}}}") == controller["policyUpdates"] == MAX_TRIALS // 2
    assert value(f"kubenas_policy_baseline{{{selector}}}") == pytest.approx(controller["baseline"], abs=1e-4)
    assert value(f"kubenas_policy_entropy{{{selector}}}") == pytest.approx(controller["entropy"], abs=1e-3)
    # Histograms: one reward per success, one duration and delay per child; durations
    # include the fake trainer's 1 s sleep.
    assert value(f"kubenas_child_reward_count{{{selector}}}") == trials["succeeded"]
    assert value(f"kubenas_child_duration_seconds_count{{{selector}}}") == MAX_TRIALS
    assert value(f"kubenas_child_result_delay_seconds_count{{{selector}}}") == MAX_TRIALS
    assert value(f"kubenas_child_duration_seconds_sum{{{selector}}}") >= 1.0 * MAX_TRIALS
    assert value(f"time() - kubenas_child_last_finished_timestamp_seconds{{{selector}}}") < 60


def test_every_dashboard_query_returns_data(stack: Stack):
    empty, not_a_number = [], []
    for panel, target in targets(dashboard()):
        # A 5 m window covers the whole search: rates and quantiles are numbers.
        expr = substitute(target["expr"], namespace=NS, search=SEARCH, window="5m")
        result = stack.prometheus.query(expr)
        if not result:
            empty.append(f"{panel['title']}: {expr}")
        elif any(math.isnan(float(r["value"][1])) for r in result):
            not_a_number.append(f"{panel['title']}: {expr} = {result}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not not_a_number, "queries giving NaN:\n" + "\n".join(not_a_number)


def test_the_dashboard_variables_find_the_search(stack: Stack):
    assert NS in stack.prometheus.api("label/namespace/values", **{"match[]": "kubenas_children_created_total"})
    searches = stack.prometheus.api("label/search/values",
                                    **{"match[]": f'kubenas_children_created_total{{namespace=~"{NS}"}}'})
    assert searches == [SEARCH]
