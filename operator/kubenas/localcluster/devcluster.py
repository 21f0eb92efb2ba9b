"""`kubenas dev-cluster`: real Kubernetes on this machine, without Docker, until SIGINT or
SIGTERM. Writes an admin kubeconfig for kubectl, Helm and `kubenas operator`."""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from kubenas.localcluster.binaries import BinaryNotFound
from kubenas.localcluster.controlplane import ClusterError, LocalCluster, NodeOptions
from kubenas.localcluster.kueue import Kueue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, required=True, metavar="FILE",
                        help="where to write the admin kubeconfig")
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                        help="PKI, etcd data, component logs and pods' files (default: a new temporary "
                             "directory, kept after the cluster stops)")
    parser.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu the node offers (default: %(default)s)")
    parser.add_argument("--cpu", default="64", help="cpu the node offers the scheduler (default: %(default)s)")
    parser.add_argument("--memory", default="64Gi", help="memory the node offers (default: %(default)s)")
    parser.add_argument("--pods", type=int, default=250, help="pods the node takes (default: %(default)s)")
    parser.add_argument("--image-map", type=Path, metavar="FILE",
                        help="YAML mapping images to local commands, for containers that name no command")
    parser.add_argument("--kueue", action="store_true",
                        help="also run Kueue (built by `make tools`; needs root): its CRDs, its webhooks on loopback "
                             "and its controller manager, for searches with spec.trial.queueName")


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubenas-dev-cluster-"))
    node = NodeOptions(cpu=args.cpu, memory=args.memory, pods=args.pods, gpus=args.gpus, image_map=args.image_map)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    cluster = LocalCluster(workdir=workdir, node=node)
    kueue = Kueue(cluster) if args.kueue else None
    try:
        cluster.start()
        if kueue is not None:
            kueue.start()
    except (BinaryNotFound, ClusterError) as error:
        print(f"kubenas: {error}", flush=True)
        cluster.stop()
        return 1
    try:
        args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cluster.kubeconfig, args.kubeconfig)
        print(f"kubenas: kubectl --kubeconfig {args.kubeconfig} get nodes   (Ctrl-C stops the cluster; files in {workdir})",
              flush=True)
        stop.wait()
    finally:
        if kueue is not None:
            kueue.stop()
        cluster.stop()
    return 0
