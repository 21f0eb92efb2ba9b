"""The Pod status the process kubelet reports: conditions, the first container's status,
phase; times in RFC 3339."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

TERMINAL_PHASES = ("Succeeded", "Failed")
NODE_IP = "127.0.0.1"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StatusReport:
    """Builds a pod's status as a kubelet reports it, keeping condition transition times."""

    pod: dict
    start_time: str
    restart_count: int = 0
    container_id: str | None = None  # the current container instance's
    last_state: dict = field(default_factory=dict)
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type: (status, since)

    def build(self, *, phase: str, state: dict, reason: str | None = None, message: str | None = None) -> dict:
        stamp = now()
        spec = self.pod["spec"]
        container = spec["containers"][0]
        running = "running" in state
        unready_reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(phase, "ContainersNotReady")
        unready_message = None if phase in TERMINAL_PHASES else f"containers with unready status: [{container['name']}]"
        conditions = [
            self._condition("PodReadyToStartContainers", phase not in TERMINAL_PHASES, stamp),
            self._condition("Initialized", True, stamp),
            self._condition("Ready", running, stamp, reason=unready_reason, message=unready_message),
            self._condition("ContainersReady", running, stamp, reason=unready_reason, message=unready_message),
        ]
        container_status = {
            "name": container["name"], "image": container.get("image", ""), "imageID": "",
            "ready": running, "restartCount": self.restart_count, "started": running,
            "state": state, "lastState": self.last_state,
        }
        if self.container_id is not None:
            container_status["containerID"] = self.container_id
        status = {
            "phase": phase, "conditions": conditions, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP, "podIPs": [{"ip": NODE_IP}], "startTime": self.start_time,
            "containerStatuses": [container_status],
        }
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        return status

    def _condition(self, kind: str, true: bool, stamp: str, *, reason: str | None = None, message: str | None = None) -> dict:
        status = "True" if true else "False"
        previous, since = self.transitions.get(kind, (None, stamp))
        if previous != status:
            since = stamp
        self.transitions[kind] = (status, since)
        condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
        if not true and reason is not None:
            condition["reason"] = reason
            if message is not None:
                condition["message"] = message
        return condition


def unknown_status(pod: dict) -> dict:
    """A pod this node was running when its kubelet stopped: the processes died with it
    (PR_SET_PDEATHSIG), so its container is reported as the kubelet reports a container
    it cannot find."""
    status = pod.get("status") or {}
    report = StatusReport(pod=pod, start_time=status.get("startTime") or now())
    for previous in (status.get("containerStatuses") or [])[:1]:
        report.restart_count = previous.get("restartCount", 0)
        report.container_id = previous.get("containerID")
    return report.build(phase="Failed", state={"terminated": {
        "exitCode": 137, "reason": "ContainerStatusUnknown",
        "message": "The container could not be located when the pod was terminated",
    }})
