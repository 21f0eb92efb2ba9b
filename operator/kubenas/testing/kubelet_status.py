"""The Pod status that the emulated cluster's kubelet (kubenas.testing.kubelet) reports:
conditions, the first container's status, and the status of a lost node's pod."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubenas.testing.jobs_status import rfc3339, utc_now

TERMINAL_PHASES = ("Succeeded", "Failed")
NODE_IP = "127.0.0.1"


@dataclass
class StatusReport:
    """Builds a pod's status as a kubelet reports it, keeping condition transition times."""

    pod: dict
    start_time: str
    restart_count: int = 0
    container_id: str | None = None  # the current container instance's
    last_state: dict = field(default_factory=dict)
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type: (status, since)

    def build(self, *, phase: str, state: dict) -> dict:
        now = rfc3339(utc_now())
        spec = self.pod["spec"]
        container = spec["containers"][0]
        running = "running" in state
        unready_reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(phase, "ContainersNotReady")
        unready_message = None if phase in TERMINAL_PHASES else f"containers with unready status: [{container['name']}]"
        conditions = [
            self._condition("PodReadyToStartContainers", phase not in TERMINAL_PHASES, now),
            self._condition("Initialized", True, now),
            self._condition("Ready", running, now, reason=unready_reason, message=unready_message),
            self._condition("ContainersReady", running, now, reason=unready_reason, message=unready_message),
            self._condition("PodScheduled", True, now),
        ]
        container_status = {
            "name": container["name"],
            "image": container.get("image", ""),
            "ready": running,
            "restartCount": self.restart_count,
            "started": running,
            "state": state,
            "lastState": self.last_state,
        }
        if self.container_id is not None:
            container_status["containerID"] = self.container_id
        not_run = [c["name"] for c in (spec.get("initContainers") or []) + spec["containers"][1:]]
        return {
            "phase": phase,
            "conditions": conditions,
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "startTime": self.start_time,
            "containerStatuses": [container_status],
            "message": f"kubenas emulator: only the first container runs; not run: {', '.join(not_run)}" if not_run else None,
        }

    def _condition(self, kind: str, true: bool, now: str, *, reason: str | None = None, message: str | None = None) -> dict:
        status = "True" if true else "False"
        previous, since = self.transitions.get(kind, (None, now))
        if previous != status:
            since = now
        self.transitions[kind] = (status, since)
        condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
        if not true and reason is not None:
            condition["reason"] = reason
            if message is not None:
                condition["message"] = message
        return condition


def lost_status(pod: dict, *, node_name: str) -> dict:
    """The status of a pod that a previous kubelet ran or was to run, failed as a lost
    node's pods are failed: its processes, if any, died with that kubelet."""
    metadata = pod["metadata"]
    status = pod.get("status") or {}
    report = StatusReport(pod=pod, start_time=status.get("startTime") or rfc3339(utc_now()))
    for previous in (status.get("containerStatuses") or [])[:1]:
        report.restart_count = previous.get("restartCount", 0)
        report.container_id = previous.get("containerID")
    lost = report.build(phase="Failed", state={"terminated": {
        "exitCode": 137, "reason": "ContainerStatusUnknown",
        "message": "The container could not be located when the pod was terminated",
    }})
    lost["reason"] = "NodeLost"
    lost["message"] = f"Node {node_name} which was running pod {metadata['name']} is unresponsive: its kubelet restarted without the pod's processes"
    lost["conditions"].append({
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
        "message": "PodGC: the node lost the pod", "lastProbeTime": None, "lastTransitionTime": rfc3339(utc_now()),
    })
    return lost
