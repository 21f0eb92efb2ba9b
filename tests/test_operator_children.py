"""The operator's pure parts: child objects, result reading, names, status."""

import json

import pytest

from kubenas import spec as specs
from kubenas.operator import children, names, results
from kubenas.operator.driver import is_milestone
from kubenas.operator.status import conditions_for
from kubenas.search import Search
from tests.helpers import manifest

SEARCH = {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
          "metadata": {"name": "digits", "namespace": "team-a", "uid": "search-uid"}}


def _child(**trial_overrides):
    doc = manifest({"maxTrials": 4})
    doc["spec"]["trial"].update(trial_overrides)
    spec = specs.parse_manifest(doc).spec
    ticket = Search(spec).ask()
    trial = children.trial_object(search=SEARCH, ticket=ticket)
    trial["metadata"]["uid"] = "trial-uid"
    return spec, ticket, trial


def test_trial_records_the_sample_and_is_owned_by_the_search():
    _, ticket, trial = _child()
    assert trial["metadata"]["name"] == "digits-0"
    assert trial["metadata"]["ownerReferences"][0]["uid"] == "search-uid"
    assert trial["metadata"]["labels"][names.LABEL_TRIAL_INDEX] == "0"
    assert trial["spec"]["architecture"] == ticket.architecture
    assert trial["spec"]["actions"] == ticket.actions
    assert trial["spec"]["logProb"] == ticket.log_prob


