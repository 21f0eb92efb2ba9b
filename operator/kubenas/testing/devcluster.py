"""`kubenas dev-cluster`: an emulated cluster to try the operator on, without Kubernetes."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from kubenas.testing.cluster import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to write a kubeconfig for kubectl and the operator",
    )
    parser.add_argument("--host", default="127.0.0.1", help="the address the API server listens on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="the API server's port (default: any free one)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where pods run as local processes (default: a new temporary directory, kept after the cluster stops)",
    )


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubenas-dev-cluster-"))
    asyncio.run(serve(kubeconfig=args.kubeconfig, host=args.host, port=args.port, workdir=workdir))
    return 0
