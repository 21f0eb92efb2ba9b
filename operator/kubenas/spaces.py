"""Search spaces: controller decisions in, architecture JSON out.

A space is a *decision program*: `decisions(trial_index=…)` is a generator that yields
one decision at a time (a `Choice` among a head's options, or an `Anchor` choosing a
layer's inputs), receives the action taken, and finally returns the architecture
document. The controller, the random baseline and the decoder all drive the same
program, so what is sampled, what is scored under teacher forcing and what is built
can never disagree, and choices that would be invalid (e.g. a stride shrinking a
feature map below `minFeatureSize`) are masked out before they can be sampled.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Union

from kubenas import spec as specs
from kubenas_trainer.architecture import NB201_EDGES, cell_string  # the architecture contract

API_VERSION = specs.API_VERSION


@dataclass(frozen=True)
class Choice:
    """Pick one of `num_choices` options of the softmax head `head`."""

    head: str
    num_choices: int
    allowed: tuple[bool, ...] | None = None  # None: every option is allowed


@dataclass(frozen=True)
class Anchor:
    """The anchor point of `layer`: choose, for each earlier layer, whether it feeds this one."""

    layer: int


Decision = Union[Choice, Anchor]
Action = Union[int, list[int]]  # a Choice's option index, or an Anchor's 0/1 per earlier layer
DecisionProgram = Generator[Decision, Action, dict]


class InvalidActions(ValueError):
    """A recorded action sequence does not fit the space (wrong length, masked option…)."""


class Space:
    """Base of the spaces: heads (fixed for a search, so parameter shapes never change)."""

    kind: str
    heads: dict[str, int]  # head name -> number of options
    uses_anchors: bool

    def decisions(self, *, trial_index: int) -> DecisionProgram:  # pragma: no cover - abstract
        raise NotImplementedError

    def program_key(self, trial_index: int) -> object:
        """Children whose keys are equal run the same decision program (the same
        decisions and masks for the same actions, the same architecture at the end), so a
        child sampled for one of them serves any other. The base class assumes nothing."""
        return ("trial", trial_index)

    def decode(self, actions: Sequence[Action], *, trial_index: int) -> dict:
        """Replay recorded actions through the decision program; the architecture they make."""
        program = self.decisions(trial_index=trial_index)
        decision = next(program)
        for position, action in enumerate(actions):
            check_action(decision, action, position=position)
            try:
                decision = program.send(action)
            except StopIteration as done:
                if position != len(actions) - 1:
                    raise InvalidActions(f"{len(actions)} actions, but the architecture ends after {position + 1}")
                return done.value
        raise InvalidActions(f"{len(actions)} actions are too few: the program still asks for {decision}")


def check_action(decision: Decision, action: Action, *, position: int) -> None:
    if isinstance(decision, Choice):
        if not isinstance(action, int) or not 0 <= action < decision.num_choices:
            raise InvalidActions(f"action {position}: {action!r} is no option of head {decision.head!r}")
        if decision.allowed is not None and not decision.allowed[action]:
            raise InvalidActions(f"action {position}: option {action} of head {decision.head!r} is masked here")
    else:
        if not isinstance(action, list) or len(action) != decision.layer or any(b not in (0, 1) for b in action):
            raise InvalidActions(f"action {position}: anchor of layer {decision.layer} needs {decision.layer} bits")


class MacroCNN(Space):
    """Zoph & Le §3.1-3.3. Per layer: anchor (inputs), filter height, filter width,
    stride height and width (when enabled), number of filters."""

    kind = "MacroCNN"

    def __init__(self, config: specs.MacroCNNSpace) -> None:
        self.config = config
        self.uses_anchors = config.skip_connections
        self.heads = {"filterHeight": len(config.filter_heights), "filterWidth": len(config.filter_widths)}
        if config.strides.enabled:
            self.heads |= {"strideHeight": len(config.strides.heights), "strideWidth": len(config.strides.widths)}
        self.heads["numFilters"] = len(config.num_filters)
        # Decisions are immutable: the unmasked ones are made once (the controller drives
        # thousands of these programs, and building them was a good part of its cost).
        self._choices = {head: Choice(head, size) for head, size in self.heads.items()}
        self._stride_choices: dict[tuple[str, int], Choice] = {}

    def num_layers(self, *, trial_index: int) -> int:
        return self.config.depth.layers_for(trial_index)

    def program_key(self, trial_index: int) -> object:
        return self.num_layers(trial_index=trial_index)  # the trial index matters through the depth alone

    def decisions(self, *, trial_index: int) -> DecisionProgram:
        config = self.config
        sizes: list[tuple[int, int]] = []  # output (height, width) of each layer
        layers: list[dict] = []
        for layer in range(self.num_layers(trial_index=trial_index)):
            if self.uses_anchors:
                bits = yield Anchor(layer)
                inputs = [j for j, bit in enumerate(bits) if bit]
            else:
                inputs = [layer - 1] if layer else []
            # Several inputs are zero-padded to the largest; none means the image.
            in_h = max((sizes[j][0] for j in inputs), default=config.image_size[0])
            in_w = max((sizes[j][1] for j in inputs), default=config.image_size[1])
            filter_h = config.filter_heights[(yield self._choices["filterHeight"])]
            filter_w = config.filter_widths[(yield self._choices["filterWidth"])]
            stride_h = stride_w = 1
            if config.strides.enabled:
                stride_h = config.strides.heights[(yield self._stride_choice("strideHeight", in_h))]
                stride_w = config.strides.widths[(yield self._stride_choice("strideWidth", in_w))]
            filters = config.num_filters[(yield self._choices["numFilters"])]
            sizes.append((math.ceil(in_h / stride_h), math.ceil(in_w / stride_w)))
            layers.append(
                {
                    "filterHeight": filter_h,
                    "filterWidth": filter_w,
                    "numFilters": filters,
                    "strideHeight": stride_h,
                    "strideWidth": stride_w,
                    "inputs": inputs,
                }
            )
        return {"apiVersion": API_VERSION, "kind": self.kind, "layers": layers}

    def _stride_choice(self, head: str, size: int) -> Choice:
        """The stride decision for a `size`-pixel input: strides that would shrink it below
        `minFeatureSize` are masked. Only a few sizes occur: each is worked out once."""
        choice = self._stride_choices.get((head, size))
        if choice is None:
            strides = self.config.strides.heights if head == "strideHeight" else self.config.strides.widths
            choice = Choice(head, len(strides), _strides_fitting(strides, size, self.config.min_feature_size))
            self._stride_choices[(head, size)] = choice
        return choice


def _strides_fitting(strides: Sequence[int], size: int, minimum: int) -> tuple[bool, ...] | None:
    """Mask of the strides keeping `ceil(size / stride) >= minimum` (None when all do)."""
    allowed = tuple(math.ceil(size / stride) >= minimum for stride in strides)
    if not any(allowed):  # unreachable while a stride of 1 is offered; say so rather than crash
        raise InvalidActions(f"no stride keeps a {size}-pixel feature map at least {minimum} pixels")
    return None if all(allowed) else allowed


class NB201Cell(Space):
    """NAS-Bench-201: one operation for each of the cell's 6 edges."""

    kind = "NB201Cell"
    uses_anchors = False

    def __init__(self, config: specs.NB201CellSpace) -> None:
        self.config = config
        self.heads = {"operation": len(config.operations)}
        self._choice = Choice("operation", len(config.operations))  # made once, as in MacroCNN

    def program_key(self, trial_index: int) -> object:
        return None  # every child runs the same program

    def decisions(self, *, trial_index: int) -> DecisionProgram:
        edges = []
        for _ in NB201_EDGES:
            edges.append(self.config.operations[(yield self._choice)])
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "cell": cell_string(edges),
            "edges": edges,
            "channels": self.config.channels,
            "cellsPerStage": self.config.cells_per_stage,
        }


def build_space(config: specs.SearchSpace) -> Space:
    if config.type == "MacroCNN":
        return MacroCNN(config.macro_cnn)
    return NB201Cell(config.nb201_cell)


def summarize(architecture: dict) -> str:
    """A short human-readable line for an architecture (status fields, logs):
    `HxW:filters`, `/SHxSW` for strides, `<i,j` for inputs other than the previous layer."""
    if architecture["kind"] == "NB201Cell":
        return architecture["cell"]
    layers = architecture["layers"]
    parts = []
    for index, layer in enumerate(layers):
        part = f"{layer['filterHeight']}x{layer['filterWidth']}:{layer['numFilters']}"
        if (layer["strideHeight"], layer["strideWidth"]) != (1, 1):
            part += f"/{layer['strideHeight']}x{layer['strideWidth']}"
        if index and layer["inputs"] != [index - 1]:
            part += "<" + (",".join(map(str, layer["inputs"])) or "image")
        parts.append(part)
    return f"{len(layers)} layers " + " ".join(parts)
