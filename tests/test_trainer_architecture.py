"""Architecture JSON validation (kubenas_trainer.architecture): the trainer's input contract."""

from __future__ import annotations

import copy
import json

import pytest

from kubenas_trainer.architecture import cell_string, parse_cell_string, validate_architecture
from kubenas_trainer.errors import InvalidArchitecture

README_MACRO = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "MacroCNN",
    "layers": [
        {"filterHeight": 3, "filterWidth": 5, "numFilters": 36, "strideHeight": 1, "strideWidth": 1, "inputs": []},
        {"filterHeight": 7, "filterWidth": 1, "numFilters": 24, "strideHeight": 2, "strideWidth": 1, "inputs": [0]},
        {"filterHeight": 1, "filterWidth": 3, "numFilters": 64, "strideHeight": 1, "strideWidth": 1, "inputs": [0, 1]},
    ],
}
README_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
README_EDGES = ["nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"]
README_NB201 = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "NB201Cell",
    "cell": README_CELL,
    "edges": README_EDGES,
    "channels": 16,
    "cellsPerStage": 5,
}


def test_readme_examples_are_valid_and_normalised_copies():
    for doc in (README_MACRO, README_NB201):
        original = copy.deepcopy(doc)
        normalised = validate_architecture(doc)
        assert normalised == doc
        assert normalised is not doc
        assert doc == original  # input left untouched


def test_json_text_is_accepted():
    assert validate_architecture(json.dumps(README_MACRO)) == README_MACRO
    assert validate_architecture(json.dumps(README_NB201)) == README_NB201


def test_normalised_field_order_is_canonical():
    layer = dict(reversed(list(README_MACRO["layers"][0].items())))
    doc = {"layers": [layer], "kind": "MacroCNN", "apiVersion": "kubenas.io/v1alpha1"}
    normalised = validate_architecture(doc)
    assert list(normalised) == ["apiVersion", "kind", "layers"]
    assert list(normalised["layers"][0]) == [
        "filterHeight", "filterWidth", "numFilters", "strideHeight", "strideWidth", "inputs",
    ]


def test_cell_string_round_trip_and_edge_order():
    assert cell_string(README_EDGES) == README_CELL
    assert parse_cell_string(README_CELL) == README_EDGES
    # Edge order is 1←0, 2←0, 2←1, 3←0, 3←1, 3←2.
    edges = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none"]
    assert cell_string(edges) == "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    assert parse_cell_string(cell_string(edges)) == edges


def _without(doc: dict, *path) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc


