"""The Pod Security Standards checker: a compliant pod passes, and each control catches its case."""

import copy

import pytest

from kubenas.testing.pod_security import document_violations, pod_specs, pod_templates, violations

RESTRICTED_CONTAINER = {
    "name": "app",
    "image": "example/app:1",
    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8081}},
    "ports": [{"containerPort": 8080, "name": "metrics"}],
}
RESTRICTED_POD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
    "containers": [RESTRICTED_CONTAINER],
    "initContainers": [{**copy.deepcopy(RESTRICTED_CONTAINER), "name": "init"}],
    "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "config", "configMap": {"name": "c"}},
                {"name": "pvc", "persistentVolumeClaim": {"claimName": "data"}}],
}


def changed(edit) -> dict:
    pod = copy.deepcopy(RESTRICTED_POD)
    edit(pod)
    return pod


def container(pod: dict, index: int = 0, field: str = "containers") -> dict:
    return pod[field][index]


def context(pod: dict, index: int = 0, field: str = "containers") -> dict:
    return pod[field][index].setdefault("securityContext", {})


def test_a_restricted_pod_passes_both_profiles():
    assert violations(RESTRICTED_POD) == []
    assert violations(RESTRICTED_POD, level="baseline") == []


def test_a_minimal_pod_passes_baseline_but_not_restricted():
    pod = {"containers": [{"name": "app", "image": "example/app:1"}]}
    assert violations(pod, level="baseline") == []
    assert violations(pod) == [
        "spec.containers[0].securityContext.runAsNonRoot must be true (or spec.securityContext.runAsNonRoot)",
        "spec.containers[0].securityContext.allowPrivilegeEscalation must be false",
        "spec.containers[0].securityContext.seccompProfile.type must be RuntimeDefault or Localhost "
        "(or spec.securityContext.seccompProfile.type)",
        "spec.containers[0].securityContext.capabilities.drop must include ALL",
    ]


def test_unknown_level_is_an_error():
    with pytest.raises(ValueError, match="level"):
        violations(RESTRICTED_POD, level="privileged-ish")


