"""Real Kubernetes on one machine, without Docker: the control plane built from the
Kubernetes sources by `make tools` (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) and a process kubelet whose pods are local processes.

`kubenas dev-cluster` runs it for users; the tests and benchmarks run it too.
LocalCluster (kubenas.localcluster.controlplane) is the launcher; the kubelet is
kubenas.localcluster.kubelet.
"""

from kubenas.localcluster.controlplane import ClusterError, LocalCluster, NodeOptions

__all__ = ["ClusterError", "LocalCluster", "NodeOptions"]
