"""Child networks (kubenas_trainer.models): shapes, the pad-and-concat rules, parameter counts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch

import kubenas_trainer.models as models
from kubenas_trainer.architecture import cell_string, validate_architecture
from kubenas_trainer.models import build_model, count_parameters, pad_and_concat

API_VERSION = "kubenas.io/v1alpha1"


def macro(*layers: tuple) -> dict:
    """layers: (filterHeight, filterWidth, numFilters, strideHeight, strideWidth, inputs)."""
    names = ("filterHeight", "filterWidth", "numFilters", "strideHeight", "strideWidth", "inputs")
    doc = {"apiVersion": API_VERSION, "kind": "MacroCNN", "layers": [dict(zip(names, layer)) for layer in layers]}
    return validate_architecture(doc)


def nb201(edges: list[str], *, channels: int = 4, cells_per_stage: int = 1) -> dict:
    doc = {
        "apiVersion": API_VERSION,
        "kind": "NB201Cell",
        "cell": cell_string(edges),
        "edges": edges,
        "channels": channels,
        "cellsPerStage": cells_per_stage,
    }
    return validate_architecture(doc)


README_MACRO = macro((3, 5, 36, 1, 1, []), (7, 1, 24, 2, 1, [0]), (1, 3, 64, 1, 1, [0, 1]))
README_EDGES = ["nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def test_macro_cnn_output_shape():
    model = build_model(README_MACRO, in_channels=3, num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model.eval()
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_nb201_output_shape_and_reductions():
    model = build_model(nb201(README_EDGES, channels=4, cells_per_stage=2), in_channels=3, num_classes=7)
    seen = {}
    model.head.register_forward_hook(lambda module, inputs, output: seen.update(head=output.shape))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert seen["head"] == (2, 16, 8, 8)  # channels ×4, size /4 after two reductions
    assert model.classifier.in_features == 16
    # Odd sizes too: the shortcut pools with ceil_mode, like the strided conv.
    assert model(torch.randn(2, 3, 7, 9)).shape == (2, 7)


def test_pad_and_concat_pads_bottom_right_with_zeros():
    a = torch.ones(1, 2, 3, 5)
    b = torch.full((1, 1, 4, 2), 2.0)
    out = pad_and_concat([a, b])
    assert out.shape == (1, 3, 4, 5)  # largest height from b, largest width from a
    assert torch.equal(out[:, :2, :3, :], a) and out[:, :2, 3:, :].abs().sum() == 0
    assert torch.equal(out[:, 2:, :, :2], b) and out[:, 2:, :, 2:].abs().sum() == 0
    assert pad_and_concat([a]) is a


def test_macro_cnn_concat_and_padding_rules():
    # Image 9×7. Layer 0 strides the width (9×4), layer 1 the height (5×7): layer 2 reads
    # both, zero-padded to the largest height (9, layer 0) and largest width (7, layer 1).
    architecture = macro(
        (3, 3, 4, 1, 2, []),
        (3, 3, 6, 2, 1, []),
        (1, 1, 5, 1, 1, [0, 1]),
        (3, 3, 3, 1, 1, [2]),
        (5, 5, 7, 2, 2, []),  # dangling, like layer 3: both feed the classifier
    )
    model = build_model(architecture, in_channels=2, num_classes=10)
    outputs, layer2_input = {}, {}
    for index in (0, 1, 3, 4):
        model.layers[index].register_forward_hook(lambda module, inputs, output, index=index: outputs.update({index: output}))
    model.layers[2].register_forward_pre_hook(lambda module, inputs: layer2_input.update(x=inputs[0]))

    model.eval()
    logits = model(torch.randn(3, 2, 9, 7))
    assert logits.shape == (3, 10)
    assert outputs[0].shape == (3, 4, 9, 4)
    assert outputs[1].shape == (3, 6, 5, 7)
    x = layer2_input["x"]
    assert x.shape == (3, 4 + 6, 9, 7)
    assert model.layers[2].conv.in_channels == 10
    assert torch.equal(x[:, :4, :, :4], outputs[0]) and x[:, :4, :, 4:].abs().sum() == 0
    assert torch.equal(x[:, 4:, :5, :], outputs[1]) and x[:, 4:, 5:, :].abs().sum() == 0
    # Layers 3 (9×7) and 4 (5×4) are read by nobody: concatenated for the classifier.
    assert model.output_layers == (3, 4)
    assert model.classifier.in_features == 3 + 7
    assert outputs[4].shape == (3, 7, 5, 4)


def test_layer_without_inputs_reads_the_image():
    architecture = macro((3, 3, 4, 1, 1, []), (3, 3, 5, 1, 1, []))
    model = build_model(architecture, in_channels=3, num_classes=2)
    assert model.layers[1].conv.in_channels == 3
    assert model.output_layers == (0, 1)
    assert model.classifier.in_features == 9


def test_macro_cnn_parameter_count():
    model = build_model(README_MACRO, in_channels=3, num_classes=10)
    convs = 3 * 5 * 3 * 36 + 7 * 1 * 36 * 24 + 1 * 3 * (36 + 24) * 64  # bias-free
    batch_norms = 2 * (36 + 24 + 64)
    classifier = 64 * 10 + 10  # only layer 2 dangles
    assert count_parameters(model) == convs + batch_norms + classifier
    assert all(module.bias is None for module in model.modules() if isinstance(module, torch.nn.Conv2d))


def test_macro_cnn_layer_structure_and_state_dict_keys():
    model = build_model(README_MACRO, in_channels=3, num_classes=10)
    conv = model.layers[1].conv
    assert conv.kernel_size == (7, 1) and conv.stride == (2, 1) and conv.padding == (3, 0)
    keys = set(model.state_dict())
    assert {"layers.0.conv.weight", "layers.2.bn.running_mean", "classifier.weight", "classifier.bias"} <= keys


def test_nb201_none_edges_give_zeros_and_still_train():
    all_none = nb201(["none"] * 6)
    model = build_model(all_none, in_channels=3, num_classes=10)
    cell = model.cells[0]
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(cell(x), torch.zeros_like(x))
    # Only the skeleton has parameters: stem, two reduction blocks, head BN, classifier.
    c, k = 4, 10
    stem = 3 * c * 9 + 2 * c

    def reduction(cin: int, cout: int) -> int:
        return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout + cin * cout

    expected = stem + reduction(c, 2 * c) + reduction(2 * c, 4 * c) + 2 * 4 * c + 4 * c * k + k
    assert count_parameters(model) == expected
    loss = model(torch.randn(2, 3, 16, 16)).logsumexp(dim=1).mean()
    loss.backward()
    assert torch.isfinite(loss)

    mixed = nb201(["none", "nor_conv_1x1", "none", "skip_connect", "none", "avg_pool_3x3"])
    assert build_model(mixed, in_channels=3, num_classes=10)(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_nb201_cell_sums_edges():
    # Node 1 = x (skip), node 2 = node 1 (skip), node 3 = x + node 1 + node 2 = 3x.
    architecture = nb201(["skip_connect", "none", "skip_connect", "skip_connect", "skip_connect", "skip_connect"])
    cell = build_model(architecture, in_channels=3, num_classes=10).cells[0]
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(cell(x), 3 * x)


def test_nb201_parameter_count_matches_nas_bench_201():
    # NAS-Bench-201's largest CIFAR-10 network (every edge nor_conv_3x3, C=16, N=5): 1.531546 M.
    architecture = nb201(["nor_conv_3x3"] * 6, channels=16, cells_per_stage=5)
    model = build_model(architecture, in_channels=3, num_classes=10)
    assert count_parameters(model) == 1_531_546
    assert len(model.cells) == 5 + 1 + 5 + 1 + 5
    assert "cells.0.edges.edge_3_2.conv.weight" in model.state_dict()
    assert "cells.5.shortcut.conv.weight" in model.state_dict()


def test_models_module_is_self_contained():
    """Only the standard library and torch, no relative imports: its source is embedded verbatim elsewhere."""
    source = Path(models.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            roots = [node.module.split(".")[0]]
        elif isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        else:
            continue
        for root in roots:
            assert root == "torch" or root in sys.stdlib_module_names, root
    namespace: dict = {"__name__": "standalone_model"}
    exec(compile(source, "standalone_model.py", "exec"), namespace)
    model = namespace["build_model"](README_MACRO, in_channels=3, num_classes=10)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
