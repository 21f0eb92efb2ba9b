"""The kubenas operator: kopf hosts one engine driver per NeuralArchitectureSearch,
runs each child as a Job, and keeps the policy and every child's record in the cluster.

`kubenas operator [--kubeconfig FILE]` runs it; see README.md, "The operator".
"""

from __future__ import annotations

import asyncio
import logging

import kopf


def run(*, kubeconfig: str | None, namespaces: list[str], context: str | None = None, verbose: bool = False,
        liveness: str | None = None) -> int:
    """Run the operator until SIGINT/SIGTERM; all namespaces unless `namespaces`."""
    from kubenas.operator import handlers
    from kubenas.operator.connection import load_connection

    handlers.STATE.load_connection = lambda: load_connection(kubeconfig=kubeconfig, context=context)
    handlers.STATE.connection = handlers.STATE.load_connection()  # fails early on bad credentials
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    if not verbose:  # kopf logs every handled Job event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(kopf.operator(
        registry=kopf.get_default_registry(),
        standalone=True,  # no peering objects: run one replica (the Deployment's strategy is Recreate)
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    ))
    return 0
