"""Shared builders for the engine tests."""

from __future__ import annotations

import copy
from typing import Any

from kubenas import spec as specs

JOB_TRIAL = {"kind": "Job", "template": {"spec": {"containers": [{"name": "trainer", "command": ["python", "-m", "kubenas_trainer"]}]}}}


def manifest(spec: dict[str, Any] | None = None, *, name: str = "test-search") -> dict[str, Any]:
    body = {"trial": copy.deepcopy(JOB_TRIAL), **copy.deepcopy(spec or {})}
    return {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch", "metadata": {"name": name}, "spec": body}


def search_spec(**spec: Any) -> specs.SearchSpec:
    return specs.parse_manifest(manifest(spec)).spec


def nb201_spec(**spec: Any) -> specs.SearchSpec:
    return search_spec(searchSpace={"type": "NB201Cell"}, **spec)


def succeeded(accuracy: float | list[float]) -> dict[str, Any]:
    accuracies = accuracy if isinstance(accuracy, list) else [accuracy]
    return {"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Succeeded", "validationAccuracy": accuracies}
