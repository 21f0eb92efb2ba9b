"""The kubenas operator: kopf hosts one engine driver per NeuralArchitectureSearch,
runs each child as a Job, and keeps the policy and every child's record in the cluster.

`kubenas operator [--kubeconfig FILE]` runs it; see README.md, "The operator".
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import kopf


def run(*, kubeconfig: str | None, namespaces: list[str], context: str | None = None, verbose: bool = False,
        liveness: str | None = None, metrics_port: int | None = None, metrics_host: str = "0.0.0.0",
        trainer_defaults: str | None = None, tabular_dir: Path | None = None) -> int:
    """Run the operator until SIGINT/SIGTERM; all namespaces unless `namespaces`."""
    from kubenas import metrics
    from kubenas.operator import handlers
    from kubenas.operator.connection import load_connection, service_account
    from kubenas.operator.driver import DriverSettings
    from kubenas.operator.trainer_defaults import TrainerDefaults

    # Trainer defaults are read first: a broken file stops the operator at start, not at the first child.
    defaults = TrainerDefaults.load(trainer_defaults) if trainer_defaults else None
    handlers.STATE.clusterwide = not namespaces
    handlers.STATE.load_connection = lambda: load_connection(kubeconfig=kubeconfig, context=context)
    handlers.STATE.connection = handlers.STATE.load_connection()  # fails early on bad credentials
    handlers.STATE.driver_settings = DriverSettings(
        trainer_defaults=defaults, tabular_dir=tabular_dir,
        operator_account=service_account(handlers.STATE.connection.token),  # children may never run as it
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    if not verbose:  # kopf logs every handled Job event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port is not None:
        metrics.serve(port=metrics_port, host=metrics_host)
        logging.getLogger("kubenas").info(f"serving Prometheus metrics on http://{metrics_host}:{metrics_port}/metrics")
    asyncio.run(kopf.operator(
        registry=kopf.get_default_registry(),
        standalone=True,  # no peering objects: run one replica (the Deployment's strategy is Recreate)
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    ))
    return 0
