"""The Kubernetes Pod Security Standards (baseline and restricted), as a checker of pod specs.

After kubernetes.io/docs/concepts/security/pod-security-standards and the checks of
k8s.io/pod-security-admission that enforce them, for current releases (1.34+: the
probe/lifecycle `host` check included). Pure functions on JSON dicts:

- `violations(pod_spec, level=...)`: every way a pod spec breaks the profile, each message
  naming the field (`spec.containers[0].securityContext.allowPrivilegeEscalation must be false`).
- `pod_specs(document)` / `pod_templates(document)`: the pod specs inside a workload
  (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
  CronJob, PodTemplate), with their paths in the document.
- `document_violations(document, level=...)`: both, with the template's annotations.

Windows pods (`spec.os.name: windows`) are exempt from the restricted profile's
privilege-escalation, seccomp and capabilities controls, as upstream. The optional
"non-root groups" control of the standards is not checked (pod security admission does
not enforce it either). A baseline check never depends on the profile's version: the
newest rules apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

LEVELS = ("baseline", "restricted")

# Baseline: capabilities a container may add (Docker's default set).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
# Baseline: the "safe" sysctls, namespaced and isolated from other pods (through 1.29's additions).
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})  # seccomp and AppArmor profiles allowed
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
# Restricted: the only volume sources (the core ones, and those defined through PersistentVolumes).
RESTRICTED_VOLUMES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

# Where each kind keeps its pod template spec, and that template's metadata.
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "PodTemplate": ("template",),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def violations(pod_spec: dict, *, level: str = "restricted", annotations: dict | None = None,
               path: str = "spec") -> list[str]:
    """Every violation of the `level` profile ("baseline" or "restricted") by `pod_spec`.

    `path` is where the spec sits in its document (messages start with it); `annotations`
    are the pod's (or template's) metadata annotations, for the AppArmor annotation check.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    spec = pod_spec or {}
    found = _baseline(spec, path, annotations or {})
    if level == "restricted":
        found += _restricted(spec, path)
    return found


def pod_templates(document: dict) -> list[tuple[str, dict, dict]]:
    """(path of the pod spec, pod metadata, pod spec) for each pod a workload document makes."""
    kind = (document or {}).get("kind")
    if kind not in _TEMPLATE_PATHS:
        return []
    template: Any = document
    for key in _TEMPLATE_PATHS[kind]:
        template = (template or {}).get(key) if isinstance(template, dict) else None
    if not isinstance(template, dict):
        return []
    prefix = ".".join(_TEMPLATE_PATHS[kind])
    return [(f"{prefix}.spec" if prefix else "spec", template.get("metadata") or {}, template.get("spec") or {})]


def pod_specs(document: dict) -> list[tuple[str, dict]]:
    """(path, pod spec) for each pod spec in a workload document; [] for other kinds."""
    return [(path, spec) for path, _, spec in pod_templates(document)]


def document_violations(document: dict, *, level: str = "restricted") -> list[str]:
    """Every violation in every pod spec of `document`, messages prefixed with its kind and name."""
    name = f"{document.get('kind')}/{(document.get('metadata') or {}).get('name', '')}"
    return [
        f"{name}: {message}"
        for path, metadata, spec in pod_templates(document)
        for message in violations(spec, level=level, annotations=metadata.get("annotations"), path=path)
    ]


# ---------------------------------------------------------------------------------------


def _containers(spec: dict, path: str) -> Iterator[tuple[str, dict]]:
    for field in CONTAINER_LISTS:
        for index, container in enumerate(spec.get(field) or []):
            yield f"{path}.{field}[{index}]", container or {}


def _context(obj: dict) -> dict:
    return obj.get("securityContext") or {}


def _is_windows(spec: dict) -> bool:
    return ((spec.get("os") or {}).get("name")) == "windows"


