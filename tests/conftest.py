"""Fixtures more than one test module shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster_harness import CRDS, Cluster
from tests.manifest_checks import install_crds


@pytest.fixture(scope="session")
def api_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One real cluster (kubenas.localcluster) for the checks that ask the API server what
    it admits: schemas, CEL rules, defaults, printer columns, Pod Security admission, the
    raw manifests applied. Its CRDs are installed (manifests/crds, Established), and its
    node is cordoned: what the tests create is stored and admitted, but no pod runs (the
    applied operator Deployment would otherwise start operators acting on the test objects)."""
    cluster = Cluster(workdir=tmp_path_factory.mktemp("api-cluster")).start()
    try:
        cluster.kubectl("cordon", cluster.local.node.name)
        install_crds(cluster, CRDS)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One real cluster that runs pods, its CRDs installed, for the end-to-end modules that
    need nothing special of it (budget, cache, retraining): each works in a namespace of
    its own with an operator of its own, and the cluster starts once, not once per module."""
    cluster = Cluster(workdir=tmp_path_factory.mktemp("shared-cluster")).start()
    try:
        cluster.install_crds()
        yield cluster
    finally:
        cluster.stop()