# (edit, message) pairs: each edit breaks one control, and baseline catches it too.
BASELINE_CASES = {
    "hostNetwork": (lambda p: p.update(hostNetwork=True), "spec.hostNetwork must be false or unset"),
    "hostPID": (lambda p: p.update(hostPID=True), "spec.hostPID must be false or unset"),
    "hostIPC": (lambda p: p.update(hostIPC=True), "spec.hostIPC must be false or unset"),
    "privileged": (lambda p: context(p).update(privileged=True),
                   "spec.containers[0].securityContext.privileged must be false or unset"),
    "privileged init": (lambda p: context(p, 0, "initContainers").update(privileged=True),
                        "spec.initContainers[0].securityContext.privileged must be false or unset"),
    "capability beyond the default set": (
        lambda p: context(p)["capabilities"].update(add=["SYS_ADMIN"]),
        "spec.containers[0].securityContext.capabilities.add[0] 'SYS_ADMIN' is not allowed"),
    "hostPath": (lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
                 "spec.volumes[3].hostPath is forbidden"),
    "hostPort": (lambda p: container(p)["ports"][0].update(hostPort=8080),
                 "spec.containers[0].ports[0].hostPort must be 0 or unset"),
    "AppArmor unconfined (pod)": (
        lambda p: p["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
        "spec.securityContext.appArmorProfile.type must be RuntimeDefault or Localhost, not 'Unconfined'"),
    "AppArmor unconfined (container)": (
        lambda p: context(p).update(appArmorProfile={"type": "Unconfined"}),
        "spec.containers[0].securityContext.appArmorProfile.type must be RuntimeDefault or Localhost, not 'Unconfined'"),
    "SELinux type": (lambda p: p["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
                     "spec.securityContext.seLinuxOptions.type 'spc_t' is not allowed"),
    "SELinux user": (lambda p: context(p).update(seLinuxOptions={"user": "system_u"}),
                     "spec.containers[0].securityContext.seLinuxOptions.user must be unset"),
    "SELinux role": (lambda p: context(p).update(seLinuxOptions={"role": "sysadm_r"}),
                     "spec.containers[0].securityContext.seLinuxOptions.role must be unset"),
    "procMount": (lambda p: context(p).update(procMount="Unmasked"),
                  "spec.containers[0].securityContext.procMount must be Default or unset"),
    "seccomp unconfined (pod)": (
        lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "spec.securityContext.seccompProfile.type must be RuntimeDefault or Localhost, not 'Unconfined'"),
    "seccomp unconfined (container)": (
        lambda p: context(p).update(seccompProfile={"type": "Unconfined"}),
        "spec.containers[0].securityContext.seccompProfile.type must be RuntimeDefault or Localhost, not 'Unconfined'"),
    "unsafe sysctl": (lambda p: p["securityContext"]["sysctls"].append({"name": "kernel.msgmax", "value": "1"}),
                      "spec.securityContext.sysctls[1].name 'kernel.msgmax' is not a safe sysctl"),
    "Windows hostProcess (pod)": (
        lambda p: p["securityContext"].update(windowsOptions={"hostProcess": True}),
        "spec.securityContext.windowsOptions.hostProcess must be false or unset"),
    "Windows hostProcess (container)": (
        lambda p: context(p).update(windowsOptions={"hostProcess": True}),
        "spec.containers[0].securityContext.windowsOptions.hostProcess must be false or unset"),
    "probe host": (lambda p: container(p)["livenessProbe"]["httpGet"].update(host="169.254.169.254"),
                   "spec.containers[0].livenessProbe.httpGet.host must be unset"),
    "lifecycle host": (lambda p: container(p).update(lifecycle={"preStop": {"tcpSocket": {"port": 1, "host": "db"}}}),
                       "spec.containers[0].lifecycle.preStop.tcpSocket.host must be unset"),
    "ephemeral container privileged": (
        lambda p: p.update(ephemeralContainers=[{"name": "debug", "image": "busybox:1",
                                                 "securityContext": {**RESTRICTED_CONTAINER["securityContext"],
                                                                     "privileged": True}}]),
        "spec.ephemeralContainers[0].securityContext.privileged must be false or unset"),
}

RESTRICTED_CASES = {
    "volume type": (lambda p: p["volumes"].append({"name": "nfs", "nfs": {"server": "s", "path": "/"}}),
                    "spec.volumes[3] uses a restricted volume type ['nfs']"),
    "allowPrivilegeEscalation unset": (lambda p: context(p).pop("allowPrivilegeEscalation"),
                                       "spec.containers[0].securityContext.allowPrivilegeEscalation must be false"),
    "allowPrivilegeEscalation true (init)": (
        lambda p: context(p, 0, "initContainers").update(allowPrivilegeEscalation=True),
        "spec.initContainers[0].securityContext.allowPrivilegeEscalation must be false"),
    "runAsNonRoot false (pod)": (lambda p: p["securityContext"].update(runAsNonRoot=False), [
        "spec.securityContext.runAsNonRoot must be true",
        *[f"spec.{field}[0].securityContext.runAsNonRoot must be true (or spec.securityContext.runAsNonRoot)"
          for field in ("containers", "initContainers")]]),
    "runAsNonRoot false (container)": (
        lambda p: context(p).update(runAsNonRoot=False),
        "spec.containers[0].securityContext.runAsNonRoot must be true (or spec.securityContext.runAsNonRoot)"),
    "runAsUser 0 (pod)": (lambda p: p["securityContext"].update(runAsUser=0),
                          "spec.securityContext.runAsUser must not be 0"),
    "runAsUser 0 (container)": (lambda p: context(p).update(runAsUser=0),
                                "spec.containers[0].securityContext.runAsUser must not be 0"),
    "seccomp unset": (lambda p: p["securityContext"].pop("seccompProfile"), [
        f"spec.{field}[0].securityContext.seccompProfile.type must be RuntimeDefault or Localhost "
        "(or spec.securityContext.seccompProfile.type)" for field in ("containers", "initContainers")]),
    "capabilities not dropped": (lambda p: context(p)["capabilities"].update(drop=["NET_RAW"]),
                                 "spec.containers[0].securityContext.capabilities.drop must include ALL"),
    "capability added": (
        lambda p: context(p)["capabilities"].update(add=["CHOWN"]),
        "spec.containers[0].securityContext.capabilities.add[0] 'CHOWN': only NET_BIND_SERVICE may be added"),
}


@pytest.mark.parametrize("case", BASELINE_CASES)
def test_each_baseline_control(case):
    edit, message = BASELINE_CASES[case]
    pod = changed(edit)
    assert message in violations(pod, level="baseline")
    assert message in violations(pod, level="restricted")  # restricted includes baseline


@pytest.mark.parametrize("case", RESTRICTED_CASES)
def test_each_restricted_control(case):
    edit, messages = RESTRICTED_CASES[case]
    pod = changed(edit)
    assert violations(pod, level="restricted") == (messages if isinstance(messages, list) else [messages])
    assert violations(pod, level="baseline") == []


def test_seccomp_and_non_root_may_be_set_per_container_instead_of_the_pod():
    pod = changed(lambda p: p["securityContext"].clear())
    for field in ("containers", "initContainers"):
        context(pod, 0, field).update(runAsNonRoot=True, seccompProfile={"type": "Localhost", "localhostProfile": "x"})
    assert violations(pod) == []
    context(pod, 0, "initContainers").pop("seccompProfile")  # one container without: caught
    assert violations(pod) == ["spec.initContainers[0].securityContext.seccompProfile.type must be RuntimeDefault "
                               "or Localhost (or spec.securityContext.seccompProfile.type)"]


def test_net_bind_service_is_the_one_capability_restricted_allows():
    assert violations(changed(lambda p: context(p)["capabilities"].update(add=["NET_BIND_SERVICE"]))) == []


def test_windows_pods_are_exempt_from_the_linux_only_controls():
    pod = {"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": True},
           "containers": [{"name": "app", "image": "example/app:1"}]}
    assert violations(pod) == []


def test_apparmor_annotations():
    good = {"container.apparmor.security.beta.kubernetes.io/app": "localhost/profile"}
    bad = {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
    assert violations(RESTRICTED_POD, annotations=good) == []
    assert violations(RESTRICTED_POD, annotations=bad) == [
        "metadata.annotations['container.apparmor.security.beta.kubernetes.io/app'] must be runtime/default "
        "or localhost/*, not 'unconfined'"]


TEMPLATE = {"metadata": {"labels": {"a": "b"}}, "spec": RESTRICTED_POD}


@pytest.mark.parametrize(("document", "path"), [
    ({"kind": "Pod", "spec": RESTRICTED_POD}, "spec"),
    ({"kind": "PodTemplate", "template": TEMPLATE}, "template.spec"),
    *[({"kind": kind, "spec": {"template": TEMPLATE}}, "spec.template.spec")
      for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")],
    ({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": TEMPLATE}}}},
     "spec.jobTemplate.spec.template.spec"),
])
def test_pod_specs_of_each_workload_kind(document, path):
    assert pod_specs(document) == [(path, RESTRICTED_POD)]


def test_pod_specs_of_other_kinds_are_none():
    assert pod_specs({"kind": "ConfigMap", "data": {}}) == []
    assert pod_specs({"kind": "Deployment", "spec": {}}) == []


def test_document_violations_name_the_document_and_the_path():
    pod = changed(lambda p: context(p).update(privileged=True))
    document = {"kind": "CronJob", "metadata": {"name": "nightly"},
                "spec": {"jobTemplate": {"spec": {"template": {
                    "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}},
                    "spec": pod}}}}}
    assert pod_templates(document)[0][1]["annotations"]
    assert document_violations(document, level="baseline") == [
        "CronJob/nightly: spec.jobTemplate.spec.template.metadata.annotations['container.apparmor.security.beta.kubernetes.io/app'] must be "
        "runtime/default or localhost/*, not 'unconfined'",
        "CronJob/nightly: spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged must be "
        "false or unset",
    ]
