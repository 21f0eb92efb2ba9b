"""kopf registrations: a daemon per search hosts its driver; Job and pod events are
routed to the driver of the search that owns them. Handlers are thin: the driver decides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import kopf

from kubenas import metrics
from kubenas.operator import names
from kubenas.operator.connection import Connection
from kubenas.operator.driver import DriverSettings, JobEvent, SearchDriver
from kubenas.operator.engine_thread import watch_loop_lag
from kubenas.operator.kube import KubeClient


@dataclass
class OperatorState:
    connection: Connection | None = None
    load_connection: Callable[[], Connection] | None = None  # reads the kubeconfig or token file again
    client: KubeClient | None = None
    driver_settings: DriverSettings = field(default_factory=DriverSettings)
    clusterwide: bool = True
    drivers: dict[tuple[str, str], SearchDriver] = field(default_factory=dict)
    lag_watch: asyncio.Task | None = None


STATE = OperatorState()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    # Progress and the last-handled spec in annotations: status belongs to the schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubenas.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubenas.io", key="last-handled-configuration")
    settings.persistence.finalizer = "kubenas.io/finalizer"
    settings.posting.reporting_component = "kubenas-operator"  # Events' "From"
    settings.posting.level = logging.WARNING  # log lines that become Events; milestones use kopf.event
    # Watches, not polling: a server-side timeout so dead connections are replaced.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Per-object workers: events of one Job within 0.1 s are handled once (the Job's
    # latest state is all that matters); idle workers go after 10 s, so 800 children
    # in flight do not keep 800 idle tasks. No global worker limit (a small one was
    # seen to stall all processing).
    settings.batching.batch_window = 0.1
    settings.batching.idle_timeout = 10.0
    settings.networking.request_timeout = 60
    # Watching named namespaces, the resources found at start are all there is to watch:
    # no cluster-wide list/watch of CRDs and namespaces, which a namespaced Role forbids.
    settings.scanning.disabled = not STATE.clusterwide
    STATE.client = STATE.connection.client(fresh_token=lambda: STATE.load_connection().token)
    STATE.lag_watch = asyncio.create_task(watch_loop_lag(), name="loop-lag")  # kubenas_operator_loop_lag_seconds


@kopf.on.cleanup()
async def close(**_: object) -> None:
    if STATE.lag_watch is not None:
        STATE.lag_watch.cancel()
    if STATE.client is not None:
        await STATE.client.close()


@kopf.on.login()
def login(**_: object) -> kopf.ConnectionInfo:
    """kopf logs in again after a 401: read the credentials again (rotated tokens)."""
    STATE.connection = STATE.load_connection()
    return STATE.connection.kopf_info()


# A driver that fails (an API error, a lost connection) is restarted after 5 s and
# rebuilds itself from the cluster: checkpoint, NASTrials and Jobs (see driver.py).
@kopf.daemon(names.GROUP, names.VERSION, names.SEARCHES.plural, backoff=5.0, cancellation_timeout=10.0)
async def drive_search(body: kopf.Body, logger: logging.Logger, **_: object) -> None:
    key = (body.metadata.namespace, body.metadata.name)
    driver = SearchDriver(client=STATE.client, body=body, logger=logger, settings=STATE.driver_settings)
    STATE.drivers[key] = driver
    try:
        await driver.run()
    except Exception:
        metrics.HANDLER_ERRORS.labels("drive_search").inc()
        raise  # kopf logs it and restarts the daemon after its backoff
    finally:
        if STATE.drivers.get(key) is driver:
            del STATE.drivers[key]
            driver.metrics.forget()


@kopf.on.event(names.GROUP, names.VERSION, names.SEARCHES.plural)
def wake_search(body: kopf.Body, **_: object) -> None:
    """A spec change (suspend, maxTrials…) is acted on at once."""
    driver = STATE.drivers.get((body.metadata.namespace, body.metadata.name))
    if driver is not None and body.metadata.get("generation") != driver.seen_generation:
        driver.wake.set()


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY,
                                               names.LABEL_SEARCH: kopf.PRESENT})
def route_job(event: kopf.RawEvent, body: kopf.Body, **_: object) -> None:
    labels = body.metadata.labels
    driver = STATE.drivers.get((body.metadata.namespace, labels[names.LABEL_SEARCH]))
    if driver is not None and labels.get(names.LABEL_COMPONENT) == "retrain":
        driver.wake.set()  # a retraining Job changed: the driver's next step lists them
        return
    if driver is None or not labels.get(names.LABEL_TRIAL_INDEX, "").isdigit():
        return  # no driver yet: its start lists the search's Jobs itself
    index = int(labels[names.LABEL_TRIAL_INDEX])
    driver.deliver(JobEvent(index, dict(body), deleted=event.get("type") == "DELETED"))


@kopf.on.event("", "v1", "pods", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY,
                                        names.LABEL_SEARCH: kopf.PRESENT, names.LABEL_TRIAL_INDEX: kopf.PRESENT})
def route_pod(body: kopf.Body, **_: object) -> None:
    """A child's pod: its termination message is the child's result (no list per child)."""
    labels = body.metadata.labels
    driver = STATE.drivers.get((body.metadata.namespace, labels[names.LABEL_SEARCH]))
    if driver is not None and labels[names.LABEL_TRIAL_INDEX].isdigit():
        driver.deliver_pod(int(labels[names.LABEL_TRIAL_INDEX]), dict(body))
