"""What a search's spec must pass before its first child: the models local mode uses, the
children's pod template as the operator would make it, a space that yields a valid child,
and a checkpoint that fits its ConfigMap. A spec that fails is the search's `InvalidSpec`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kubenas import spec as specs
from kubenas.operator import children
from kubenas.operator.retrain import check_retrain_template
from kubenas.search import Search

if TYPE_CHECKING:
    from kubenas.operator.driver import DriverSettings


class SearchFailed(Exception):
    """A search that cannot go on: (reason, message) for its Failed condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def started_message(spec: specs.SearchSpec) -> str:
    """The Started Event: what the strategy will do, in its own terms."""
    controller = spec.controller
    scale = f"{spec.max_trials} children, {spec.parallelism} at a time"
    if controller.strategy == "evolution":
        evolution = controller.evolution
        return (f"regularized evolution from seed {spec.seed}: {scale}; population {evolution.population_size}, "
                f"tournaments of {evolution.sample_size}, each result joins the population")
    if controller.strategy == "random":
        return f"random search from seed {spec.seed}: {scale}"
    return (f"REINFORCE controller initialised from seed {spec.seed}: {scale}, a policy update every "
            f"{controller.batch_size} results")


def parse_spec(body: Any, settings: DriverSettings | None = None) -> specs.SearchSpec:
    """The live object's spec, validated by the same models as local mode (and, with the
    operator's settings, its template as children's pods would get it)."""
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": body["metadata"]["name"]},
        "spec": dict(body.get("spec") or {}),
    }
    try:
        spec = specs.parse_manifest(document, source=f"{specs.KIND} {body['metadata']['name']}").spec
        defaults = settings.trainer_defaults if settings else None
        children.check_template(spec.trial, namespace=body["metadata"].get("namespace"), defaults=defaults,
                                operator_account=settings.operator_account if settings else None)
        check_retrain_template(spec, defaults=defaults)
    except (specs.SpecError, children.TemplateError) as error:
        raise SearchFailed("InvalidSpec", str(error)) from None
    return spec


# The checkpoint is one ConfigMap: its data may hold 1 MiB (base64 makes 3 bytes 4).
CHECKPOINT_LIMIT = 1024 * 1024 * 3 // 4 - 32 * 1024


def checkpoint_bytes(spec: specs.SearchSpec, search: Search | None = None) -> int:
    """About the largest checkpoint this search writes: the policy's weights with Adam's
    two moments, the children a controller holds (sampled ahead and pending for REINFORCE,
    the population for evolution) at the space's largest children, the in-flight indices."""
    search = search or Search(spec)
    controller = search.controller
    weights = sum(p.numel() for p in getattr(getattr(controller, "policy", None), "parameters", list)()) * 4
    deepest = controller.sample(trial_index=10**9)  # the depth schedule's last step
    child = len(json.dumps({"architecture": deepest.architecture, "actions": deepest.actions})) + 64
    held = {"reinforce": 2 * spec.controller.batch_size, "evolution": spec.controller.evolution.population_size}
    held_children = held.get(spec.controller.strategy, 0) + 10  # and the top ten
    return len(search.to_bytes(tickets=False)) + 2 * weights + held_children * child + 8 * spec.parallelism


def check_space(spec: specs.SearchSpec) -> None:
    """What the schema cannot say: the space must yield a valid child (sampled by a
    throwaway controller, so the search's own RNG is untouched), and the checkpoint must
    fit the ConfigMap that holds it."""
    throwaway = Search(spec)
    try:
        throwaway.controller.sample(trial_index=0)
    except ValueError as error:
        raise SearchFailed("InvalidSpec", f"spec.searchSpace yields no valid architecture: {error}") from None
    size = checkpoint_bytes(spec, throwaway)
    if size > CHECKPOINT_LIMIT:
        raise SearchFailed("InvalidSpec", (
            f"spec.controller: the search's checkpoint would need about {size // 1024:,} KiB, more than the "
            f"{CHECKPOINT_LIMIT // 1024:,} KiB its ConfigMap can hold: lower lstmSize or lstmLayers (weights and "
            "Adam's moments), batchSize, or evolution.populationSize"))