def _with(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


MALFORMED = [
    # (document or text, words the message must contain)
    ("{not json", ["not valid JSON"]),
    ("[1, 2]", ["JSON object"]),
    (_with(README_MACRO, ("apiVersion",), "kubenas.io/v2"), ["apiVersion"]),
    (_without(README_MACRO, "apiVersion"), ["apiVersion"]),
    (_with(README_MACRO, ("kind",), "ResNet"), ["kind", "ResNet"]),
    (_with(README_MACRO, ("extra",), 1), ["extra", "unknown field"]),
    (_without(README_MACRO, "layers"), ["layers", "missing field"]),
    (_with(README_MACRO, ("layers",), []), ["layers", "at least one"]),
    (_with(README_MACRO, ("layers",), {"0": {}}), ["layers", "list"]),
    (_with(README_MACRO, ("layers", 1), [3]), ["layers[1]", "object"]),
    (_with(README_MACRO, ("layers", 0, "dilation"), 2), ["layers[0].dilation", "unknown field"]),
    (_without(README_MACRO, "layers", 2, "numFilters"), ["layers[2].numFilters", "missing field"]),
    (_with(README_MACRO, ("layers", 1, "filterHeight"), 4), ["layers[1].filterHeight", "odd"]),
    (_with(README_MACRO, ("layers", 0, "filterWidth"), 0), ["layers[0].filterWidth", ">= 1"]),
    (_with(README_MACRO, ("layers", 0, "filterWidth"), 3.0), ["layers[0].filterWidth", "integer"]),
    (_with(README_MACRO, ("layers", 0, "numFilters"), True), ["layers[0].numFilters", "integer"]),
    (_with(README_MACRO, ("layers", 0, "numFilters"), "36"), ["layers[0].numFilters", "integer"]),
    (_with(README_MACRO, ("layers", 2, "numFilters"), 0), ["layers[2].numFilters", ">= 1"]),
    (_with(README_MACRO, ("layers", 1, "strideHeight"), 0), ["layers[1].strideHeight", ">= 1"]),
    (_with(README_MACRO, ("layers", 1, "strideWidth"), -2), ["layers[1].strideWidth", ">= 1"]),
    (_with(README_MACRO, ("layers", 2, "inputs"), [0, 3]), ["layers[2].inputs: 3 is not an earlier layer"]),
    (_with(README_MACRO, ("layers", 2, "inputs"), [2]), ["layers[2].inputs: 2 is not an earlier layer"]),
    (_with(README_MACRO, ("layers", 2, "inputs"), [-1]), ["layers[2].inputs: -1 is not an earlier layer"]),
    (_with(README_MACRO, ("layers", 0, "inputs"), [0]), ["layers[0].inputs: 0 is not an earlier layer"]),
    (_with(README_MACRO, ("layers", 2, "inputs"), [1, 0]), ["layers[2].inputs", "strictly increasing"]),
    (_with(README_MACRO, ("layers", 2, "inputs"), [1, 1]), ["layers[2].inputs", "strictly increasing"]),
    (_with(README_MACRO, ("layers", 2, "inputs"), 1), ["layers[2].inputs", "list"]),
    (_with(README_MACRO, ("layers", 2, "inputs"), ["0"]), ["layers[2].inputs", "integer"]),
    (_with(README_NB201, ("channels",), 0), ["channels", ">= 1"]),
    (_with(README_NB201, ("cellsPerStage",), 2.5), ["cellsPerStage", "integer"]),
    (_without(README_NB201, "cell"), ["cell", "missing field"]),
    (_without(README_NB201, "edges"), ["edges", "missing field"]),
    (_with(README_NB201, ("layers",), []), ["layers", "unknown field"]),
    (_with(README_NB201, ("edges",), README_EDGES[:5]), ["edges", "6"]),
    (_with(README_NB201, ("edges", 4), "conv_5x5"), ["edges[4]", "conv_5x5"]),
    (_with(README_NB201, ("edges",), "nor_conv_3x3"), ["edges", "list"]),
    (_with(README_NB201, ("edges", 0), "none"), ["cell", "disagrees with edges"]),
    (_with(README_NB201, ("cell",), README_CELL.replace("+", "|", 1)), ["cell", "3"]),
    (_with(README_NB201, ("cell",), README_CELL.replace("~1|+", "~2|+", 1)), ["cell", "node 2 input 1"]),
    (_with(README_NB201, ("cell",), README_CELL.replace("avg_pool_3x3", "max_pool_3x3")), ["cell", "max_pool_3x3"]),
    (_with(README_NB201, ("cell",), README_CELL.strip("|")), ["cell", "node"]),
    (_with(README_NB201, ("cell",), 7), ["cell", "string"]),
]


@pytest.mark.parametrize(("doc", "words"), MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_documents_name_the_bad_field(doc, words):
    with pytest.raises(InvalidArchitecture) as caught:
        validate_architecture(doc)
    message = caught.value.message
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert caught.value.exit_code == 3 and caught.value.reason == "InvalidArchitecture"


def test_inputs_at_the_limits_are_valid():
    layer = {"filterHeight": 1, "filterWidth": 1, "numFilters": 1, "strideHeight": 1, "strideWidth": 1}
    doc = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "MacroCNN",
        "layers": [layer | {"inputs": []}, layer | {"inputs": []}, layer | {"inputs": [0, 1]}],
    }
    assert validate_architecture(doc)["layers"][2]["inputs"] == [0, 1]