def _baseline(spec: dict, path: str, annotations: dict) -> list[str]:
    found: list[str] = []
    pod = _context(spec)
    pod_path = f"{path}.securityContext"
    # HostProcess (Windows): privileged access to the host.
    if (pod.get("windowsOptions") or {}).get("hostProcess"):
        found.append(f"{pod_path}.windowsOptions.hostProcess must be false or unset")
    # Host namespaces.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"{path}.{field} must be false or unset")
    # HostPath volumes.
    for index, volume in enumerate(spec.get("volumes") or []):
        if (volume or {}).get("hostPath") is not None:
            found.append(f"{path}.volumes[{index}].hostPath is forbidden")
    # Pod-level SELinux, seccomp, AppArmor, sysctls.
    found += _selinux(pod, pod_path)
    found += _profile(pod, pod_path, "seccompProfile", allowed=PROFILE_TYPES | {None})
    found += _profile(pod, pod_path, "appArmorProfile", allowed=PROFILE_TYPES | {None})
    for index, sysctl in enumerate(pod.get("sysctls") or []):
        name = (sysctl or {}).get("name")
        if name not in SAFE_SYSCTLS:
            found.append(f"{pod_path}.sysctls[{index}].name {name!r} is not a safe sysctl")
    # AppArmor annotations (the pre-1.30 way of setting a container's profile), in the
    # metadata beside the spec.
    metadata_path = path.removesuffix("spec") + "metadata"
    for key, value in sorted(annotations.items()):
        if key.startswith(APPARMOR_ANNOTATION) and not (value == "runtime/default" or str(value).startswith("localhost/")):
            found.append(f"{metadata_path}.annotations[{key!r}] must be runtime/default or localhost/*, not {value!r}")
    for where, container in _containers(spec, path):
        context = _context(container)
        context_path = f"{where}.securityContext"
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{context_path}.windowsOptions.hostProcess must be false or unset")
        if context.get("privileged"):
            found.append(f"{context_path}.privileged must be false or unset")
        for index, capability in enumerate((context.get("capabilities") or {}).get("add") or []):
            if capability not in BASELINE_CAPABILITIES:
                found.append(f"{context_path}.capabilities.add[{index}] {capability!r} is not allowed")
        for index, port in enumerate(container.get("ports") or []):
            if (port or {}).get("hostPort"):
                found.append(f"{where}.ports[{index}].hostPort must be 0 or unset")
        found += _selinux(context, context_path)
        found += _profile(context, context_path, "seccompProfile", allowed=PROFILE_TYPES | {None})
        found += _profile(context, context_path, "appArmorProfile", allowed=PROFILE_TYPES | {None})
        if context.get("procMount") not in (None, "Default"):
            found.append(f"{context_path}.procMount must be Default or unset")
        found += _probe_hosts(container, where)
    return found


def _selinux(context: dict, path: str) -> list[str]:
    options = context.get("seLinuxOptions") or {}
    found = []
    if options.get("type", "") not in SELINUX_TYPES:
        found.append(f"{path}.seLinuxOptions.type {options['type']!r} is not allowed")
    for field in ("user", "role"):
        if options.get(field):
            found.append(f"{path}.seLinuxOptions.{field} must be unset")
    return found


def _profile(context: dict, path: str, field: str, *, allowed: frozenset) -> list[str]:
    kind = (context.get(field) or {}).get("type")
    if kind not in allowed:
        return [f"{path}.{field}.type must be RuntimeDefault or Localhost, not {kind!r}"]
    return []


def _probe_hosts(container: dict, where: str) -> list[str]:
    """Probes and lifecycle handlers may not aim the kubelet at another host (1.34+)."""
    found = []
    handlers = [(probe, container.get(probe)) for probe in ("livenessProbe", "readinessProbe", "startupProbe")]
    handlers += [(f"lifecycle.{hook}", (container.get("lifecycle") or {}).get(hook)) for hook in ("postStart", "preStop")]
    for name, handler in handlers:
        for action in ("httpGet", "tcpSocket"):
            if ((handler or {}).get(action) or {}).get("host"):
                found.append(f"{where}.{name}.{action}.host must be unset")
    return found


def _restricted(spec: dict, path: str) -> list[str]:
    found: list[str] = []
    windows = _is_windows(spec)
    pod = _context(spec)
    pod_path = f"{path}.securityContext"
    for index, volume in enumerate(spec.get("volumes") or []):
        sources = sorted(set(volume or {}) - {"name"})
        # hostPath is baseline's finding already
        bad = [source for source in sources if source not in RESTRICTED_VOLUMES | {"hostPath"}]
        if bad or not sources:
            found.append(f"{path}.volumes[{index}] uses a restricted volume type {bad or ['unknown']}")
    pod_non_root = pod.get("runAsNonRoot")
    if pod_non_root is False:
        found.append(f"{pod_path}.runAsNonRoot must be true")
    if pod.get("runAsUser") == 0:
        found.append(f"{pod_path}.runAsUser must not be 0")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    for where, container in _containers(spec, path):
        context = _context(container)
        context_path = f"{where}.securityContext"
        # Non-root: the container's own setting, else the pod's, must be true.
        non_root = context.get("runAsNonRoot")
        if non_root is False or (non_root is None and pod_non_root is not True):
            found.append(f"{context_path}.runAsNonRoot must be true (or {pod_path}.runAsNonRoot)")
        if context.get("runAsUser") == 0:
            found.append(f"{context_path}.runAsUser must not be 0")
        if windows:
            continue
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{context_path}.allowPrivilegeEscalation must be false")
        # Seccomp: set at the container, or inherited from the pod (explicit bad values are baseline's).
        if (context.get("seccompProfile") or {}).get("type") is None and pod_seccomp not in PROFILE_TYPES:
            found.append(f"{context_path}.seccompProfile.type must be RuntimeDefault or Localhost "
                         f"(or {pod_path}.seccompProfile.type)")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{context_path}.capabilities.drop must include ALL")
        for index, capability in enumerate(capabilities.get("add") or []):
            # capabilities beyond baseline's list are baseline's findings already
            if capability != "NET_BIND_SERVICE" and capability in BASELINE_CAPABILITIES:
                found.append(f"{context_path}.capabilities.add[{index}] {capability!r}: only NET_BIND_SERVICE may be added")
    return found