def test_job_carries_architecture_limits_and_conventions():
    spec, ticket, trial = _child(backoffLimit=2, activeDeadlineSeconds=60, ttlSecondsAfterFinished=30)
    job = children.job_object(trial=trial, ticket=ticket, spec=spec.trial)
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "kubenas.io/v1alpha1", "kind": "NASTrial", "name": "digits-0", "uid": "trial-uid",
        "controller": True, "blockOwnerDeletion": True}]
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["ttlSecondsAfterFinished"] == 30
    pod = job["spec"]["template"]["spec"]
    # The pod's deadline, from its start on a node: waiting for quota or a node spends none of it.
    assert pod["activeDeadlineSeconds"] == 60 and "activeDeadlineSeconds" not in job["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    trainer = pod["containers"][0]
    assert trainer["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert json.loads(env["KUBENAS_ARCHITECTURE"]) == ticket.architecture
    assert env["KUBENAS_RESULT_FILE"] == "/dev/termination-log"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["kubenas.io/search"] == "digits" and labels["app.kubernetes.io/managed-by"] == "kubenas"


def test_resources_from_the_template_reach_the_trainer():
    doc = manifest({"maxTrials": 4})
    doc["spec"]["trial"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    spec = specs.parse_manifest(doc).spec
    ticket = Search(spec).ask()
    trial = children.trial_object(search=SEARCH, ticket=ticket)
    trial["metadata"]["uid"] = "u"
    job = children.job_object(trial=trial, ticket=ticket, spec=spec.trial)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}


@pytest.mark.parametrize("field, value, named", [
    ("ports", [{"containerPort": "http"}], "V1ContainerPort.containerPort"),
    ("volumeMounts", [{"mountPath": "/data"}], "V1VolumeMount.name"),
])
def test_malformed_template_is_caught_before_the_api(field, value, named):
    doc = manifest({"maxTrials": 4})
    doc["spec"]["trial"]["template"]["spec"]["containers"][0][field] = value
    spec = specs.parse_manifest(doc).spec
    with pytest.raises(children.TemplateError, match=named):
        children.check_template(spec.trial)


def test_long_search_names_keep_child_names_within_a_label_value():
    name = "a" * 63
    child = names.trial_name(name, 12799)
    assert len(child) + 6 <= 63  # a pod adds "-xxxxx"
    assert names.trial_name(name, 1) != names.trial_name("a" * 62 + "b", 1)


def _job(condition=None, reason=None, deadline=None):
    job = {"metadata": {"name": "digits-0"}, "spec": {"activeDeadlineSeconds": deadline}, "status": {}}
    if condition:
        job["status"]["conditions"] = [{"type": condition, "status": "True", "reason": reason, "message": "m"}]
    return job


def _pod(name, *, exit_code, message="", reason=None, finished="2026-01-01T00:00:00Z"):
    terminated = {"exitCode": exit_code, "message": message, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                  "finishedAt": finished}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}


GOOD = json.dumps({"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Succeeded",
                   "validationAccuracy": [0.5, 0.9]})


def test_result_from_the_termination_message():
    result, code = results.job_result(_job("Complete"), [_pod("p", exit_code=0, message=GOOD)])
    assert result["status"] == "Succeeded" and result["validationAccuracy"] == [0.5, 0.9] and code == 0


@pytest.mark.parametrize("job, pods, reason", [
    (_job("Failed", "DeadlineExceeded", 30), [], "DeadlineExceeded"),
    (_job("Failed", "BackoffLimitExceeded"), [_pod("p", exit_code=3, message="Traceback\nboom")], "Error"),
    (_job("Failed", "BackoffLimitExceeded"), [_pod("p", exit_code=137, reason="OOMKilled")], "OOMKilled"),
    (_job("Complete"), [_pod("p", exit_code=0, message="")], "MissingResult"),
    (_job("Complete"), [_pod("p", exit_code=0, message="{not json")], "MalformedResult"),
    (_job("Failed", "BackoffLimitExceeded"), [], "BackoffLimitExceeded"),
])
def test_failed_children_are_named(job, pods, reason):
    result, _ = results.job_result(job, pods)
    assert result["status"] == "Failed" and result["reason"] == reason


def test_the_last_retry_decides():
    pods = [_pod("a", exit_code=1, finished="2026-01-01T00:00:00Z"),
            _pod("b", exit_code=0, message=GOOD, finished="2026-01-01T00:01:00Z")]
    result, code = results.job_result(_job("Complete"), pods)
    assert result["status"] == "Succeeded" and code == 0


def test_trainer_named_failure_is_kept():
    message = json.dumps({"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Failed",
                          "reason": "Diverged", "message": "loss is nan"})
    result, code = results.job_result(_job("Failed", "BackoffLimitExceeded"), [_pod("p", exit_code=5, message=message)])
    assert result["reason"] == "Diverged" and code == 5


def test_conditions_move_only_on_change():
    first = conditions_for(previous=[], phase="Running", reason="Searching", message="m", generation=1)
    assert [c["status"] for c in first] == ["True", "False", "False", "False"]
    again = conditions_for(previous=first, phase="Running", reason="Searching", message="m2", generation=2)
    assert again[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert again[0]["observedGeneration"] == 2
    done = conditions_for(previous=again, phase="Succeeded", reason="AllTrialsDone", message="ok", generation=2)
    assert {c["type"]: c["status"] for c in done} == {"Running": "False", "Suspended": "False",
                                                      "Succeeded": "True", "Failed": "False"}


def test_policy_update_milestones():
    assert [n for n in range(1, 250) if is_milestone(n)] == [1, 2, 5, 10, 20, 50, 100, 200]


def _owned(pod, uid, *, controller=True):
    pod["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "digits-0", "uid": uid, "controller": controller}]
    return pod


def test_only_the_jobs_own_pods_count():
    """Anyone may create a pod labelled as a child; only the Job's own pods are read."""
    job = _job("Complete")
    job["metadata"]["uid"] = "job-uid"
    forged = _owned(_pod("forged", exit_code=0, message=GOOD), "other-uid")
    unowned = _pod("unowned", exit_code=0, message=GOOD)
    not_controller = _owned(_pod("adopted", exit_code=0, message=GOOD), "job-uid", controller=False)
    real = _owned(_pod("real", exit_code=3, message="crashed"), "job-uid")
    assert results.pods_of(job, [forged, unowned, not_controller, real]) == [real]


def _driver_with_child(index):
    from kubenas.operator.driver import SearchDriver

    driver = SearchDriver(client=None, body={"metadata": {**SEARCH["metadata"], "generation": 1}}, logger=None)
    driver.search = Search(specs.parse_manifest(manifest({"maxTrials": 4})).spec)
    while driver.search.next_index <= index:
        driver.search.ask()
    return driver


def test_watched_pods_stand_in_for_a_list_only_once_every_finished_pod_arrived():
    driver = _driver_with_child(1)
    job = _job("Complete")
    job["metadata"]["uid"] = "job-uid"
    job["status"].update(failed=1, succeeded=1)  # a retry: two pods ended
    first = _owned(_pod("digits-1-a", exit_code=1, message="oops"), "job-uid")
    second = _owned(_pod("digits-1-b", exit_code=0, message=GOOD, finished="2026-01-01T00:01:00Z"), "job-uid")
    assert driver._watched_pods(1, job) is None  # nothing seen yet: list
    driver.deliver_pod(1, first)
    assert driver._watched_pods(1, job) is None  # one of two: the Job event came first, list
    driver.deliver_pod(1, second)
    pods = driver._watched_pods(1, job)
    assert [p["metadata"]["name"] for p in pods] == ["digits-1-a", "digits-1-b"]
    assert results.job_result(job, pods)[0]["validationAccuracy"] == [0.5, 0.9]
    driver.deliver_pod(7, second)  # not a child in flight: ignored
    assert 7 not in driver.pods


@pytest.mark.parametrize("strategy, words", [
    ("reinforce", ["REINFORCE", "a policy update every 2 results"]),
    ("evolution", ["regularized evolution", "population 20", "tournaments of 5"]),
    ("random", ["random search"]),
])
def test_started_event_speaks_of_the_strategy_it_runs(strategy, words):
    from kubenas.operator.spec_checks import started_message

    doc = manifest({"maxTrials": 4, "controller": {"strategy": strategy, "batchSize": 2}})
    message = started_message(specs.parse_manifest(doc).spec)
    assert all(word in message for word in words), message
    assert "4 children" in message
    assert ("policy update" in message) == (strategy == "reinforce")


def _token(subject):
    import base64

    def part(document):
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': subject})}.signature"


def test_the_operator_knows_its_own_service_account_from_its_token():
    from kubenas.operator.connection import service_account

    assert service_account(_token("system:serviceaccount:kubenas-system:kubenas-operator")) == (
        "kubenas-system", "kubenas-operator")
    assert service_account(_token("admin")) is None  # a user's token, or a certificate
    assert service_account("not-a-jwt") is None and service_account(None) is None


def _pod_of(**pod_fields):
    doc = manifest({"maxTrials": 4})
    doc["spec"]["trial"]["template"]["spec"].update(pod_fields)
    spec = specs.parse_manifest(doc).spec
    ticket = Search(spec).ask()
    trial = children.trial_object(search=SEARCH, ticket=ticket)
    trial["metadata"]["uid"] = "trial-uid"
    return spec, children.job_object(trial=trial, ticket=ticket, spec=spec.trial)["spec"]["template"]["spec"]


def test_children_run_as_the_templates_account_without_a_token_unless_asked():
    _, pod = _pod_of()
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False  # the namespace's default
    _, pod = _pod_of(serviceAccountName="trainer", automountServiceAccountToken=True)
    assert pod["serviceAccountName"] == "trainer" and pod["automountServiceAccountToken"] is True


@pytest.mark.parametrize("field", ["serviceAccountName", "serviceAccount"])
def test_children_may_never_run_as_the_operator(field):
    spec, _ = _pod_of(**{field: "kubenas-operator"})
    operator = ("team-a", "kubenas-operator")
    with pytest.raises(children.TemplateError, match="operator's own service account"):
        children.check_template(spec.trial, namespace="team-a", operator_account=operator)
    # The same name in another namespace is another account.
    children.check_template(spec.trial, namespace="team-b", operator_account=operator)


def test_a_checkpoint_too_big_for_its_configmap_is_an_invalid_spec():
    """The policy lives in one ConfigMap (1 MiB): the paper's controller fits, a much
    wider LSTM or a huge evolution population is refused up front, naming the field."""
    from kubenas.operator.spec_checks import SearchFailed, check_space

    def spec(controller):
        return specs.parse_manifest(manifest({"controller": controller})).spec

    check_space(spec({}))  # 35 units, 2 layers: the paper's
    for controller in ({"lstmSize": 128}, {"strategy": "evolution", "evolution": {"populationSize": 5000}}):
        with pytest.raises(SearchFailed) as refused:
            check_space(spec(controller))
        assert refused.value.reason == "InvalidSpec" and refused.value.message.startswith("spec.controller:")
        assert "ConfigMap" in refused.value.message


def test_a_container_its_node_lost_is_node_lost():
    """A kubelet that restarted (or a node that came back) reports the containers it lost
    as ContainerStatusUnknown: the child fails NodeLost, naming the node."""
    pod = _pod("digits-0-x", exit_code=137, reason="ContainerStatusUnknown",
               message="The container could not be located when the pod was terminated")
    pod["spec"] = {"nodeName": "gpu-node-7"}
    result, code = results.job_result(_job("Failed", "BackoffLimitExceeded"), [pod])
    assert result["reason"] == "NodeLost" and "gpu-node-7" in result["message"] and code == 137


def _evicted(reason="DeletionByTaintManager", node="gpu-node-3"):
    """A running pod Kubernetes took away: its DisruptionTarget condition, no terminated state."""
    return {"metadata": {"name": "digits-4-x", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "deletionTimestamp": "2026-01-01T00:01:00Z"},
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": reason,
                 "message": "Taint manager: deleting due to NoExecute taint"}],
                "containerStatuses": [{"state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}}


def test_a_job_failing_while_its_pod_still_terminates_is_finished():
    """The Job controller sets FailureTarget at once and Failed only after every pod has
    terminated: a pod evicted from a lost node stays Terminating until its kubelet returns,
    so FailureTarget is the child's end."""
    job = _job("FailureTarget", "BackoffLimitExceeded")
    assert results.job_finished(job) and not results.job_finished(_job("Suspended"))


@pytest.mark.parametrize("disruption, reason", [
    ("DeletionByTaintManager", "NodeLost"), ("PreemptionByScheduler", "Preempted"),
    ("EvictionByEvictionAPI", "Evicted"), ("TerminationByKubelet", "Evicted"), ("SomethingNew", "Disrupted"),
])
def test_a_pod_kubernetes_took_away_names_why_and_the_node(disruption, reason):
    for job in (_job("FailureTarget", "BackoffLimitExceeded"), _job("Failed", "BackoffLimitExceeded")):
        result, code = results.job_result(job, [_evicted(disruption)])
        assert result["reason"] == reason and "gpu-node-3" in result["message"] and disruption in result["message"]
        assert code is None


def test_a_container_killed_by_an_eviction_is_the_eviction_not_a_crash():
    pod = _evicted("TerminationByKubelet")
    pod["status"]["containerStatuses"] = _pod("p", exit_code=137)["status"]["containerStatuses"]
    result, code = results.job_result(_job("Failed", "BackoffLimitExceeded"), [pod])
    assert result["reason"] == "Evicted" and code == 137


def test_a_pod_past_its_deadline_is_deadline_exceeded():
    pod = _pod("p", exit_code=137)
    pod["spec"] = {"activeDeadlineSeconds": 45}
    pod["status"]["reason"] = "DeadlineExceeded"  # the kubelet's, for the pod's activeDeadlineSeconds
    result, code = results.job_result(_job("Failed", "BackoffLimitExceeded"), [pod])
    assert result["reason"] == "DeadlineExceeded" and "activeDeadlineSeconds=45" in result["message"] and code == 137
