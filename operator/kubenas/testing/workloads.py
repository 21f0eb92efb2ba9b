"""The emulated cluster's workload controllers: the Job controller (kubenas.testing.jobs)
and the fake kubelet that runs pods as local processes (kubenas.testing.kubelet)."""

from kubenas.testing.jobs import JobController
from kubenas.testing.kubelet import Kubelet

__all__ = ["JobController", "Kubelet"]
