"""Child networks built from a validated architecture document (see README.md).

Self-contained on purpose: only the standard library and torch are imported (no
relative imports, no numpy), because this file's source is embedded verbatim into
standalone model files. Module attribute names are part of the state_dict keys, so
they are chosen to read well and must stay stable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# NAS-Bench-201 edge order: edge k connects node NB201_EDGES[k][0] -> node NB201_EDGES[k][1].
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def build_model(architecture: dict, *, in_channels: int, num_classes: int) -> nn.Module:
    """The torch module of an (already validated) MacroCNN or NB201Cell architecture."""
    kind = architecture["kind"]
    if kind == "MacroCNN":
        return MacroCNN(architecture["layers"], in_channels=in_channels, num_classes=num_classes)
    if kind == "NB201Cell":
        return NB201Network(
            architecture["edges"],
            channels=architecture["channels"],
            cells_per_stage=architecture["cellsPerStage"],
            in_channels=in_channels,
            num_classes=num_classes,
        )
    raise ValueError(f"unknown architecture kind {kind!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def pad_and_concat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate NCHW tensors along channels, zero-padding each at the bottom and right
    to the largest height and the largest width among them (Zoph & Le §3.3)."""
    if len(tensors) == 1:
        return tensors[0]
    height = max(tensor.shape[2] for tensor in tensors)
    width = max(tensor.shape[3] for tensor in tensors)
    padded = [
        F.pad(tensor, (0, width - tensor.shape[3], 0, height - tensor.shape[2]))
        if tensor.shape[2:] != (height, width)
        else tensor
        for tensor in tensors
    ]
    return torch.cat(padded, dim=1)


# ---------------------------------------------------------------------------------------
# MacroCNN (Zoph & Le 2017, §3.1-3.3)


class ConvBNReLU(nn.Module):
    """One MacroCNN layer: bias-free conv with "same" padding (filter // 2), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        # bias=False: the BatchNorm's shift makes a conv bias redundant.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class MacroCNN(nn.Module):
    """A chain of ConvBNReLU layers with skip connections.

    A layer with no inputs reads the image; otherwise its listed earlier layers,
    padded and concatenated. Layers no later layer reads (the last one included) are
    padded and concatenated, globally average-pooled and fed to a linear classifier.
    """

    def __init__(self, layers: Sequence[dict], *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        # Plain tuples, not modules: the wiring is not a parameter and stays out of state_dict.
        self.layer_inputs: tuple[tuple[int, ...], ...] = tuple(tuple(layer["inputs"]) for layer in layers)
        used = {source for inputs in self.layer_inputs for source in inputs}
        self.output_layers: tuple[int, ...] = tuple(index for index in range(len(layers)) if index not in used)

        out_channels = [layer["numFilters"] for layer in layers]
        self.layers = nn.ModuleList()
        for layer, inputs in zip(layers, self.layer_inputs):
            layer_in_channels = sum(out_channels[source] for source in inputs) if inputs else in_channels
            self.layers.append(
                ConvBNReLU(
                    layer_in_channels,
                    layer["numFilters"],
                    kernel_size=(layer["filterHeight"], layer["filterWidth"]),
                    stride=(layer["strideHeight"], layer["strideWidth"]),
                )
            )
        self.classifier = nn.Linear(sum(out_channels[index] for index in self.output_layers), num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for layer, inputs in zip(self.layers, self.layer_inputs):
            x = pad_and_concat([outputs[source] for source in inputs]) if inputs else image
            outputs.append(layer(x))
        features = pad_and_concat([outputs[index] for index in self.output_layers])
        return self.classifier(features.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------
# NAS-Bench-201 (Dong & Yang 2020): cell operations, cell, skeleton


class ReLUConvBN(nn.Module):
    """NB201's `nor_conv_k×k`: ReLU, bias-free conv (same padding), BN."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


class Zero(nn.Module):
    """NB201's `none`: zeros shaped like the input (cell edges keep shape and channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def cell_operation(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, kernel_size=1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, kernel_size=3)
    if name == "avg_pool_3x3":
        # count_include_pad=False as in NAS-Bench-201: border averages ignore the padding.
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 operation {name!r}")


class NB201Cell(nn.Module):
    """Four nodes; node j = Σ_{i<j} op_ij(node i); the cell outputs node 3."""

    def __init__(self, edges: Sequence[str], *, channels: int) -> None:
        super().__init__()
        # Keys like "edge_1_0" (node 1 <- node 0) give readable state_dict keys.
        self.edges = nn.ModuleDict(
            {f"edge_{target}_{source}": cell_operation(name, channels) for name, (source, target) in zip(edges, NB201_EDGES)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in (1, 2, 3):
            nodes.append(sum(self.edges[f"edge_{target}_{source}"](nodes[source]) for source in range(target)))
        return nodes[3]


class ResidualReduction(nn.Module):
    """NB201's ResNet basic block between stages: stride 2, channels in -> out."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(in_channels, out_channels, kernel_size=3, stride=2)
        self.conv_b = ReLUConvBN(out_channels, out_channels, kernel_size=3)
        # ceil_mode keeps the shortcut's size equal to the strided conv's, ceil(size / 2),
        # also for odd sizes (identical to NB201 for its even ones).
        self.shortcut = nn.Sequential()
        self.shortcut.add_module("pool", nn.AvgPool2d(2, stride=2, ceil_mode=True))
        self.shortcut.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 skeleton: stem, N cells, reduction, N cells, reduction, N cells,
    BN + ReLU, global average pooling, linear classifier."""

    def __init__(self, edges: Sequence[str], *, channels: int, cells_per_stage: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_channels, channels, 3, padding=1, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(channels))

        # One flat list, cells and reduction blocks in order, as in NAS-Bench-201.
        self.cells = nn.ModuleList()
        stage_channels = channels
        for stage in range(3):
            if stage > 0:
                self.cells.append(ResidualReduction(stage_channels, stage_channels * 2))
                stage_channels *= 2
            for _ in range(cells_per_stage):
                self.cells.append(NB201Cell(edges, channels=stage_channels))

        self.head = nn.Sequential()
        self.head.add_module("bn", nn.BatchNorm2d(stage_channels))
        self.head.add_module("relu", nn.ReLU(inplace=False))
        self.classifier = nn.Linear(stage_channels, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        for cell in self.cells:
            x = cell(x)
        x = self.head(x)
        return self.classifier(x.mean(dim=(2, 3)))
